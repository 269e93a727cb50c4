//! RoPE, the KV cache and attention in a real browser (headless Chromium's WebGPU, the baseline
//! profile), run by `wasm-bindgen-test-runner`. The cases and bounds are those of
//! tests/gpu_attention.rs (`pocketlm::kernels::attention::check`, `pocketlm::reference::attention`).
#![cfg(target_arch = "wasm32")]

use pocketlm::gpu::{DType, GpuContext, ProfileRequest};
use pocketlm::kernels::attention::check::{run_attention, run_rope, AttentionCase, RopeCase};
use pocketlm::kernels::{
    AttentionOptions, KvCache, Llama3Scaling, RopeConfig, RopeLayout, RopeTable, StepState,
};
use pocketlm::reference::Rng;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn context() -> GpuContext {
    GpuContext::new(ProfileRequest::Auto)
        .await
        .unwrap_or_else(|e| panic!("the browser must expose WebGPU: {e}"))
}

fn log(s: &str) {
    web_sys::console::log_1(&s.into());
}

#[wasm_bindgen_test]
async fn rope_matches_reference_in_browser() {
    let ctx = context().await;
    let llama = Llama3Scaling {
        factor: 32.0,
        ..Llama3Scaling::LLAMA_3_1
    };
    let full = RopeConfig::new(64, 10_000.0, RopeLayout::NeoX);
    let cases = [
        RopeCase {
            tokens: 5,
            heads: 3,
            k_heads: 1,
            offset: 8190,
            config: full,
        },
        RopeCase {
            tokens: 17,
            heads: 2,
            k_heads: 0,
            offset: 3,
            config: RopeConfig {
                layout: RopeLayout::Interleaved,
                rotary_dim: 32,
                ..full
            },
        },
        RopeCase {
            tokens: 1,
            heads: 4,
            k_heads: 2,
            offset: 20_000,
            config: RopeConfig {
                theta: 500_000.0,
                llama3: Some(llama),
                ..full
            },
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        for o in run_rope(&ctx, case, i as u64).await.unwrap() {
            log(&o.to_string());
            assert!(o.passed(), "{o}");
        }
    }
}

#[wasm_bindgen_test]
async fn attention_matches_reference_in_browser() {
    let ctx = context().await;
    let mut cases = vec![
        // Decode at the end of a full 8192 context: many chunks and the combine.
        AttentionCase::decode(8, 2, 64, 8192),
        // A prefill in one chunk, an odd head_dim with an f16 cache (packing without shader-f16),
        // a sliding window and soft-capping (Gemma).
        AttentionCase {
            tokens: 40,
            spare: 1,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 33,
            offset: 9,
            max_ctx: 60,
            cache: Some(DType::F16),
            scale: None,
            chunk_len: None,
            window: Some(12),
            softcap: Some(20.0),
            bidirectional: false,
            packed: 0,
        },
        // An encoder's batch: 4 inputs packed, across chunk edges, with a symmetric window
        // (EmbeddingGemma's local layers).
        AttentionCase {
            tokens: 30,
            spare: 0,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 32,
            offset: 0,
            max_ctx: 30,
            cache: Some(DType::F32),
            scale: None,
            chunk_len: Some(8),
            window: Some(5),
            softcap: None,
            bidirectional: true,
            packed: 4,
        },
    ];
    let mut rng = Rng::new(0xA77E);
    for i in 0..4 {
        let n_kv = rng.range(1, 3);
        let tokens = rng.range(1, 24);
        let offset = rng.range(0, 150);
        cases.push(AttentionCase {
            tokens,
            spare: rng.range(0, 1),
            n_heads: n_kv * rng.range(1, 8),
            n_kv_heads: n_kv,
            head_dim: [6, 32, 64, 80, 128][rng.range(0, 4)],
            offset,
            max_ctx: offset + tokens + 1 + rng.range(0, 80),
            cache: [None, Some(DType::F16), Some(DType::F32)][rng.range(0, 2)],
            scale: None,
            chunk_len: [None, Some(rng.range(1, 50))][rng.range(0, 1)],
            window: None,
            softcap: None,
            bidirectional: i % 2 == 1,
            packed: 0,
        });
    }
    // The fixed cases also on the kernels made for GPUs (their plans, as Tint compiles them for
    // a hardware adapter), which this browser's CPU adapter would not otherwise run.
    let gpu_family = context().await.with_cpu_kernels(false);
    let runs = cases
        .iter()
        .map(|c| (&ctx, c))
        .chain(cases[..3].iter().map(|c| (&gpu_family, c)));
    for (i, (ctx, case)) in runs.enumerate() {
        for o in run_attention(ctx, case, 0xB000 + i as u64).await.unwrap() {
            log(&o.to_string());
            assert!(o.passed(), "cpu kernels {}: {o}", ctx.capabilities().cpu);
        }
    }
}

#[wasm_bindgen_test]
async fn bad_input_is_a_typed_error_in_browser() {
    let ctx = context().await;
    let mut step = StepState::new(&ctx, 2, 16).unwrap();
    let e = step.set(&ctx, 15, 2).unwrap_err();
    assert_eq!(e.code(), "shape_mismatch");
    assert!(e.to_string().contains("past the context"), "{e}");

    let cache = KvCache::new(&ctx, 1, 16, 2, 8).unwrap();
    let q = ctx.zeros("q3", &[2, 3, 8], DType::F32).unwrap();
    let out = ctx.zeros("out3", &[2, 3, 8], DType::F32).unwrap();
    let e = pocketlm::kernels::attention(
        &ctx,
        &step,
        &q,
        &cache,
        0,
        &out,
        &AttentionOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "shape_mismatch");
    assert!(e.to_string().contains("q3"), "{e}");

    let e = KvCache::new(&ctx, 1, 1 << 22, 8, 128).unwrap_err();
    assert_eq!(e.code(), "too_large");
    let e = RopeTable::new(
        &ctx,
        RopeConfig {
            rotary_dim: 9,
            ..RopeConfig::new(8, 10_000.0, RopeLayout::NeoX)
        },
        16,
    )
    .unwrap_err();
    assert_eq!(e.code(), "shape_mismatch");
    ctx.check_health().unwrap();
}
