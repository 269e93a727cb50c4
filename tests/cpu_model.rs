//! The CPU backend against Hugging Face transformers: the tiny random model of every
//! architecture from scripts/make_fixtures.py (safetensors in f32, bf16 and f16, and llama.cpp's
//! GGUF conversions), logits at every position of a 16-token prompt within 1e-3 (as the GPU
//! tests), prefill then decode through the KV cache, and the engine's greedy output on a real
//! GGUF equal to transformers'. Encoders: the tiny random BERT's and nomic-embed-text's hidden
//! states within 1e-5 of transformers' (folders and GGUF conversions), and the real
//! all-MiniLM-L6-v2 within cosine distance 1e-5 of sentence-transformers.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use common::gguf_presets::{
    assert_every_k_quant_seen, check_preset, preset_path, PresetReference, PRESETS,
};
use common::{
    assert_greedy_cases, assert_logits_close, check_tiny_embedder, cosine_distance, fixture_json,
    numbers, read_f32_file, token_ids, TinyGguf, TINY_EMBEDDERS, TINY_GGUF_FIXTURES,
};
use pocketlm::cpu::{CpuContext, CpuDecoder, HostTensor};
use pocketlm::engine::{Engine, EngineOptions};
use pocketlm::load::{load_directory, load_native, LoadOptions, LoadedModelFiles};
use pocketlm::model::{EmbedInput, Embedder, ModelConfig};
use pocketlm::quant::DType;

fn cpu() -> &'static CpuContext {
    static CPU: std::sync::OnceLock<CpuContext> = std::sync::OnceLock::new();
    CPU.get_or_init(|| CpuContext::new(Some(2)))
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// A fixture's prompt ids and transformers' logits for them.
fn reference(name: &str) -> (Vec<u32>, Vec<f32>) {
    let dir = models().join(name);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (
        token_ids(&r["input_ids"]),
        read_f32_file(&dir.join("logits.f32")),
    )
}

fn load(spec: &Path) -> LoadedModelFiles<HostTensor> {
    let loaded = if spec.is_dir() {
        pollster::block_on(load_directory(cpu(), spec, 2, LoadOptions::default()))
    } else {
        pollster::block_on(load_native(
            cpu(),
            spec.to_str().unwrap(),
            LoadOptions::default(),
        ))
    };
    loaded.unwrap_or_else(|e| panic!("{}: {e}", spec.display()))
}

fn decoder(name: &str, gguf: bool) -> CpuDecoder {
    decoder_stepped(name, gguf, None)
}

/// As [`decoder`], for steps of at most `max_step` tokens (sliding-window layers keep a ring).
fn decoder_stepped(name: &str, gguf: bool, max_step: Option<usize>) -> CpuDecoder {
    let loaded = if gguf {
        load(&models().join(format!("{name}.gguf")))
    } else {
        load(&models().join(name))
    };
    let config = match loaded.files.gguf_metadata() {
        Some(meta) => ModelConfig::from_gguf(meta, &loaded.files),
        None => ModelConfig::from_hf_json(&loaded.companions["config.json"], name),
    }
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    CpuDecoder::with_max_step(config, loaded.tensors, 64, DType::F32, max_step)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Sliding-window layers with steps of at most 2 tokens keep rings of window + 1 positions,
/// which the 16-token prompt, run in steps of 2 and 1, wraps twice: the same logits as the
/// whole cache to the bit, transformers' within 1e-3, less memory; a longer step is refused.
#[test]
fn sliding_window_rings_match_transformers_on_the_cpu() {
    for name in ["tiny-gemma3", "tiny-gemma2", "tiny-mistral"] {
        let (ids, want) = reference(name);
        let mut ring = decoder_stepped(name, false, Some(2));
        let mut whole = decoder(name, false);
        let mut got = Vec::new();
        let mut pos = 0;
        for n in [2, 1, 2, 2, 1, 2, 2, 2, 2] {
            let chunk = &ids[pos..pos + n];
            let a = ring.forward_logits(cpu(), chunk, pos).unwrap();
            let b = whole.forward_logits(cpu(), chunk, pos).unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: the ring's logits at {pos}..{} differ from the whole cache's",
                pos + n
            );
            got.extend(a);
            pos += n;
        }
        assert_eq!(pos, ids.len());
        assert_logits_close(name, &got, &want, ring.config.vocab, 1e-3);
        let (ring_kv, whole_kv) = (ring.host_bytes().1, whole.host_bytes().1);
        assert!(
            ring_kv < whole_kv,
            "{name}: {ring_kv} bytes of KV cache, not fewer than {whole_kv}"
        );
        assert!(
            ring.forward_logits(cpu(), &ids[..3], 0).is_err(),
            "{name}: a 3-token step"
        );
    }
}

#[test]
fn every_tiny_architecture_matches_transformers_on_the_cpu() {
    for name in TINY_GGUF_FIXTURES.into_iter().chain(["tiny-mistral"]) {
        let (ids, want) = reference(name);
        let mut model = decoder(name, false);
        let got = model.forward_logits(cpu(), &ids, 0).unwrap();
        assert_logits_close(name, &got, &want, model.config.vocab, 1e-3);
    }
}

/// A multimodal Gemma 3 checkpoint's language model, in both of transformers' tensor layouts:
/// the image encoder's tensors are left in the file, never loaded (`pocketlm info` counts them).
#[test]
fn multimodal_gemma3_runs_its_language_model_on_the_cpu() {
    for name in ["tiny-gemma3-mm", "tiny-gemma3-mm-sparse"] {
        let loaded = load(&models().join(name));
        let summary = loaded.files.summary();
        assert_eq!(summary.not_loaded, 34, "{name}");
        assert_eq!(loaded.tensors.len(), summary.tensors - 34, "{name}");
        for t in loaded.tensors.keys() {
            assert!(
                !t.contains("vision_tower") && !t.contains("multi_modal_projector"),
                "{name}: {t} was loaded"
            );
        }
        let (ids, want) = reference(name);
        let mut model = decoder(name, false);
        let got = model.forward_logits(cpu(), &ids, 0).unwrap();
        assert_logits_close(name, &got, &want, model.config.vocab, 1e-3);
    }
}

#[test]
fn gguf_conversions_match_transformers_on_the_cpu() {
    for name in TINY_GGUF_FIXTURES {
        let (ids, want) = reference(name);
        let mut model = decoder(name, true);
        let got = model.forward_logits(cpu(), &ids, 0).unwrap();
        assert_logits_close(
            &format!("{name}.gguf"),
            &got,
            &want,
            model.config.vocab,
            1e-3,
        );
    }
}

/// The presets llama.cpp's quantizer writes (mixed types inside a layer), on the CPU backend:
/// the checks tests/gpu_gguf_presets.rs runs on the GPU (tests/common/gguf_presets.rs): logits
/// within 1e-3 of the exact computation and within 5% of the spread of llama.cpp's on the same
/// file, and the exact reference's greedy continuation through the KV cache, one decode step
/// at a time (decode's integer dot products on 16-bit activations).
#[test]
fn gguf_presets_match_llama_cpp_on_the_cpu() {
    let mut types_seen = std::collections::HashSet::new();
    for preset in PRESETS {
        let loaded = load(&preset_path(preset));
        let files = loaded.files;
        let config = ModelConfig::from_gguf(files.gguf_metadata().unwrap(), &files).unwrap();
        let vocab = config.vocab;
        let mut model = CpuDecoder::new(config, loaded.tensors, 64, DType::F32).unwrap();
        let reference = PresetReference::read(preset);
        let forward = &mut |tokens: &[u32], at| model.forward_logits(cpu(), tokens, at).unwrap();
        types_seen.extend(check_preset(preset, &reference, &files, vocab, forward));
    }
    assert_every_k_quant_seen(&types_seen);
}

/// Prefill then decode through the KV cache gives the logits of one long prefill, on one
/// thread and on several.
#[test]
fn decode_after_prefill_matches_one_prefill_on_the_cpu() {
    let (ids, want) = reference("tiny-gemma2");
    for threads in [1, 3] {
        let cpu = CpuContext::new(Some(threads));
        let mut model = decoder("tiny-gemma2", false);
        let vocab = model.config.vocab;
        let mut got = model.forward_logits(&cpu, &ids[..9], 0).unwrap();
        for (pos, &id) in ids.iter().enumerate().skip(9) {
            got.extend(model.forward_logits(&cpu, &[id], pos).unwrap());
        }
        assert_logits_close(&format!("{threads} threads"), &got, &want, vocab, 1e-3);
    }
}

/// The real default model's GGUF (Q4_1 weights, Q8_0 embeddings) generates greedily what
/// transformers generates, on the CPU backend through the engine (the GPU tests' prompts).
#[test]
fn smollm2_greedy_generation_matches_transformers_on_the_cpu() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        path.display()
    );
    let options = EngineOptions {
        context: Some(256),
        ..Default::default()
    };
    let mut engine = Engine::new_cpu(cpu(), load(&path), &options).unwrap();
    assert_eq!(engine.backend(), "cpu");
    assert_greedy_cases(
        &mut engine,
        cpu().into(),
        "smollm2/greedy.json",
        3,
        Some(32),
        None,
    );
}

/// Gemma 3 270M as llama.cpp's quantizer writes Q4_K_M (Q4_K, Q5_0, Q6_K and Q8_0 mixed within
/// layers, a tied 262,144-token Q8_0 embedding), fetched by scripts/fetch-gemma3.sh: greedy on
/// the CPU backend equals transformers on the same weights dequantized to f32, and llama.cpp
/// (which quantizes activations to 8 bits) wherever its top-2 margin was clear (as
/// tests/model_gemma3.rs on the GPU). Every prompt and token of the fixture.
#[test]
fn gemma3_greedy_generation_matches_transformers_on_the_cpu() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-gemma3.sh",
        path.display()
    );
    let options = EngineOptions {
        context: Some(128),
        ..Default::default()
    };
    let mut engine = Engine::new_cpu(cpu(), load(&path), &options).unwrap();
    assert_greedy_cases(
        &mut engine,
        cpu().into(),
        "gemma3/greedy.json",
        3,
        None,
        Some(0.5),
    );
}

/// A sentence-transformers folder loaded into host memory as an embedder.
fn cpu_embedder(dir: &Path, name: &str) -> Embedder {
    let mut model: LoadedModelFiles<HostTensor> =
        pollster::block_on(load_directory(cpu(), dir, 2, LoadOptions::default())).unwrap();
    Embedder::from_loaded_cpu(&mut model, name).unwrap()
}

#[test]
fn tiny_embedding_models_match_transformers_on_the_cpu() {
    for (name, kind) in TINY_EMBEDDERS {
        for gguf in [false, true] {
            let what = format!("{name}{}", if gguf { ".gguf" } else { "" });
            println!("{what}");
            let mut model = load(&models().join(&what));
            let embedder = Embedder::from_loaded_cpu(&mut model, name)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // The whole embedder: tokenizer (tokenizer.json, or the GGUF vocabulary) included.
            // The split over several passes is the same for both files: the folder's is checked.
            check_tiny_embedder(
                name,
                &embedder,
                cpu().into(),
                !gguf || kind == TinyGguf::WithVocab,
                !gguf,
            );
        }
    }
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers_on_the_cpu() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join(".complete").is_file(),
        "{} is missing: run scripts/fetch-minilm.sh",
        dir.display()
    );
    let embedder = cpu_embedder(&dir, "all-MiniLM-L6-v2");
    let reference = fixture_json("minilm/reference.json");
    let inputs: Vec<EmbedInput<'_>> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| match s.as_str().unwrap() {
            "" => EmbedInput::Ids(token_ids(&reference["input_ids"][i])),
            s => EmbedInput::Text(s.into()),
        })
        .collect();
    let embeddings = pollster::block_on(embedder.embed_inputs(cpu(), &inputs, true)).unwrap();
    for (i, e) in embeddings.iter().enumerate() {
        assert_eq!(
            e.tokens,
            reference["input_ids"][i].as_array().unwrap().len()
        );
        let distance = cosine_distance(&e.vector, &numbers(&reference["embeddings"][i]));
        println!(
            "sentence {i} ({} tokens): cosine distance {distance:.2e}",
            e.tokens
        );
        assert!(
            distance < 1e-5,
            "sentence {i}: cosine distance {distance:e}"
        );
    }
}

/// A source that fails the test if read once `limit` bytes have been served.
struct NoFurther {
    inner: pocketlm::load::MemorySource,
    served: usize,
    limit: usize,
}

impl pocketlm::load::ByteSource for NoFurther {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn total(&self) -> Option<u64> {
        self.inner.total()
    }
    async fn next_chunk(&mut self) -> pocketlm::Result<Option<Vec<u8>>> {
        assert!(
            self.served < self.limit,
            "the load read past the header ({} bytes)",
            self.served
        );
        let chunk = self.inner.next_chunk().await?;
        self.served += chunk.as_ref().map_or(0, Vec::len);
        Ok(chunk)
    }
}

/// An engine's load (`check_header`, as the CLI and the npm package load models) refuses a GGUF
/// model it cannot run from the header alone (its architecture, its tokenizer's kind), and a
/// safetensors file given without its folder: none of the weights is read (in a browser, none
/// downloaded). Without the check the same GGUF file loads, to be refused afterwards.
#[test]
fn a_model_that_cannot_run_is_refused_from_its_header() {
    use pocketlm::load::{load_model, MemorySource, ModelFile};
    let original = std::fs::read(models().join("tiny-llama.gguf")).unwrap();
    // A string value: its key, the string type (u32 8), the length (u64), then the text.
    let patched = |key: &str, from: &str, to: &str| {
        let mut bytes = original.clone();
        let at = bytes
            .windows(key.len())
            .position(|w| w == key.as_bytes())
            .unwrap()
            + key.len()
            + 12;
        assert_eq!(&bytes[at..at + from.len()], from.as_bytes());
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        bytes
    };
    let header = pocketlm::formats::GgufHeader::parse_file(&original, "tiny-llama.gguf").unwrap();
    // (The header is parsed from prefixes of at least 64 KiB, growing geometrically.)
    let header_reads = (2 * header.data_offset as usize).max(64 << 10) + 1024;
    assert!(header_reads * 2 < original.len());
    let load = |bytes: &[u8], limit, check: bool| {
        let opts = LoadOptions {
            check_header: check.then_some(&pocketlm::engine::check_header as _),
            ..Default::default()
        };
        let files = vec![ModelFile {
            source: NoFurther {
                inner: MemorySource::with_chunk("patched.gguf", bytes.to_vec(), 1024),
                served: 0,
                limit,
            },
            sha256: None,
        }];
        pollster::block_on(load_model(cpu(), files, None, 1, opts))
    };
    for (key, to, code) in [
        ("general.architecture", "llamb", "unsupported_architecture"),
        ("tokenizer.ggml.model", "llamb", "tokenizer"),
    ] {
        let bytes = patched(key, "llama", to);
        let e = load(&bytes, header_reads, true).err().expect("refused");
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains("llamb"), "{e}");
        let loaded = load(&bytes, usize::MAX, false).expect("loads without the check");
        let e = Engine::new_cpu(cpu(), loaded, &EngineOptions::default())
            .expect_err("refused after the load");
        assert_eq!(e.code(), code);
    }
    // A model it runs passes the check.
    load(&original, usize::MAX, true).unwrap();
    // A safetensors file alone cannot say what it is: refused from its header too.
    let lone = std::fs::read(models().join("tiny-llama/model.safetensors")).unwrap();
    assert!(header_reads * 2 < lone.len());
    let opts = LoadOptions {
        check_header: Some(&pocketlm::engine::check_lone_header),
        ..Default::default()
    };
    let files = vec![ModelFile {
        source: NoFurther {
            inner: MemorySource::with_chunk("model.safetensors", lone, 1024),
            served: 0,
            limit: header_reads,
        },
        sha256: None,
    }];
    let e = pollster::block_on(load_model(cpu(), files, None, 1, opts))
        .err()
        .expect("refused");
    assert_eq!(e.code(), "config", "{e}");
    assert!(e.to_string().contains("folder"), "{e}");

    // A folder: its config.json is checked before any weight file is opened (here one that is
    // no model at all, which a load would refuse otherwise).
    let dir = common::fixture_copy("tiny-llama", &["config.json"], "unrunnable-folder");
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"llamb\"")
        .replace("LlamaForCausalLM", "LlambForCausalLM");
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not a model at all").unwrap();
    let load_folder = |check: bool| {
        let opts = LoadOptions {
            check_companions: check.then_some(&pocketlm::engine::check_companions as _),
            ..Default::default()
        };
        pollster::block_on(load_directory(cpu(), &dir, 2, opts))
    };
    let e = load_folder(true).err().expect("refused");
    assert_eq!(e.code(), "unsupported_architecture", "{e}");
    let e = load_folder(false).err().expect("the weights are read");
    assert_ne!(e.code(), "unsupported_architecture", "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of the tiny model `name` (config.json and weights) in `dest` with the tiny tokenizer
/// and a tokenizer_config.json without a chat template: a folder an engine loads.
fn engine_folder(name: &str, dest: &str) -> PathBuf {
    let dir = common::fixture_copy(name, &["config.json", "model.safetensors"], dest);
    std::fs::write(dir.join("tokenizer.json"), common::tiny_tokenizer_json(0)).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<s>", "eos_token": "</s>"}"#,
    )
    .unwrap();
    dir
}

/// A multimodal Gemma 3 folder as an engine loads it: the sparse `text_config`, the image
/// encoder left unloaded, the chat template from the processor's `chat_template.json` (its
/// tokenizer_config.json has none), and greedy generation whose first token is the argmax of
/// the decoder's own logits for the chat prompt (the decoder matches transformers above).
#[test]
fn a_multimodal_folder_runs_as_an_engine_with_its_processor_template() {
    use pocketlm::engine::Flow;
    use pocketlm::text::chat::ChatMessage;
    let name = "tiny-gemma3-mm-sparse";
    let dir = engine_folder(name, "mm-engine");
    let processor = serde_json::json!({ "chat_template": common::tiny_template() });
    std::fs::write(dir.join("chat_template.json"), processor.to_string()).unwrap();
    let opts = LoadOptions {
        check_companions: Some(&pocketlm::engine::check_companions),
        ..Default::default()
    };
    let loaded = pollster::block_on(load_directory(cpu(), &dir, 2, opts)).unwrap();
    assert!(loaded.tensors.keys().all(|t| !t.contains("vision_tower")));
    let options = EngineOptions {
        context: Some(64),
        ..Default::default()
    };
    let mut engine = Engine::new_cpu(cpu(), loaded, &options).unwrap();
    assert_eq!(engine.template().unwrap().name(), "chat_template.json");
    let prompt = engine
        .chat_prompt(&[ChatMessage::user("w10 w11 w12")])
        .unwrap();
    assert_eq!(
        prompt,
        engine
            .text_prompt("<s> user w10 w11 w12 </s> <s> assistant")
            .unwrap()
    );
    let reply =
        pollster::block_on(
            engine.generate(cpu(), &prompt, &common::greedy(3), &mut |_| Flow::Continue),
        )
        .unwrap();
    assert_eq!(reply.tokens.len(), 3);
    let mut model = decoder(name, false);
    let logits = model.forward_logits(cpu(), &prompt, 0).unwrap();
    let last = &logits[logits.len() - model.config.vocab..];
    let argmax = (0..last.len())
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap() as u32;
    assert_eq!(reply.tokens[0], argmax);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A checkpoint's `model.safetensors.index.json` stands for its folder: its shards load with the
/// folder's config and tokenizer files, which a bare list of shards would lack.
#[test]
fn an_index_path_loads_its_folder() {
    let index = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/formats/sharded/model.safetensors.index.json");
    assert_eq!(
        pocketlm::load::local_folder(index.to_str().unwrap()),
        index.parent()
    );
    let loaded = load(&index);
    assert_eq!(loaded.files.files.len(), 2);
    assert_eq!(
        loaded.companions.keys().collect::<Vec<_>>(),
        ["config.json", "tokenizer_config.json"]
    );
    assert_eq!(
        pocketlm::load::local_folder("model.safetensors.index.json"),
        None
    );
}

/// The engine keeps a ring for sliding-window layers (window + 127 positions: steps are at most
/// 128 tokens): tiny-gemma3 (window 5) in a 300-position context holds 132 positions in its local
/// layers. Greedy generation well past the ring's length, a follow-up prompt that reuses the
/// cached prefix (whose window the ring still holds), and one whose window later positions
/// overwrote (the engine starts over from position 0) each give the tokens of a decoder that
/// keeps every position, run in the same steps. With `full_window_cache` the engine keeps every
/// position and reuses the prefix the ring could not.
#[test]
fn the_engine_reuses_a_prefix_only_while_the_ring_holds_its_window() {
    use pocketlm::engine::Flow;
    use pocketlm::model::{Readout, StepOutput};
    let name = "tiny-gemma3";
    let dir = engine_folder(name, "ring-engine");
    let context = 300;
    let options = EngineOptions {
        context: Some(context),
        ..Default::default()
    };
    let mut engine = Engine::new_cpu(cpu(), load(&dir), &options).unwrap();
    // The CPU backend has no graphs sized per step: as few steps as it can, each reading every
    // weight once for all its rows (WebGPU's steps: tests/gpu_engine.rs).
    assert_eq!(engine.prefill_steps(37), [37]);
    assert_eq!(engine.prefill_steps(300), [128, 128, 44]);
    let whole_decoder = || {
        let loaded = load(&dir);
        let config = ModelConfig::from_hf_json(&loaded.companions["config.json"], name).unwrap();
        CpuDecoder::new(config, loaded.tensors, context, DType::F16).unwrap()
    };
    let mut whole = whole_decoder();
    // As the engine runs `prompt` from `from` on the CPU backend: steps of 128 tokens and one
    // of the rest, then one token at a time, each picking the argmax of the last row.
    fn reference(whole: &mut CpuDecoder, prompt: &[u32], from: usize, n: usize) -> Vec<u32> {
        let argmax =
            |row: &[f32]| (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
        let mut pos = from;
        let mut out = Vec::new();
        let mut step = |tokens: &[u32], pos: usize, last: bool| {
            let readout = if last {
                Readout::Logits
            } else {
                Readout::Nothing
            };
            match whole.step(cpu(), tokens, pos, readout, None).unwrap() {
                StepOutput::Logits(row) => Some(argmax(&row)),
                _ => None,
            }
        };
        let mut token = 0;
        while pos < prompt.len() {
            let n = (prompt.len() - pos).min(128);
            let last = pos + n == prompt.len();
            if let Some(t) = step(&prompt[pos..pos + n], pos, last) {
                token = t;
            }
            pos += n;
        }
        out.push(token);
        while out.len() < n {
            token = step(&[token], pos, true).unwrap();
            out.push(token);
            pos += 1;
        }
        out
    }
    fn generate(engine: &mut Engine, prompt: &[u32], n: usize) -> pocketlm::engine::Generation {
        pollster::block_on(
            engine.generate(cpu(), prompt, &common::greedy(n), &mut |_| Flow::Continue),
        )
        .unwrap()
    }
    let first: Vec<u32> = (10..20).collect();
    let a = generate(&mut engine, &first, 180);
    assert_eq!(a.cached_tokens, 0);
    assert_eq!(
        a.tokens,
        reference(&mut whole, &first, 0, 180),
        "past the ring's 132 positions"
    );
    // The conversation goes on: the cached prefix (all but the last token, 188 positions) has
    // its window in the ring.
    let mut second = first.clone();
    second.extend(&a.tokens[..179]);
    second.extend([30, 31, 32]);
    let b = generate(&mut engine, &second, 20);
    assert_eq!(b.cached_tokens, 189);
    assert_eq!(
        b.tokens,
        reference(&mut whole, &second, 189, 20),
        "a reused prefix"
    );
    // Back to the first prompt with another ending: its prefix of 14 tokens was overwritten
    // (positions 132 and more share their rows), so the engine starts over.
    let mut third = first[..].to_vec();
    third.extend(&a.tokens[..4]);
    third.push(40);
    let c = generate(&mut engine, &third, 20);
    assert_eq!(
        c.cached_tokens, 0,
        "a prefix whose window the ring no longer holds"
    );
    assert_eq!(
        c.tokens,
        reference(&mut whole, &third, 0, 20),
        "started over"
    );
    // And what the ring saves: the local layers' cache stops growing at 132 positions.
    let (ring_kv, whole_kv) = (engine.gpu_bytes().1, whole.host_bytes().1);
    assert!(
        ring_kv < whole_kv,
        "{ring_kv} bytes of KV cache, not fewer than {whole_kv}"
    );
    // With `full_window_cache` every position is kept: the same prompts reuse their prefix of
    // 14 tokens, with the tokens of a decoder that went through the same steps.
    let full = EngineOptions {
        full_window_cache: true,
        ..options
    };
    let mut engine = Engine::new_cpu(cpu(), load(&dir), &full).unwrap();
    let mut whole = whole_decoder();
    let a = generate(&mut engine, &first, 180);
    assert_eq!(a.tokens, reference(&mut whole, &first, 0, 180));
    let c = generate(&mut engine, &third, 20);
    assert_eq!(c.cached_tokens, 14);
    assert_eq!(
        c.tokens,
        reference(&mut whole, &third, 14, 20),
        "a reused prefix"
    );
    assert!(engine.gpu_bytes().1 > ring_kv);
    std::fs::remove_dir_all(&dir).unwrap();
}
