//! The generic decoder in a real browser (headless Chromium's WebGPU, the baseline profile's
//! device): tiny models of the architectures whose blocks add kernels, as llama.cpp's converter
//! writes them (scripts/convert_fixtures_to_gguf.py), against transformers' logits. Gemma 2:
//! attention and final-logit soft-capping, GeGLU, sandwich norms, a sliding window; Gemma 3: q/k
//! norm, local RoPE, linear scaling; Phi-3: LongRoPE, partial rotary, fused projections.
#![cfg(target_arch = "wasm32")]

use pocketlm::gpu::{DType, GpuContext, ProfileRequest};
use pocketlm::load::{load_model_file, LoadOptions, MemorySource};
use pocketlm::model::{Decoder, ModelConfig};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

struct Tiny {
    name: &'static str,
    gguf: &'static [u8],
    logits: &'static [u8],
    reference: &'static str,
}

macro_rules! tiny {
    ($name:literal) => {
        Tiny {
            name: $name,
            gguf: include_bytes!(concat!("fixtures/models/", $name, ".gguf")),
            logits: include_bytes!(concat!("fixtures/models/", $name, "/logits.f32")),
            reference: include_str!(concat!("fixtures/models/", $name, "/reference.json")),
        }
    };
}

#[wasm_bindgen_test]
async fn tiny_models_match_transformers_in_browser() {
    let ctx = GpuContext::new(ProfileRequest::Auto)
        .await
        .unwrap_or_else(|e| panic!("the browser must expose WebGPU: {e}"));
    for tiny in [
        tiny!("tiny-gemma2"),
        tiny!("tiny-gemma3"),
        tiny!("tiny-phi3"),
    ] {
        let mut source = MemorySource::new(format!("{}.gguf", tiny.name), tiny.gguf.to_vec());
        let loaded = load_model_file(&ctx, &mut source, &mut LoadOptions::default())
            .await
            .unwrap();
        let files = loaded.header.into_model_files().unwrap();
        let config = ModelConfig::from_gguf(files.gguf_metadata().unwrap(), &files).unwrap();
        let vocab = config.vocab;
        let model = Decoder::new(&ctx, config, loaded.tensors, 64, DType::F32)
            .await
            .unwrap();
        let reference: serde_json::Value = serde_json::from_str(tiny.reference).unwrap();
        let ids: Vec<u32> = reference["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = tiny
            .logits
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut graph = model.graph(&ctx, ids.len(), 8).await.unwrap();
        let got = model.forward(&ctx, &mut graph, &ids, 0).await.unwrap();
        assert_eq!(got.len(), want.len());
        let (mut worst, mut at) = (0f32, 0);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = (g - w).abs();
            if e > worst || e.is_nan() {
                (worst, at) = (e, i);
            }
        }
        assert!(
            worst <= 1e-3,
            "{}: logit {} of token {} is {} vs transformers {}",
            tiny.name,
            at % vocab,
            at / vocab,
            got[at],
            want[at]
        );
        web_sys::console::log_1(
            &format!("{}: max |logit error| {worst:e} in the browser", tiny.name).into(),
        );
        model.destroy();
    }
}
