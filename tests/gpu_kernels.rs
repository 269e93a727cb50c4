//! GPU kernels against their CPU references, on a real WebGPU implementation.
//!
//! `make test` runs this file twice: on lavapipe with the full profile and on SwiftShader with the
//! baseline profile (there with `POCKETLM_TEST_GRID=sparse`: each weight format and each shape
//! once rather than every pair, see `common::grid`). Two variables say what to expect:
//! - `POCKETLM_TEST_PROFILE`: `auto` (default), `full` or `baseline` — the profile to request;
//! - `POCKETLM_TEST_ADAPTER`: a substring the adapter's name must contain (e.g. `llvmpipe`,
//!   `SwiftShader`), so a run never silently lands on another driver.
//!
//! No adapter is a failure, never a skip.
//!
//! Tolerances: every comparison uses the per-element bound of `pocketlm::reference`, derived from
//! WGSL's stated f32 accuracy (see that module): for a linear layer of depth k,
//! |gpu − exact| ≤ γ_{k+1}·Σ|xᵢwᵢ| (γₙ = n·2⁻²⁴ / (1 − n·2⁻²⁴)); for RMSNorm over c columns,
//! |gpu − exact| ≤ |exact|·(γ_c/2 + 16·2⁻²⁴); for SwiGLU, |gpu − exact| ≤ |exact|·(16 + 4|g|)·2⁻²⁴.
//! A case passes when the worst element is within its bound.

#![cfg(not(target_arch = "wasm32"))]

use half::f16;
use pocketlm::gpu::{
    DType, GpuContext, Interface, Kernel, Profile, ProfileRequest, Specialization,
};
use pocketlm::kernels;
use pocketlm::reference::{self, Rng};
use pocketlm::selfcheck::{run_case, Case, LinearKernel, TileBound};
use pocketlm::Error;
use proptest::prelude::*;

mod common;
use common::{ctx, expect_err, family, gpu_kernels_ctx, grid};

fn assert_passes(case: Case, seed: u64) {
    assert_passes_on(ctx(), case, seed);
}

fn assert_passes_on(ctx: &GpuContext, case: Case, seed: u64) {
    let o = pollster::block_on(run_case(ctx, case, seed)).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(
        o.passed(),
        "{o} (seed {seed:#x}, cpu kernels {})",
        ctx.capabilities().cpu
    );
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    /// On the profile's default kernel family and on the GPU family.
    #[test]
    fn matvec_matches_reference(m in 1usize..=16, n in 1usize..=300, k in 1usize..=700,
                                weights in dtype(), gpu_family in any::<bool>(), seed in any::<u64>()) {
        let case = Case::Linear { kernel: LinearKernel::Matvec, m, n, k, weights };
        assert_passes_on(family(gpu_family), case, seed);
    }

    #[test]
    fn matmul_matches_reference(m in 1usize..=150, n in 1usize..=200, k in 1usize..=300,
                                weights in dtype(), gpu_family in any::<bool>(), seed in any::<u64>()) {
        let case = Case::Linear { kernel: LinearKernel::Matmul, m, n, k, weights };
        assert_passes_on(family(gpu_family), case, seed);
    }

    /// The prefill GEMM with f16 tiles, all three float weight formats (the block formats:
    /// tests/gpu_quant.rs).
    #[test]
    fn matmul_with_f16_tiles_matches_reference(m in 1usize..=150, n in 1usize..=200, k in 1usize..=300,
                                               weights in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)],
                                               seed in any::<u64>()) {
        let ctx = common::f16_tiles_ctx();
        // Without shader-f16 (the baseline profile) this would repeat matmul_matches_reference.
        if ctx.capabilities().f16 {
            let case = Case::Linear { kernel: LinearKernel::Matmul, m, n, k, weights };
            assert_passes_on(ctx, case, seed);
        }
    }

    #[test]
    fn rmsnorm_matches_reference(rows in 1usize..=20, cols in 1usize..=2000,
                                 eps in prop_oneof![Just(1e-6f32), Just(1e-5f32)], seed in any::<u64>()) {
        assert_passes(Case::RmsNorm { rows, cols, eps }, seed);
    }

    #[test]
    fn swiglu_matches_reference(len in 1usize..=10_000, seed in any::<u64>()) {
        assert_passes(Case::SwiGlu { len }, seed);
    }
}

/// Sizes on and around the tile edges (64×64 output tiles, k steps of 16 and 32, 4 rows per
/// matvec workgroup, 256 invocations, up to 16 activation rows per matvec workgroup), where
/// off-by-one errors live, on both kernel families and the GEMM's f16 tiles.
#[test]
fn linear_kernels_at_tile_edges() {
    for (weights, ctx) in [
        (DType::F32, ctx()),
        (DType::F16, ctx()),
        (DType::F32, gpu_kernels_ctx()),
        (DType::BF16, gpu_kernels_ctx()),
        (DType::F32, common::f16_tiles_ctx()),
    ] {
        for (m, n, k) in [
            (64, 64, 16),
            (64, 64, 32),
            (65, 63, 33),
            (65, 63, 17),
            (63, 65, 15),
            (63, 65, 31),
            (128, 128, 64),
            (1, 4, 256),
            (2, 5, 257),
            (4, 3, 255),
            (9, 3, 255),
            (16, 5, 257),
            (1, 1, 2),
            (3, 2, 3),
        ] {
            for kernel in [LinearKernel::Matvec, LinearKernel::Matmul] {
                // The f16-tile context: only its GEMM (the rest is the GPU family's).
                let f16_ctx = common::is_f16_tiles_ctx(ctx);
                if f16_ctx && !kernels::uses_f16_tiles(ctx, kernel, m) {
                    continue;
                }
                assert_passes_on(
                    ctx,
                    Case::Linear {
                        kernel,
                        m,
                        n,
                        k,
                        weights,
                    },
                    (m * 1_000_000 + n * 1000 + k) as u64,
                );
            }
        }
    }
}

/// More workgroups than one grid dimension holds: the kernels see a 2-D grid. With the device's
/// real limit (65535) for the cheapest kernel, and with a context whose grid is capped at 97 per
/// dimension for every kind of kernel (so the path is exercised at a size SwiftShader runs fast).
#[test]
fn kernels_span_a_two_dimensional_grid() {
    // 256 elements per workgroup: 65536 workgroups and one more element.
    assert_passes(
        Case::SwiGlu {
            len: 65_536 * 256 + 1,
        },
        3,
    );
    let small = pollster::block_on(GpuContext::new(common::profile_request()))
        .unwrap()
        .with_grid_limit(97);
    assert_eq!(small.capabilities().max_workgroups_per_dimension, 97);
    for (seed, case) in [
        Case::Linear {
            kernel: LinearKernel::Matvec,
            m: 4,
            n: 4 * 97 * 3 + 1,
            k: 9,
            weights: DType::F16,
        },
        Case::Linear {
            kernel: LinearKernel::Matmul,
            m: 64 * 11,
            n: 64 * 10,
            k: 32,
            weights: DType::Q8_0,
        },
        Case::RmsNorm {
            rows: 97 * 2 + 5,
            cols: 3,
            eps: 1e-6,
        },
        Case::SwiGlu {
            len: 256 * 97 * 2 + 1,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let o = pollster::block_on(run_case(&small, case, seed as u64)).unwrap();
        assert!(o.passed(), "{o}");
    }
}

/// The standard self-check set (`pocketlm selfcheck`, `make demo`) passes.
#[test]
fn standard_selfcheck_passes() {
    let outcomes = pollster::block_on(pocketlm::selfcheck::run_standard(ctx())).unwrap();
    for o in &outcomes {
        assert!(o.passed(), "{o}");
    }
}

/// Several kernels recorded into one command buffer run in order (each sees its predecessor's
/// output) with one submit: a Llama MLP block, norm → gate/up projections → SwiGLU → down.
#[test]
fn chained_dispatches_in_one_submit() {
    let ctx = ctx();
    let (hidden, ffn, eps) = (96usize, 160usize, 1e-5f32);
    let mut rng = Rng::new(7);
    let x = rng.vec(hidden, -2.0, 2.0);
    let g = rng.vec(hidden, 0.5, 1.5);
    let w_gate = rng.vec(ffn * hidden, -0.2, 0.2);
    let w_up = rng.vec(ffn * hidden, -0.2, 0.2);
    let w_down_h: Vec<f16> = rng
        .vec(hidden * ffn, -0.2, 0.2)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let w_down: Vec<f32> = w_down_h.iter().map(|h| h.to_f32()).collect();

    let xt = ctx.upload_f32("x", &[1, hidden], &x).unwrap();
    let gt = ctx.upload_f32("norm", &[hidden], &g).unwrap();
    let wg = ctx.upload_f32("w_gate", &[ffn, hidden], &w_gate).unwrap();
    let wu = ctx.upload_f32("w_up", &[ffn, hidden], &w_up).unwrap();
    let wd = ctx.upload_f16("w_down", &[hidden, ffn], &w_down_h).unwrap();
    let normed = ctx.zeros("normed", &[1, hidden], DType::F32).unwrap();
    let gate = ctx.zeros("gate", &[1, ffn], DType::F32).unwrap();
    let up = ctx.zeros("up", &[1, ffn], DType::F32).unwrap();
    let act = ctx.zeros("act", &[1, ffn], DType::F32).unwrap();
    let out = ctx.zeros("out", &[1, hidden], DType::F32).unwrap();

    let dispatches = pollster::block_on(async {
        Ok::<_, Error>(vec![
            kernels::rmsnorm(ctx, &xt, &gt, eps, &normed).await?,
            kernels::linear(ctx, &wg, &normed, &gate).await?,
            kernels::linear(ctx, &wu, &normed, &up).await?,
            kernels::swiglu(ctx, &gate, &up, &act).await?,
            kernels::linear(ctx, &wd, &act, &out).await?,
        ])
    })
    .unwrap();

    let (submits0, dispatches0, _) = ctx.stats.snapshot();
    let mut rec = ctx.recorder();
    rec.dispatch_all(&dispatches);
    let slot = rec.read(&out);
    let gpu = pollster::block_on(rec.submit_and_read())
        .unwrap()
        .f32(slot)
        .unwrap();
    let (submits1, dispatches1, _) = ctx.stats.snapshot();
    // Other tests share the context and may submit concurrently, so only lower bounds hold.
    assert!(submits1 > submits0 && dispatches1 >= dispatches0 + 5);

    // CPU chain in f64. Each stage's f32 rounding propagates; the budget below is the sum of the
    // stages' bounds scaled by the magnitudes involved, which is far above what f32 achieves but
    // far below what any indexing or ordering mistake produces.
    let n = reference::rmsnorm(&x, hidden, &g, eps);
    let n32: Vec<f32> = n.iter().map(|&v| v as f32).collect();
    let (ga, _) = reference::linear(&w_gate, ffn, hidden, &n32, 1);
    let (ua, _) = reference::linear(&w_up, ffn, hidden, &n32, 1);
    let ga32: Vec<f32> = ga.iter().map(|&v| v as f32).collect();
    let ua32: Vec<f32> = ua.iter().map(|&v| v as f32).collect();
    let a = reference::swiglu(&ga32, &ua32);
    let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
    let (want, mag) = reference::linear(&w_down, hidden, ffn, &a32, 1);
    for i in 0..hidden {
        let tol = 64.0 * reference::linear_tolerance(ffn + hidden, mag[i]);
        let err = (f64::from(gpu[i]) - want[i]).abs();
        assert!(
            err <= tol,
            "out[{i}]: gpu {} vs {} (|err| {err:e} > {tol:e})",
            gpu[i],
            want[i]
        );
    }
}

/// The requested profile is what the device got: the baseline profile really is restricted.
#[test]
fn device_profile_is_as_requested() {
    let ctx = ctx();
    let caps = ctx.capabilities();
    let request = common::profile_request();
    match request {
        ProfileRequest::Baseline => {
            assert_eq!(ctx.profile(), Profile::Baseline);
            assert!(!caps.f16 && !caps.subgroups, "{caps:?}");
            assert_eq!(caps.max_invocations_per_workgroup, 256);
            assert!(caps.max_storage_buffers_per_stage <= 8, "{caps:?}");
            assert_eq!(caps.max_storage_binding_bytes, 128 << 20);
        }
        ProfileRequest::Full => {
            assert_eq!(ctx.profile(), Profile::Full);
            assert!(caps.f16 && caps.subgroups, "{caps:?}");
        }
        ProfileRequest::Auto => {
            assert_eq!(ctx.profile() == Profile::Full, caps.f16 && caps.subgroups);
        }
    }
}

#[test]
fn bad_shapes_and_dtypes_are_typed_errors() {
    let ctx = ctx();
    let w = ctx.zeros("w", &[8, 16], DType::F32).unwrap();
    let w3 = ctx.zeros("w3", &[2, 8, 16], DType::F32).unwrap();
    let x = ctx.zeros("x", &[1, 16], DType::F32).unwrap();
    let x_bad = ctx.zeros("x_bad", &[1, 15], DType::F32).unwrap();
    let x_f16 = ctx.zeros("x_f16", &[1, 16], DType::F16).unwrap();
    let y = ctx.zeros("y", &[1, 8], DType::F32).unwrap();
    let y_bad = ctx.zeros("y_bad", &[2, 8], DType::F32).unwrap();

    expect_err(
        pollster::block_on(kernels::matvec(ctx, &w, &x_bad, &y)),
        "shape_mismatch",
        "x_bad",
    );
    expect_err(
        pollster::block_on(kernels::matmul(ctx, &w, &x, &y_bad)),
        "shape_mismatch",
        "y_bad",
    );
    expect_err(
        pollster::block_on(kernels::linear(ctx, &w3, &x, &y)),
        "shape_mismatch",
        "2-D",
    );
    expect_err(
        pollster::block_on(kernels::matvec(ctx, &w, &x_f16, &y)),
        "unsupported_dtype",
        "x_f16",
    );
    expect_err(
        pollster::block_on(kernels::matvec(ctx, &w, &x, &x)),
        "shape_mismatch",
        "shares its buffer",
    );

    let g = ctx.zeros("g", &[15], DType::F32).unwrap();
    let h = ctx.zeros("h", &[1, 16], DType::F32).unwrap();
    expect_err(
        pollster::block_on(kernels::rmsnorm(ctx, &x, &g, 1e-5, &h)),
        "shape_mismatch",
        "weight 'g'",
    );
    let g16 = ctx.zeros("g16", &[16], DType::F32).unwrap();
    expect_err(
        pollster::block_on(kernels::rmsnorm(ctx, &x, &g16, f32::NAN, &h)),
        "shape_mismatch",
        "eps",
    );
    expect_err(
        pollster::block_on(kernels::swiglu(ctx, &x, &y, &h)),
        "shape_mismatch",
        "one shape",
    );

    expect_err(
        ctx.upload_f32("short", &[4, 4], &[0.0; 15]),
        "invalid_tensor",
        "15 were given",
    );
    // Refused before anything is allocated.
    expect_err(
        ctx.zeros("huge", &[1 << 20, 1 << 20], DType::F32),
        "too_large",
        "huge",
    );
    expect_err(
        ctx.zeros("overflow", &[usize::MAX, 4], DType::F32),
        "invalid_tensor",
        "overflow",
    );
    expect_err(
        "turbo".parse::<ProfileRequest>(),
        "unknown_profile",
        "turbo",
    );
    ctx.check_health()
        .expect("no GPU error was raised by any of the above");
}

/// A kernel that does not compile comes back as an error (through an error scope), not a panic.
#[test]
fn shader_compile_errors_are_typed() {
    let broken = Kernel::new(
        "broken",
        "@compute @workgroup_size(1) fn main() { let x: u32 = undefined_thing; }",
        "main",
        Interface::NONE,
    );
    let r = pollster::block_on(ctx().pipeline(&broken, &Specialization::default()));
    expect_err(r, "shader_compile", "undefined_thing");
    ctx()
        .check_health()
        .expect("the error was caught by its scope");
}

/// f16 storage round-trips, including odd row lengths (rows padded to whole words).
#[test]
fn f16_tensors_round_trip_with_odd_rows() {
    let ctx = ctx();
    let data: Vec<f16> = (0..35)
        .map(|i| f16::from_f32(i as f32 * 0.25 - 3.0))
        .collect();
    let t = ctx.upload_f16("odd", &[5, 7], &data).unwrap();
    assert_eq!(t.row_stride(), 8);
    let back = pollster::block_on(ctx.read_f32(&t)).unwrap();
    let want: Vec<f32> = data.iter().map(|h| h.to_f32()).collect();
    assert_eq!(back, want);
}

/// Whether a case of `m` activation rows is worth its shader compiles on `ctx`: the CPU family's
/// matrix-vector kernel takes at most 4 rows per invocation whatever m is (the smaller cases
/// cover it), so the many-row cases (the GPU family's up to 16 rows per workgroup) run on the
/// GPU family only.
fn rows_case_applies(ctx: &GpuContext, kernel: LinearKernel, m: usize) -> bool {
    !(ctx.capabilities().cpu && kernel == LinearKernel::Matvec && m > kernels::MATVEC_MAX_ROWS)
}

/// Whether a test's shape (`kernel` on `m` rows) runs on `ctx`: see [`rows_case_applies`], and
/// shapes of more than 4 rows only where `many` (the tests share them out among the formats).
/// The f16-tile context runs only what differs from the GPU family, the GEMM on f16 tiles, and
/// that in every format (nothing where the device has no f16: the baseline profile).
fn shape_applies(ctx: &GpuContext, kernel: LinearKernel, m: usize, many: bool) -> bool {
    if common::is_f16_tiles_ctx(ctx) {
        return kernels::uses_f16_tiles(ctx, kernel, m);
    }
    rows_case_applies(ctx, kernel, m) && (m <= 4 || many)
}

/// Both linear-kernel families (one dot product per workgroup for GPUs, whole dot products per
/// invocation for CPU drivers) on every weight format, plain and with bias + residual.
#[test]
fn both_linear_kernel_families_match_reference() {
    let cpu = common::cpu_kernels_ctx();
    for ctx in [cpu, gpu_kernels_ctx(), common::f16_tiles_ctx()] {
        let c = ctx.capabilities().cpu;
        for (i, weights) in DType::WEIGHTS.into_iter().enumerate() {
            let k = if weights.is_quantized() {
                2 * weights.block_size()
            } else {
                67
            };
            // Many rows: a third of the formats (the others in the RMSNorm test below).
            let shapes = [
                (LinearKernel::Matvec, 1, 37),
                (LinearKernel::Matvec, 3, 70),
                (LinearKernel::Matvec, 6, 70),
                (LinearKernel::Matvec, 11, 70),
                (LinearKernel::Matmul, 70, 65),
            ]
            .into_iter()
            .filter(|&(kernel, m, _)| shape_applies(ctx, kernel, m, i % 3 == 0));
            for (kernel, m, n) in grid(i, shapes) {
                let seed = (i * 1000 + m * 10 + n) as u64;
                let cases = [
                    Case::Linear {
                        kernel,
                        m,
                        n,
                        k,
                        weights,
                    },
                    Case::LinearFused {
                        kernel,
                        m,
                        n,
                        k,
                        weights,
                    },
                ];
                for case in grid(i, cases) {
                    let o = pollster::block_on(run_case(ctx, case, seed)).unwrap();
                    assert!(o.passed(), "cpu kernels {c}: {o} (seed {seed})");
                }
            }
        }
    }
}

/// The CPU kernels decode every weight exactly as ggml does: x = rows of the identity makes each
/// output one weight (times 1, plus zeros), compared with the reference dequantization, for the
/// weight formats, each with its own decoder in the vec4 kernel (linear_rows4.wgsl decodes
/// fields in place, without shifting each down; floats in blocks of 32), through its
/// one-row-per-step and many-row paths.
#[test]
fn cpu_kernels_decode_weights_exactly() {
    let ctx = common::cpu_kernels_ctx();
    let mut rng = Rng::new(17);
    for (i, dtype) in DType::WEIGHTS.into_iter().enumerate() {
        let (n, k) = (7, 2 * dtype.block_size().max(32));
        let (w, want) = random_weights(ctx, "w", dtype, n, k, &mut rng);
        for m in grid(i, [2, k]) {
            let mut eye = vec![0.0f32; m * k];
            for i in 0..m {
                eye[i * k + i] = 1.0;
            }
            let x = ctx.upload_f32("x", &[m, k], &eye).unwrap();
            let y = ctx.zeros("y", &[m, n], DType::F32).unwrap();
            let d = pollster::block_on(kernels::linear(ctx, &w, &x, &y)).unwrap();
            let got = read_all(ctx, &d, &[&y]).remove(0);
            for i in 0..m {
                for j in 0..n {
                    let (g, e) = (got[i * n + j], want[j * k + i]);
                    assert!(
                        g == e || (g.is_nan() && e.is_nan()),
                        "{dtype}, {m} rows: weight ({j}, {i}) came out {g}, expected {e}"
                    );
                }
            }
        }
    }
}

/// Uploads random GGUF data of `dtype` as a [rows, cols] tensor; returns it and its values.
fn random_weights(
    ctx: &GpuContext,
    name: &str,
    dtype: DType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> (pocketlm::gpu::GpuTensor, Vec<f32>) {
    let bytes = pocketlm::quant::random_gguf_bytes(dtype, rows * cols, rng);
    let t = ctx.upload_gguf(name, &[rows, cols], dtype, &bytes).unwrap();
    let exact = pocketlm::quant::dequantize_to_vec(dtype, &bytes).unwrap();
    (t, exact)
}

/// concat_rows stacks the rows of its parts in every weight format's GPU layout, including f16
/// block scales that land on an odd block (parts with an odd number of blocks), bit for bit; and
/// 1-D f32 tensors (biases) element-wise.
#[test]
fn concat_rows_stacks_rows_in_every_format() {
    let ctx = ctx();
    let mut rng = Rng::new(11);
    for dtype in DType::WEIGHTS {
        for blocks in [1usize, 3] {
            let cols = if dtype.is_quantized() {
                blocks * dtype.block_size()
            } else {
                8 * blocks + 1
            };
            let mut parts = Vec::new();
            let mut want = Vec::new();
            for (i, rows) in [3usize, 1, 2, 5].into_iter().enumerate() {
                let (t, v) = random_weights(ctx, &format!("part{i}"), dtype, rows, cols, &mut rng);
                parts.push(t);
                want.extend(v);
            }
            let refs: Vec<&pocketlm::gpu::GpuTensor> = parts.iter().collect();
            let all = pollster::block_on(kernels::concat_rows(ctx, "all", &refs)).unwrap();
            assert_eq!(all.shape(), [11, cols]);
            assert_eq!(all.dtype(), dtype);
            let ids: Vec<i32> = (0..11).collect();
            let got = common::gpu_rows(&all, &ids);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{dtype} ({blocks} blocks per row): element {i} (row {}) is {g}, expected {w}",
                    i / cols
                );
            }
        }
    }
    let a = ctx.upload_f32("a", &[3], &[1.0, 2.0, 3.0]).unwrap();
    let b = ctx.upload_f32("b", &[2], &[4.0, 5.0]).unwrap();
    let ab = pollster::block_on(kernels::concat_rows(ctx, "ab", &[&a, &b])).unwrap();
    let mut rec = ctx.recorder();
    let slot = rec.read(&ab);
    let got = pollster::block_on(rec.submit_and_read())
        .unwrap()
        .f32(slot)
        .unwrap();
    assert_eq!(got, [1.0, 2.0, 3.0, 4.0, 5.0]);
    // Parts that do not stack are typed errors.
    let q = ctx.zeros("q", &[2, 32], DType::Q8_0).unwrap();
    let f = ctx.zeros("f", &[2, 32], DType::F32).unwrap();
    let wide = ctx.zeros("wide", &[2, 64], DType::Q8_0).unwrap();
    expect_err(
        pollster::block_on(kernels::concat_rows(ctx, "x", &[&q, &f])),
        "shape_mismatch",
        "does not stack",
    );
    expect_err(
        pollster::block_on(kernels::concat_rows(ctx, "x", &[&q, &wide])),
        "shape_mismatch",
        "does not stack",
    );
    expect_err(
        pollster::block_on(kernels::concat_rows(ctx, "x", &[])),
        "shape_mismatch",
        "no tensors",
    );
}

fn read_all(
    ctx: &GpuContext,
    d: &pocketlm::gpu::Dispatch,
    outs: &[&pocketlm::gpu::GpuTensor],
) -> Vec<Vec<f32>> {
    let mut rec = ctx.recorder();
    rec.dispatch(d);
    let slots: Vec<_> = outs.iter().map(|t| rec.read(t)).collect();
    let r = pollster::block_on(rec.submit_and_read()).unwrap();
    slots.into_iter().map(|s| r.f32(s).unwrap()).collect()
}

/// The f16 tiles keep every activation row within f16's range (6·10⁻⁸ to 65504): rows scaled
/// by 2⁻¹²⁰ to 2¹⁰⁰, a row whose largest value is 2⁴⁰ times the others and a row of zeros, each
/// output within the bound of rounding each input once; with the RMSNorm prologue too (rows up
/// to 2⁶⁰), whose norm weight scales the stored values (here by up to 2⁵⁰); f32, f16 and Q8_0
/// weights.
#[test]
fn f16_tiles_keep_every_row_in_range() {
    let ctx = common::f16_tiles_ctx();
    let (m, n, k) = (70, 33, 96);
    if !kernels::uses_f16_tiles(ctx, LinearKernel::Matmul, m) {
        // Without shader-f16 (the baseline profile) the tiles are f32: nothing to check.
        assert!(!ctx.capabilities().f16);
        return;
    }
    let mut rng = Rng::new(31);
    let exps = [-120, -60, -20, 0, 20, 60, 100];
    let mut x = rng.vec(m * k, -1.0, 1.0);
    for (r, row) in x.chunks_mut(k).enumerate() {
        match r % 9 {
            7 => row[r % k] *= 2f32.powi(40),
            8 => row.fill(0.0),
            e => row.iter_mut().for_each(|v| *v *= 2f32.powi(exps[e])),
        }
    }
    // With RMSNorm the rows normalise to the same range, but the stored x·g does not: the
    // norm weight scales some columns by 2⁵⁰. (Not the rows at 2¹⁰⁰ there, whose Σx² leaves
    // f32 on any tiles: those at 2⁶⁰ instead.)
    let g: Vec<f32> = (0..k)
        .map(|c| rng.uniform(0.5, 2.0) * 2f32.powi(if c % 5 == 0 { 50 } else { 0 }))
        .collect();
    let gt = ctx.upload_f32("g", &[k], &g).unwrap();
    let x_norm: Vec<f32> = x
        .chunks(k)
        .enumerate()
        .flat_map(|(r, row)| {
            let s = if r % 9 == 6 { 2f32.powi(-40) } else { 1.0 };
            row.iter().map(move |v| v * s)
        })
        .collect();
    let eps = 1e-6;
    for dtype in [DType::F32, DType::F16, DType::Q8_0] {
        let (wt, w) = random_weights(ctx, "w", dtype, n, k, &mut rng);
        for norm in [false, true] {
            let x = if norm { &x_norm } else { &x };
            let xt = ctx.upload_f32("x", &[m, k], x).unwrap();
            let yt = ctx.zeros("y", &[m, n], DType::F32).unwrap();
            let opts = kernels::Linear {
                kernel: LinearKernel::Matmul,
                norm: norm.then_some((&gt, eps)),
                ..Default::default()
            };
            let d = pollster::block_on(kernels::linear_with(ctx, &wt, &xt, &yt, &opts)).unwrap();
            let got = &read_all(ctx, &d, &[&yt])[0];
            let (want, mag, tiles) = if norm {
                let (want, mag) = reference::rmsnorm_linear(&w, n, k, x, m, &g, eps);
                let normed = reference::rmsnorm(x, k, &g, eps);
                (
                    want,
                    mag,
                    TileBound::new(ctx, LinearKernel::Matmul, m, k, &normed, &w),
                )
            } else {
                let (want, mag) = reference::linear(&w, n, k, x, m);
                (
                    want,
                    mag,
                    TileBound::new(ctx, LinearKernel::Matmul, m, k, x, &w),
                )
            };
            for i in 0..m * n {
                let tol = if norm {
                    reference::rmsnorm_linear_tolerance(k, k, mag[i], 0.0)
                } else {
                    reference::linear_tolerance(k, mag[i])
                };
                let tol = tiles.widen(i / n, tol, mag[i]);
                let e = (f64::from(got[i]) - want[i]).abs();
                assert!(
                    e <= tol,
                    "{dtype} norm {norm}, row {} (scale class {}): [{}] = {}, expected {} ± {tol:e}",
                    i / n,
                    (i / n) % 9,
                    i % n,
                    got[i],
                    want[i]
                );
            }
        }
    }
}

/// A fused QKV projection: W = concat_rows(q, k, v) with the concatenated bias, outputs split by
/// column range into three tensors, on both kernel families, matvec and matmul, several formats;
/// with accumulate, each output adds to what it held.
#[test]
fn linear_split_writes_column_ranges_to_separate_outputs() {
    let mut rng = Rng::new(5);
    for ctx in [ctx(), gpu_kernels_ctx(), common::f16_tiles_ctx()] {
        for (f, dtype) in [
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_0,
            DType::F16,
            DType::Q4_K,
        ]
        .into_iter()
        .enumerate()
        {
            let k = if dtype.is_quantized() {
                2 * dtype.block_size()
            } else {
                70
            };
            let widths = [9usize, 3, 5];
            let mut parts = Vec::new();
            let mut w_all = Vec::new();
            for (i, &n) in widths.iter().enumerate() {
                let (t, v) = random_weights(ctx, &format!("w{i}"), dtype, n, k, &mut rng);
                parts.push(t);
                w_all.extend(v);
            }
            let refs: Vec<&pocketlm::gpu::GpuTensor> = parts.iter().collect();
            let w = pollster::block_on(kernels::concat_rows(ctx, "wqkv", &refs)).unwrap();
            let bias: Vec<f32> = rng.vec(17, -1.0, 1.0);
            let b0 = ctx.upload_f32("bq", &[9], &bias[..9]).unwrap();
            let b1 = ctx.upload_f32("bk", &[3], &bias[9..12]).unwrap();
            let b2 = ctx.upload_f32("bv", &[5], &bias[12..]).unwrap();
            let bt =
                pollster::block_on(kernels::concat_rows(ctx, "bqkv", &[&b0, &b1, &b2])).unwrap();
            let many_rows_format = matches!(dtype, DType::Q4_0 | DType::F16);
            let shapes = [
                (LinearKernel::Matvec, 1),
                (LinearKernel::Matvec, 3),
                (LinearKernel::Matvec, 12),
                (LinearKernel::Matmul, 67),
            ]
            .into_iter()
            .filter(|&(kernel, m)| shape_applies(ctx, kernel, m, many_rows_format));
            for (kernel, m) in grid(f, shapes) {
                for accumulate in grid(f, [false, true]) {
                    let x = rng.vec(m * k, -1.0, 1.0);
                    let xt = ctx.upload_f32("x", &[m, k], &x).unwrap();
                    let init: Vec<Vec<f32>> =
                        widths.iter().map(|&n| rng.vec(m * n, -2.0, 2.0)).collect();
                    let outs: Vec<_> = widths
                        .iter()
                        .zip(&init)
                        .enumerate()
                        .map(|(i, (&n, v))| ctx.upload_f32(&format!("y{i}"), &[m, n], v).unwrap())
                        .collect();
                    let out_refs: Vec<_> = outs.iter().collect();
                    let opts = kernels::Linear {
                        kernel,
                        bias: Some(&bt),
                        accumulate,
                        ..Default::default()
                    };
                    let d =
                        pollster::block_on(kernels::linear_split(ctx, &w, &xt, &out_refs, &opts))
                            .unwrap();
                    let got = read_all(ctx, &d, &out_refs);
                    let (want, mag) = reference::linear(&w_all, 17, k, &x, m);
                    let tiles = TileBound::new(ctx, kernel, m, k, &x, &w_all);
                    for r in 0..m {
                        let mut col = 0;
                        for (o, &n) in widths.iter().enumerate() {
                            for j in 0..n {
                                let mut exact = want[r * 17 + col] + f64::from(bias[col]);
                                let mut a = mag[r * 17 + col] + f64::from(bias[col]).abs();
                                if accumulate {
                                    let y0 = f64::from(init[o][r * n + j]);
                                    exact += y0;
                                    a += y0.abs();
                                }
                                let g = f64::from(got[o][r * n + j]);
                                let tol = tiles.widen(
                                    r,
                                    reference::linear_tolerance(k + 2, a),
                                    mag[r * 17 + col],
                                );
                                assert!(
                                    (g - exact).abs() <= tol,
                                    "{dtype} {kernel:?} m {m} acc {accumulate} cpu {}: output {o} [{r}, {j}] = {g}, expected {exact} ± {tol:e}",
                                    ctx.capabilities().cpu
                                );
                                col += 1;
                            }
                        }
                    }
                }
            }
            // Columns that do not add up, or a fourth output, are typed errors.
            let xt = ctx.zeros("x", &[1, k], DType::F32).unwrap();
            let y = ctx.zeros("y", &[1, 9], DType::F32).unwrap();
            let y1 = ctx.zeros("y1", &[1, 3], DType::F32).unwrap();
            let y2 = ctx.zeros("y2", &[1, 4], DType::F32).unwrap();
            let y3 = ctx.zeros("y3", &[1, 1], DType::F32).unwrap();
            let opts = kernels::Linear::default();
            expect_err(
                pollster::block_on(kernels::linear_split(ctx, &w, &xt, &[&y, &y1, &y2], &opts)),
                "shape_mismatch",
                "17 columns",
            );
            expect_err(
                pollster::block_on(kernels::linear_split(
                    ctx,
                    &w,
                    &xt,
                    &[&y, &y1, &y2, &y3],
                    &opts,
                )),
                "shape_mismatch",
                "at most 3 outputs",
            );
        }
    }
}

/// The q, k, v projection with RoPE and the KV-cache write in its epilogue gives what the
/// projection into q, k, v and rope_kv_write give: both kernel families, float and block formats
/// (the vec4 CPU kernel's and the word kernels'), NeoX and interleaved pairs, f16 and f32 caches,
/// with the RMSNorm prologue, with and without a bias, steps of 1 and 3 rows (one row past the
/// step's tokens, never stored); and what it cannot run is a typed error.
#[test]
fn qkv_projection_with_rope_epilogue_matches_rope_kv_write() {
    use kernels::{KvCache, RopeConfig, RopeKv, RopeLayout, RopeTable, StepState};
    let mut rng = Rng::new(17);
    let cpu = common::cpu_kernels_ctx();
    let (q_heads, kv_heads, hd) = (4usize, 2usize, 12usize);
    let n = (q_heads + 2 * kv_heads) * hd;
    let offset = 5;
    for ctx in [cpu, gpu_kernels_ctx()] {
        for (f, dtype) in [
            DType::F32,
            DType::F16,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K,
        ]
        .into_iter()
        .enumerate()
        {
            let k = if dtype.is_quantized() {
                2 * dtype.block_size()
            } else {
                70
            };
            let (w, _) = random_weights(ctx, "wqkv", dtype, n, k, &mut rng);
            let g = ctx.upload_f32("g", &[k], &rng.vec(k, 0.5, 1.5)).unwrap();
            let b = ctx.upload_f32("b", &[n], &rng.vec(n, -1.0, 1.0)).unwrap();
            let layout = [RopeLayout::NeoX, RopeLayout::Interleaved][f % 2];
            let cache_dtype = [DType::F16, DType::F32][(f / 2) % 2];
            let bias = (f % 3 != 0).then_some(&b);
            for (m, tokens) in grid(f, [(1usize, 1usize), (3, 2)]) {
                let max_pos = offset + m;
                let table =
                    RopeTable::new(ctx, RopeConfig::new(hd, 10000.0, layout), max_pos).unwrap();
                let mut step = StepState::new(ctx, m, max_pos).unwrap();
                step.set(ctx, offset, tokens).unwrap();
                let x = ctx
                    .upload_f32("x", &[m, k], &rng.vec(m * k, -1.0, 1.0))
                    .unwrap();
                let opts = kernels::Linear {
                    norm: Some((&g, 1e-5)),
                    bias,
                    ..Default::default()
                };
                let case = format!(
                    "{dtype} {layout:?} {cache_dtype} cache, bias {}, {m} rows, cpu kernels {}",
                    bias.is_some(),
                    ctx.capabilities().cpu
                );
                // One dispatch: the epilogue.
                let cache_b =
                    KvCache::with_dtype(ctx, 2, max_pos, kv_heads, hd, cache_dtype).unwrap();
                let qb = ctx.zeros("qb", &[m, q_heads * hd], DType::F32).unwrap();
                let out = RopeKv {
                    table: &table,
                    step: &step,
                    cache: &cache_b,
                    layer: 1,
                };
                let caps = ctx.capabilities();
                let fits = kernels::qkv_rope_fits(
                    ctx,
                    &w,
                    m,
                    table.config(),
                    &cache_b,
                    bias.is_some(),
                    true,
                );
                let fused =
                    pollster::block_on(kernels::linear_qkv_rope(ctx, &w, &x, &qb, &out, &opts));
                if !fits {
                    // Only the vec4 CPU kernel (the block formats here: these float rows of 70
                    // are not a multiple of 32) with a bias needs a ninth storage buffer.
                    let vec4 = caps.cpu && dtype.is_quantized();
                    let limit = caps.max_storage_buffers_per_stage;
                    assert!(vec4 && bias.is_some() && limit < 9, "{case}");
                    expect_err(fused, "shape_mismatch", "storage buffers");
                    continue;
                }
                let fused = fused.unwrap();
                // The same in two dispatches: the projection split into q, k, v, then
                // rope_kv_write.
                let cache_a =
                    KvCache::with_dtype(ctx, 2, max_pos, kv_heads, hd, cache_dtype).unwrap();
                let qa = ctx.zeros("qa", &[m, q_heads * hd], DType::F32).unwrap();
                let ka = ctx.zeros("ka", &[m, kv_heads * hd], DType::F32).unwrap();
                let va = ctx.zeros("va", &[m, kv_heads * hd], DType::F32).unwrap();
                let split =
                    pollster::block_on(kernels::linear_split(ctx, &w, &x, &[&qa, &ka, &va], &opts))
                        .unwrap();
                let heads3 =
                    |t: &pocketlm::gpu::GpuTensor, h: usize| t.reshape(&[m, h, hd]).unwrap();
                let write = pollster::block_on(kernels::rope_kv_write(
                    ctx,
                    &table,
                    &step,
                    &heads3(&qa, q_heads),
                    &heads3(&ka, kv_heads),
                    &heads3(&va, kv_heads),
                    &cache_a,
                    1,
                ))
                .unwrap();
                let mut rec = ctx.recorder();
                rec.dispatch(&split);
                rec.dispatch(&write);
                rec.dispatch(&fused);
                let (kca, vca) = cache_a.layer(1).unwrap();
                let (kcb, vcb) = cache_b.layer(1).unwrap();
                let slots: Vec<_> = [&qa, &qb, kca, kcb, vca, vcb]
                    .into_iter()
                    .map(|t| rec.read(t))
                    .collect();
                let back = pollster::block_on(rec.submit_and_read()).unwrap();
                let got: Vec<Vec<f32>> = slots.into_iter().map(|s| back.f32(s).unwrap()).collect();
                // q: the step's tokens rotated; the row past them is not stored.
                let q_len = tokens * q_heads * hd;
                let f16_cache = cache_dtype == DType::F16;
                for (what, a, b, rel) in [
                    ("q", &got[0][..q_len], &got[1][..q_len], 1e-5),
                    (
                        "k cache",
                        &got[2][..],
                        &got[3][..],
                        if f16_cache { 1e-3 } else { 1e-5 },
                    ),
                    (
                        "v cache",
                        &got[4][..],
                        &got[5][..],
                        if f16_cache { 1e-3 } else { 1e-5 },
                    ),
                ] {
                    assert_eq!(a.len(), b.len());
                    for (i, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (x - y).abs() <= rel * (1.0 + x.abs()),
                            "{case}: {what}[{i}] is {y}, the two dispatches give {x}"
                        );
                    }
                }
                assert!(
                    got[1][q_len..].iter().all(|&v| v == 0.0),
                    "{case}: a row past the step was stored"
                );
                let stored = |c: &[f32]| {
                    c.chunks(kv_heads * hd)
                        .filter(|r| r.iter().any(|&v| v != 0.0))
                        .count()
                };
                assert_eq!(stored(&got[3]), tokens, "{case}: k rows stored");
                assert_eq!(stored(&got[5]), tokens, "{case}: v rows stored");
            }
        }
    }
    // What the epilogue does not do is a typed error.
    let ctx = ctx();
    let (w, _) = random_weights(ctx, "wqkv", DType::Q8_0, n, 64, &mut rng);
    let table = RopeTable::new(ctx, RopeConfig::new(hd, 10000.0, RopeLayout::NeoX), 8).unwrap();
    let step = StepState::new(ctx, 1, 8).unwrap();
    let cache = KvCache::with_dtype(ctx, 1, 8, kv_heads, hd, DType::F16).unwrap();
    let out = RopeKv {
        table: &table,
        step: &step,
        cache: &cache,
        layer: 0,
    };
    let x = ctx.zeros("x", &[1, 64], DType::F32).unwrap();
    let q = ctx.zeros("q", &[1, q_heads * hd], DType::F32).unwrap();
    let accumulate = kernels::Linear {
        accumulate: true,
        ..Default::default()
    };
    expect_err(
        pollster::block_on(kernels::linear_qkv_rope(ctx, &w, &x, &q, &out, &accumulate)),
        "shape_mismatch",
        "without accumulate",
    );
    let wide = ctx.zeros("x5", &[5, 64], DType::F32).unwrap();
    expect_err(
        pollster::block_on(kernels::linear_qkv_rope(
            ctx,
            &w,
            &wide,
            &q,
            &out,
            &Default::default(),
        )),
        "shape_mismatch",
        "at most 4 rows",
    );
    let short_q = ctx
        .zeros("q", &[1, (q_heads - 1) * hd], DType::F32)
        .unwrap();
    expect_err(
        pollster::block_on(kernels::linear_qkv_rope(
            ctx,
            &w,
            &x,
            &short_q,
            &out,
            &Default::default(),
        )),
        "shape_mismatch",
        "its rows plus",
    );
    let partial = RopeConfig {
        rotary_dim: hd / 2,
        ..RopeConfig::new(hd, 10000.0, RopeLayout::NeoX)
    };
    let half_table = RopeTable::new(ctx, partial, 8).unwrap();
    let out = RopeKv {
        table: &half_table,
        ..out
    };
    expect_err(
        pollster::block_on(kernels::linear_qkv_rope(
            ctx,
            &w,
            &x,
            &q,
            &out,
            &Default::default(),
        )),
        "shape_mismatch",
        "rotate whole",
    );
}

/// The output projection that combines split attention's chunks as it loads them (on the kernels
/// made for GPUs) gives what attention's combine pass followed by the projection gives: float and
/// block formats, with a window and without, steps of 1 and 3 rows (one row past the step's
/// tokens), with a bias and the residual add; on the kernels for CPU adapters it is a typed
/// error.
#[test]
fn output_projection_combines_split_attention_as_it_loads() {
    use kernels::{AttentionOptions, KvCache, StepState};
    let ctx = gpu_kernels_ctx();
    let mut rng = Rng::new(23);
    let (heads, kv_heads, hd) = (4usize, 2usize, 64usize);
    let (k, n, history, max_pos) = (heads * hd, 40usize, 37usize, 48usize);
    for (f, dtype) in [DType::F32, DType::F16, DType::Q4_0, DType::Q4_K]
        .into_iter()
        .enumerate()
    {
        let (w, _) = random_weights(ctx, "wo", dtype, n, k, &mut rng);
        let b = ctx.upload_f32("b", &[n], &rng.vec(n, -1.0, 1.0)).unwrap();
        let window = [None, Some(20)][f % 2];
        for (m, tokens) in [(1usize, 1usize), (3, 2)] {
            let case = format!("{dtype}, window {window:?}, {m} rows");
            // The cache holds the history and the step's own rows.
            let cache = KvCache::with_dtype(ctx, 1, max_pos, kv_heads, hd, DType::F16).unwrap();
            let mut fill = StepState::new(ctx, max_pos, max_pos).unwrap();
            fill.set(ctx, 0, history + tokens).unwrap();
            let rows = max_pos * kv_heads * hd;
            let kt = ctx
                .upload_f32("k", &[max_pos, kv_heads, hd], &rng.vec(rows, -1.0, 1.0))
                .unwrap();
            let vt = ctx
                .upload_f32("v", &[max_pos, kv_heads, hd], &rng.vec(rows, -1.0, 1.0))
                .unwrap();
            let write =
                pollster::block_on(kernels::kv_write(ctx, &fill, &cache, 0, &kt, &vt)).unwrap();
            let mut step = StepState::new(ctx, m, max_pos).unwrap();
            step.set(ctx, history, tokens).unwrap();
            let q = ctx
                .upload_f32("q", &[m, heads, hd], &rng.vec(m * k, -1.0, 1.0))
                .unwrap();
            let o = ctx.zeros("o", &[m, heads, hd], DType::F32).unwrap();
            let opts = AttentionOptions {
                chunk_len: Some(8),
                window,
                ..Default::default()
            };
            let att = pollster::block_on(kernels::attention(ctx, &step, &q, &cache, 0, &o, &opts))
                .unwrap();
            let (chunks, parts) = att.without_combine().expect("6 chunks of 8 positions");
            assert!(kernels::combine_fits(ctx, parts, m), "{case}");
            let init = rng.vec(m * n, -2.0, 2.0);
            let ya = ctx.upload_f32("ya", &[m, n], &init).unwrap();
            let yb = ctx.upload_f32("yb", &[m, n], &init).unwrap();
            let plain = kernels::Linear {
                bias: Some(&b),
                accumulate: true,
                ..Default::default()
            };
            let o2 = o.reshape(&[m, k]).unwrap();
            let proj_a =
                pollster::block_on(kernels::linear_with(ctx, &w, &o2, &ya, &plain)).unwrap();
            // The combining projection never reads its input tensor: give it one never written.
            let unread = ctx.zeros("unread", &[m, k], DType::F32).unwrap();
            let combining = kernels::Linear {
                combine: Some((parts, &step)),
                ..plain
            };
            let proj_b =
                pollster::block_on(kernels::linear_with(ctx, &w, &unread, &yb, &combining))
                    .unwrap();
            let mut rec = ctx.recorder();
            rec.dispatch(&write);
            for d in att.dispatches() {
                rec.dispatch(d);
            }
            rec.dispatch(&proj_a);
            rec.dispatch(chunks);
            rec.dispatch(&proj_b);
            let (sa, sb) = (rec.read(&ya), rec.read(&yb));
            let back = pollster::block_on(rec.submit_and_read()).unwrap();
            let (a, bb) = (back.f32(sa).unwrap(), back.f32(sb).unwrap());
            for (i, (x, y)) in a.iter().zip(&bb).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                    "{case}: [{}, {}] is {y}, combine then projection gives {x}",
                    i / n,
                    i % n
                );
            }
            assert!(
                a[..tokens * n].iter().zip(&init).any(|(x, y)| x != y),
                "{case}: nothing added"
            );
        }
    }
    // The kernels for CPU adapters keep the combine pass.
    let cpu = common::cpu_kernels_ctx();
    let cache = KvCache::with_dtype(cpu, 1, max_pos, kv_heads, hd, DType::F16).unwrap();
    let step = StepState::new(cpu, 1, max_pos).unwrap();
    let q = cpu.zeros("q", &[1, heads, hd], DType::F32).unwrap();
    let o = cpu.zeros("o", &[1, heads, hd], DType::F32).unwrap();
    let opts = AttentionOptions {
        chunk_len: Some(8),
        ..Default::default()
    };
    let att = pollster::block_on(kernels::attention(cpu, &step, &q, &cache, 0, &o, &opts)).unwrap();
    let (_, parts) = att.without_combine().unwrap();
    assert!(!kernels::combine_fits(cpu, parts, 1));
    let w = cpu.zeros("w", &[n, k], DType::F32).unwrap();
    let y = cpu.zeros("y", &[1, n], DType::F32).unwrap();
    let combining = kernels::Linear {
        combine: Some((parts, &step)),
        ..Default::default()
    };
    expect_err(
        pollster::block_on(kernels::linear_with(
            cpu,
            &w,
            &o.reshape(&[1, k]).unwrap(),
            &y,
            &combining,
        )),
        "shape_mismatch",
        "combining split attention",
    );
}

/// A decode step's projection that adds a pending post-norm to the residual stream as it loads
/// its input ([`kernels::Linear::residual`], on the kernels made for GPUs) gives what
/// `rmsnorm_add` into the stream followed by the projection gives, stores the updated stream and
/// leaves its input as it was: float and block formats (an odd row of f16), without and with the
/// RMSNorm prologue, with SwiGLU, and split into three outputs where the device's storage
/// buffers allow it (not in the baseline profile's 8: a typed error there, as for two rows and on
/// the kernels for CPU adapters). The two paths differ only in the order of the post-norm's sum
/// of squares, so they agree to rounding: within 10⁻⁵ of Σ|w·x| per output.
#[test]
fn projection_adds_a_post_norm_as_it_loads() {
    use pocketlm::gpu::GpuTensor;
    let ctx = gpu_kernels_ctx();
    let mut rng = Rng::new(29);
    let eps = 1e-6;
    let split_fits = kernels::residual_fits(ctx, 1, 3, false, true);
    for (dtype, k) in [
        (DType::F32, 640usize),
        (DType::F16, 641),
        (DType::Q8_0, 640),
        (DType::Q4_K, 768),
    ] {
        let x0 = rng.vec(k, -3.0, 3.0);
        let h = ctx
            .upload_f32("h", &[1, k], &rng.vec(k, -40.0, 40.0))
            .unwrap();
        let g = ctx
            .upload_f32("post g", &[k], &rng.vec(k, -1.5, 1.5))
            .unwrap();
        let ffn = rng.vec(k, 0.5, 1.5);
        let ffn_g = ctx.upload_f32("ffn g", &[k], &ffn).unwrap();
        let n = 96;
        let (w, exact) = random_weights(ctx, "w", dtype, n, k, &mut rng);
        for variant in ["plain", "norm", "swiglu", "split"] {
            let case = format!("{dtype} k {k}, {variant}");
            let widths: &[usize] = match variant {
                "split" => &[40, 36, 20],
                "swiglu" => &[48],
                _ => &[96],
            };
            let outputs = |name: &str| -> Vec<GpuTensor> {
                let zeros = |&c: &usize| ctx.zeros(name, &[1, c], DType::F32).unwrap();
                widths.iter().map(zeros).collect()
            };
            let (ya, yb) = (outputs("ya"), outputs("yb"));
            let xa = ctx.upload_f32("xa", &[1, k], &x0).unwrap();
            let xb = ctx.upload_f32("xb", &[1, k], &x0).unwrap();
            let out = ctx.zeros("x out", &[1, k], DType::F32).unwrap();
            let plain = kernels::Linear {
                norm: (variant != "plain").then_some((&ffn_g, eps)),
                ..Default::default()
            };
            let folded = kernels::Linear {
                residual: Some(kernels::Residual {
                    h: &h,
                    g: &g,
                    eps,
                    out: &out,
                }),
                ..plain
            };
            let project = |x: &GpuTensor, ys: &[GpuTensor], opts: &kernels::Linear| {
                let ys: Vec<&GpuTensor> = ys.iter().collect();
                pollster::block_on(if variant == "swiglu" {
                    Box::pin(kernels::linear_swiglu(ctx, &w, x, ys[0], opts))
                        as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>
                } else {
                    Box::pin(kernels::linear_split(ctx, &w, x, &ys, opts))
                })
            };
            if variant == "split" && !split_fits {
                expect_err(project(&xb, &yb, &folded), "shape_mismatch", "post-norm");
                continue;
            }
            let add = pollster::block_on(kernels::rmsnorm_add(ctx, &h, &g, eps, &xa)).unwrap();
            let proj_a = project(&xa, &ya, &plain).unwrap();
            let proj_b = project(&xb, &yb, &folded).unwrap();
            let mut rec = ctx.recorder();
            rec.dispatch(&add);
            rec.dispatch(&proj_a);
            rec.dispatch(&proj_b);
            let read = |rec: &mut pocketlm::gpu::Recorder, ts: &[GpuTensor]| -> Vec<_> {
                ts.iter().map(|t| rec.read(t)).collect()
            };
            let (sa, sb) = (read(&mut rec, &ya), read(&mut rec, &yb));
            let (s_xa, s_xb, s_out) = (rec.read(&xa), rec.read(&xb), rec.read(&out));
            let back = pollster::block_on(rec.submit_and_read()).unwrap();
            let cat = |slots: &[_]| -> Vec<f32> {
                slots.iter().flat_map(|&s| back.f32(s).unwrap()).collect()
            };
            let (a, b) = (cat(&sa), cat(&sb));
            let stream = back.f32(s_xa).unwrap();
            assert_eq!(back.f32(s_xb).unwrap(), x0, "{case}: the input changed");
            let stored = back.f32(s_out).unwrap();
            for (i, (&want, &got)) in stream.iter().zip(&stored).enumerate() {
                assert!(
                    (want - got).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{case}: stream[{i}] stored {got}, rmsnorm_add gives {want}"
                );
            }
            assert!(
                stream.iter().zip(&x0).any(|(a, b)| a != b),
                "{case}: nothing added"
            );
            // Σ|w·x| of each W row over the input as the layer uses it (normed for the prologue).
            let used: Vec<f64> = if variant == "plain" {
                stream.iter().map(|&v| f64::from(v)).collect()
            } else {
                let ss: f64 = stream.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let scale = 1.0 / (ss / k as f64 + f64::from(eps)).sqrt();
                let norm = stream.iter().zip(&ffn);
                norm.map(|(&v, &gf)| f64::from(v) * scale * f64::from(gf))
                    .collect()
            };
            let mag: Vec<f64> = exact
                .chunks(k)
                .map(|row| {
                    row.iter()
                        .zip(&used)
                        .map(|(&w, x)| (f64::from(w) * x).abs())
                        .sum()
                })
                .collect();
            for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
                // SwiGLU's output i comes from gate row i and up row i + 48 (|act'| ≤ 1.1).
                let tol = if variant == "swiglu" {
                    1e-5 * (1.0 + 1.1 * mag[i]) * (1.0 + mag[i + 48])
                } else {
                    1e-5 * (1.0 + mag[i])
                };
                assert!(
                    f64::from((x - y).abs()) <= tol,
                    "{case}: output {i} is {y}, rmsnorm_add then projection gives {x}"
                );
            }
        }
    }
    // Two rows, and the kernels for CPU adapters: typed errors.
    for (c, rows) in [(ctx, 2usize), (common::cpu_kernels_ctx(), 1)] {
        let z = |name: &str, shape: &[usize]| c.zeros(name, shape, DType::F32).unwrap();
        let (x, h, out, y) = (
            z("x", &[rows, 64]),
            z("h", &[rows, 64]),
            z("o", &[rows, 64]),
            z("y", &[rows, 8]),
        );
        let (g, w) = (z("g", &[64]), z("w", &[8, 64]));
        let opts = kernels::Linear {
            residual: Some(kernels::Residual {
                h: &h,
                g: &g,
                eps,
                out: &out,
            }),
            ..Default::default()
        };
        assert!(!kernels::residual_fits(c, rows, 1, false, false));
        expect_err(
            pollster::block_on(kernels::linear_with(c, &w, &x, &y, &opts)),
            "shape_mismatch",
            "post-norm",
        );
    }
}

/// Gate/up + SwiGLU in one dispatch: W = concat_rows(gate, up); the output is silu(g)·u within
/// the SwiGLU bound plus the linear bounds of g and u carried through (|silu'| ≤ 1.1), on both
/// kernel families, matvec and matmul, several formats, with and without bias.
#[test]
fn linear_swiglu_matches_reference() {
    let mut rng = Rng::new(9);
    for ctx in [ctx(), gpu_kernels_ctx(), common::f16_tiles_ctx()] {
        for (i, dtype) in [
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_0,
            DType::F32,
            DType::F16,
            DType::Q6_K,
        ]
        .into_iter()
        .enumerate()
        {
            // Formats take turns with SwiGLU, Gemma's GeGLU and the exact GELU.
            let act = match i % 3 {
                1 => kernels::GateActivation::GeluTanh,
                2 => kernels::GateActivation::GeluErf,
                _ => kernels::GateActivation::Silu,
            };
            let k = if dtype.is_quantized() {
                dtype.block_size() * 2
            } else {
                45
            };
            let f = 70;
            let (gt, gw) = random_weights(ctx, "gate", dtype, f, k, &mut rng);
            let (ut, uw) = random_weights(ctx, "up", dtype, f, k, &mut rng);
            let w = pollster::block_on(kernels::concat_rows(ctx, "gate_up", &[&gt, &ut])).unwrap();
            let shapes = [
                (LinearKernel::Matvec, 1),
                (LinearKernel::Matvec, 4),
                (LinearKernel::Matvec, 16),
                (LinearKernel::Matmul, 66),
            ]
            .into_iter()
            .filter(|&(kernel, m)| shape_applies(ctx, kernel, m, i % 2 == 0));
            for (kernel, m) in grid(i, shapes) {
                for with_bias in grid(i, [false, true]) {
                    let x = rng.vec(m * k, -1.0, 1.0);
                    let xt = ctx.upload_f32("x", &[m, k], &x).unwrap();
                    let bias = if with_bias {
                        rng.vec(2 * f, -1.0, 1.0)
                    } else {
                        vec![0.0; 2 * f]
                    };
                    let bt = ctx.upload_f32("b", &[2 * f], &bias).unwrap();
                    let out = ctx.zeros("act", &[m, f], DType::F32).unwrap();
                    let opts = kernels::Linear {
                        kernel,
                        bias: with_bias.then_some(&bt),
                        gate_act: act,
                        ..Default::default()
                    };
                    let d = pollster::block_on(kernels::linear_swiglu(ctx, &w, &xt, &out, &opts))
                        .unwrap();
                    let got = &read_all(ctx, &d, &[&out])[0];
                    let (g, gm) = reference::linear(&gw, f, k, &x, m);
                    let (u, um) = reference::linear(&uw, f, k, &x, m);
                    let tiles =
                        TileBound::new(ctx, kernel, m, k, &x, &[gw.as_slice(), &uw].concat());
                    for i in 0..m * f {
                        let j = i % f;
                        let gv = g[i] + f64::from(bias[j]);
                        let uv = u[i] + f64::from(bias[f + j]);
                        let (silu, act_tol) = match act {
                            kernels::GateActivation::Silu => {
                                let a = gv / (1.0 + (-gv).exp());
                                (a, reference::swiglu_tolerance(gv as f32, a * uv))
                            }
                            kernels::GateActivation::GeluTanh => {
                                let a = reference::ops::gelu(&[gv as f32])[0];
                                let t = reference::ops::gelu_tolerance(gv as f32, a);
                                (a, (t + a.abs() * 2.0 * f64::from(f32::EPSILON)) * uv.abs())
                            }
                            kernels::GateActivation::GeluErf => {
                                let a = reference::ops::gelu_erf(&[gv as f32])[0];
                                let t = reference::ops::gelu_erf_tolerance(gv as f32, a);
                                (a, (t + a.abs() * 2.0 * f64::from(f32::EPSILON)) * uv.abs())
                            }
                        };
                        let exact = silu * uv;
                        let tg = tiles.widen(
                            i / f,
                            reference::linear_tolerance(k + 1, gm[i] + f64::from(bias[j]).abs()),
                            gm[i],
                        );
                        let tu = tiles.widen(
                            i / f,
                            reference::linear_tolerance(
                                k + 1,
                                um[i] + f64::from(bias[f + j]).abs(),
                            ),
                            um[i],
                        );
                        // |silu'| ≤ 1.1 and |gelu'| ≤ 1.13.
                        let tol =
                            act_tol + 1.13 * (uv.abs() + tu) * tg + (silu.abs() + 1.13 * tg) * tu;
                        let e = (f64::from(got[i]) - exact).abs();
                        assert!(
                            e <= tol,
                            "{dtype} {act:?} {kernel:?} m {m} bias {with_bias} cpu {}: [{}, {j}] = {}, expected {exact} ± {tol:e}",
                            ctx.capabilities().cpu,
                            i / f,
                            got[i]
                        );
                    }
                }
            }
            // An odd number of rows cannot be gate + up.
            let odd = ctx.zeros("odd", &[3, k], dtype).unwrap();
            let xt = ctx.zeros("x", &[1, k], DType::F32).unwrap();
            let out = ctx.zeros("o", &[1, 1], DType::F32).unwrap();
            expect_err(
                pollster::block_on(kernels::linear_swiglu(
                    ctx,
                    &odd,
                    &xt,
                    &out,
                    &kernels::Linear::default(),
                )),
                "shape_mismatch",
                "even",
            );
        }
    }
}

/// Activation rows of different scales (so the normalisation has something to do), and a norm
/// weight of both signs.
fn norm_inputs(rng: &mut Rng, m: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(m * k);
    for _ in 0..m {
        let s = rng.uniform(0.01, 20.0);
        x.extend(rng.vec(k, -s, s));
    }
    (x, rng.vec(k, -2.0, 2.0))
}

/// A linear layer with the RMSNorm prologue, `rmsnorm(x) · Wᵀ + bias + y`, against
/// `reference::rmsnorm_linear` within `reference::rmsnorm_linear_tolerance`; `ctx` picks the
/// kernel family.
#[allow(clippy::too_many_arguments)]
fn check_normed_linear(
    ctx: &GpuContext,
    kernel: LinearKernel,
    dtype: DType,
    m: usize,
    n: usize,
    k: usize,
    eps: f32,
    rng: &mut Rng,
) {
    let (wt, w) = random_weights(ctx, "w", dtype, n, k, rng);
    let (x, g) = norm_inputs(rng, m, k);
    let bias = rng.vec(n, -1.0, 1.0);
    let init = rng.vec(m * n, -2.0, 2.0);
    let xt = ctx.upload_f32("x", &[m, k], &x).unwrap();
    let gt = ctx.upload_f32("g", &[k], &g).unwrap();
    let bt = ctx.upload_f32("bias", &[n], &bias).unwrap();
    let yt = ctx.upload_f32("y", &[m, n], &init).unwrap();
    let opts = kernels::Linear {
        kernel,
        bias: Some(&bt),
        accumulate: true,
        norm: Some((&gt, eps)),
        ..Default::default()
    };
    let d = pollster::block_on(kernels::linear_with(ctx, &wt, &xt, &yt, &opts)).unwrap();
    let got = &read_all(ctx, &d, &[&yt])[0];
    let (want, mag) = reference::rmsnorm_linear(&w, n, k, &x, m, &g, eps);
    let tiles = TileBound::new(ctx, kernel, m, k, &reference::rmsnorm(&x, k, &g, eps), &w);
    for i in 0..m * n {
        let extra = [f64::from(bias[i % n]), f64::from(init[i])];
        let exact = want[i] + extra[0] + extra[1];
        let other = extra[0].abs() + extra[1].abs();
        let tol = tiles.widen(
            i / n,
            reference::rmsnorm_linear_tolerance(k, k + 2, mag[i], other),
            mag[i],
        );
        let e = (f64::from(got[i]) - exact).abs();
        assert!(
            e <= tol,
            "{dtype} {kernel:?} [{m}×{n}×{k}] eps {eps:e} cpu {}: [{}, {}] = {}, expected {exact} ± {tol:e}",
            ctx.capabilities().cpu,
            i / n,
            i % n,
            got[i]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// The RMSNorm prologue on random shapes, matrix × vector and matrix × matrix, on the
    /// profile's default kernel family, on the GPU family and with the GEMM's f16 tiles.
    #[test]
    fn rmsnorm_prologue_matches_reference(m in 1usize..=16, n in 1usize..=200, k in 1usize..=700,
                                          matmul_rows in 5usize..=80, weights in dtype(),
                                          family in 0usize..3, seed in any::<u64>()) {
        let ctx = [ctx(), gpu_kernels_ctx(), common::f16_tiles_ctx()][family];
        let mut rng = Rng::new(seed);
        check_normed_linear(ctx, LinearKernel::Matvec, weights, m, n, k, 1e-5, &mut rng);
        check_normed_linear(ctx, LinearKernel::Matmul, weights, matmul_rows, n.min(70), k.min(300), 1e-6, &mut rng);
    }
}

/// The RMSNorm prologue in every weight format, on both kernel families, matvec (1 and 3 rows)
/// and matmul, and on the GEMM's f16 tiles, including model-sized rows (k = 576) and a row of
/// zeros (eps alone).
#[test]
fn rmsnorm_prologue_in_every_format_and_family() {
    let cpu = common::cpu_kernels_ctx();
    let mut rng = Rng::new(21);
    for ctx in [cpu, gpu_kernels_ctx(), common::f16_tiles_ctx()] {
        let f16_tiles = common::is_f16_tiles_ctx(ctx);
        for (i, dtype) in DType::WEIGHTS.into_iter().enumerate() {
            let block = dtype.block_size().max(1);
            let k = if dtype.is_quantized() { 2 * block } else { 67 };
            // Many rows: a third of the formats (others in the test of both families).
            let shapes = [
                (LinearKernel::Matvec, 1, 37),
                (LinearKernel::Matvec, 3, 70),
                (LinearKernel::Matvec, 16, 21),
                (LinearKernel::Matmul, 70, 65),
            ]
            .into_iter()
            .filter(|&(kernel, m, _)| shape_applies(ctx, kernel, m, i % 3 == 1));
            for (kernel, m, n) in grid(i, shapes) {
                check_normed_linear(ctx, kernel, dtype, m, n, k, 1e-5, &mut rng);
            }
            let k = 576usize.next_multiple_of(block);
            let (kernel, m) = if f16_tiles {
                (LinearKernel::Matmul, 17)
            } else {
                (LinearKernel::Matvec, 1)
            };
            if shape_applies(ctx, kernel, m, true) {
                check_normed_linear(ctx, kernel, dtype, m, 64, k, 1e-5, &mut rng);
            }
        }
        // A zero row normalises to zero: the output is bias + y.
        let (wt, _) = random_weights(ctx, "w", DType::F32, 5, 8, &mut rng);
        let xt = ctx.zeros("x", &[1, 8], DType::F32).unwrap();
        let gt = ctx.upload_f32("g", &[8], &[1.0; 8]).unwrap();
        let yt = ctx
            .upload_f32("y", &[1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0])
            .unwrap();
        let opts = kernels::Linear {
            kernel: if f16_tiles {
                LinearKernel::Matmul
            } else {
                LinearKernel::Auto
            },
            accumulate: true,
            norm: Some((&gt, 1e-6)),
            ..Default::default()
        };
        let d = pollster::block_on(kernels::linear_with(ctx, &wt, &xt, &yt, &opts)).unwrap();
        assert_eq!(read_all(ctx, &d, &[&yt])[0], [1.0, 2.0, 3.0, 4.0, 5.0]);
        // The linear kernels for GPUs of every weight format (this test's, and whatever the
        // other tests have compiled on these contexts) keep their arrays out of memory.
        if !ctx.capabilities().cpu {
            common::assert_no_run_time_indexed_arrays(ctx);
        }
    }
}

/// The linear kernels for CPU adapters load x through subgroup broadcasts where every subgroup
/// has the same size (lavapipe's full profile here), and that gives the same bits as loading
/// it in every invocation: against a baseline context on the same adapter (no subgroups), in
/// the 32-element and K-quant formats, one row and several, with the RMSNorm prologue, and
/// output columns that leave invocations of the last workgroup without a column of their own.
#[test]
fn cpu_kernels_broadcast_x_to_the_same_bits() {
    let ctx = common::cpu_kernels_ctx();
    let c = ctx.capabilities().clone();
    let plain = pollster::block_on(GpuContext::new(ProfileRequest::Baseline))
        .unwrap()
        .with_cpu_kernels(true);
    assert!(!plain.capabilities().subgroups);
    let mut rng = Rng::new(31);
    let cases = [
        (DType::Q4_0, 1),
        (DType::Q4_0, 5),
        (DType::Q8_0, 2),
        (DType::Q4_K, 1),
        (DType::Q6_K, 3),
        (DType::F16, 1),
        (DType::F32, 4),
    ];
    for (dtype, m) in cases {
        let (n, k) = (67, 2 * dtype.block_size().max(128));
        let bytes = pocketlm::quant::random_gguf_bytes(dtype, n * k, &mut rng);
        let (x, g) = norm_inputs(&mut rng, m, k);
        let run = |ctx: &GpuContext| {
            let wt = ctx.upload_gguf("w", &[n, k], dtype, &bytes).unwrap();
            let xt = ctx.upload_f32("x", &[m, k], &x).unwrap();
            let gt = ctx.upload_f32("g", &[k], &g).unwrap();
            let yt = ctx.zeros("y", &[m, n], DType::F32).unwrap();
            let opts = kernels::Linear {
                norm: Some((&gt, 1e-5)),
                ..Default::default()
            };
            let d = pollster::block_on(kernels::linear_with(ctx, &wt, &xt, &yt, &opts)).unwrap();
            read_all(ctx, &d, &[&yt]).remove(0)
        };
        let (got, want) = (run(ctx), run(&plain));
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{dtype} on {m} row(s)");
    }
    // Which entry point ran: the broadcasts wherever the subgroup size is fixed.
    let broadcast = c.subgroups && c.subgroup_min_size == c.subgroup_max_size;
    let entries: Vec<_> = ctx
        .compiled_sources()
        .into_iter()
        .map(|(_, entry, _)| entry)
        .filter(|e| e.starts_with("linear_rows4"))
        .collect();
    assert!(!entries.is_empty());
    assert!(
        entries
            .iter()
            .all(|&e| (e == "linear_rows4_subgroup") == broadcast),
        "subgroups {} of {}..={} invocations: {entries:?}",
        c.subgroups,
        c.subgroup_min_size,
        c.subgroup_max_size
    );
}

/// The prologue composes with the other epilogues: a fused QKV projection (three outputs) and
/// gate/up + SwiGLU, on both kernel families, against the normalised references.
#[test]
fn rmsnorm_prologue_with_split_and_swiglu() {
    let mut rng = Rng::new(23);
    for ctx in [ctx(), gpu_kernels_ctx(), common::f16_tiles_ctx()] {
        for (f, dtype) in [
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_0,
            DType::F16,
            DType::F32,
            DType::Q4_K,
        ]
        .into_iter()
        .enumerate()
        {
            let k = if dtype.is_quantized() {
                2 * dtype.block_size()
            } else {
                45
            };
            let eps = 1e-5;
            let many_rows_format = matches!(dtype, DType::Q8_0 | DType::F32 | DType::Q4_K);
            let shapes = [
                (LinearKernel::Matvec, 1),
                (LinearKernel::Matvec, 3),
                (LinearKernel::Matvec, 7),
                (LinearKernel::Matmul, 66),
            ]
            .into_iter()
            .filter(|&(kernel, m)| shape_applies(ctx, kernel, m, many_rows_format));
            for (kernel, m) in grid(f, shapes) {
                let (x, g) = norm_inputs(&mut rng, m, k);
                let xt = ctx.upload_f32("x", &[m, k], &x).unwrap();
                let gt = ctx.upload_f32("g", &[k], &g).unwrap();

                // QKV: 9 + 3 + 5 columns with a bias, three outputs.
                let (w, w_all) = random_weights(ctx, "wqkv", dtype, 17, k, &mut rng);
                let bias = rng.vec(17, -1.0, 1.0);
                let bt = ctx.upload_f32("bqkv", &[17], &bias).unwrap();
                let widths = [9usize, 3, 5];
                let outs: Vec<_> = widths
                    .iter()
                    .map(|&n| ctx.zeros("y", &[m, n], DType::F32).unwrap())
                    .collect();
                let out_refs: Vec<_> = outs.iter().collect();
                let opts = kernels::Linear {
                    kernel,
                    bias: Some(&bt),
                    accumulate: false,
                    norm: Some((&gt, eps)),
                    ..Default::default()
                };
                let d = pollster::block_on(kernels::linear_split(ctx, &w, &xt, &out_refs, &opts))
                    .unwrap();
                let got = read_all(ctx, &d, &out_refs);
                let (want, mag) = reference::rmsnorm_linear(&w_all, 17, k, &x, m, &g, eps);
                let normed = reference::rmsnorm(&x, k, &g, eps);
                let tiles = TileBound::new(ctx, kernel, m, k, &normed, &w_all);
                for r in 0..m {
                    let mut col = 0;
                    for (o, &n) in widths.iter().enumerate() {
                        for j in 0..n {
                            let b = f64::from(bias[col]);
                            let exact = want[r * 17 + col] + b;
                            let tol = tiles.widen(
                                r,
                                reference::rmsnorm_linear_tolerance(
                                    k,
                                    k + 1,
                                    mag[r * 17 + col],
                                    b.abs(),
                                ),
                                mag[r * 17 + col],
                            );
                            let v = f64::from(got[o][r * n + j]);
                            assert!(
                                (v - exact).abs() <= tol,
                                "qkv {dtype} {kernel:?} m {m} cpu {}: output {o} [{r}, {j}] = {v}, expected {exact} ± {tol:e}",
                                ctx.capabilities().cpu
                            );
                            col += 1;
                        }
                    }
                }

                // Gate/up + SwiGLU, no bias.
                let f = 70;
                let (w, w_all) = random_weights(ctx, "gate_up", dtype, 2 * f, k, &mut rng);
                let out = ctx.zeros("act", &[m, f], DType::F32).unwrap();
                let opts = kernels::Linear {
                    kernel,
                    norm: Some((&gt, eps)),
                    ..Default::default()
                };
                let d =
                    pollster::block_on(kernels::linear_swiglu(ctx, &w, &xt, &out, &opts)).unwrap();
                let got = &read_all(ctx, &d, &[&out])[0];
                let (gv, gm) = reference::rmsnorm_linear(&w_all[..f * k], f, k, &x, m, &g, eps);
                let (uv, um) = reference::rmsnorm_linear(&w_all[f * k..], f, k, &x, m, &g, eps);
                let tiles = TileBound::new(ctx, kernel, m, k, &normed, &w_all);
                for i in 0..m * f {
                    let (gate, up) = (gv[i], uv[i]);
                    let silu = gate / (1.0 + (-gate).exp());
                    let exact = silu * up;
                    let tg = tiles.widen(
                        i / f,
                        reference::rmsnorm_linear_tolerance(k, k, gm[i], 0.0),
                        gm[i],
                    );
                    let tu = tiles.widen(
                        i / f,
                        reference::rmsnorm_linear_tolerance(k, k, um[i], 0.0),
                        um[i],
                    );
                    let tol = reference::swiglu_tolerance(gate as f32, exact)
                        + 1.1 * (up.abs() + tu) * tg
                        + (silu.abs() + 1.1 * tg) * tu;
                    let e = (f64::from(got[i]) - exact).abs();
                    assert!(
                        e <= tol,
                        "swiglu {dtype} {kernel:?} m {m} cpu {}: [{}, {}] = {}, expected {exact} ± {tol:e}",
                        ctx.capabilities().cpu,
                        i / f,
                        i % f,
                        got[i]
                    );
                }
            }
        }
    }
    // A norm weight of the wrong length or an unusable eps is a typed error.
    let ctx = ctx();
    let w = ctx.zeros("w", &[4, 8], DType::F32).unwrap();
    let x = ctx.zeros("x", &[1, 8], DType::F32).unwrap();
    let y = ctx.zeros("y", &[1, 4], DType::F32).unwrap();
    let g7 = ctx.zeros("g7", &[7], DType::F32).unwrap();
    let g8 = ctx.zeros("g8", &[8], DType::F32).unwrap();
    for (g, eps, what) in [(&g7, 1e-5, "g7"), (&g8, f32::NAN, "eps")] {
        let opts = kernels::Linear {
            norm: Some((g, eps)),
            ..Default::default()
        };
        expect_err(
            pollster::block_on(kernels::linear_with(ctx, &w, &x, &y, &opts)),
            "shape_mismatch",
            what,
        );
    }
}
