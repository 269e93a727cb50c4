//! LayerNorm, GELU, residual addition and GPU top-k/argmax against their CPU references, on a real
//! WebGPU implementation (run like tests/gpu_kernels.rs: `POCKETLM_TEST_PROFILE` and
//! `POCKETLM_TEST_ADAPTER` say which device to expect).
//!
//! Tolerances are those of `pocketlm::reference::ops`, derived from WGSL's stated f32 accuracy:
//! LayerNorm from the mean's and the two-pass variance's error over the row (a bound that grows
//! with |mean| / std, as the problem's conditioning does); GELU |ŷ − y| ≤ |y|·(17 + 27|t|)·2⁻²⁴;
//! addition one rounding. Top-k and argmax must match the CPU exactly: same indices, same value
//! bits.

#![cfg(not(target_arch = "wasm32"))]

use pocketlm::gpu::{DType, Profile};
use pocketlm::kernels::{self, TOPK_MAX};
use pocketlm::reference::ops::check::{self, Logits, OpCase, OpOutcome};
use pocketlm::reference::ops::{self as reference};
use pocketlm::reference::Rng;
use pocketlm::Error;
use proptest::prelude::*;

mod common;
use common::{ctx, expect_err, grid};

fn run(case: OpCase, seed: u64) -> OpOutcome {
    pollster::block_on(check::run(ctx(), case, seed)).unwrap_or_else(|e| panic!("{case}: {e}"))
}

fn assert_passes(case: OpCase, seed: u64) -> OpOutcome {
    let o = run(case, seed);
    assert!(o.passed(), "{o} (seed {seed:#x})");
    o
}

fn logits_kind() -> impl Strategy<Value = Logits> {
    prop_oneof![
        Just(Logits::Uniform),
        Just(Logits::Ties),
        Just(Logits::Special),
        Just(Logits::Ascending),
        Just(Logits::Flat),
    ]
}

/// Vocabulary sizes of real models (SmolLM2 49152, Qwen 151936, Gemma 262144), the smallest
/// ones, and anything in between (more often: the large ones take seconds on SwiftShader).
fn vocab() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1usize..=5000,
        1 => Just(1usize),
        1 => Just(63usize),
        1 => Just(49_152usize),
        1 => Just(151_936usize),
        1 => Just(262_144usize),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn layernorm_matches_reference(rows in 1usize..=12, cols in 1usize..=2600, bias in any::<bool>(),
                                   eps in prop_oneof![Just(1e-6f32), Just(1e-5f32)],
                                   offset in prop_oneof![Just(0.0f32), 0.0f32..10.0],
                                   seed in any::<u64>()) {
        assert_passes(OpCase::LayerNorm { rows, cols, eps, bias, offset }, seed);
    }

    #[test]
    fn gelu_matches_reference(len in 1usize..=20_000, exact in any::<bool>(), seed in any::<u64>()) {
        assert_passes(OpCase::Gelu { len, exact }, seed);
    }

    #[test]
    fn add_matches_reference(len in 1usize..=20_000, in_place in any::<bool>(), seed in any::<u64>()) {
        assert_passes(OpCase::Add { len, in_place }, seed);
    }

}

proptest! {
    // Fewer cases: a large vocabulary takes seconds on SwiftShader.
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn topk_matches_reference_exactly(vocab in vocab(), rows in 1usize..=3, k in 1usize..=TOPK_MAX,
                                      logits in logits_kind(), seed in any::<u64>()) {
        let k = k.min(vocab);
        let o = assert_passes(OpCase::TopK { rows, vocab, k, logits }, seed);
        prop_assert!(o.dispatches <= 3, "{o}");
    }

    #[test]
    fn argmax_matches_reference_exactly(vocab in vocab(), rows in 1usize..=4,
                                        logits in logits_kind(), seed in any::<u64>()) {
        let o = assert_passes(OpCase::Argmax { rows, vocab, logits }, seed);
        prop_assert!(o.dispatches <= 2, "{o}");
    }
}

/// Every real vocabulary size with the k a sampler uses, on the hardest logits (NaN, ±inf, ±0,
/// subnormals, ties) and on ties alone.
#[test]
fn topk_model_vocabularies() {
    for (i, &vocab) in [1usize, 63, 49_152, 151_936, 262_144].iter().enumerate() {
        for (k, logits) in [
            (1, Logits::Special),
            (2, Logits::Ties),
            (40, Logits::Special),
            (64, Logits::Ties),
        ] {
            if k <= vocab {
                let rows = if vocab > 100_000 { 1 } else { 2 };
                let case = OpCase::TopK {
                    rows,
                    vocab,
                    k,
                    logits,
                };
                assert_passes(case, (i * 100 + k) as u64);
            }
        }
    }
}

/// The sampling kernels: softmax statistics of every kind of row at real vocabulary sizes, the
/// penalties, and Gumbel draws that follow the softmax.
#[test]
fn sampling_kernels_match_reference() {
    let kinds = [
        Logits::Uniform,
        Logits::Ties,
        Logits::Special,
        Logits::Ascending,
        Logits::Flat,
    ];
    for (i, &vocab) in [1usize, 63, 4096, 4097, 49_152, 262_144].iter().enumerate() {
        for (j, &logits) in kinds.iter().enumerate() {
            let rows = if vocab > 100_000 { 1 } else { 2 };
            let case = OpCase::LogitStats {
                rows,
                vocab,
                logits,
            };
            assert_passes(case, (i * 10 + j) as u64);
        }
    }
    for (vocab, window) in [(128, 1), (49_152, 64), (151_936, 300)] {
        assert_passes(
            OpCase::Penalize {
                rows: 3,
                vocab,
                window,
            },
            vocab as u64,
        );
    }
    for (vocab, biased) in [(100, 1), (49_152, 300), (262_144, 1024)] {
        assert_passes(
            OpCase::BiasAndMask {
                rows: 2,
                vocab,
                biased,
            },
            vocab as u64 + 1,
        );
    }
    for (draws, vocab, temperature) in [(4000, 12, 1.0), (3000, 40, 0.5), (2000, 5000, 2.0)] {
        assert_passes(
            OpCase::Gumbel {
                draws,
                vocab,
                temperature,
            },
            draws as u64,
        );
    }
}

/// The nucleus draw: the tokens top-k, top-p and min-p keep, found on the GPU by radix selects
/// by count and by mass, equal the sorted row's (flat rows whose nucleus holds thousands of tokens, peaked ones,
/// ties, real vocabulary sizes), and draws from them follow their softmax at the temperature.
#[test]
fn nucleus_keeps_what_the_sorted_row_keeps() {
    let case = |vocab, spread, ties, top_k, top_p, min_p, temperature, draws| OpCase::Nucleus {
        vocab,
        spread,
        ties,
        top_k,
        top_p,
        min_p,
        temperature,
        draws,
    };
    let small = [
        case(40, 2.0, false, 0, 0.8, 0.0, 0.7, 1500),
        case(40, 3.0, true, 0, 0.6, 0.05, 1.0, 1000),
        case(300, 3.0, false, 0, 1.0, 0.1, 1.3, 800),
        case(300, 1.0, false, 100, 1.0, 0.0, 1.0, 1500),
        case(200, 2.0, true, 90, 0.9, 0.0, 1.0, 1000),
        case(5000, 30.0, false, 0, 0.5, 0.0, 1.0, 2),
    ];
    // Real vocabularies: one of them on a sparse grid's run (see common::grid).
    let large = [
        case(49_152, 2.0, false, 0, 0.9, 0.0, 1.0, 2),
        case(49_152, 4.0, true, 0, 0.95, 0.02, 1.0, 2),
        case(49_152, 2.0, false, 1000, 0.9, 0.0, 1.0, 2),
        case(262_144, 8.0, false, 0, 0.95, 0.01, 0.8, 2),
    ];
    for (i, c) in small.into_iter().chain(grid(1, large)).enumerate() {
        assert_passes(c, 90 + i as u64);
    }
}

/// Sizes on and around the top-k tile (1024 slots), the final level's span (2048) and the
/// argmax span (4096), where off-by-one errors live.
#[test]
fn topk_at_tile_edges() {
    for vocab in [1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 8193] {
        for k in [3, 64] {
            assert_passes(
                OpCase::TopK {
                    rows: 2,
                    vocab,
                    k,
                    logits: Logits::Ascending,
                },
                vocab as u64,
            );
        }
        assert_passes(
            OpCase::Argmax {
                rows: 3,
                vocab,
                logits: Logits::Ascending,
            },
            vocab as u64,
        );
    }
}

/// LayerNorm on rows whose mean is 1000 times their spread: the two-pass variance keeps the
/// error within the bound, where E[x²] − E[x]² would lose every digit. Also: model widths, one
/// column (variance 0, so the output is the bias) and rows of many workgroup strides.
#[test]
fn layernorm_fixed_shapes() {
    for (rows, cols, offset, bias) in [
        (4, 576, 1000.0, false),
        (4, 576, 1000.0, true),
        (3, 768, 2.0, true),
        (2, 2048, 5.0, false),
        (2, 2049, 5.0, true),
        (1, 5000, 1.0, true),
        (5, 1, 3.0, true),
        (5, 2, 0.0, false),
    ] {
        assert_passes(
            OpCase::LayerNorm {
                rows,
                cols,
                eps: 1e-5,
                bias,
                offset,
            },
            (rows * cols) as u64,
        );
    }
}

/// More workgroups than one grid dimension holds (65535): the kernels see a 2-D grid. The grid
/// arithmetic does not depend on the profile, and SwiftShader takes about a millisecond per
/// workgroup (over a minute here), so this runs on full-profile devices only.
#[test]
fn ops_span_a_two_dimensional_grid() {
    if ctx().profile() != Profile::Full {
        eprintln!(
            "skipped on the {} profile: see the comment",
            ctx().profile()
        );
        return;
    }
    assert_passes(
        OpCase::LayerNorm {
            rows: 66_000,
            cols: 3,
            eps: 1e-5,
            bias: true,
            offset: 1.0,
        },
        1,
    );
    assert_passes(
        OpCase::TopK {
            rows: 66_000,
            vocab: 3,
            k: 2,
            logits: Logits::Ties,
        },
        2,
    );
    assert_passes(
        OpCase::Argmax {
            rows: 66_000,
            vocab: 2,
            logits: Logits::Special,
        },
        3,
    );
}

/// A decode step's tail in one command buffer: final norm → residual accumulate → GELU → top-k,
/// built once and recorded twice (the second time on logits the step changed), one submit and a
/// readback of at most 512 bytes for the sampler each time.
#[test]
fn decode_step_chain_reuses_its_dispatches() {
    let ctx = ctx();
    let (hidden, k) = (1000usize, 50usize);
    let mut rng = Rng::new(11);
    let x = rng.vec(2 * hidden, -3.0, 3.0);
    let w = rng.vec(hidden, 0.5, 1.5);
    let b = rng.vec(hidden, -0.5, 0.5);
    let r = rng.vec(2 * hidden, -1.0, 1.0);

    let xt = ctx.upload_f32("x", &[2, hidden], &x).unwrap();
    let wt = ctx.upload_f32("ln.weight", &[hidden], &w).unwrap();
    let bt = ctx.upload_f32("ln.bias", &[hidden], &b).unwrap();
    let resid = ctx.upload_f32("resid", &[2, hidden], &r).unwrap();
    let normed = ctx.zeros("normed", &[2, hidden], DType::F32).unwrap();
    let act = ctx.zeros("act", &[2, hidden], DType::F32).unwrap();
    let out = kernels::topk_output(ctx, "top", &act, k).unwrap();

    let (norm, accumulate, gelu, top) = pollster::block_on(async {
        Ok::<_, Error>((
            kernels::layernorm(ctx, &xt, &wt, Some(&bt), 1e-5, &normed).await?,
            kernels::add_in_place(ctx, &resid, &normed).await?,
            kernels::gelu(ctx, &resid, &act).await?,
            kernels::topk(ctx, &act, k, &out).await?,
        ))
    })
    .unwrap();
    assert_eq!(out.size_bytes(), (2 * k * 8) as u64);

    let n = reference::layernorm(&x, hidden, &w, Some(&b), 1e-5);
    let n_tol = reference::layernorm_tolerances(&x, hidden, &w, Some(&b), 1e-5);
    let mut prev_resid = r.clone();
    for step in 0..2 {
        let (submits0, _, _) = ctx.stats.snapshot();
        let mut rec = ctx.recorder();
        rec.dispatch_all([&norm, &accumulate, &gelu]);
        let resid_slot = rec.read(&resid);
        let act_slot = rec.read(&act);
        let top_slot = top.record(&mut rec);
        let rb = pollster::block_on(rec.submit_and_read()).unwrap();
        let (submits1, _, _) = ctx.stats.snapshot();
        assert!(submits1 > submits0);

        // Each stage is checked against its reference applied to the GPU's own input to it, so
        // every comparison has its kernel's bound (and top-k is exact).
        let gpu_resid = rb.f32(resid_slot).unwrap();
        for i in 0..gpu_resid.len() {
            let want = f64::from(prev_resid[i]) + n[i];
            let tol = n_tol[i] + reference::add_tolerance(want);
            let err = (f64::from(gpu_resid[i]) - want).abs();
            assert!(
                err <= tol,
                "step {step} resid[{i}]: {} vs {want}",
                gpu_resid[i]
            );
        }
        let gpu_act = rb.f32(act_slot).unwrap();
        let want_act = reference::gelu(&gpu_resid);
        for i in 0..gpu_act.len() {
            let tol = reference::gelu_tolerance(gpu_resid[i], want_act[i]);
            let err = (f64::from(gpu_act[i]) - want_act[i]).abs();
            assert!(
                err <= tol,
                "step {step} act[{i}]: {} vs {}",
                gpu_act[i],
                want_act[i]
            );
        }
        let got = top.read(&rb, top_slot).unwrap();
        assert_eq!(got, reference::topk(&gpu_act, hidden, k), "step {step}");
        prev_resid = gpu_resid;
    }
}

/// `topk` with k = 1 and `argmax` are the same kernel and agree.
#[test]
fn topk_of_one_is_argmax() {
    let ctx = ctx();
    let mut rng = Rng::new(5);
    let x = check::logits(&mut rng, 3, 9000, Logits::Special);
    let xt = ctx.upload_f32("logits", &[3, 9000], &x).unwrap();
    let a = kernels::topk_output(ctx, "a", &xt, 1).unwrap();
    let b = kernels::topk_output(ctx, "b", &xt, 1).unwrap();
    let (ta, tb) = pollster::block_on(async {
        Ok::<_, Error>((
            kernels::argmax(ctx, &xt, &a).await?,
            kernels::topk(ctx, &xt, 1, &b).await?,
        ))
    })
    .unwrap();
    let mut rec = ctx.recorder();
    let (sa, sb) = (ta.record(&mut rec), tb.record(&mut rec));
    let rb = pollster::block_on(rec.submit_and_read()).unwrap();
    let (ga, gb) = (ta.read(&rb, sa).unwrap(), tb.read(&rb, sb).unwrap());
    assert_eq!(ga, gb);
    let want: Vec<Vec<(u32, f32)>> = reference::argmax(&x, 9000)
        .into_iter()
        .map(|p| vec![p])
        .collect();
    assert_eq!(ga, want);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let ctx = ctx();
    let z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32).unwrap();
    let x = z("x", &[2, 16]);
    let y = z("y", &[2, 16]);
    let w = z("w", &[16]);
    let w15 = z("w15", &[15]);
    let bias3 = z("bias3", &[3]);
    let y_bad = z("y_bad", &[2, 15]);
    let x_f16 = ctx.zeros("x_f16", &[2, 16], DType::F16).unwrap();

    // LayerNorm.
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x, &w15, None, 1e-5, &y)),
        "shape_mismatch",
        "weight 'w15'",
    );
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x, &w, Some(&bias3), 1e-5, &y)),
        "shape_mismatch",
        "bias 'bias3'",
    );
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x, &w, None, 1e-5, &y_bad)),
        "shape_mismatch",
        "y_bad",
    );
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x_f16, &w, None, 1e-5, &y)),
        "unsupported_dtype",
        "x_f16",
    );
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x, &w, None, -1.0, &y)),
        "shape_mismatch",
        "eps",
    );
    expect_err(
        pollster::block_on(kernels::layernorm(ctx, &x, &w, Some(&w), 1e-5, &x)),
        "shape_mismatch",
        "shares its buffer",
    );

    // GELU and addition.
    expect_err(
        pollster::block_on(kernels::gelu(ctx, &x, &y_bad)),
        "shape_mismatch",
        "y_bad",
    );
    expect_err(
        pollster::block_on(kernels::gelu(ctx, &x, &x)),
        "shape_mismatch",
        "'x'",
    );
    expect_err(
        pollster::block_on(kernels::gelu(ctx, &x_f16, &y)),
        "unsupported_dtype",
        "x_f16",
    );
    expect_err(
        pollster::block_on(kernels::add(ctx, &x, &y_bad, &y)),
        "shape_mismatch",
        "y_bad",
    );
    expect_err(
        pollster::block_on(kernels::add(ctx, &x, &y, &y)),
        "shape_mismatch",
        "shares its buffer",
    );
    expect_err(
        pollster::block_on(kernels::add_in_place(ctx, &x, &x)),
        "shape_mismatch",
        "shares its buffer",
    );
    expect_err(
        pollster::block_on(kernels::add_in_place(ctx, &x, &y_bad)),
        "shape_mismatch",
        "y_bad",
    );
    expect_err(
        pollster::block_on(kernels::add_in_place(ctx, &x_f16, &x)),
        "unsupported_dtype",
        "x_f16",
    );

    // Top-k: the output is i32 words (value bits, index).
    let zi = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::I32).unwrap();
    let logits = z("logits", &[2, 16]);
    let out4 = zi("out4", &[2, 4, 2]);
    for k in [0, TOPK_MAX + 1] {
        expect_err(
            pollster::block_on(kernels::topk(ctx, &logits, k, &out4)),
            "shape_mismatch",
            "logits 'logits'",
        );
    }
    let big = zi("big", &[2, 17, 2]);
    expect_err(
        pollster::block_on(kernels::topk(ctx, &logits, 17, &big)),
        "shape_mismatch",
        "exceeds the 16 entries",
    );
    expect_err(
        pollster::block_on(kernels::topk(ctx, &logits, 3, &out4)),
        "shape_mismatch",
        "output 'out4'",
    );
    expect_err(
        pollster::block_on(kernels::argmax(ctx, &logits, &out4)),
        "shape_mismatch",
        "output 'out4'",
    );
    expect_err(
        pollster::block_on(kernels::topk(ctx, &x_f16, 4, &out4)),
        "unsupported_dtype",
        "x_f16",
    );
    let out_f32 = z("out_f32", &[2, 4, 2]);
    expect_err(
        pollster::block_on(kernels::topk(ctx, &logits, 4, &out_f32)),
        "unsupported_dtype",
        "out_f32",
    );
    // Writing the result over the logits is impossible: the output dtype differs.
    let flat = z("flat", &[16]);
    expect_err(
        pollster::block_on(kernels::topk(ctx, &flat, 8, &flat)),
        "unsupported_dtype",
        "'flat'",
    );
    // The same shapes work with an i32 output.
    let two = zi("two", &[8, 2]);
    assert!(pollster::block_on(kernels::topk(ctx, &flat, 8, &two)).is_ok());
    let tk = pollster::block_on(kernels::topk(ctx, &logits, 4, &out4)).unwrap();
    // A slot of another tensor is too short to decode.
    let mut rec = ctx.recorder();
    let slot = rec.read(&w15);
    let rb = pollster::block_on(rec.submit_and_read()).unwrap();
    expect_err(tk.read(&rb, slot), "readback", "out4");

    ctx.check_health()
        .expect("no GPU error was raised by any of the above");
}

/// The ops the decoder graph adds for Gemma-style blocks, against f64 references: the post-norm
/// into the residual stream (`rmsnorm_add`), the scaled embedding lookup, final-logit
/// soft-capping, and the GELU-gated activation for gate/up projections that cannot be fused.
#[test]
fn decoder_block_ops_match_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(0x6E33A);
    let read = |t: &pocketlm::gpu::GpuTensor, d: &pocketlm::gpu::Dispatch| -> Vec<f32> {
        let mut rec = ctx.recorder();
        rec.dispatch(d);
        let slot = rec.read(t);
        pollster::block_on(rec.submit_and_read())
            .unwrap()
            .f32(slot)
            .unwrap()
    };

    // y += rmsnorm(x) · w.
    let (rows, cols, eps) = (5, 300, 1e-6f32);
    let x = rng.vec(rows * cols, -4.0, 4.0);
    let w = rng.vec(cols, -2.0, 2.0);
    let y0 = rng.vec(rows * cols, -3.0, 3.0);
    let xt = ctx.upload_f32("x", &[rows, cols], &x).unwrap();
    let wt = ctx.upload_f32("w", &[cols], &w).unwrap();
    let yt = ctx.upload_f32("y", &[rows, cols], &y0).unwrap();
    let d = pollster::block_on(kernels::rmsnorm_add(ctx, &xt, &wt, eps, &yt)).unwrap();
    let got = read(&yt, &d);
    let normed = pocketlm::reference::rmsnorm(&x, cols, &w, eps);
    for i in 0..rows * cols {
        let want = normed[i] + f64::from(y0[i]);
        let tol = pocketlm::reference::rmsnorm_tolerance(cols, normed[i])
            + reference::add_tolerance(want);
        assert!(
            (f64::from(got[i]) - want).abs() <= tol,
            "rmsnorm_add [{i}]: {} vs {want} ± {tol:e}",
            got[i]
        );
    }

    // Embedding rows times √hidden: one rounding of the product.
    let (vocab, dim) = (11, 40);
    let table = rng.vec(vocab * dim, -1.0, 1.0);
    let tt = ctx.upload_f32("table", &[vocab, dim], &table).unwrap();
    let ids = ctx.upload_i32("ids", &[3], &[4, 0, 10]).unwrap();
    let out = ctx.zeros("out", &[3, dim], DType::F32).unwrap();
    let scale = (dim as f32).sqrt();
    let d = pollster::block_on(kernels::embed_scaled(ctx, &tt, &ids, &out, scale)).unwrap();
    let got = read(&out, &d);
    for (r, id) in [4usize, 0, 10].into_iter().enumerate() {
        for c in 0..dim {
            assert_eq!(
                got[r * dim + c],
                table[id * dim + c] * scale,
                "row {r} col {c}"
            );
        }
    }

    // cap · tanh(x / cap), over values far past the cap too.
    let cap = 30.0f32;
    let v: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.37).collect();
    let vt = ctx.upload_f32("logits", &[v.len()], &v).unwrap();
    let d = pollster::block_on(kernels::softcap(ctx, &vt, cap)).unwrap();
    let got = read(&vt, &d);
    for (i, &x) in v.iter().enumerate() {
        let want = f64::from(cap) * (f64::from(x) / f64::from(cap)).tanh();
        let tol = f64::from(cap) * 16.0 * f64::from(f32::EPSILON);
        assert!(
            (f64::from(got[i]) - want).abs() <= tol,
            "softcap({x}) = {} vs {want}",
            got[i]
        );
    }
    expect_err(
        pollster::block_on(kernels::softcap(ctx, &vt, 0.0)),
        "shape_mismatch",
        "cap",
    );

    // gelu(gate) · up, with either GELU.
    let n = 3000;
    let gate = rng.vec(n, -12.0, 12.0);
    let up = rng.vec(n, -3.0, 3.0);
    let gt = ctx.upload_f32("gate", &[n], &gate).unwrap();
    let ut = ctx.upload_f32("up", &[n], &up).unwrap();
    for exact in [false, true] {
        let ot = ctx.zeros("act", &[n], DType::F32).unwrap();
        let kind = if exact {
            kernels::GateActivation::GeluErf
        } else {
            kernels::GateActivation::GeluTanh
        };
        let d = pollster::block_on(kernels::gated(ctx, &gt, &ut, &ot, kind)).unwrap();
        let got = read(&ot, &d);
        let act = if exact {
            reference::gelu_erf(&gate)
        } else {
            reference::gelu(&gate)
        };
        for i in 0..n {
            let want = act[i] * f64::from(up[i]);
            let act_tol = if exact {
                reference::gelu_erf_tolerance(gate[i], act[i])
            } else {
                reference::gelu_tolerance(gate[i], act[i])
            };
            let tol = (act_tol + act[i].abs() * f64::from(f32::EPSILON)) * f64::from(up[i]).abs();
            assert!(
                (f64::from(got[i]) - want).abs() <= tol + 1e-37,
                "{kind:?} [{i}]: {} vs {want} ± {tol:e}",
                got[i]
            );
        }
    }
}
