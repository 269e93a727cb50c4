//! Embedding lookup from a table in any weight format, dequantized on the GPU.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, WG};

const EMBED_SRC: &str = include_str!("../../shaders/embed.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");

crate::uniform! {
    struct EmbedParams {
        /// Ids.
        n: u32,
        /// Row length.
        cols: u32,
        /// Rows of W.
        vocab: u32,
        /// Float formats: elements between row starts.
        w_stride: u32,
        /// Block formats: the word where the scales begin.
        scale_base: u32,
        /// Every value is multiplied by it (Gemma's √hidden embedding scale).
        scale: f32,
        /// The id of W's first row (W is a row range of a larger table).
        id0: u32,
        /// 1: ids outside W's rows leave their output row alone (another part's).
        partial: u32,
    }
}

const IDS: Slot = Slot::read("ids", "i32");
const W: Slot = Slot::read("w", "u32");
const OUT: Slot = Slot::read_write("out", "f32");
const EMBED: Kernel = Kernel::new(
    "embed",
    EMBED_SRC,
    "embed_float",
    Interface::new::<EmbedParams>(&[IDS, W, OUT]),
);

/// `out[i, :] = table[ids[i], :]` as f32, for `table` [vocab, dim] in any weight format, `ids`
/// i32 of any shape (n ids in all) and `out` [n, dim]. Ids outside [0, vocab) give zero rows:
/// callers validate token ids (the tokenizer and sampler only make valid ones).
pub async fn embed(
    ctx: &GpuContext,
    table: &GpuTensor,
    ids: &GpuTensor,
    out: &GpuTensor,
) -> Result<Dispatch> {
    embed_scaled(ctx, table, ids, out, 1.0).await
}

/// [`embed`] with every value multiplied by `scale` (Gemma multiplies its embeddings by
/// √hidden); a scale of 1 copies values bit for bit.
pub async fn embed_scaled(
    ctx: &GpuContext,
    table: &GpuTensor,
    ids: &GpuTensor,
    out: &GpuTensor,
    scale: f32,
) -> Result<Dispatch> {
    embed_rows(ctx, table, None, ids, out, scale).await
}

/// [`embed_scaled`] from a row range of a larger table: `table` holds the rows of ids
/// `first_id..first_id + rows`, and only the output rows of those ids are written (the other
/// ids are another part's). One dispatch per part covers a table too large for one binding.
pub async fn embed_part(
    ctx: &GpuContext,
    table: &GpuTensor,
    first_id: usize,
    ids: &GpuTensor,
    out: &GpuTensor,
    scale: f32,
) -> Result<Dispatch> {
    embed_rows(ctx, table, Some(first_id), ids, out, scale).await
}

async fn embed_rows(
    ctx: &GpuContext,
    table: &GpuTensor,
    first_id: Option<usize>,
    ids: &GpuTensor,
    out: &GpuTensor,
    scale: f32,
) -> Result<Dispatch> {
    const NAME: &str = "embed";
    if !scale.is_finite() {
        return Err(mismatch(NAME, format!("scale must be finite, got {scale}")));
    }
    expect_dtype(
        NAME,
        table,
        &DType::WEIGHTS,
        "a table of a supported weight format",
    )?;
    expect_dtype(NAME, ids, &[DType::I32], "i32 token ids")?;
    expect_dtype(NAME, out, &[DType::F32], "an f32 output")?;
    expect_distinct(NAME, out, &[table, ids])?;
    let [vocab, cols] = *table.shape() else {
        return Err(mismatch(
            NAME,
            format!(
                "table '{}' must be 2-D [vocab, dim], got {:?}",
                table.name(),
                table.shape()
            ),
        ));
    };
    if out.cols() != cols || out.rows() != ids.numel() {
        return Err(mismatch(
            NAME,
            format!(
                "output '{}' is {:?}, expected {} rows of {cols} ({} ids in '{}', table '{}' {:?})",
                out.name(),
                out.shape(),
                ids.numel(),
                ids.numel(),
                ids.name(),
                table.name(),
                table.shape()
            ),
        ));
    }
    let dtype = table.dtype();
    let quantized = dtype.is_quantized();
    let params = EmbedParams {
        n: dim(NAME, "ids", ids.numel())?,
        cols: dim(NAME, "dim", cols)?,
        vocab: dim(NAME, "vocab", vocab)?,
        w_stride: dim(NAME, "row stride", table.row_stride())?,
        scale_base: dim(
            NAME,
            "table words",
            vocab * (cols / dtype.block_size()) * dtype.quant_words(),
        )?,
        scale,
        id0: dim(NAME, "first id", first_id.unwrap_or(0))?,
        partial: u32::from(first_id.is_some()),
    };
    let kernel = if quantized {
        EMBED.entry(NAME, "embed_quant")
    } else {
        EMBED.entry(NAME, "embed_float")
    };
    let spec = Specialization::default()
        .with("WG", WG)
        .with("W_FORMAT", dtype.ggml_id())
        .with("QK", dtype.block_size() as u32)
        .snippet(QUANT);
    let per_invocation = if quantized { 8 } else { 1 };
    let invocations = (ids.numel() as u64) * (cols as u64 / per_invocation);
    let wg = grid(ctx, NAME, invocations.div_ceil(u64::from(WG)))?;
    let binds = [(IDS, &ids.buffer), (W, &table.buffer), (OUT, &out.buffer)];
    build(ctx, &kernel, &spec, &params, &binds, wg).await
}
