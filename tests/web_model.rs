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

/// The whole prompt as one step on the browser's adapter's kernels; then, on the kernels made
/// for GPUs, all but the last token as one step and the last as a decode step, whose q/k norms
/// run in the KV-cache write's dispatch and whose post-norms the next projection adds as it
/// loads its input (compiled by the browser's WGSL compiler here).
#[wasm_bindgen_test]
async fn tiny_models_match_transformers_in_browser() {
    let new_ctx = || async {
        GpuContext::new(ProfileRequest::Auto)
            .await
            .unwrap_or_else(|e| panic!("the browser must expose WebGPU: {e}"))
    };
    let auto = new_ctx().await;
    let gpu_family = new_ctx().await.with_cpu_kernels(false);
    for tiny in [
        tiny!("tiny-gemma2"),
        tiny!("tiny-gemma3"),
        tiny!("tiny-phi3"),
    ] {
        check_tiny(&auto, &tiny, false).await;
        check_tiny(&gpu_family, &tiny, true).await;
    }
}

async fn check_tiny(ctx: &GpuContext, tiny: &Tiny, last_decoded: bool) {
    let mut source = MemorySource::new(format!("{}.gguf", tiny.name), tiny.gguf.to_vec());
    let loaded = load_model_file(ctx, &mut source, &mut LoadOptions::default())
        .await
        .unwrap();
    let files = loaded.header.into_model_files().unwrap();
    let config = ModelConfig::from_gguf(files.gguf_metadata().unwrap(), &files).unwrap();
    let vocab = config.vocab;
    let model = Decoder::new(ctx, config, loaded.tensors, 64, DType::F32)
        .await
        .unwrap();
    let reference: serde_json::Value = serde_json::from_str(tiny.reference).unwrap();
    let ids: Vec<u32> = reference["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let mut want: Vec<f32> = tiny
        .logits
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let got = if last_decoded {
        let n = ids.len() - 1;
        let mut graph = model.graph(ctx, n, 8).await.unwrap();
        model.forward(ctx, &mut graph, &ids[..n], 0).await.unwrap();
        let mut step = model.graph(ctx, 1, 8).await.unwrap();
        want.drain(..n * vocab);
        model.forward(ctx, &mut step, &ids[n..], n).await.unwrap()
    } else {
        let mut graph = model.graph(ctx, ids.len(), 8).await.unwrap();
        model.forward(ctx, &mut graph, &ids, 0).await.unwrap()
    };
    assert_eq!(got.len(), want.len());
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let e = (g - w).abs();
        if e > worst || e.is_nan() {
            (worst, at) = (e, i);
        }
    }
    let label = format!("{}, last token decoded {last_decoded}", tiny.name);
    assert!(
        worst <= 1e-3,
        "{label}: logit {} of token {} is {} vs transformers {}",
        at % vocab,
        at / vocab,
        got[at],
        want[at]
    );
    let per_layer = model.dispatches_per_layer();
    web_sys::console::log_1(
        &format!("{label}: max |logit error| {worst:e} in the browser, {per_layer:?} dispatches")
            .into(),
    );
    model.destroy();
}
