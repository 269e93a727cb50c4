//! Linear layers: `y = x · Wᵀ` with W of shape [n, k] (out, in), x [m, k], y [m, n].

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Kernel, Specialization};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, reduce_spec};

const MATVEC_SRC: &str = include_str!("../../shaders/matvec.wgsl");
const MATMUL_SRC: &str = include_str!("../../shaders/matmul.wgsl");

/// Outputs per matvec workgroup: the x values an invocation loads serve this many rows of W.
const MATVEC_ROWS: u32 = 4;

/// Up to this many activation rows, [`linear`] uses the matrix-vector kernel; beyond, the tiled
/// matrix-matrix kernel, which reuses each W tile across 64 rows.
pub const MATVEC_MAX_ROWS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    w_stride: u32,
    blocks: u32,
}

struct Dims {
    n: u32,
    k: u32,
    m: u32,
    w_stride: u32,
}

fn check(kernel: &'static str, w: &GpuTensor, x: &GpuTensor, y: &GpuTensor) -> Result<Dims> {
    expect_dtype(
        kernel,
        w,
        &[DType::F32, DType::F16],
        "weights in f32 or f16",
    )?;
    expect_dtype(kernel, x, &[DType::F32], "f32 activations")?;
    expect_dtype(kernel, y, &[DType::F32], "an f32 output")?;
    expect_distinct(kernel, y, &[x, w])?;
    let [n, k] = *w.shape() else {
        return Err(mismatch(
            kernel,
            format!(
                "weights '{}' must be 2-D [out, in], got {:?}",
                w.name(),
                w.shape()
            ),
        ));
    };
    if x.cols() != k {
        return Err(mismatch(
            kernel,
            format!(
                "input '{}' {:?} has {} features, weights '{}' {:?} expect {k}",
                x.name(),
                x.shape(),
                x.cols(),
                w.name(),
                w.shape()
            ),
        ));
    }
    if y.cols() != n || y.rows() != x.rows() {
        return Err(mismatch(
            kernel,
            format!(
                "output '{}' is {:?}, expected {} rows of {n} (input '{}' {:?}, weights '{}' {:?})",
                y.name(),
                y.shape(),
                x.rows(),
                x.name(),
                x.shape(),
                w.name(),
                w.shape()
            ),
        ));
    }
    Ok(Dims {
        n: dim(kernel, "out features", n)?,
        k: dim(kernel, "in features", k)?,
        m: dim(kernel, "rows", x.rows())?,
        w_stride: dim(kernel, "row stride", w.row_stride())?,
    })
}

/// Matrix × vector (one or a few activation rows): the decode-step kernel.
pub async fn matvec(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "matvec";
    let d = check(NAME, w, x, y)?;
    let entry = match w.dtype() {
        DType::F32 => "matvec_f32",
        // `check` admits only the two float formats.
        _ => "matvec_f16",
    };
    let kernel = Kernel {
        name: NAME,
        source: MATVEC_SRC,
        entry,
        uses_reduce: true,
    };
    let spec = reduce_spec(ctx, MATVEC_ROWS).with("ROWS", MATVEC_ROWS);
    let blocks = d.n.div_ceil(MATVEC_ROWS);
    let params = Params {
        n: d.n,
        k: d.k,
        m: d.m,
        w_stride: d.w_stride,
        blocks,
    };
    let groups = u64::from(blocks) * u64::from(d.m);
    let wg = grid(ctx, NAME, groups)?;
    build(ctx, &kernel, &spec, &params, &[x, w, y], wg).await
}

/// Tiled matrix × matrix: the prefill kernel.
pub async fn matmul(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "matmul";
    const TILE: u32 = 64;
    let d = check(NAME, w, x, y)?;
    let kernel = Kernel {
        name: NAME,
        source: MATMUL_SRC,
        entry: "matmul",
        uses_reduce: false,
    };
    let spec = Specialization::default().with("W_F16", u32::from(w.dtype() == DType::F16));
    let tiles_n = d.n.div_ceil(TILE);
    let params = Params {
        n: d.n,
        k: d.k,
        m: d.m,
        w_stride: d.w_stride,
        blocks: tiles_n,
    };
    let groups = u64::from(tiles_n) * u64::from(d.m.div_ceil(TILE));
    let wg = grid(ctx, NAME, groups)?;
    build(ctx, &kernel, &spec, &params, &[x, w, y], wg).await
}

/// `y = x · Wᵀ`, with the kernel chosen by the number of activation rows.
pub async fn linear(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    if x.rows() <= MATVEC_MAX_ROWS {
        matvec(ctx, w, x, y).await
    } else {
        matmul(ctx, w, x, y).await
    }
}
