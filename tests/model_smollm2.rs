//! The real default model against Hugging Face transformers, greedy, token for token. Slow on CPU
//! Vulkan drivers (about 1.9 s per token on lavapipe with 2 cores: 120 tokens take 4 minutes), so
//! it runs in `make test-model`, not in `make test`, until the decode kernels are faster there.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::ctx;
use pocketlm::gpu::DType;
use pocketlm::load::LoadOptions;
use pocketlm::model::{LlamaModel, ModelConfig};

/// The real default model (GGUF, Q4_1 weights and Q8_0 embeddings) generates greedily exactly
/// what transformers generates on the same weights dequantized to f32 (scripts/
/// make_smollm2_reference.py): 40 tokens on each of three prompts, prefill then decode.
#[test]
fn smollm2_greedy_generation_matches_transformers() {
    use pocketlm::formats::GgufHeader;
    use pocketlm::load::{load_model_file, FileHeader, FileSource};

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        path.display()
    );
    let mut source = FileSource::open(&path).unwrap();
    let loaded = pollster::block_on(load_model_file(
        ctx(),
        &mut source,
        &mut LoadOptions::default(),
    ))
    .unwrap();
    let FileHeader::Gguf(header) = loaded.header else {
        panic!("GGUF")
    };
    let meta = header.metadata.clone();
    let files = GgufHeader::into_model_files(header).unwrap();
    let config = ModelConfig::from_gguf(&meta, &files).unwrap();
    let model = LlamaModel::new(ctx(), config, loaded.tensors, 128, DType::F32).unwrap();
    let mut prefill = pollster::block_on(model.graph(ctx(), 16, 4)).unwrap();
    let mut decode = pollster::block_on(model.graph(ctx(), 1, 4)).unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/smollm2/greedy.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in reference["cases"].as_array().unwrap() {
        let prompt = ids(&case["input_ids"]);
        let want = ids(&case["generated_ids"]);
        assert!(want.len() >= 32);
        let got = pollster::block_on(model.generate_greedy(
            ctx(),
            &mut prefill,
            &mut decode,
            &prompt,
            want.len(),
        ))
        .unwrap();
        let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            first_diff.is_none() && got.len() == want.len(),
            "'{}': tokens differ from transformers at {first_diff:?}:\n got  {got:?}\n want {want:?}",
            case["prompt"]
        );
    }
}
