//! The CPU backend's wasm kernels (SIMD128, the build every browser runs) in a real browser:
//! the GGUF presets llama.cpp's quantizer writes, every block format mixed inside layers as it
//! mixes them, against the exact computation and llama.cpp (tests/common/gguf_presets.rs, the
//! checks tests/cpu_model.rs runs natively on the x86-64 kernels and tests/gpu_gguf_presets.rs
//! on the GPU): the wasm kernels read every format straight from its blocks, in code of their
//! own, which the kernels' self-check (tests/web_ops.rs) covers block by block and this covers
//! in whole models, prefill and decode.
#![cfg(target_arch = "wasm32")]

#[path = "common/gguf_presets.rs"]
mod gguf_presets;

use gguf_presets::{assert_every_k_quant_seen, check_preset, PresetReference};
use pocketlm::cpu::{CpuContext, CpuDecoder};
use pocketlm::load::{load_model_file, LoadOptions, MemorySource};
use pocketlm::model::ModelConfig;
use pocketlm::quant::DType;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// A preset's file and fixtures, built into the test.
macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            &include_bytes!(concat!("fixtures/gguf/", $name, ".gguf"))[..],
            include_str!(concat!("fixtures/gguf/", $name, ".json")),
            &include_bytes!(concat!("fixtures/gguf/", $name, ".logits.f32"))[..],
            &include_bytes!(concat!("fixtures/gguf/", $name, ".exact.f32"))[..],
        )
    };
}

#[wasm_bindgen_test]
async fn gguf_presets_match_llama_cpp_on_the_cpu_in_browser() {
    let cpu = CpuContext::new(Some(1));
    let mut types_seen = std::collections::HashSet::new();
    for (preset, gguf, json, llama_cpp, exact) in [
        preset!("q2_k"),
        preset!("q3_k_m"),
        preset!("q4_k_m"),
        preset!("q5_k_m"),
        preset!("q5_1"),
        preset!("q6_k"),
        preset!("q8_0"),
        preset!("iq4_nl"),
        preset!("iq4_xs"),
    ] {
        let mut source = MemorySource::new(format!("{preset}.gguf"), gguf.to_vec());
        let loaded = load_model_file(&cpu, &mut source, &mut LoadOptions::default())
            .await
            .unwrap();
        let files = loaded.header.into_model_files().unwrap();
        let config = ModelConfig::from_gguf(files.gguf_metadata().unwrap(), &files).unwrap();
        let vocab = config.vocab;
        let mut model = CpuDecoder::new(config, loaded.tensors, 64, DType::F32).unwrap();
        let reference = PresetReference::from_bytes(json, llama_cpp, exact);
        let forward = &mut |tokens: &[u32], at| model.forward_logits(&cpu, tokens, at).unwrap();
        types_seen.extend(check_preset(preset, &reference, &files, vocab, forward));
    }
    assert_every_k_quant_seen(&types_seen);
}
