//! Every input under tests/fixtures/fuzz/<target>/ through the same entry point its fuzz target
//! (fuzz/fuzz_targets/<target>.rs) runs: the cases the fuzzers found, the seeds `make fuzz`
//! starts from, and hand-written hostile inputs (endless template loops, output and value
//! blow-ups, a namespace that contains itself). An entry asserts its own invariants and panics
//! on a violation; here it must return, and fast enough that the run ends (the template budgets
//! stop the loops and the blow-ups). Inputs for the header parsers' targets live in
//! tests/fixtures/formats/fuzz (tests/formats.rs).

use std::path::PathBuf;

use pocketlm::fuzzing::TARGETS;

#[test]
fn fuzz_regressions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some((_, run)) = TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("tests/fixtures/fuzz/{name}: no fuzz target of that name");
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("{name}: {}", file.file_name().unwrap().to_string_lossy());
            run(&data);
            replayed += 1;
        }
    }
    // Every target has inputs: at least its seeds.
    for (target, _) in TARGETS {
        assert!(
            dir.join(target)
                .read_dir()
                .is_ok_and(|mut d| d.next().is_some()),
            "tests/fixtures/fuzz/{target} has no inputs"
        );
    }
    assert!(replayed >= TARGETS.len());
}

/// Model files with one thing wrong, run on the CPU backend as the package runs them
/// (`pocketlm::fuzzing::run_cpu_model`): every metadata value of four tiny models (a Llama,
/// Gemma 3 with its sliding-window layers, a BERT encoder, a Llama quantized by llama.cpp into
/// Q4_K_M) removed or at the edges of its type, and every tensor of two of them removed,
/// retyped or reshaped (`pocketlm::fuzzing::hostile_headers`). Each is refused with a typed
/// error or runs keeping its invariants; none may panic. Many still run (a type change keeps a
/// model runnable), so the check reaches generation and embedding, not only the parsers.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn hostile_model_files_are_refused_or_run_on_the_cpu() {
    use pocketlm::fuzzing::{run_cpu_model, run_hostile_headers, ModelRun};

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut panics = Vec::new();
    let mut total = ModelRun::default();
    let mut cases = 0;
    for (file, tensors) in [
        ("models/tiny-llama.gguf", true),
        ("models/tiny-gemma3.gguf", false),
        ("models/tiny-bert.gguf", false),
        ("gguf/q4_k_m.gguf", true),
    ] {
        let bytes = std::fs::read(fixtures.join(file)).unwrap();
        let runs = run_hostile_headers(&bytes, tensors, &run_cpu_model);
        panics.extend(runs.panics.iter().map(|what| format!("{file}: {what}")));
        cases += runs.cases;
        total += runs.total;
    }
    assert!(panics.is_empty(), "panicked on {panics:#?}");
    eprintln!("{cases} hostile headers: {total:?}");
    assert!(cases > 1000, "{cases}");
    assert!(total.generated > 200 && total.embedded > 20, "{total:?}");
}

/// The safetensors route: each tiny model's `config.json` with one value changed
/// (`pocketlm::fuzzing::hostile_configs`: removed, null, or at the edges of its kind). A
/// decoder's is read as transformers' config and built into a CPU decoder over the model's own
/// weights (sliding-window layers as rings, steps of at most 4 tokens), which runs a prefill, a
/// longer step and a decode step, with logits for every vocabulary entry; a sentence-transformers
/// folder (BERT, nomic-bert, EmbeddingGemma, Qwen3-Embedding; each of its JSON files but the
/// tokenizer's changed in turn) becomes an embedder on the CPU, as the package loads one, and
/// embeds a text to a vector of its width. Each variant is refused with a typed error or runs;
/// none may panic.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn hostile_configs_are_refused_or_run_on_the_cpu() {
    use pocketlm::cpu::{CpuContext, CpuDecoder};
    use pocketlm::fuzzing::hostile_configs;
    use pocketlm::load::{load_directory, LoadOptions, LoadedModelFiles};
    use pocketlm::model::encoder::Embedder;
    use pocketlm::model::ModelConfig;
    use pocketlm::quant::DType;

    let cpu = CpuContext::new(Some(1));
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut failures = Vec::new();
    let (mut cases, mut decoded, mut embedded) = (0, 0, 0);
    let decoders = [
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen3-yarn",
        "tiny-qwen2.5-vl",
        "tiny-gemma2",
        "tiny-gemma3",
        "tiny-phi3",
        "tiny-granite",
        "tiny-olmo2",
        "tiny-smollm3",
    ];
    let embedders = [
        "tiny-bert",
        "tiny-nomic-bert",
        "tiny-embeddinggemma",
        "tiny-qwen3-embedding",
    ];
    for name in decoders.into_iter().chain(embedders) {
        let loaded = pollster::block_on(load_directory(
            &cpu,
            &models.join(name),
            2,
            LoadOptions::default(),
        ))
        .unwrap();
        let embedder = embedders.contains(&name);
        // An embedder's folder also says how it pools and projects (`1_Pooling/config.json`,
        // `2_Dense/config.json`, …).
        let files: Vec<&String> = loaded
            .companions
            .keys()
            .filter(|f| f.as_str() == "config.json" || (embedder && f.as_str() != "tokenizer.json"))
            .collect();
        let variants = files.into_iter().flat_map(|f| {
            let text = &loaded.companions[f];
            let variants = hostile_configs(text).unwrap();
            variants
                .into_iter()
                .map(move |(what, json)| (f, format!("{f}: {what}"), json))
        });
        for (file, what, json) in variants {
            cases += 1;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if embedder {
                    let mut companions = loaded.companions.clone();
                    companions.insert(file.clone(), json.clone());
                    let mut model = LoadedModelFiles {
                        files: loaded.files.clone(),
                        tensors: loaded.tensors.clone(),
                        gpu_bytes: loaded.gpu_bytes,
                        sha256: Vec::new(),
                        companions,
                        module_weights: loaded.module_weights.clone(),
                    };
                    let e = Embedder::from_loaded_cpu(&mut model, name).ok()?;
                    let out = pollster::block_on(e.embed_texts(&cpu, &["Hello, world"], true));
                    let width = e.encoder.config().dimensions();
                    assert_eq!(out.ok()?[0].vector.len(), width, "{name}: {what}");
                    embedded += 1;
                    return Some(());
                }
                let config = ModelConfig::from_hf_json(&json, name).ok()?;
                let vocab = config.vocab;
                let tensors = loaded.tensors.clone();
                let mut model =
                    CpuDecoder::with_max_step(config, tensors, 64, DType::F16, Some(4)).ok()?;
                for (tokens, at) in [(&[1, 2, 3][..], 0), (&[4, 5, 6, 7], 3), (&[8], 7)] {
                    let logits = model.forward_logits(&cpu, tokens, at).ok()?;
                    assert_eq!(logits.len(), tokens.len() * vocab, "{name}: {what}");
                }
                decoded += 1;
                Some(())
            }));
            if run.is_err() {
                failures.push(format!("{name}: {what}"));
            }
        }
    }
    assert!(failures.is_empty(), "panicked on {failures:#?}");
    eprintln!("{cases} hostile configs: {decoded} decoded, {embedded} embedded");
    assert!(
        cases > 1000 && decoded > 500 && embedded > 100,
        "{cases} cases"
    );
}
