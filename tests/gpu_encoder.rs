//! Sentence-embedding models (src/model/encoder.rs, src/model/decoder_embedder.rs) against
//! transformers: the tiny random models of scripts/make_encoder_fixtures.py, BERT (post-LN with
//! biases, exact GELU, position and token-type embeddings) and nomic-embed-text (post-LN, RoPE,
//! no biases, SwiGLU) with mean pooling, each from its sentence-transformers folder and from
//! llama.cpp's GGUF conversion of it, and a decoder-based embedder (Qwen3-Embedding's layout:
//! causal, last-token pooling): on inputs of 1 to 64 tokens, the last hidden states element by
//! element and the embeddings within cosine distance 1e-5; and sentences through the whole
//! embedder (tokenizer included).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{check_tiny_embedder, ctx, TinyGguf, TINY_EMBEDDERS};
use pocketlm::cpu::CpuContext;
use pocketlm::load::{load_directory, load_native, LoadOptions, LoadedModelFiles};
use pocketlm::model::encoder::EncoderNames;
use pocketlm::model::{Embedder, Encoder, EncoderConfig};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// The fixture `name`'s folder, or its GGUF conversion.
fn load_files(name: &str, gguf: bool) -> LoadedModelFiles {
    let loaded = if gguf {
        let path = models().join(format!("{name}.gguf"));
        pollster::block_on(load_native(
            ctx(),
            path.to_str().unwrap(),
            LoadOptions::default(),
        ))
    } else {
        pollster::block_on(load_directory(
            ctx(),
            &models().join(name),
            2,
            LoadOptions::default(),
        ))
    };
    loaded.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn embedder(name: &str, gguf: bool) -> Embedder {
    let mut model = load_files(name, gguf);
    pollster::block_on(Embedder::from_loaded(ctx(), &mut model, name))
        .unwrap_or_else(|e| panic!("{name} (GGUF: {gguf}): {e}"))
}

#[test]
fn tiny_embedding_models_match_transformers() {
    for (name, kind) in TINY_EMBEDDERS {
        for gguf in [false, true] {
            println!("{name} (GGUF: {gguf})");
            let embedder = embedder(name, gguf);
            // The split over several passes is the same for both files: the folder's is checked.
            check_tiny_embedder(
                name,
                &embedder,
                ctx().into(),
                !gguf || kind == TinyGguf::WithVocab,
                !gguf,
            );
            embedder.destroy();
        }
    }
}

#[test]
fn bad_inputs_and_missing_tensors_are_typed_errors() {
    for name in ["tiny-bert", "tiny-qwen3-embedding"] {
        let embedder = embedder(name, false);
        let encoder = &embedder.encoder;
        let too_long = vec![5u32; encoder.config().max_tokens + 1];
        for (ids, code) in [
            (vec![], "context_overflow"),
            (too_long, "context_overflow"),
            (vec![1, 128], "invalid_request"),
        ] {
            let e = pollster::block_on(encoder.embed_batch(ctx(), &[vec![1], ids])).unwrap_err();
            assert_eq!(e.code(), code, "{name}: {e}");
        }
        // The model still works.
        assert!(pollster::block_on(encoder.embed_batch(ctx(), &[vec![1, 2, 3]])).is_ok());
        embedder.destroy();
    }

    for (name, gguf, missing) in [
        ("tiny-bert", false, "encoder.layer.1.output.dense.bias"),
        ("tiny-nomic-bert", false, "encoder.layers.1.mlp.fc12.weight"),
        ("tiny-nomic-bert", true, "blk.0.attn_qkv.weight"),
    ] {
        let mut model = load_files(name, gguf);
        let (config, names) = match model.files.gguf_metadata() {
            Some(meta) => (EncoderConfig::from_gguf(meta).unwrap(), EncoderNames::Gguf),
            None => (
                EncoderConfig::from_companions(&model.companions, name).unwrap(),
                EncoderNames::HuggingFace,
            ),
        };
        model.tensors.remove(missing).unwrap();
        let e = pollster::block_on(Encoder::new(ctx(), config, names, &mut model.tensors))
            .err()
            .expect("a missing tensor is refused");
        assert_eq!(e.code(), "invalid_tensor");
        assert!(e.to_string().contains(missing), "{e}");
    }
    let mut model = load_files("tiny-qwen3-embedding", false);
    model.tensors.remove("layers.1.mlp.up_proj.weight").unwrap();
    let e = pollster::block_on(Embedder::from_loaded(ctx(), &mut model, "q"))
        .err()
        .expect("a missing tensor is refused");
    assert_eq!(e.code(), "invalid_tensor");
    assert!(e.to_string().contains("layers.1.mlp.up_proj.weight"), "{e}");
}

/// A pass of more than 256 tokens runs the decoder embedder's `max_tokens` graph (shorter passes
/// run a 256-token one): the tiny Qwen3 embedder given 320 positions (in a copy of its folder),
/// inputs of 300 and 7 tokens packed into one pass, against the CPU backend's hidden states of
/// the same inputs (that backend is checked against transformers in tests/cpu_model.rs).
#[test]
fn a_pass_past_the_usual_step_runs_the_long_graph() {
    let name = "tiny-qwen3-embedding";
    let files = [
        "model.safetensors",
        "modules.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "1_Pooling/config.json",
    ];
    let dir = common::fixture_copy(name, &files, "long-pass");
    let config = std::fs::read_to_string(models().join(name).join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["max_position_embeddings"] = 320.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut files =
        pollster::block_on(load_directory(ctx(), &dir, 2, LoadOptions::default())).unwrap();
    let gpu = pollster::block_on(Embedder::from_loaded(ctx(), &mut files, "long")).unwrap();
    let cpu = CpuContext::new(Some(2));
    let mut files =
        pollster::block_on(load_directory(&cpu, &dir, 2, LoadOptions::default())).unwrap();
    let on_cpu = Embedder::from_loaded_cpu(&mut files, "long").unwrap();
    let config = gpu.encoder.config();
    assert_eq!((config.max_tokens, gpu.encoder.pass_budget()), (320, 320));

    let long: Vec<u32> = (0..300).map(|i| (i * 37 + 11) % 128).collect();
    let short: Vec<u32> = vec![3, 9, 27, 81, 115, 5, 6];
    let inputs = [&long[..], &short[..]];
    let got = pollster::block_on(gpu.encoder.hidden_states(ctx(), &inputs)).unwrap();
    let want = pollster::block_on(on_cpu.encoder.hidden_states(&cpu, &inputs)).unwrap();
    assert_eq!(got.len(), 307 * config.hidden);
    assert_eq!(want.len(), got.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-3, "GPU and CPU hidden states differ by {worst}");
    gpu.destroy();
    let _ = std::fs::remove_dir_all(&dir);
}
