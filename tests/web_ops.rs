//! LayerNorm, GELU, residual addition and top-k/argmax in a real browser (headless Chromium's
//! WebGPU, compiled by Tint), run by `wasm-bindgen-test-runner`. Tolerances are those of
//! `pocketlm::reference::ops` (see tests/gpu_ops.rs); top-k must match the CPU exactly. And the
//! CPU backend's integer dot products as the browser's wasm engine runs them.
#![cfg(target_arch = "wasm32")]

use pocketlm::gpu::{GpuContext, ProfileRequest};
use pocketlm::reference::ops::check::{run, Logits, OpCase};
use pocketlm::reference::Rng;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn context() -> GpuContext {
    let ctx = GpuContext::new(ProfileRequest::Auto)
        .await
        .unwrap_or_else(|e| panic!("the browser must expose WebGPU: {e}"));
    web_sys::console::log_1(&format!("WebGPU in the browser:\n{}", ctx.report()).into());
    ctx
}

async fn assert_passes(ctx: &GpuContext, case: OpCase, seed: u64) {
    let o = run(ctx, case, seed)
        .await
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(o.passed(), "{o} (seed {seed:#x})");
}

#[wasm_bindgen_test]
async fn fixed_ops_match_reference_in_browser() {
    let ctx = context().await;
    let cases = [
        OpCase::LayerNorm {
            rows: 3,
            cols: 576,
            eps: 1e-5,
            bias: true,
            offset: 1000.0,
        },
        OpCase::LayerNorm {
            rows: 2,
            cols: 2049,
            eps: 1e-6,
            bias: false,
            offset: 2.0,
        },
        OpCase::Gelu {
            len: 5000,
            exact: false,
        },
        OpCase::Gelu {
            len: 5000,
            exact: true,
        },
        OpCase::Add {
            len: 4097,
            in_place: false,
        },
        OpCase::Add {
            len: 4097,
            in_place: true,
        },
        OpCase::TopK {
            rows: 1,
            vocab: 151_936,
            k: 40,
            logits: Logits::Special,
        },
        OpCase::TopK {
            rows: 1,
            vocab: 262_144,
            k: 64,
            logits: Logits::Ties,
        },
        OpCase::TopK {
            rows: 2,
            vocab: 63,
            k: 63,
            logits: Logits::Flat,
        },
        OpCase::TopK {
            rows: 1,
            vocab: 1,
            k: 1,
            logits: Logits::Special,
        },
        OpCase::Argmax {
            rows: 2,
            vocab: 49_152,
            logits: Logits::Special,
        },
        OpCase::LogitStats {
            rows: 2,
            vocab: 49_152,
            logits: Logits::Special,
        },
        OpCase::LogitStats {
            rows: 1,
            vocab: 262_144,
            logits: Logits::Uniform,
        },
        OpCase::Penalize {
            rows: 2,
            vocab: 49_152,
            window: 64,
        },
        OpCase::BiasAndMask {
            rows: 2,
            vocab: 49_152,
            biased: 300,
        },
        OpCase::Gumbel {
            draws: 3000,
            vocab: 12,
            temperature: 0.8,
        },
        OpCase::Nucleus {
            vocab: 49_152,
            spread: 2.0,
            ties: false,
            top_k: 1000,
            top_p: 0.9,
            min_p: 0.01,
            temperature: 1.0,
            draws: 2,
        },
        OpCase::Nucleus {
            vocab: 40,
            spread: 2.0,
            ties: true,
            top_k: 0,
            top_p: 0.8,
            min_p: 0.0,
            temperature: 0.7,
            draws: 1000,
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        assert_passes(&ctx, case, i as u64).await;
    }
}

#[wasm_bindgen_test]
async fn random_ops_match_reference_in_browser() {
    let ctx = context().await;
    let mut rng = Rng::new(0x0B5_5EED);
    let kinds = [
        Logits::Uniform,
        Logits::Ties,
        Logits::Special,
        Logits::Ascending,
        Logits::Flat,
    ];
    for i in 0..20u64 {
        let case = match i % 5 {
            0 => OpCase::LayerNorm {
                rows: rng.range(1, 8),
                cols: rng.range(1, 2500),
                eps: 1e-5,
                bias: i % 2 == 0,
                offset: rng.uniform(0.0, 10.0),
            },
            1 => OpCase::Gelu {
                len: rng.range(1, 9000),
                exact: i % 2 == 1,
            },
            2 => OpCase::Add {
                len: rng.range(1, 9000),
                in_place: i % 2 == 0,
            },
            3 => {
                let vocab = rng.range(1, 20_000);
                OpCase::TopK {
                    rows: rng.range(1, 3),
                    vocab,
                    k: rng.range(1, 64).min(vocab),
                    logits: kinds[rng.range(0, 4)],
                }
            }
            _ => OpCase::Argmax {
                rows: rng.range(1, 3),
                vocab: rng.range(1, 20_000),
                logits: kinds[rng.range(0, 4)],
            },
        };
        assert_passes(&ctx, case, i).await;
    }
}

/// The CPU backend's integer dot products compiled to wasm SIMD128 (the fused Q4_0/Q4_1/Q8_0
/// kernels and the unpacked path of every format), against dequantized f64 sums and against
/// each other, in the browser's wasm engine.
#[wasm_bindgen_test]
fn cpu_integer_dot_products_in_browser() {
    pocketlm_cpu::idot::check().unwrap_or_else(|e| panic!("{e}"));
}
