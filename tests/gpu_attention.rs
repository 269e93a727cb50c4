//! RoPE, the KV cache and attention on a real WebGPU implementation, against the f64 references
//! of `pocketlm::reference::attention` (see there for each bound's derivation):
//! - RoPE: |gpu − exact| ≤ γ₃·(|a·cos| + |b·sin|) per rotated element; other elements exact.
//! - RoPE fused with the cache write: q as RoPE; the cache's k the rotated row (RoPE's bound)
//!   stored as below (`reference::kv_store`), its v as below.
//! - KV cache: f32 caches hold the rows exactly; f16 caches within one f16 ULP (either rounding
//!   direction, as WGSL allows) of the value saturated to ±65504, or 2⁻¹⁴ below f16's normal range.
//! - Attention: compared with the reference computed on the cache *as stored*, the bound covers
//!   f32 scores (γ_{hd+2}), `exp` accuracy, online-softmax rescaling and the chunk combine; with an
//!   f16 cache it is also compared with the reference on the f32 rows, the bound then including
//!   the f16 rounding of every k and v.
//!
//! Runs like tests/gpu_kernels.rs: `POCKETLM_TEST_PROFILE` and `POCKETLM_TEST_ADAPTER` pick the
//! device; both profiles run every test.

#![cfg(not(target_arch = "wasm32"))]

use pocketlm::gpu::DType;
use pocketlm::kernels::attention::check::{
    run_attention, run_rope, run_rope_kv_write, AttentionCase, Outcome, RopeCase, RopeKvCase,
};
use pocketlm::kernels::{
    self, AttentionOptions, KvCache, Llama3Scaling, RopeConfig, RopeLayout, RopeTable, StepState,
};
use pocketlm::reference::attention::{self as reference, AttentionShape, AttentionSplit, KvError};
use pocketlm::reference::Rng;
use proptest::prelude::*;

mod common;
use common::{ctx, expect_err, family, gpu_kernels_ctx};

fn assert_all(outcomes: pocketlm::Result<Vec<Outcome>>, what: &str, seed: u64) {
    let outcomes = outcomes.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!outcomes.is_empty());
    for o in &outcomes {
        assert!(o.passed(), "{o} (seed {seed:#x})");
    }
}

fn rope_case(case: RopeCase, seed: u64) {
    assert_all(
        pollster::block_on(run_rope(ctx(), &case, seed)),
        &case.to_string(),
        seed,
    );
}

fn rope_kv_case(case: RopeKvCase, seed: u64) {
    assert_all(
        pollster::block_on(run_rope_kv_write(ctx(), &case, seed)),
        &case.to_string(),
        seed,
    );
}

fn attention_case(case: AttentionCase, seed: u64) {
    attention_case_on(ctx(), case, seed);
}

fn attention_case_on(ctx: &pocketlm::gpu::GpuContext, case: AttentionCase, seed: u64) {
    assert_all(
        pollster::block_on(run_attention(ctx, &case, seed)),
        &case.to_string(),
        seed,
    );
}

fn layout() -> impl Strategy<Value = RopeLayout> {
    prop_oneof![Just(RopeLayout::Interleaved), Just(RopeLayout::NeoX)]
}

/// Head sizes of real models and odd ones (an odd head_dim pads f16 cache rows).
fn head_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(32usize),
        Just(64),
        Just(80),
        Just(128),
        Just(6),
        Just(5),
        Just(33),
        1usize..=12
    ]
}

fn cache_dtype() -> impl Strategy<Value = Option<DType>> {
    prop_oneof![Just(None), Just(Some(DType::F16)), Just(Some(DType::F32))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rope_matches_reference(tokens in 1usize..=40, heads in 1usize..=8, k_heads in 0usize..=3,
                              hd in head_dim(), rotary_frac in 0.0f64..=1.0, full in any::<bool>(),
                              layout in layout(), theta in prop_oneof![Just(10_000.0f32), Just(500_000.0f32), Just(1e6f32)],
                              llama3 in any::<bool>(), offset in 0usize..=300, seed in any::<u64>()) {
        prop_assume!(hd >= 2);
        let half = hd / 2;
        let rotary_dim = if full { 2 * half } else { 2 * (1 + ((half - 1) as f64 * rotary_frac) as usize) };
        let config = RopeConfig {
            head_dim: hd,
            rotary_dim,
            theta,
            layout,
            llama3: llama3.then_some(Llama3Scaling { factor: 32.0, ..Llama3Scaling::LLAMA_3_1 }),
        };
        rope_case(RopeCase { tokens, heads, k_heads, offset, config }, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// RoPE + KV-cache write in one dispatch: both layouts, partial rotation, odd head sizes,
    /// f16 and f32 caches, with and without the per-head q/k norms before.
    #[test]
    fn rope_kv_write_matches_reference(tokens in 1usize..=24, heads in 1usize..=8, k_heads in 1usize..=3,
                                       hd in head_dim(), rotary_frac in 0.0f64..=1.0, full in any::<bool>(),
                                       layout in layout(), theta in prop_oneof![Just(10_000.0f32), Just(1e6f32)],
                                       llama3 in any::<bool>(), offset in 0usize..=300,
                                       f16 in any::<bool>(), norm in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(hd >= 2);
        let half = hd / 2;
        let rotary_dim = if full { 2 * half } else { 2 * (1 + ((half - 1) as f64 * rotary_frac) as usize) };
        let config = RopeConfig {
            head_dim: hd,
            rotary_dim,
            theta,
            layout,
            llama3: llama3.then_some(Llama3Scaling { factor: 32.0, ..Llama3Scaling::LLAMA_3_1 }),
        };
        let cache = if f16 { DType::F16 } else { DType::F32 };
        rope_kv_case(RopeKvCase { tokens, heads, k_heads, offset, config, cache, norm }, seed);
    }
}

/// The fused RoPE + cache write on fixed shapes: SmolLM2's (9/3 heads of 64), partial rotation,
/// an odd head_dim with an f16 cache (a padded half), a prefill step and a far position.
#[test]
fn rope_kv_write_layouts_partial_and_caches() {
    for (i, layout) in [RopeLayout::Interleaved, RopeLayout::NeoX]
        .into_iter()
        .enumerate()
    {
        let full = RopeConfig::new(64, 100_000.0, layout);
        let configs = [
            full,
            RopeConfig {
                rotary_dim: 16,
                ..full
            },
            RopeConfig {
                head_dim: 33,
                rotary_dim: 20,
                ..full
            },
        ];
        for (j, config) in configs.into_iter().enumerate() {
            for cache in [DType::F16, DType::F32] {
                for (tokens, offset) in [(1, 0), (1, 511), (17, 3), (2, 8190)] {
                    rope_kv_case(
                        RopeKvCase {
                            tokens,
                            heads: 9,
                            k_heads: 3,
                            offset,
                            config,
                            cache,
                            norm: false,
                        },
                        (i * 100 + j * 10) as u64 + offset as u64,
                    );
                }
            }
        }
    }
}

/// The per-head q/k norms, RoPE and the cache write in one dispatch, on the shapes of the models
/// that have them: Gemma 3 270M (4 heads and 1 kv head of 256) and Qwen3 0.6B (16/8 of 128),
/// NeoX pairs, and partial interleaved rotation of an odd head; a decode step, a far position
/// and a prefill step.
#[test]
fn qk_norm_rope_kv_write_model_shapes() {
    let neox = |hd| RopeConfig::new(hd, 1_000_000.0, RopeLayout::NeoX);
    let odd = RopeConfig {
        head_dim: 33,
        rotary_dim: 20,
        ..RopeConfig::new(64, 10_000.0, RopeLayout::Interleaved)
    };
    for (i, (heads, k_heads, config)) in [(4, 1, neox(256)), (16, 8, neox(128)), (3, 2, odd)]
        .into_iter()
        .enumerate()
    {
        for cache in [DType::F16, DType::F32] {
            for (tokens, offset) in [(1, 0), (1, 511), (17, 3)] {
                rope_kv_case(
                    RopeKvCase {
                        tokens,
                        heads,
                        k_heads,
                        offset,
                        config,
                        cache,
                        norm: true,
                    },
                    (i * 10) as u64 + offset as u64,
                );
            }
        }
    }
}

proptest! {
    // Each new shape compiles new attention pipelines (about a second each on SwiftShader).
    #![proptest_config(ProptestConfig { cases: common::cases(16), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_reference(tokens in 1usize..=40, spare in 0usize..=1, n_kv in 1usize..=3,
                                   ratio in 1usize..=8, hd in head_dim(), offset in 0usize..=200,
                                   extra in 0usize..=100, cache in cache_dtype(),
                                   chunk_len in prop_oneof![Just(None), (1usize..=100).prop_map(Some)],
                                   window in prop_oneof![2 => Just(None), 1 => (1usize..=64).prop_map(Some)],
                                   softcap in prop_oneof![2 => Just(None), 1 => (1.0f32..=50.0).prop_map(Some)],
                                   bidirectional in prop_oneof![3 => Just(false), 1 => Just(true)],
                                   inputs in 0usize..=5, gpu_family in any::<bool>(),
                                   seed in any::<u64>()) {
        // Packed inputs (an embedder's batch: bidirectional, or causal for a decoder's) start
        // at position 0.
        let packed = if bidirectional || inputs % 2 == 1 { inputs.min(tokens) } else { 0 };
        let offset = if packed > 0 { 0 } else { offset };
        attention_case_on(family(gpu_family), AttentionCase {
            tokens,
            spare,
            n_heads: n_kv * ratio,
            n_kv_heads: n_kv,
            head_dim: hd,
            offset,
            max_ctx: offset + tokens + spare + extra,
            cache,
            scale: None,
            chunk_len,
            window,
            softcap,
            bidirectional,
            packed,
        }, seed);
    }
}

/// A decode step at the end of a full 8192-position context, split over many chunks.
#[test]
fn decode_at_context_8192() {
    for (i, (nh, nkv, hd)) in [(8, 2, 64), (9, 3, 64)].into_iter().enumerate() {
        attention_case(AttentionCase::decode(nh, nkv, hd, 8192), 0x8192 + i as u64);
    }
}

/// Larger head_dim (Gemma's 256, tiny tiles within 16 KiB of workgroup memory), more than eight
/// query heads per kv head (split into head blocks), multi-query attention, a given scale, and
/// long prefills in one chunk and in many; the steps of several tokens on both kernel families.
#[test]
fn attention_edge_shapes() {
    let base = AttentionCase {
        tokens: 3,
        spare: 0,
        n_heads: 4,
        n_kv_heads: 1,
        head_dim: 256,
        offset: 70,
        max_ctx: 100,
        cache: None,
        scale: None,
        chunk_len: None,
        window: None,
        softcap: None,
        bidirectional: false,
        packed: 0,
    };
    let cases = [
        base,
        AttentionCase {
            n_heads: 12,
            n_kv_heads: 1,
            head_dim: 64,
            ..base
        },
        AttentionCase {
            n_heads: 32,
            n_kv_heads: 2,
            head_dim: 16,
            tokens: 2,
            ..base
        },
        AttentionCase {
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 8,
            scale: Some(0.9),
            chunk_len: Some(7),
            ..base
        },
        AttentionCase {
            tokens: 130,
            offset: 0,
            max_ctx: 300,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 64,
            ..base
        },
        AttentionCase {
            tokens: 130,
            offset: 20,
            max_ctx: 300,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 32,
            chunk_len: Some(32),
            ..base
        },
        // Gemma-style local layers: a sliding window shorter than the history, over one chunk
        // and over many (chunks wholly outside the window contribute nothing), with capping.
        AttentionCase {
            tokens: 40,
            offset: 50,
            max_ctx: 120,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 32,
            window: Some(16),
            ..base
        },
        AttentionCase {
            tokens: 5,
            offset: 90,
            max_ctx: 120,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            window: Some(8),
            chunk_len: Some(16),
            softcap: Some(2.0),
            ..base
        },
        // Encoders: every token sees the whole step, in one chunk and in many, and after
        // earlier positions.
        AttentionCase {
            tokens: 70,
            offset: 0,
            max_ctx: 70,
            n_heads: 12,
            n_kv_heads: 12,
            head_dim: 32,
            bidirectional: true,
            ..base
        },
        AttentionCase {
            tokens: 45,
            offset: 0,
            max_ctx: 128,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 64,
            chunk_len: Some(16),
            bidirectional: true,
            ..base
        },
        AttentionCase {
            tokens: 9,
            offset: 30,
            max_ctx: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            chunk_len: Some(8),
            bidirectional: true,
            ..base
        },
        // An encoder's batch: inputs packed one after another, each token seeing its own input
        // only, in one chunk, in many chunks (inputs across chunk edges), and one per token.
        AttentionCase {
            tokens: 70,
            offset: 0,
            max_ctx: 80,
            n_heads: 12,
            n_kv_heads: 12,
            head_dim: 32,
            bidirectional: true,
            packed: 5,
            ..base
        },
        AttentionCase {
            tokens: 150,
            spare: 1,
            offset: 0,
            max_ctx: 151,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 64,
            chunk_len: Some(16),
            bidirectional: true,
            packed: 9,
            ..base
        },
        AttentionCase {
            tokens: 6,
            offset: 0,
            max_ctx: 6,
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 16,
            chunk_len: Some(2),
            bidirectional: true,
            packed: 6,
            ..base
        },
        // A decoder-based embedder's batch: causal within each packed input, with and without
        // a window, over many chunks.
        AttentionCase {
            tokens: 60,
            offset: 0,
            max_ctx: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            chunk_len: Some(8),
            packed: 5,
            ..base
        },
        AttentionCase {
            tokens: 60,
            offset: 0,
            max_ctx: 64,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            window: Some(6),
            chunk_len: Some(8),
            packed: 3,
            ..base
        },
        // EmbeddingGemma's local layers: a symmetric window (|q - k| < 9) over one chunk and
        // over many (chunks wholly outside every row's window skipped, on both sides), and
        // within packed inputs.
        AttentionCase {
            tokens: 40,
            offset: 0,
            max_ctx: 40,
            n_heads: 3,
            n_kv_heads: 1,
            head_dim: 64,
            window: Some(9),
            bidirectional: true,
            ..base
        },
        AttentionCase {
            tokens: 100,
            offset: 0,
            max_ctx: 128,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 32,
            window: Some(9),
            chunk_len: Some(8),
            bidirectional: true,
            ..base
        },
        AttentionCase {
            tokens: 90,
            offset: 0,
            max_ctx: 96,
            n_heads: 4,
            n_kv_heads: 4,
            head_dim: 32,
            window: Some(7),
            chunk_len: Some(8),
            bidirectional: true,
            packed: 4,
            ..base
        },
        // Rows of 6 elements: not whole vec4s.
        AttentionCase {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 6,
            ..base
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        attention_case(c, 0xED6E + i as u64);
        // The GPU kernels' plans differ most for steps of many tokens (up to 32 query rows per
        // workgroup, against 8 on CPU adapters).
        if c.tokens > 4 {
            attention_case_on(gpu_kernels_ctx(), c, 0xED6E + i as u64);
        }
    }
    // CPU adapters run rows of whole vec4s through the row kernel (attention_rows.wgsl), the
    // others (head_dim 6) through the tiled one, which GPUs run for every shape.
    let entries: Vec<&str> = ctx()
        .compiled_sources()
        .into_iter()
        .filter(|(name, ..)| *name == "attention")
        .map(|(_, entry, _)| entry)
        .collect();
    let cpu = ctx().capabilities().cpu;
    assert!(
        entries.contains(&"attention") && entries.contains(&"attention_rows") == cpu,
        "cpu adapter {cpu}: {entries:?}"
    );
}

/// Both layouts, partial rotation, Llama-3 scaling, and positions far into a long context.
#[test]
fn rope_layouts_partial_and_scaled() {
    let llama = Llama3Scaling {
        factor: 32.0,
        ..Llama3Scaling::LLAMA_3_1
    };
    for (i, layout) in [RopeLayout::Interleaved, RopeLayout::NeoX]
        .into_iter()
        .enumerate()
    {
        let full = RopeConfig::new(64, 10_000.0, layout);
        let configs = [
            full,
            RopeConfig {
                rotary_dim: 32,
                ..full
            },
            RopeConfig {
                head_dim: 80,
                rotary_dim: 20,
                ..full
            },
            RopeConfig {
                theta: 500_000.0,
                llama3: Some(llama),
                ..full
            },
        ];
        for (j, config) in configs.into_iter().enumerate() {
            for (tokens, offset) in [(1, 0), (17, 3), (2, 8190), (1, 20_000)] {
                rope_case(
                    RopeCase {
                        tokens,
                        heads: 3,
                        k_heads: j % 2,
                        offset,
                        config,
                    },
                    (i * 100 + j * 10) as u64 + offset as u64,
                );
            }
        }
    }
}

/// The angles really are HF's: at position 1 the rotation of pair i is by inv_freq[i], and with
/// Llama-3 scaling the lowest frequency is the plain one divided by the factor.
#[test]
fn rope_rotates_by_the_inverse_frequencies() {
    let ctx = ctx();
    let scaling = Llama3Scaling {
        factor: 32.0,
        ..Llama3Scaling::LLAMA_3_1
    };
    let config = RopeConfig {
        llama3: Some(scaling),
        ..RopeConfig::new(64, 500_000.0, RopeLayout::NeoX)
    };
    let table = RopeTable::new(ctx, config, 2).unwrap();
    let mut step = StepState::new(ctx, 1, 2).unwrap();
    // x = (1, 0) in every pair: after rotation the pair holds (cos, sin) of its angle.
    let mut x = vec![0.0f32; 64];
    x[..32].fill(1.0);
    let t = ctx.upload_f32("x", &[1, 1, 64], &x).unwrap();
    step.set(ctx, 1, 1).unwrap();
    let d = pollster::block_on(kernels::rope(ctx, &table, &step, &t)).unwrap();
    let mut rec = ctx.recorder();
    rec.dispatch(&d);
    let slot = rec.read(&t);
    let y = pollster::block_on(rec.submit_and_read())
        .unwrap()
        .f32(slot)
        .unwrap();
    let inv = kernels::rope_inv_freq(&config).unwrap();
    let plain = kernels::rope_inv_freq(&RopeConfig {
        llama3: None,
        ..config
    })
    .unwrap();
    for i in 0..32 {
        let angle = f64::from(y[32 + i]).atan2(f64::from(y[i]));
        assert!(
            (angle - f64::from(inv[i])).abs() < 1e-6,
            "pair {i}: {angle} vs {}",
            inv[i]
        );
    }
    assert_eq!(inv[31], plain[31] / 32.0);
    assert_eq!(inv[0], plain[0]);
}

/// The shape of a model's loop: a prefill step, then decode steps that only rewrite the step
/// uniform and resubmit the same dispatches (no Dispatch is rebuilt), each checked against the
/// reference on everything written so far. RoPE on q and k, the cache write and attention are
/// recorded into one command buffer per step.
#[test]
fn prefill_then_decode_reuses_dispatches() {
    let ctx = ctx();
    let (nh, nkv, hd, max_ctx, prompt) = (6usize, 2usize, 32usize, 600usize, 37usize);
    let row = nkv * hd;
    let config = RopeConfig::new(hd, 10_000.0, RopeLayout::NeoX);
    let table = RopeTable::new(ctx, config, max_ctx).unwrap();
    let cache = KvCache::new(ctx, 1, max_ctx, nkv, hd).unwrap();
    let mut rng = Rng::new(0xDEC0DE);

    struct Graph {
        step: StepState,
        q: pocketlm::gpu::GpuTensor,
        k: pocketlm::gpu::GpuTensor,
        v: pocketlm::gpu::GpuTensor,
        out: pocketlm::gpu::GpuTensor,
        dispatches: Vec<pocketlm::gpu::Dispatch>,
        tile: (usize, usize),
    }
    let build = |max_tokens: usize| -> Graph {
        let step = StepState::new(ctx, max_tokens, max_ctx).unwrap();
        let q = ctx.zeros("q", &[max_tokens, nh, hd], DType::F32).unwrap();
        let k = ctx.zeros("k", &[max_tokens, nkv, hd], DType::F32).unwrap();
        let v = ctx.zeros("v", &[max_tokens, nkv, hd], DType::F32).unwrap();
        let out = ctx.zeros("out", &[max_tokens, nh, hd], DType::F32).unwrap();
        let (dispatches, tile) = pollster::block_on(async {
            let mut ds = vec![
                kernels::rope_qk(ctx, &table, &step, &q, &k).await?,
                kernels::kv_write(ctx, &step, &cache, 0, &k, &v).await?,
            ];
            let att = kernels::attention(
                ctx,
                &step,
                &q,
                &cache,
                0,
                &out,
                &AttentionOptions::default(),
            )
            .await?;
            ds.extend_from_slice(att.dispatches());
            Ok::<_, pocketlm::Error>((ds, (att.chunk_len(), att.keys_per_tile())))
        })
        .unwrap();
        Graph {
            step,
            q,
            k,
            v,
            out,
            dispatches,
            tile,
        }
    };
    let mut prefill = build(64);
    let mut decode = build(1);
    // The decode graph splits the context; the prefill one runs many tokens per workgroup.
    assert!(decode.dispatches.len() == 4, "{}", decode.dispatches.len());

    // Everything written so far, as the reference sees it: (value, tolerance) of the rotated k
    // (before any f16 rounding) and of v.
    let (mut all_k, mut all_v) = (Vec::new(), Vec::new());
    let mut pos = 0;
    for step_tokens in [prompt, 1, 1, 1, 1] {
        let g = if step_tokens > 1 {
            &mut prefill
        } else {
            &mut decode
        };
        let q = rng.vec(step_tokens * nh * hd, -3.0, 3.0);
        let k = rng.vec(step_tokens * row, -1.0, 1.0);
        let v = rng.vec(step_tokens * row, -1.0, 1.0);
        // What the model's QKV projection would leave in these buffers.
        ctx.write_f32(&g.q, &q).unwrap();
        ctx.write_f32(&g.k, &k).unwrap();
        ctx.write_f32(&g.v, &v).unwrap();
        g.step.set(ctx, pos, step_tokens).unwrap();
        let (before, _, _) = ctx.stats.snapshot();
        let mut rec = ctx.recorder();
        rec.dispatch_all(&g.dispatches);
        let (kc, vc) = cache.layer(0).unwrap();
        let slots = [rec.read(&g.out), rec.read(&g.q), rec.read(kc), rec.read(vc)];
        let back = pollster::block_on(rec.submit_and_read()).unwrap();
        let (after, _, _) = ctx.stats.snapshot();
        assert!(after > before);
        let [gpu, gq, ck, cv] = slots.map(|s| back.f32(s).unwrap());

        // RoPE of q, in place.
        let (qr, qtol) = reference::rope(&q, step_tokens, nh, &config, pos).unwrap();
        for (i, (&w, &t)) in qr.iter().zip(&qtol).enumerate() {
            let err = (f64::from(gq[i]) - w).abs();
            assert!(err <= t, "step at {pos}: q[{i}] gpu {} vs {w}", gq[i]);
        }
        let (kr, ktol) = reference::rope(&k, step_tokens, nkv, &config, pos).unwrap();
        all_k.extend(kr.into_iter().zip(ktol));
        all_v.extend(v.iter().map(|&x| (f64::from(x), 0.0)));

        // The cache holds the rotated k and the v of every step so far: an f16 cache within one
        // f16 ULP of the GPU's f32 value, itself within the RoPE bound of the reference.
        let f16 = cache.dtype() == DType::F16;
        for (name, want_rows, got) in [("k", &all_k, &ck), ("v", &all_v, &cv)] {
            for (i, &(w, t)) in want_rows.iter().enumerate() {
                let tol = if f16 {
                    reference::f16_store(w as f32).1 * (1.0 + 1e-6) + t * (1.0 + 1.0 / 1024.0)
                } else {
                    t
                };
                let err = (f64::from(got[i]) - w).abs();
                assert!(
                    err <= tol,
                    "step at {pos}: cache {name}[{i}]: {} vs {w}",
                    got[i]
                );
            }
        }

        // Attention on the q and the cache as the GPU holds them.
        let shape = AttentionShape {
            tokens: step_tokens,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            offset: pos,
            window: 0,
            softcap: 0.0,
            bidirectional: false,
            packed: 0,
        };
        let split = AttentionSplit {
            chunk_len: g.tile.0,
            tile: g.tile.1,
        };
        let stored = pos + step_tokens;
        let (want, tol) = reference::attention(
            &gq,
            &ck[..stored * row],
            &cv[..stored * row],
            &shape,
            (1.0 / (hd as f64).sqrt()) as f32,
            split,
            KvError::EXACT,
        );
        for (i, (&w, &t)) in want.iter().zip(&tol).enumerate() {
            let err = (f64::from(gpu[i]) - w).abs();
            assert!(
                err <= t,
                "step at {pos}: out[{i}] gpu {} vs {w} (|err| {err:e} > {t:e})",
                gpu[i]
            );
        }
        pos += step_tokens;
    }
}

/// Every kind of bad input is a typed error naming what was wrong.
#[test]
fn bad_input_is_a_typed_error() {
    let ctx = ctx();
    let (nh, nkv, hd, max_ctx) = (4usize, 2usize, 8usize, 32usize);
    let cache = KvCache::new(ctx, 2, max_ctx, nkv, hd).unwrap();
    let mut step = StepState::new(ctx, 4, max_ctx).unwrap();
    let opts = AttentionOptions::default();
    let z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32).unwrap();
    let q = z("q", &[4, nh, hd]);
    let out = z("out", &[4, nh, hd]);
    let k = z("k", &[4, nkv, hd]);
    let v = z("v", &[4, nkv, hd]);
    // Step past the context, or more tokens than the dispatches were built for.
    expect_err(step.set(ctx, 30, 3), "shape_mismatch", "past the context");
    expect_err(step.set(ctx, 0, 5), "shape_mismatch", "more than the 4");
    expect_err(
        step.set(ctx, usize::MAX, 1),
        "shape_mismatch",
        "past the context",
    );
    step.set(ctx, 28, 4).unwrap();
    expect_err(StepState::new(ctx, 0, 8), "shape_mismatch", "max_tokens");

    let att = |q: &pocketlm::gpu::GpuTensor,
               out: &pocketlm::gpu::GpuTensor,
               layer: usize,
               o: &AttentionOptions| {
        pollster::block_on(kernels::attention(ctx, &step, q, &cache, layer, out, o))
    };

    // Attention shapes.
    let q_bad_heads = z("q_bad_heads", &[4, 3, hd]);
    expect_err(
        att(&q_bad_heads, &z("o3", &[4, 3, hd]), 0, &opts),
        "shape_mismatch",
        "not a multiple of the KV cache's 2 kv heads",
    );
    expect_err(
        att(
            &z("q_hd", &[4, nh, hd + 1]),
            &z("o_hd", &[4, nh, hd + 1]),
            0,
            &opts,
        ),
        "shape_mismatch",
        "q_hd",
    );
    expect_err(
        att(&z("q2d", &[4, nh * hd]), &out, 0, &opts),
        "shape_mismatch",
        "3-D",
    );
    expect_err(
        att(&q, &z("out_bad", &[4, nh, hd + 2]), 0, &opts),
        "shape_mismatch",
        "out_bad",
    );
    expect_err(
        att(
            &z("q_short", &[3, nh, hd]),
            &z("o_short", &[3, nh, hd]),
            0,
            &opts,
        ),
        "shape_mismatch",
        "q_short",
    );
    expect_err(att(&q, &q, 0, &opts), "shape_mismatch", "shares its buffer");
    expect_err(att(&q, &out, 2, &opts), "shape_mismatch", "layer 2");
    let q16 = ctx.zeros("q16", &[4, nh, hd], DType::F16).unwrap();
    expect_err(att(&q16, &out, 0, &opts), "unsupported_dtype", "q16");
    let nan_scale = AttentionOptions {
        scale: Some(f32::NAN),
        ..AttentionOptions::default()
    };
    expect_err(att(&q, &out, 0, &nan_scale), "shape_mismatch", "scale");
    let zero_chunk = AttentionOptions {
        chunk_len: Some(0),
        ..AttentionOptions::default()
    };
    expect_err(att(&q, &out, 0, &zero_chunk), "shape_mismatch", "chunk_len");
    let zero_window = AttentionOptions {
        window: Some(0),
        ..AttentionOptions::default()
    };
    expect_err(att(&q, &out, 0, &zero_window), "shape_mismatch", "window");
    let bad_cap = AttentionOptions {
        softcap: Some(f32::INFINITY),
        ..AttentionOptions::default()
    };
    expect_err(att(&q, &out, 0, &bad_cap), "shape_mismatch", "softcap");
    let short = ctx.upload_i32("short segments", &[1, 2], &[0, 1]).unwrap();
    let bad_segments = AttentionOptions {
        segments: Some(short),
        bidirectional: true,
        ..AttentionOptions::default()
    };
    expect_err(
        att(&q, &out, 0, &bad_segments),
        "shape_mismatch",
        "segments",
    );
    let big = KvCache::new(ctx, 1, 4, 1, 300).unwrap();
    let qb = z("q_big", &[4, 1, 300]);
    let ob = z("o_big", &[4, 1, 300]);
    let small_step = StepState::new(ctx, 4, 4).unwrap();
    expect_err(
        pollster::block_on(kernels::attention(
            ctx,
            &small_step,
            &qb,
            &big,
            0,
            &ob,
            &opts,
        )),
        "shape_mismatch",
        "head_dim 300",
    );
    // A cache shorter than the step's context.
    let short = KvCache::new(ctx, 1, 16, nkv, hd).unwrap();
    expect_err(
        pollster::block_on(kernels::attention(ctx, &step, &q, &short, 0, &out, &opts)),
        "shape_mismatch",
        "16 positions",
    );
    // A scratch too small for another attention.
    let many = AttentionOptions {
        chunk_len: Some(4),
        ..AttentionOptions::default()
    };
    let a = att(&q, &out, 0, &many).unwrap();
    assert_eq!(a.n_chunks(), 8);
    let small = AttentionOptions {
        chunk_len: Some(16),
        ..AttentionOptions::default()
    };
    let b = att(&q, &out, 1, &small).unwrap();
    let reuse = AttentionOptions {
        chunk_len: Some(4),
        scratch: b.scratch().cloned(),
        ..AttentionOptions::default()
    };
    expect_err(att(&q, &out, 1, &reuse), "shape_mismatch", "scratch");
    let reuse_ok = AttentionOptions {
        chunk_len: Some(4),
        scratch: a.scratch().cloned(),
        ..AttentionOptions::default()
    };
    att(&q, &out, 1, &reuse_ok).unwrap();

    // Cache write.
    let kv = |k: &pocketlm::gpu::GpuTensor, v: &pocketlm::gpu::GpuTensor, layer: usize| {
        pollster::block_on(kernels::kv_write(ctx, &step, &cache, layer, k, v))
    };
    expect_err(
        kv(&z("k_heads", &[4, 3, hd]), &v, 0),
        "shape_mismatch",
        "k_heads",
    );
    expect_err(
        kv(&k, &z("v_short", &[2, nkv, hd]), 0),
        "shape_mismatch",
        "v_short",
    );
    expect_err(kv(&k, &v, 5), "shape_mismatch", "layer 5");
    let k16 = ctx.zeros("k16", &[4, nkv, hd], DType::F16).unwrap();
    expect_err(kv(&k16, &v, 0), "unsupported_dtype", "k16");

    // RoPE.
    let config = RopeConfig::new(hd, 10_000.0, RopeLayout::NeoX);
    expect_err(
        RopeTable::new(
            ctx,
            RopeConfig {
                rotary_dim: 3,
                ..config
            },
            8,
        ),
        "shape_mismatch",
        "rotary_dim",
    );
    let table = RopeTable::new(ctx, config, max_ctx).unwrap();
    let short_table = RopeTable::new(ctx, config, 16).unwrap();
    let rope = |t: &RopeTable, x: &pocketlm::gpu::GpuTensor| {
        pollster::block_on(kernels::rope(ctx, t, &step, x))
    };
    expect_err(rope(&short_table, &q), "shape_mismatch", "16 positions");
    expect_err(
        rope(&table, &z("x_hd", &[4, nh, hd + 2])),
        "shape_mismatch",
        "x_hd",
    );
    expect_err(
        rope(&table, &z("x_2d", &[4, nh * hd])),
        "shape_mismatch",
        "x_2d",
    );
    expect_err(
        rope(&table, &z("x_short", &[2, nh, hd])),
        "shape_mismatch",
        "x_short",
    );
    expect_err(rope(&table, &q16), "unsupported_dtype", "q16");
    expect_err(
        pollster::block_on(kernels::rope_qk(ctx, &table, &step, &q, &q)),
        "shape_mismatch",
        "share a buffer",
    );

    // Sizes refused before allocating.
    expect_err(
        KvCache::new(ctx, 1, 1 << 22, 8, 128),
        "too_large",
        "kv cache layer",
    );
    expect_err(
        KvCache::with_dtype(ctx, 1, 8, 1, 8, DType::Q8_0),
        "unsupported_dtype",
        "kv cache",
    );
    expect_err(RopeTable::new(ctx, config, 1 << 30), "too_large", "rope");
    ctx.check_health()
        .expect("no GPU error was raised by any of the above");
}

/// The cache's memory is as documented: f16 by default on both profiles (pairs packed into
/// words, an odd head padded by one half), f32 when asked for.
#[test]
fn kv_cache_size_and_type() {
    let ctx = ctx();
    assert_eq!(KvCache::default_dtype(ctx), DType::F16);
    let c = KvCache::new(ctx, 3, 100, 2, 5).unwrap();
    assert_eq!(c.dtype(), DType::F16);
    for (dtype, per) in [(DType::F16, 100 * 2 * 6 * 2), (DType::F32, 100 * 2 * 5 * 4)] {
        let c = KvCache::with_dtype(ctx, 3, 100, 2, 5, dtype).unwrap();
        assert_eq!(c.dtype(), dtype);
        assert_eq!(c.size_bytes(), 3 * 2 * per as u64);
        assert_eq!(
            KvCache::bytes(3, 100, 2, 5, dtype),
            Some(3 * 2 * per as u64)
        );
    }
    // SmolLM2-135M at 8192 positions: 180 MiB in f16.
    assert_eq!(KvCache::bytes(30, 8192, 3, 64, DType::F16), Some(180 << 20));
}

/// A ring: layer 1 of a cache holds 6 of 32 positions (a window of 5 with steps of at most 2
/// tokens). Positions 0..24 written a step of 1 or 2 tokens at a time, each followed by
/// attention with the window (several chunks, and one): the outputs equal those of a cache that
/// holds every position, to the bit, in f32 and f16, on both kernel families; the ring's layer
/// is smaller. Attention refuses what a ring cannot hold: no window, a window too wide for the
/// step, a bidirectional step.
#[test]
fn a_sliding_windows_ring_attends_as_the_whole_cache() {
    let (nh, nkv, hd, max_ctx, window) = (4, 2, 8, 32, 5);
    for (ctx, dtype, chunk_len) in [
        (ctx(), DType::F32, Some(8)),
        (ctx(), DType::F16, None),
        (gpu_kernels_ctx(), DType::F32, None),
    ] {
        let ring =
            KvCache::with_slots(ctx, max_ctx, &[max_ctx, window + 1], nkv, hd, dtype).unwrap();
        let whole = KvCache::with_dtype(ctx, 2, max_ctx, nkv, hd, dtype).unwrap();
        assert!(ring.size_bytes() < whole.size_bytes());
        assert_eq!((ring.slots(0), ring.slots(1)), (max_ctx, window + 1));
        let mut rng = Rng::new(7);
        let mut step = StepState::new(ctx, 2, max_ctx).unwrap();
        let k = ctx.zeros("k", &[2, nkv, hd], DType::F32).unwrap();
        let v = ctx.zeros("v", &[2, nkv, hd], DType::F32).unwrap();
        let q = ctx.zeros("q", &[2, nh, hd], DType::F32).unwrap();
        let opts = AttentionOptions {
            window: Some(window),
            chunk_len,
            ..Default::default()
        };
        let (o_ring, o_whole) = (
            ctx.zeros("o ring", &[2, nh, hd], DType::F32).unwrap(),
            ctx.zeros("o whole", &[2, nh, hd], DType::F32).unwrap(),
        );
        let mut pos = 0;
        for n in [2, 1, 2, 2, 1, 2, 2, 2, 1, 1, 2, 2, 2, 2] {
            step.set(ctx, pos, n).unwrap();
            ctx.write_f32(&k, &rng.vec(2 * nkv * hd, -1.0, 1.0))
                .unwrap();
            ctx.write_f32(&v, &rng.vec(2 * nkv * hd, -1.0, 1.0))
                .unwrap();
            ctx.write_f32(&q, &rng.vec(2 * nh * hd, -2.0, 2.0)).unwrap();
            let outs = pollster::block_on(async {
                let mut rec = ctx.recorder();
                for (cache, out) in [(&ring, &o_ring), (&whole, &o_whole)] {
                    let w = kernels::kv_write(ctx, &step, cache, 1, &k, &v)
                        .await
                        .unwrap();
                    let a = kernels::attention(ctx, &step, &q, cache, 1, out, &opts)
                        .await
                        .unwrap();
                    rec.dispatch(&w);
                    rec.dispatch_all(a.dispatches());
                }
                let (a, b) = (rec.read(&o_ring), rec.read(&o_whole));
                let back = rec.submit_and_read().await.unwrap();
                (back.f32(a).unwrap(), back.f32(b).unwrap())
            });
            let rows = n * nh * hd;
            assert!(
                outs.0[..rows]
                    .iter()
                    .zip(&outs.1[..rows])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype}, chunks {chunk_len:?}: positions {pos}..{}: the ring's attention differs",
                pos + n
            );
            pos += n;
        }
        assert!(pos > 3 * (window + 1));
        // What a ring of window + 1 positions cannot hold.
        let attend = |step: &StepState, opts: &AttentionOptions| {
            pollster::block_on(kernels::attention(ctx, step, &q, &ring, 1, &o_ring, opts))
        };
        let no_window = AttentionOptions::default();
        expect_err(attend(&step, &no_window), "shape_mismatch", "ring");
        let wider = AttentionOptions {
            window: Some(window + 1),
            ..Default::default()
        };
        expect_err(attend(&step, &wider), "shape_mismatch", "ring");
        let both_ways = AttentionOptions {
            window: Some(window),
            bidirectional: true,
            ..Default::default()
        };
        expect_err(attend(&step, &both_ways), "shape_mismatch", "ring");
    }
}

/// `GpuContext::with_attention_chunk` (`pocketlm --attention-chunk`, a knob for tuning on a GPU)
/// replaces the default chunking where a caller gives none: as given where the partial results
/// fit, doubled until they do otherwise; a decode step with it stays within the reference's bound
/// at the end of the context (where every chunk holds keys).
#[test]
fn the_contexts_attention_chunk_replaces_the_default() {
    let base = ctx();
    let tuned = |chunk| {
        pollster::block_on(pocketlm::gpu::GpuContext::new(common::profile_request()))
            .unwrap()
            .with_cpu_kernels(base.capabilities().cpu)
            .with_attention_chunk(Some(chunk))
    };
    let (nh, nkv, hd, max_ctx) = (9usize, 3usize, 64usize, 600usize);
    let chunking = |ctx: &pocketlm::gpu::GpuContext, tokens: usize| {
        let step = StepState::new(ctx, tokens, max_ctx).unwrap();
        let cache = KvCache::new(ctx, 1, max_ctx, nkv, hd).unwrap();
        let q = ctx.zeros("q", &[tokens, nh, hd], DType::F32).unwrap();
        let out = ctx.zeros("out", &[tokens, nh, hd], DType::F32).unwrap();
        let att = pollster::block_on(kernels::attention(
            ctx,
            &step,
            &q,
            &cache,
            0,
            &out,
            &AttentionOptions::default(),
        ))
        .unwrap();
        (att.chunk_len(), att.n_chunks())
    };
    // The default: chunks of at least 64 positions.
    assert_eq!(chunking(base, 1), (64, 10));
    let sixteen = tuned(16);
    assert_eq!(sixteen.capabilities().attention_chunk, Some(16));
    assert_eq!(chunking(&sixteen, 1), (16, 38));
    assert!(sixteen
        .report()
        .to_string()
        .contains("chunks of 16 positions"));
    attention_case_on(
        &sixteen,
        AttentionCase::decode(nh, nkv, hd, max_ctx),
        0xC4_0016,
    );
    // Chunks of 1 for a 64-token step: 600 chunks of partial results (576 rows of 64 floats
    // each) would take 88 MB; doubled to 4 positions, 150 chunks take 22 MB, within 32 MiB.
    assert_eq!(chunking(&tuned(1), 64), (4, 150));
}
