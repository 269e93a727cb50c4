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
    use pocketlm::fuzzing::{hostile_headers, run_cpu_model, CpuModelRun};

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut failures = Vec::new();
    let mut total = CpuModelRun::default();
    let mut cases = 0;
    for (file, tensors) in [
        ("models/tiny-llama.gguf", true),
        ("models/tiny-gemma3.gguf", false),
        ("models/tiny-bert.gguf", false),
        ("gguf/q4_k_m.gguf", true),
    ] {
        let bytes = std::fs::read(fixtures.join(file)).unwrap();
        for (what, header) in hostile_headers(&bytes, tensors).unwrap() {
            cases += 1;
            match std::panic::catch_unwind(|| run_cpu_model(&header)) {
                Ok(run) => {
                    total.generated += run.generated;
                    total.embedded += run.embedded;
                }
                Err(_) => failures.push(format!("{file}: {what}")),
            }
        }
    }
    assert!(failures.is_empty(), "panicked on {failures:#?}");
    eprintln!("{cases} hostile headers: {total:?}");
    assert!(cases > 1000, "{cases}");
    assert!(total.generated > 200 && total.embedded > 20, "{total:?}");
}

/// The safetensors route: each tiny model's `config.json` with one value changed
/// (`pocketlm::fuzzing::hostile_configs`: removed, null, or at the edges of its kind), read as
/// transformers' config, built into a CPU decoder over the model's own weights (sliding-window
/// layers as rings, steps of at most 4 tokens) and run for a prefill, a longer step and a
/// decode step. Each is refused with a typed error or runs, with logits for every vocabulary
/// entry; none may panic.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn hostile_configs_are_refused_or_run_on_the_cpu() {
    use pocketlm::cpu::{CpuContext, CpuDecoder};
    use pocketlm::fuzzing::hostile_configs;
    use pocketlm::load::{load_directory, LoadOptions};
    use pocketlm::model::ModelConfig;
    use pocketlm::quant::DType;

    let cpu = CpuContext::new(Some(1));
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let mut failures = Vec::new();
    let (mut cases, mut ran) = (0, 0);
    for name in [
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
    ] {
        let loaded = pollster::block_on(load_directory(
            &cpu,
            &models.join(name),
            2,
            LoadOptions::default(),
        ))
        .unwrap();
        for (what, json) in hostile_configs(&loaded.companions["config.json"]).unwrap() {
            cases += 1;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let config = ModelConfig::from_hf_json(&json, name).ok()?;
                let vocab = config.vocab;
                let tensors = loaded.tensors.clone();
                let mut model =
                    CpuDecoder::with_max_step(config, tensors, 64, DType::F16, Some(4)).ok()?;
                for (tokens, at) in [(&[1, 2, 3][..], 0), (&[4, 5, 6, 7], 3), (&[8], 7)] {
                    let logits = model.forward_logits(&cpu, tokens, at).ok()?;
                    assert_eq!(logits.len(), tokens.len() * vocab, "{name}: {what}");
                }
                Some(())
            }));
            match run {
                Ok(r) => ran += usize::from(r.is_some()),
                Err(_) => failures.push(format!("{name}: {what}")),
            }
        }
    }
    assert!(failures.is_empty(), "panicked on {failures:#?}");
    eprintln!("{cases} hostile configs, {ran} ran");
    assert!(cases > 1000 && ran > 500, "{cases} cases, {ran} ran");
}
