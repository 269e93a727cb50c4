//! Linear layers: `y = x · Wᵀ (+ bias) (+ y)` with W of shape [n, k] (out, in) in any supported
//! format (f32, f16, bf16, or a GGML block format dequantized inside the inner loop), x [m, k],
//! y [m, n].

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Kernel, Specialization};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, reduce_spec_wg};

const LINEAR_COMMON: &str = include_str!("../../shaders/linear_common.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const MATVEC_SRC: &str = include_str!("../../shaders/matvec.wgsl");
const MATMUL_SRC: &str = include_str!("../../shaders/matmul.wgsl");
const BIAS: &str = "@group(0) @binding(4) var<storage, read> bias: array<f32>;\n\
                    fn bias_at(n: u32) -> f32 { return bias[n]; }\n";
const NO_BIAS: &str = "fn bias_at(n: u32) -> f32 { return 0.0; }\n";

/// The matvec workgroup for rows of `items` units of work (elements, pairs or groups of 8): as
/// many invocations as there are units, rounded to a power of two in 32..=256, so short rows
/// (small models: 576 elements are 72 groups) do not leave most invocations idle; and the rows
/// per workgroup that make up for it (the x values an invocation loads serve every row).
fn matvec_shape(items: usize) -> (u32, u32) {
    let wg = (items.next_power_of_two() as u32).clamp(32, super::WG);
    let rows = if wg >= 128 { 4 } else { 8 };
    (wg, rows)
}
/// Output tile edge of the matmul kernel.
const TILE: u32 = 64;

/// Up to this many activation rows, [`LinearKernel::Auto`] uses the matrix-vector kernel; beyond,
/// the tiled matrix-matrix kernel, which reuses each W tile across 64 rows.
pub const MATVEC_MAX_ROWS: usize = 4;

/// Which kernel computes a linear layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearKernel {
    /// By the number of activation rows (see [`MATVEC_MAX_ROWS`]).
    #[default]
    Auto,
    /// Matrix × vector: the decode-step kernel.
    Matvec,
    /// Tiled matrix × matrix: the prefill kernel.
    Matmul,
}

/// Options of a linear layer: the kernel, and the epilogue fused into its output write.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linear<'a> {
    pub kernel: LinearKernel,
    /// Added to every output row: f32 [n].
    pub bias: Option<&'a GpuTensor>,
    /// Add the result to what y holds (the residual stream) instead of overwriting it.
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    k: u32,
    m: u32,
    w_stride: u32,
    blocks: u32,
    scale_base: u32,
}

fn check(
    kernel: &'static str,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
    opts: &Linear,
) -> Result<Params> {
    expect_dtype(kernel, w, &DType::WEIGHTS, "weights of a supported format")?;
    expect_dtype(kernel, x, &[DType::F32], "f32 activations")?;
    expect_dtype(kernel, y, &[DType::F32], "an f32 output")?;
    let mut inputs = vec![x, w];
    inputs.extend(opts.bias);
    expect_distinct(kernel, y, &inputs)?;
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
    if let Some(b) = opts.bias {
        expect_dtype(kernel, b, &[DType::F32], "an f32 bias")?;
        if b.shape() != [n] {
            return Err(mismatch(
                kernel,
                format!("bias '{}' is {:?}, expected [{n}]", b.name(), b.shape()),
            ));
        }
    }
    // Block formats: the scales follow the quants of all n · k / QK blocks.
    let blocks = n * (k / w.dtype().block_size());
    Ok(Params {
        n: dim(kernel, "out features", n)?,
        k: dim(kernel, "in features", k)?,
        m: dim(kernel, "rows", x.rows())?,
        w_stride: dim(kernel, "row stride", w.row_stride())?,
        blocks: 0,
        scale_base: dim(kernel, "weight words", blocks * w.dtype().quant_words())?,
    })
}

fn spec(
    ctx: &GpuContext,
    matvec: Option<(u32, u32)>,
    w: &GpuTensor,
    opts: &Linear,
) -> Specialization {
    let base = if let Some((wg, rows)) = matvec {
        reduce_spec_wg(ctx, rows, wg).with("ROWS", rows)
    } else {
        Specialization::default()
    };
    base.with("W_FORMAT", w.dtype().ggml_id())
        .with("QK", w.dtype().block_size() as u32)
        .with("ACCUMULATE", u32::from(opts.accumulate))
        .snippet(if opts.bias.is_some() { BIAS } else { NO_BIAS })
        .snippet(LINEAR_COMMON)
        .snippet(QUANT)
}

/// `y = x · Wᵀ`, with the kernel chosen by the number of activation rows.
pub async fn linear(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    linear_with(ctx, w, x, y, &Linear::default()).await
}

/// Matrix × vector (one or a few activation rows): the decode-step kernel.
pub async fn matvec(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    let opts = Linear {
        kernel: LinearKernel::Matvec,
        ..Default::default()
    };
    linear_with(ctx, w, x, y, &opts).await
}

/// Tiled matrix × matrix: the prefill kernel.
pub async fn matmul(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    let opts = Linear {
        kernel: LinearKernel::Matmul,
        ..Default::default()
    };
    linear_with(ctx, w, x, y, &opts).await
}

/// `y = x · Wᵀ (+ bias) (+ y)` with explicit options.
pub async fn linear_with(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
    opts: &Linear<'_>,
) -> Result<Dispatch> {
    let use_matvec = match opts.kernel {
        LinearKernel::Auto => x.rows() <= MATVEC_MAX_ROWS,
        LinearKernel::Matvec => true,
        LinearKernel::Matmul => false,
    };
    let name = if use_matvec { "matvec" } else { "matmul" };
    let mut params = check(name, w, x, y, opts)?;
    let mut tensors = vec![x, w, y];
    tensors.extend(opts.bias);
    // Units of work per row for the matvec entry points.
    let k = params.k as usize;
    let items = match w.dtype() {
        DType::F32 => k,
        DType::F16 | DType::BF16 => k.div_ceil(2),
        _ => k / 8,
    };
    let (mv_wg, mv_rows) = matvec_shape(items);
    let spec = spec(ctx, use_matvec.then_some((mv_wg, mv_rows)), w, opts);
    if use_matvec {
        let entry = match w.dtype() {
            DType::F32 => "matvec_f32",
            DType::F16 | DType::BF16 => "matvec_half",
            // Block formats (`check` admits no other).
            _ => "matvec_quant",
        };
        let kernel = Kernel {
            name,
            source: MATVEC_SRC,
            entry,
            uses_reduce: true,
        };
        params.blocks = params.n.div_ceil(mv_rows);
        let wg = grid(ctx, name, u64::from(params.blocks) * u64::from(params.m))?;
        build(ctx, &kernel, &spec, &params, &tensors, wg).await
    } else {
        let kernel = Kernel {
            name,
            source: MATMUL_SRC,
            entry: "matmul",
            uses_reduce: false,
        };
        params.blocks = params.n.div_ceil(TILE);
        let wg = grid(
            ctx,
            name,
            u64::from(params.blocks) * u64::from(params.m.div_ceil(TILE)),
        )?;
        build(ctx, &kernel, &spec, &params, &tensors, wg).await
    }
}
