//! GGML block formats on the GPU: dequantization (through the embedding kernel, which decodes a
//! table row by row) is bit-exact against the Python `gguf` package's fixtures and against the
//! CPU dequantizer on random blocks; quantized linear layers match the CPU reference within the
//! dot-product bound γ_{k+1}·Σ|xᵢwᵢ| (see tests/gpu_kernels.rs); bad input is a typed error.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::quant_fixtures::{self, first_bit_difference, Nan};
use common::{ctx, expect_err, gpu_rows};
use pocketlm::gpu::DType;
use pocketlm::kernels;
use pocketlm::quant::{dequantize_to_vec, random_gguf_bytes};
use pocketlm::reference::Rng;
use pocketlm::selfcheck::{run_case, Case, LinearKernel};
use proptest::prelude::*;

#[test]
fn gpu_dequantization_matches_gguf_py_bit_for_bit() {
    for f in quant_fixtures::load() {
        let t = ctx()
            .upload_gguf(f.dtype.name(), &[f.rows, f.cols], f.dtype, &f.bytes)
            .unwrap();
        let ids: Vec<i32> = (0..f.rows as i32).collect();
        let got = gpu_rows(&t, &ids);
        if let Some(diff) = first_bit_difference(f.dtype, f.cols, &got, &f.expected, Nan::AnyNan) {
            panic!("GPU vs gguf-py: {diff}");
        }
    }
}

fn weight_format() -> impl Strategy<Value = DType> {
    proptest::sample::select(DType::WEIGHTS.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(24), failure_persistence: None, ..ProptestConfig::default() })]

    /// Random blocks of every format, looked up in random order (with repeats): the GPU's values
    /// are the CPU dequantizer's, bit for bit.
    #[test]
    fn embedding_lookup_is_bit_exact(dtype in weight_format(), rows in 1usize..=12,
                                     blocks in 1usize..=3, odd in 0usize..=1, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        // Float formats also get odd row lengths.
        let cols = if dtype.is_quantized() { blocks * dtype.block_size() } else { 8 * blocks + odd };
        let bytes = random_gguf_bytes(dtype, rows * cols, &mut rng);
        let table = ctx().upload_gguf("table", &[rows, cols], dtype, &bytes).unwrap();
        let ids: Vec<i32> = (0..2 * rows).map(|_| rng.range(0, rows - 1) as i32).collect();
        let all = dequantize_to_vec(dtype, &bytes).unwrap();
        let want: Vec<f32> = ids.iter().flat_map(|&i| all[i as usize * cols..][..cols].to_vec()).collect();
        let got = gpu_rows(&table, &ids);
        if let Some(diff) = first_bit_difference(dtype, cols, &got, &want, Nan::AnyNan) {
            panic!("GPU vs CPU: {diff}");
        }
    }

    #[test]
    fn quantized_linear_matches_reference(dtype in weight_format(), m in 1usize..=70, n in 1usize..=80,
                                          blocks in 1usize..=3, matmul in any::<bool>(), fused in any::<bool>(),
                                          seed in any::<u64>()) {
        let k = blocks * dtype.block_size().max(32);
        let kernel = if matmul { LinearKernel::Matmul } else { LinearKernel::Matvec };
        let m = if matmul { m } else { m.min(4) };
        let case = if fused {
            Case::LinearFused { kernel, m, n, k, weights: dtype }
        } else {
            Case::Linear { kernel, m, n, k, weights: dtype }
        };
        let o = pollster::block_on(run_case(ctx(), case, seed)).unwrap();
        prop_assert!(o.passed(), "{}", o);
    }
}

#[test]
fn ids_out_of_range_give_zero_rows() {
    let mut rng = Rng::new(3);
    let bytes = random_gguf_bytes(DType::Q8_0, 4 * 32, &mut rng);
    let table = ctx()
        .upload_gguf("table", &[4, 32], DType::Q8_0, &bytes)
        .unwrap();
    let got = gpu_rows(&table, &[-1, 4, 1000]);
    assert!(got.iter().all(|&v| v == 0.0));
}

#[test]
fn bad_quantized_input_is_a_typed_error() {
    let ctx = ctx();
    expect_err(
        ctx.zeros("w", &[4, 100], DType::Q4_K),
        "invalid_tensor",
        "not a whole number of q4_k blocks",
    );
    expect_err(
        ctx.upload_gguf("w", &[2, 32], DType::Q8_0, &[0; 67]),
        "invalid_tensor",
        "expected 68 bytes",
    );
    let table = ctx.zeros("table", &[4, 32], DType::Q4_0).unwrap();
    let ids_f = ctx.zeros("ids_f", &[2], DType::F32).unwrap();
    let ids = ctx.zeros("ids", &[2], DType::I32).unwrap();
    let out = ctx.zeros("out", &[2, 32], DType::F32).unwrap();
    let out_bad = ctx.zeros("out_bad", &[3, 32], DType::F32).unwrap();
    expect_err(
        pollster::block_on(kernels::embed(ctx, &table, &ids_f, &out)),
        "unsupported_dtype",
        "ids_f",
    );
    expect_err(
        pollster::block_on(kernels::embed(ctx, &table, &ids, &out_bad)),
        "shape_mismatch",
        "out_bad",
    );
    expect_err(
        pollster::block_on(kernels::embed(ctx, &ids, &ids, &out)),
        "unsupported_dtype",
        "i32",
    );
    let x = ctx.zeros("x", &[1, 32], DType::F32).unwrap();
    let y = ctx.zeros("y", &[1, 4], DType::F32).unwrap();
    let bias_bad = ctx.zeros("bias_bad", &[5], DType::F32).unwrap();
    let opts = kernels::Linear {
        bias: Some(&bias_bad),
        ..Default::default()
    };
    expect_err(
        pollster::block_on(kernels::linear_with(ctx, &table, &x, &y, &opts)),
        "shape_mismatch",
        "bias_bad",
    );
    expect_err(
        ctx.upload_f32("q", &[1], &[0.0])
            .and_then(|_| ctx.zeros("q", &[1, 31], DType::Q8_0)),
        "invalid_tensor",
        "q8_0",
    );
    ctx.check_health().expect("no GPU error was raised");
}
