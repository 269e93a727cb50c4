//! Normalisation layers.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Kernel};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, reduce_spec};

const RMSNORM_SRC: &str = include_str!("../../shaders/rmsnorm.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

/// RMSNorm over the last dimension: `y = x / sqrt(mean(x²) + eps) * weight`.
pub async fn rmsnorm(
    ctx: &GpuContext,
    x: &GpuTensor,
    weight: &GpuTensor,
    eps: f32,
    y: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "rmsnorm";
    for t in [x, weight, y] {
        expect_dtype(NAME, t, &[DType::F32], "f32 tensors")?;
    }
    expect_distinct(NAME, y, &[x, weight])?;
    let cols = x.cols();
    if weight.shape() != [cols] {
        return Err(mismatch(
            NAME,
            format!(
                "weight '{}' is {:?}, expected [{cols}] to match input '{}' {:?}",
                weight.name(),
                weight.shape(),
                x.name(),
                x.shape()
            ),
        ));
    }
    if y.shape() != x.shape() {
        return Err(mismatch(
            NAME,
            format!(
                "output '{}' is {:?}, expected the input's shape {:?}",
                y.name(),
                y.shape(),
                x.shape()
            ),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(mismatch(
            NAME,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    let kernel = Kernel {
        name: NAME,
        source: RMSNORM_SRC,
        entry: "rmsnorm",
        uses_reduce: true,
    };
    let params = Params {
        rows: dim(NAME, "rows", x.rows())?,
        cols: dim(NAME, "cols", cols)?,
        eps,
    };
    let wg = grid(ctx, NAME, x.rows() as u64)?;
    build(
        ctx,
        &kernel,
        &reduce_spec(ctx, 1),
        &params,
        &[x, weight, y],
        wg,
    )
    .await
}

const LAYERNORM_SRC: &str = include_str!("../../shaders/layernorm.wgsl");

/// LayerNorm over the last dimension: `y = (x − mean) / sqrt(var + eps) * weight (+ bias)`, with
/// the population variance computed in two passes (numerically sound for any mean). `weight`
/// (and `bias`, when given) are `[cols]`; all tensors f32.
pub async fn layernorm(
    ctx: &GpuContext,
    x: &GpuTensor,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
    eps: f32,
    y: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "layernorm";
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    for t in inputs.iter().chain([&y]) {
        expect_dtype(NAME, t, &[DType::F32], "f32 tensors")?;
    }
    expect_distinct(NAME, y, &inputs)?;
    let cols = x.cols();
    for (what, t) in [("weight", Some(weight)), ("bias", bias)] {
        if let Some(t) = t {
            if t.shape() != [cols] {
                return Err(mismatch(
                    NAME,
                    format!(
                        "{what} '{}' is {:?}, expected [{cols}] to match input '{}' {:?}",
                        t.name(),
                        t.shape(),
                        x.name(),
                        x.shape()
                    ),
                ));
            }
        }
    }
    if y.shape() != x.shape() {
        return Err(mismatch(
            NAME,
            format!(
                "output '{}' is {:?}, expected the input's shape {:?}",
                y.name(),
                y.shape(),
                x.shape()
            ),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(mismatch(
            NAME,
            format!("eps must be finite and >= 0, got {eps}"),
        ));
    }
    let kernel = Kernel {
        name: NAME,
        source: LAYERNORM_SRC,
        entry: if bias.is_some() {
            "layernorm_bias"
        } else {
            "layernorm"
        },
        uses_reduce: true,
    };
    let params = Params {
        rows: dim(NAME, "rows", x.rows())?,
        cols: dim(NAME, "cols", cols)?,
        eps,
    };
    let wg = grid(ctx, NAME, x.rows() as u64)?;
    // Binding 4 (bias) exists only in the `layernorm_bias` pipeline.
    let mut tensors = vec![x, weight, y];
    tensors.extend(bias);
    build(ctx, &kernel, &reduce_spec(ctx, 1), &params, &tensors, wg).await
}
