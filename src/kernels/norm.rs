//! Normalisation layers.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot};
use crate::kernels::{
    build, check_eps, dim, expect_distinct, expect_dtype, grid, mismatch, reduce_spec,
};

const RMSNORM_SRC: &str = include_str!("../../shaders/rmsnorm.wgsl");

crate::uniform! {
    struct NormParams {
        rows: u32,
        cols: u32,
        eps: f32,
    }
}

const X: Slot = Slot::read("x", "f32");
const WEIGHT: Slot = Slot::read("weight", "f32");
const Y: Slot = Slot::read_write("y", "f32");
/// Only the `layernorm_bias` entry point reads it.
const BIAS: Slot = Slot::read("bias", "f32");

/// The checks every norm makes: f32 tensors; per-column parameters (weight, bias) of shape
/// [cols]; an output of the input's shape in its own buffer; a usable eps.
fn check(
    name: &'static str,
    x: &GpuTensor,
    params: &[(&str, &GpuTensor)],
    eps: f32,
    y: &GpuTensor,
) -> Result<()> {
    let inputs: Vec<&GpuTensor> = std::iter::once(x)
        .chain(params.iter().map(|p| p.1))
        .collect();
    for t in inputs.iter().chain([&y]) {
        expect_dtype(name, t, &[DType::F32], "f32 tensors")?;
    }
    expect_distinct(name, y, &inputs)?;
    let cols = x.cols();
    for (what, t) in params {
        if t.shape() != [cols] {
            return Err(mismatch(
                name,
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
    if y.shape() != x.shape() {
        return Err(mismatch(
            name,
            format!(
                "output '{}' is {:?}, expected the input's shape {:?}",
                y.name(),
                y.shape(),
                x.shape()
            ),
        ));
    }
    check_eps(name, "eps", eps)
}

/// RMSNorm over the last dimension: `y = x / sqrt(mean(x²) + eps) * weight`.
pub async fn rmsnorm(
    ctx: &GpuContext,
    x: &GpuTensor,
    weight: &GpuTensor,
    eps: f32,
    y: &GpuTensor,
) -> Result<Dispatch> {
    rmsnorm_into(ctx, x, weight, eps, y, false).await
}

/// [`rmsnorm`] added to what `y` holds: `y += x / sqrt(mean(x²) + eps) * weight` (a post-norm
/// on its way into the residual stream: Gemma's sandwich norms).
pub async fn rmsnorm_add(
    ctx: &GpuContext,
    x: &GpuTensor,
    weight: &GpuTensor,
    eps: f32,
    y: &GpuTensor,
) -> Result<Dispatch> {
    rmsnorm_into(ctx, x, weight, eps, y, true).await
}

async fn rmsnorm_into(
    ctx: &GpuContext,
    x: &GpuTensor,
    weight: &GpuTensor,
    eps: f32,
    y: &GpuTensor,
    add: bool,
) -> Result<Dispatch> {
    const NAME: &str = "rmsnorm";
    check(NAME, x, &[("weight", weight)], eps, y)?;
    let cols = x.cols();
    const KERNEL: Kernel = Kernel::new(
        NAME,
        RMSNORM_SRC,
        "rmsnorm",
        Interface::new::<NormParams>(&[X, WEIGHT, Y]),
    )
    .reducing();
    let params = NormParams {
        rows: dim(NAME, "rows", x.rows())?,
        cols: dim(NAME, "cols", cols)?,
        eps,
    };
    let wg = grid(ctx, NAME, x.rows() as u64)?;
    let spec = reduce_spec(ctx, 1).with("ADD", u32::from(add));
    let binds = [(X, &x.buffer), (WEIGHT, &weight.buffer), (Y, &y.buffer)];
    build(ctx, &KERNEL, &spec, &params, &binds, wg).await
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
    let mut params = vec![("weight", weight)];
    params.extend(bias.map(|b| ("bias", b)));
    check(NAME, x, &params, eps, y)?;
    let cols = x.cols();
    const KERNEL: Kernel = Kernel::new(
        NAME,
        LAYERNORM_SRC,
        "layernorm",
        Interface::new::<NormParams>(&[X, WEIGHT, Y, BIAS]),
    )
    .reducing();
    let kernel = if bias.is_some() {
        KERNEL.entry(NAME, "layernorm_bias")
    } else {
        KERNEL
    };
    let params = NormParams {
        rows: dim(NAME, "rows", x.rows())?,
        cols: dim(NAME, "cols", cols)?,
        eps,
    };
    let wg = grid(ctx, NAME, x.rows() as u64)?;
    let mut binds = vec![(X, &x.buffer), (WEIGHT, &weight.buffer), (Y, &y.buffer)];
    binds.extend(bias.map(|b| (BIAS, &b.buffer)));
    build(ctx, &kernel, &reduce_spec(ctx, 1), &params, &binds, wg).await
}
