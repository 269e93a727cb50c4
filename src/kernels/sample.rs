//! GPU sampling helpers: argmax and top-k over rows of logits, so that a decode step reads back
//! k (index, value) pairs per row — 8·k bytes, at most 512 — instead of the whole vocabulary.
//!
//! Order: descending by value, NaN counted as −inf (and reported as −inf), −0 equal to +0, ties
//! to the lower index. `-inf` logits are ordinary values. The result is exact: no arithmetic
//! touches the values, so it equals [`crate::reference::ops::topk`] bit for bit.
//!
//! The output is one tensor of shape `[..rows, k, 2]` and dtype I32 holding, per result, two raw
//! 32-bit words: the value's f32 bits, then the index. One buffer keeps it to one readback per
//! step; the integer dtype keeps it from being misread as floats. Decode it with [`TopK::read`].

use crate::error::{Error, Result};
use crate::gpu::{
    DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, ReadSlot, Readback, Recorder, Slot,
    Specialization,
};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, Bind, WG};

const TOPK_SRC: &str = include_str!("../../shaders/topk.wgsl");
/// The logits' order keys, which topk.wgsl, gumbel.wgsl and nucleus.wgsl share.
const ORDER_KEY: &str = include_str!("../../shaders/order_key.wgsl");
const GUMBEL: &str = include_str!("../../shaders/gumbel.wgsl");
/// The first level's key of a logit without a draw.
const PLAIN_KEY: &str =
    "fn sample_key(row: u32, e: u32, bits: u32) -> u32 { return order_key(bits); }\n";
const PENALIZE_SRC: &str = include_str!("../../shaders/penalize.wgsl");
const STATS_SRC: &str = include_str!("../../shaders/logit_stats.wgsl");
const MASK_SRC: &str = include_str!("../../shaders/mask.wgsl");
const BIAS_SRC: &str = include_str!("../../shaders/bias.wgsl");

/// The logit [`mask_logits`] gives a token its mask leaves out (shaders/mask.wgsl's `MASKED`).
pub const MASKED_LOGIT: f32 = -1.0e30;

/// The largest k [`topk`] takes.
pub const TOPK_MAX: usize = 64;

/// Slots of workgroup memory per top-k workgroup: 8 KiB of (key, index) pairs, half the baseline
/// profile's 16 KiB, so two workgroups can share a compute unit.
const TILE: usize = 1024;
/// A row with at most this many top-k candidates is finished by one workgroup (walking it a tile
/// at a time); longer rows first go through levels that cut them TILE / K times.
const TOPK_FINAL_SPAN: usize = 2 * TILE;
/// Elements one argmax workgroup scans (16 per invocation); also the most its final level takes.
const ARGMAX_SPAN: usize = 4096;

crate::uniform! {
    struct TopkParams {
        rows: u32,
        /// Input elements per row at this level.
        n: u32,
        /// Workgroups per row.
        parts: u32,
        /// Input elements per workgroup (the last of a row may get fewer).
        span: u32,
        /// 0: the input is logits (element e has index e); 1: (key, index) pairs.
        mode: u32,
        /// 0: write K (key, index) pairs per workgroup; k > 0: write k results per row.
        final_k: u32,
        /// Logits per row.
        vocab: u32,
    }
}

/// The logits as raw f32 bits (every level reads them for the values of the candidates).
const LOGITS: Slot = Slot::read("logits", "u32");
/// The level's input: the logits again on the first level, the previous level's pairs after.
const SRC: Slot = Slot::read("src", "u32");
const DST: Slot = Slot::read_write("dst", "u32");
const TOPK: Kernel = Kernel::new(
    "topk",
    TOPK_SRC,
    "topk",
    Interface::new::<TopkParams>(&[LOGITS, SRC, DST, DRAW]),
);

crate::uniform! {
    /// What a step's sampling needs on the GPU, rewritten before each submit
    /// ([`DrawState::set`]).
    pub struct Draw {
        /// The Gumbel draw's 64-bit key: a new one per step, from the seeded generator.
        pub key_lo: u32,
        pub key_hi: u32,
        /// 1 / temperature, for the Gumbel draw.
        pub inv_temp: f32,
        /// Live entries of the penalty list ([`penalize`]); 0 leaves the logits alone.
        pub n_pen: u32,
        pub repetition: f32,
        pub presence: f32,
        pub frequency: f32,
        /// The row of the logits the penalties apply to.
        pub row: u32,
        /// Live entries of the logit-bias list ([`bias_logits`]); 0 leaves the logits alone.
        pub n_bias: u32,
    }
}

/// The per-step sampling uniform.
const DRAW: Slot = Slot::uniform::<Draw>("draw");

/// A [`Draw`] in a small uniform buffer that the dispatches built against it read; writing it
/// ([`DrawState::set`]) is all a new step's draw needs.
#[derive(Debug)]
pub struct DrawState {
    buffer: wgpu::Buffer,
    _held: std::sync::Arc<crate::gpu::Held>,
}

impl DrawState {
    pub fn new(ctx: &GpuContext) -> DrawState {
        use wgpu::util::DeviceExt;
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("pocketlm draw"),
                contents: bytemuck::bytes_of(&Draw::default()),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        DrawState {
            _held: crate::gpu::Held::new(buffer.size()),
            buffer,
        }
    }

    /// Makes the next submitted work use `draw` (written through the queue, so it lands before
    /// the next submit and after the work already submitted).
    pub fn set(&self, ctx: &GpuContext, draw: &Draw) {
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(draw));
    }

    fn bind(&self) -> Bind<'_> {
        (DRAW, &self.buffer)
    }
}

/// One pass over the rows: `parts` workgroups per row, each reducing `span` of the row's `n`
/// input elements (logits on the first level, candidate pairs after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Level {
    n: usize,
    parts: usize,
    span: usize,
}

/// The levels that reduce a row of `vocab` logits to its best `kp` (a power of two).
fn plan(vocab: usize, kp: usize) -> Vec<Level> {
    let (span, final_span) = if kp == 1 {
        (ARGMAX_SPAN, ARGMAX_SPAN)
    } else {
        (TILE, TOPK_FINAL_SPAN)
    };
    let mut levels = Vec::new();
    let mut n = vocab;
    loop {
        if n <= final_span {
            levels.push(Level {
                n,
                parts: 1,
                span: n,
            });
            return levels;
        }
        let parts = n.div_ceil(span);
        levels.push(Level { n, parts, span });
        n = parts * kp;
    }
}

/// The shape of [`topk`]'s output for logits of shape `logits`: the leading dimensions, then
/// `[k, 2]` (value, index) pairs.
pub fn topk_shape(logits: &[usize], k: usize) -> Vec<usize> {
    let mut shape = logits[..logits.len().saturating_sub(1)].to_vec();
    shape.extend([k, 2]);
    shape
}

/// Top-k (or argmax) over every row of a logits tensor: the dispatches that compute it, built
/// once and recorded every step, and the reader of its output.
#[derive(Clone, Debug)]
pub struct TopK {
    dispatches: Vec<Dispatch>,
    out: GpuTensor,
    rows: usize,
    k: usize,
    // Intermediate (key, index) pairs between levels; the bind groups refer to them.
    _scratch: Vec<GpuTensor>,
}

impl TopK {
    /// The dispatches, in order (1 to 3 for vocabularies up to 262144); record all of them.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// The output tensor: `[..rows, k, 2]` i32 words, (value bits, index) per result.
    pub fn output(&self) -> &GpuTensor {
        &self.out
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Records the dispatches and a read of the output; pass the slot to [`TopK::read`].
    pub fn record(&self, rec: &mut Recorder<'_>) -> ReadSlot {
        rec.dispatch_all(&self.dispatches);
        rec.read(&self.out)
    }

    /// Decodes the output read back into `slot`: per row, the k (index, value) pairs, best first.
    pub fn read(&self, readback: &Readback, slot: ReadSlot) -> Result<Vec<Vec<(u32, f32)>>> {
        let words = readback.words(slot);
        let need = self.rows * self.k * 2;
        if words.len() < need {
            return Err(Error::Readback(format!(
                "top-k output '{}' needs {need} words but the read slot holds {}; pass the slot \
                 of this TopK's output",
                self.out.name(),
                words.len()
            )));
        }
        Ok(words[..need]
            .chunks(2 * self.k.max(1))
            .map(|row| {
                row.chunks(2)
                    .map(|pair| (pair[1], f32::from_bits(pair[0])))
                    .collect()
            })
            .collect())
    }
}

/// Top-k over the last dimension of `logits` (f32, any leading shape), 1 ≤ k ≤ [`TOPK_MAX`] and
/// k ≤ the row length, into `out` of shape [`topk_shape`]`(logits.shape(), k)`. Scratch space
/// for the intermediate levels is allocated here, once.
pub async fn topk(ctx: &GpuContext, logits: &GpuTensor, k: usize, out: &GpuTensor) -> Result<TopK> {
    select("topk", ctx, logits, k, out, None).await
}

/// Argmax over the last dimension of `logits` into `out` of shape `[..rows, 1, 2]`: the same as
/// [`topk`] with k = 1, which runs a register scan per invocation and a tree per workgroup.
pub async fn argmax(ctx: &GpuContext, logits: &GpuTensor, out: &GpuTensor) -> Result<TopK> {
    select("argmax", ctx, logits, 1, out, None).await
}

/// A draw from `softmax(logits · draw.inv_temp)` per row, on the GPU (the Gumbel-max trick, see
/// shaders/gumbel.wgsl): [`argmax`] of the logits perturbed by Gumbel noise from a hash of
/// (`draw`'s key, row, index). Output as [`argmax`]'s: the drawn index with its (unperturbed)
/// logit. The key and temperature are read from `draw` when the work runs.
pub async fn gumbel_argmax(
    ctx: &GpuContext,
    logits: &GpuTensor,
    draw: &DrawState,
    out: &GpuTensor,
) -> Result<TopK> {
    select("gumbel_argmax", ctx, logits, 1, out, Some(draw)).await
}

async fn select(
    name: &'static str,
    ctx: &GpuContext,
    logits: &GpuTensor,
    k: usize,
    out: &GpuTensor,
    draw: Option<&DrawState>,
) -> Result<TopK> {
    expect_dtype(name, logits, &[DType::F32], "f32 logits")?;
    expect_dtype(
        name,
        out,
        &[DType::I32],
        "an i32 output of (value bits, index) words (see topk_output)",
    )?;
    expect_distinct(name, out, &[logits])?;
    if !(1..=TOPK_MAX).contains(&k) {
        return Err(mismatch(
            name,
            format!(
                "k = {k} for logits '{}' is out of range: top-k takes 1 <= k <= {TOPK_MAX}",
                logits.name()
            ),
        ));
    }
    let vocab = logits.cols();
    if k > vocab {
        return Err(mismatch(
            name,
            format!(
                "k = {k} exceeds the {vocab} entries per row of logits '{}' {:?}",
                logits.name(),
                logits.shape()
            ),
        ));
    }
    let want = topk_shape(logits.shape(), k);
    if out.shape() != want.as_slice() {
        return Err(mismatch(
            name,
            format!(
                "output '{}' is {:?}, expected {want:?} ((value, index) pairs for logits '{}' {:?})",
                out.name(),
                out.shape(),
                logits.name(),
                logits.shape()
            ),
        ));
    }
    let rows = logits.rows();
    let kp = k.next_power_of_two();
    let levels = plan(vocab, kp);

    // Ping-pong buffers between levels: level i writes scratch[i % 2] unless it is the last.
    let mut scratch_words = [0usize; 2];
    for (i, l) in levels[..levels.len() - 1].iter().enumerate() {
        let words = rows
            .checked_mul(l.parts * kp * 2)
            .ok_or_else(|| mismatch(name, format!("{rows} rows overflow the scratch size")))?;
        scratch_words[i % 2] = scratch_words[i % 2].max(words);
    }
    let mut scratch = Vec::new();
    for (i, &words) in scratch_words.iter().enumerate().take(levels.len() - 1) {
        let label = format!("{}.{name}_scratch{i}", logits.name());
        scratch.push(ctx.zeros(&label, &[words], DType::I32)?);
    }

    let kernel = TOPK.entry(name, if kp == 1 { "argmax" } else { "topk" });
    // One pipeline per k rounded up to a power of two: a tile of 1024 slots whatever the row's
    // length (the network's barrier steps, not its slots, set the cost of a short row).
    let spec = Specialization::default()
        .with("WG", WG)
        .with("K", kp as u32)
        .with("TILE", TILE as u32)
        // Slots of half a tile per invocation (topk.wgsl's `halve`).
        .with("KEEP", (TILE as u32).div_ceil(2 * WG))
        .snippet(ORDER_KEY)
        .snippet(if draw.is_some() { GUMBEL } else { PLAIN_KEY });
    let last = levels.len() - 1;
    let mut dispatches = Vec::with_capacity(levels.len());
    for (i, l) in levels.iter().enumerate() {
        let params = TopkParams {
            rows: dim(name, "rows", rows)?,
            n: dim(name, "candidates", l.n)?,
            parts: dim(name, "workgroups per row", l.parts)?,
            span: dim(name, "span", l.span)?,
            mode: u32::from(i > 0),
            final_k: if i == last { k as u32 } else { 0 },
            vocab: dim(name, "vocabulary", vocab)?,
        };
        let src = if i == 0 {
            logits
        } else {
            &scratch[(i - 1) % 2]
        };
        let dst = if i == last { out } else { &scratch[i % 2] };
        let groups = rows as u64 * l.parts as u64;
        let wg = grid(ctx, name, groups)?;
        let mut binds = vec![
            (LOGITS, &logits.buffer),
            (SRC, &src.buffer),
            (DST, &dst.buffer),
        ];
        binds.extend(draw.map(DrawState::bind));
        dispatches.push(build(ctx, &kernel, &spec, &params, &binds, wg).await?);
    }
    Ok(TopK {
        dispatches,
        out: out.clone(),
        rows,
        k,
        _scratch: scratch,
    })
}

/// A new tensor shaped for [`topk`]'s output, named `name`.
pub fn topk_output(
    ctx: &GpuContext,
    name: &str,
    logits: &GpuTensor,
    k: usize,
) -> Result<GpuTensor> {
    ctx.zeros(name, &topk_shape(logits.shape(), k), DType::I32)
}

crate::uniform! {
    struct RowsParams {
        rows: u32,
        vocab: u32,
        /// Workgroups per row (`logit_stats`).
        parts: u32,
        /// Elements per workgroup (`logit_stats`).
        span: u32,
    }
}

/// The logits as raw f32 bits (NaN is told apart by its bits, whatever the driver does).
const LOGIT_BITS: Slot = Slot::read("logits", "u32");
const LOGITS_RW: Slot = Slot::read_write("logits", "f32");
/// (token, count) pairs: each distinct token of the penalty window once.
const PENS: Slot = Slot::read("pens", "u32");

/// The repetition, presence and frequency penalties of the tokens in `pens` applied in place to
/// row `draw.row` of `logits` (f32 `[rows, vocab]`), with `draw`'s penalties, as
/// [`crate::sample::Sampler::penalize`] computes them. `pens` is i32 `[capacity, 2]`: (token,
/// count) per distinct token of the window, the first `draw.n_pen` live. Tokens outside the
/// vocabulary are skipped. Recorded before the top-k or argmax of the row.
pub async fn penalize(
    ctx: &GpuContext,
    logits: &GpuTensor,
    draw: &DrawState,
    pens: &GpuTensor,
) -> Result<Dispatch> {
    const KERNEL: Kernel = Kernel::new(
        "penalize",
        PENALIZE_SRC,
        "penalize",
        Interface::new::<RowsParams>(&[DRAW, LOGITS_RW, PENS]),
    );
    token_list_kernel(
        ctx,
        &KERNEL,
        logits,
        draw,
        (PENS, pens),
        "i32 (token, count) pairs",
    )
    .await
}

/// (token, bias as f32 bits) pairs: a request's logit bias, each token once.
const BIASES: Slot = Slot::read("biases", "u32");

/// A logit bias added in place to row `draw.row` of `logits` (f32 `[rows, vocab]`): `biases` is
/// i32 `[capacity, 2]`, (token, the bias's f32 bits) per distinct token, the first
/// `draw.n_bias` live. Tokens outside the vocabulary are skipped. Recorded after [`penalize`],
/// before [`mask_logits`] and the pick.
pub async fn bias_logits(
    ctx: &GpuContext,
    logits: &GpuTensor,
    draw: &DrawState,
    biases: &GpuTensor,
) -> Result<Dispatch> {
    const KERNEL: Kernel = Kernel::new(
        "bias_logits",
        BIAS_SRC,
        "bias_logits",
        Interface::new::<RowsParams>(&[DRAW, LOGITS_RW, BIASES]),
    );
    token_list_kernel(
        ctx,
        &KERNEL,
        logits,
        draw,
        (BIASES, biases),
        "i32 (token, bias) pairs",
    )
    .await
}

/// A kernel that changes the logits of the tokens in a list of `[capacity, 2]` pairs (token,
/// value) in row `draw.row`, one invocation per entry of the list.
async fn token_list_kernel(
    ctx: &GpuContext,
    kernel: &Kernel,
    logits: &GpuTensor,
    draw: &DrawState,
    (slot, list): (Slot, &GpuTensor),
    pairs: &'static str,
) -> Result<Dispatch> {
    let name = kernel.name;
    expect_dtype(name, logits, &[DType::F32], "f32 logits")?;
    expect_dtype(name, list, &[DType::I32], pairs)?;
    let [capacity, 2] = *list.shape() else {
        return Err(mismatch(
            name,
            format!(
                "list '{}' must be [capacity, 2]: {pairs}, got {:?}",
                list.name(),
                list.shape()
            ),
        ));
    };
    expect_distinct(name, logits, &[list])?;
    let params = RowsParams {
        rows: dim(name, "rows", logits.rows())?,
        vocab: dim(name, "vocabulary", logits.cols())?,
        parts: 0,
        span: 0,
    };
    let wg = grid(ctx, name, (capacity as u64).div_ceil(u64::from(WG)))?;
    let spec = Specialization::default().with("WG", WG);
    let binds = [
        draw.bind(),
        (LOGITS_RW, &logits.buffer),
        (slot, &list.buffer),
    ];
    build(ctx, kernel, &spec, &params, &binds, wg).await
}

/// One bit per token id, 32 per word: a grammar's allowed tokens.
const ALLOWED: Slot = Slot::read("allowed", "u32");

/// Words of a token mask over `vocab` tokens: one bit per token.
pub fn mask_words(vocab: usize) -> usize {
    vocab.div_ceil(32)
}

/// A token mask applied in place to row `draw.row` of `logits` (f32 `[rows, vocab]`): every
/// token whose bit is clear in `allowed` (u32 `[mask_words(vocab)]`, low bit first) gets
/// [`MASKED_LOGIT`]. Recorded after [`penalize`], before the top-k, argmax or Gumbel pick, so a
/// constrained step still reads back only what its plan reads.
pub async fn mask_logits(
    ctx: &GpuContext,
    logits: &GpuTensor,
    draw: &DrawState,
    allowed: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "mask_logits";
    const KERNEL: Kernel = Kernel::new(
        NAME,
        MASK_SRC,
        NAME,
        Interface::new::<RowsParams>(&[DRAW, LOGITS_RW, ALLOWED]),
    );
    expect_dtype(NAME, logits, &[DType::F32], "f32 logits")?;
    expect_dtype(NAME, allowed, &[DType::I32], "32-bit mask words")?;
    let vocab = logits.cols();
    if allowed.numel() < mask_words(vocab) {
        return Err(mismatch(
            NAME,
            format!(
                "mask '{}' has {} words, a vocabulary of {vocab} needs {}",
                allowed.name(),
                allowed.numel(),
                mask_words(vocab)
            ),
        ));
    }
    expect_distinct(NAME, logits, &[allowed])?;
    let params = RowsParams {
        rows: dim(NAME, "rows", logits.rows())?,
        vocab: dim(NAME, "vocabulary", vocab)?,
        parts: 0,
        span: 0,
    };
    let wg = grid(ctx, NAME, (vocab as u64).div_ceil(u64::from(WG)))?;
    let spec = Specialization::default().with("WG", WG);
    let binds = [
        draw.bind(),
        (LOGITS_RW, &logits.buffer),
        (ALLOWED, &allowed.buffer),
    ];
    build(ctx, &KERNEL, &spec, &params, &binds, wg).await
}

/// Elements one `logit_stats` workgroup reduces.
const STATS_SPAN: usize = 4096;
const PART_MS: Slot = Slot::read_write("part_ms", "vec2<f32>");
const PART_IN: Slot = Slot::read("part_in", "vec2<f32>");
const STATS: Slot = Slot::read_write("stats", "vec2<f32>");

/// The softmax statistics of every row of a logits tensor, computed on the GPU: the dispatches,
/// built once and recorded every step, and the reader of their output.
#[derive(Clone, Debug)]
pub struct LogitStats {
    dispatches: Vec<Dispatch>,
    out: GpuTensor,
    _parts: GpuTensor,
}

impl LogitStats {
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Records the dispatches and a read of the output; pass the slot to [`LogitStats::read`].
    pub fn record(&self, rec: &mut Recorder<'_>) -> ReadSlot {
        rec.dispatch_all(&self.dispatches);
        rec.read(&self.out)
    }

    /// Per row, `(max, Σ exp(x − max))` over its logits (NaN and −inf left out; a row with
    /// nothing else gives a sum of 0).
    pub fn read(&self, readback: &Readback, slot: ReadSlot) -> Result<Vec<(f32, f32)>> {
        let words = readback.words(slot);
        let need = self.out.numel();
        if words.len() < need {
            return Err(Error::Readback(format!(
                "logit statistics '{}' need {need} words but the read slot holds {}",
                self.out.name(),
                words.len()
            )));
        }
        Ok(words[..need]
            .chunks(2)
            .map(|w| (f32::from_bits(w[0]), f32::from_bits(w[1])))
            .collect())
    }
}

/// Per row of `logits` (f32, any leading shape): its max M and Σ exp(x − M) (shaders/
/// logit_stats.wgsl), with which the GPU's top candidates give exact probabilities: top-p over
/// the whole vocabulary from a readback of the candidates and 8 bytes.
pub async fn logit_stats(ctx: &GpuContext, logits: &GpuTensor) -> Result<LogitStats> {
    const NAME: &str = "logit_stats";
    const KERNEL: Kernel = Kernel::new(
        NAME,
        STATS_SRC,
        "stats_partial",
        Interface::new::<RowsParams>(&[LOGIT_BITS, PART_MS, PART_IN, STATS]),
    );
    expect_dtype(NAME, logits, &[DType::F32], "f32 logits")?;
    let vocab = logits.cols();
    if vocab == 0 {
        return Err(mismatch(
            NAME,
            format!("logits '{}' have empty rows", logits.name()),
        ));
    }
    let rows = logits.numel() / vocab;
    let parts = vocab.div_ceil(STATS_SPAN);
    let part_pairs = rows
        .checked_mul(parts)
        .ok_or_else(|| mismatch(NAME, format!("{rows} rows overflow")))?;
    let label = format!("{}.stats_parts", logits.name());
    let part_ms = ctx.zeros(&label, &[part_pairs, 2], DType::F32)?;
    let out = ctx.zeros(&format!("{}.stats", logits.name()), &[rows, 2], DType::F32)?;
    let params = RowsParams {
        rows: dim(NAME, "rows", rows)?,
        vocab: dim(NAME, "vocabulary", vocab)?,
        parts: dim(NAME, "parts", parts)?,
        span: STATS_SPAN as u32,
    };
    let spec = Specialization::default().with("WG", WG);
    let partial = build(
        ctx,
        &KERNEL,
        &spec,
        &params,
        &[(LOGIT_BITS, &logits.buffer), (PART_MS, &part_ms.buffer)],
        grid(ctx, NAME, part_pairs as u64)?,
    )
    .await?;
    let combine = build(
        ctx,
        &KERNEL.entry(NAME, "stats_combine"),
        &spec,
        &params,
        &[(PART_IN, &part_ms.buffer), (STATS, &out.buffer)],
        grid(ctx, NAME, rows as u64)?,
    )
    .await?;
    Ok(LogitStats {
        dispatches: vec![partial, combine],
        out,
        _parts: part_ms,
    })
}

const NUCLEUS_SRC: &str = include_str!("../../shaders/nucleus.wgsl");

crate::uniform! {
    struct NucleusParams {
        /// The byte of the key this dispatch chooses (0: the most significant).
        level: u32,
        /// 0: a top-p pass (softmax mass); 1: a top-k pass (count).
        mode: u32,
        /// Workgroups over the row (`hist`).
        parts: u32,
        /// Elements per workgroup (`hist`).
        span: u32,
        vocab: u32,
    }
}

/// Elements one `hist` workgroup sums into its histogram.
const NUCLEUS_SPAN: usize = 4096;
/// Bins per histogram: one byte of the key.
const NUCLEUS_BINS: usize = 256;
const ROW_STATS: Slot = Slot::read("stats", "vec2<f32>");
const STATE_IN: Slot = Slot::read("state_in", "u32");
const STATE: Slot = Slot::read_write("state", "u32");
const PART_HIST: Slot = Slot::read_write("part_hist", "f32");
const HIST_IN: Slot = Slot::read("hist_in", "f32");
const CUT: Slot = Slot::read_write("out", "u32");

/// A draw from the nucleus of one row of logits on the GPU (shaders/nucleus.wgsl): the tokens
/// top-k, top-p and min-p keep, found by radix selects by count and by softmax mass instead of
/// a sort, then a Gumbel-max draw among them at the draw's temperature. Reads back one (value,
/// index) pair, or leaves it where the next step reads it. Built once per graph, on its first
/// truncated draw. Clones share the buffers and dispatches.
#[derive(Clone, Debug)]
pub struct Nucleus {
    /// Four (histogram, pick) pairs of the radix select by count (top-k), then four by mass
    /// (top-p).
    select: Vec<Dispatch>,
    cut: Dispatch,
    draw: TopK,
    state: GpuTensor,
    _parts: GpuTensor,
    row: GpuTensor,
}

impl Nucleus {
    /// Records the draw from row `row` of the logits, whose [`LogitStats`] the step computed,
    /// keeping what top-k (`top_k` > 0), then top-p (`top_p` < 1) and min-p (`min_p` > 0) keep
    /// of it: exactly what [`crate::sample::Sampler`] keeps of the sorted row (up to the
    /// rounding of the GPU's f32 sums at top-p's boundary), and every token tied with the last
    /// one either keeps. The key and the temperature are the [`DrawState`]'s when the work
    /// runs. Pass the slot to [`Nucleus::read`].
    pub fn record(
        &self,
        ctx: &GpuContext,
        rec: &mut Recorder<'_>,
        row: usize,
        limits: (usize, f32, f32),
    ) -> Result<ReadSlot> {
        self.record_pick(ctx, rec, row, limits)?;
        Ok(rec.read(self.output()))
    }

    /// [`Nucleus::record`] without the read: the draw lands in [`Nucleus::output`] (for a pick
    /// the next step reads on the GPU). The state it writes goes through the queue, so work
    /// submitted before keeps its own.
    pub fn record_pick(
        &self,
        ctx: &GpuContext,
        rec: &mut Recorder<'_>,
        row: usize,
        (top_k, top_p, min_p): (usize, f32, f32),
    ) -> Result<()> {
        let row = dim("nucleus", "row", row)? as i32;
        let k = dim("nucleus", "top_k", top_k)? as i32;
        let words = [
            row,
            top_p.to_bits() as i32,
            min_p.to_bits() as i32,
            0,
            0,
            0,
            k,
            0,
        ];
        ctx.write_i32(&self.state, &words)?;
        let (by_count, by_mass) = self.select.split_at(8);
        if top_k > 0 {
            rec.dispatch_all(by_count);
        }
        if top_p < 1.0 {
            rec.dispatch_all(by_mass);
        }
        rec.dispatch(&self.cut);
        rec.dispatch_all(self.draw.dispatches());
        Ok(())
    }

    /// The draw: `[1, 1, 2]` i32 words, the drawn token's logit bits, then its index.
    pub fn output(&self) -> &GpuTensor {
        self.draw.output()
    }

    /// The row the draw is made from (`[1, vocab]` f32): the logits the nucleus keeps, −inf
    /// elsewhere.
    pub fn row(&self) -> &GpuTensor {
        &self.row
    }

    /// The token drawn.
    pub fn read(&self, readback: &Readback, slot: ReadSlot) -> Result<u32> {
        Ok(self.draw.read(readback, slot)?[0][0].0)
    }
}

/// The dispatches of a [`Nucleus`] draw over rows of `logits` (f32 `[rows, vocab]`) whose
/// statistics `stats` computes, with `draw`'s key and temperature.
pub async fn nucleus(
    ctx: &GpuContext,
    logits: &GpuTensor,
    stats: &LogitStats,
    draw: &DrawState,
) -> Result<Nucleus> {
    const NAME: &str = "nucleus";
    const KERNEL: Kernel = Kernel::new(
        NAME,
        NUCLEUS_SRC,
        "hist",
        Interface::new::<NucleusParams>(&[
            LOGIT_BITS, ROW_STATS, STATE_IN, PART_HIST, HIST_IN, STATE, CUT,
        ]),
    );
    expect_dtype(NAME, logits, &[DType::F32], "f32 logits")?;
    let vocab = logits.cols();
    if vocab == 0 {
        return Err(mismatch(
            NAME,
            format!("logits '{}' have empty rows", logits.name()),
        ));
    }
    let parts = vocab.div_ceil(NUCLEUS_SPAN);
    let part_hist = ctx.zeros(
        &format!("{}.nucleus_hist", logits.name()),
        &[parts * NUCLEUS_BINS],
        DType::F32,
    )?;
    let state = ctx.zeros(
        &format!("{}.nucleus_state", logits.name()),
        &[8],
        DType::I32,
    )?;
    let row = ctx.zeros(
        &format!("{}.nucleus_row", logits.name()),
        &[1, vocab],
        DType::F32,
    )?;
    let spec = Specialization::default()
        .with("WG", NUCLEUS_BINS as u32)
        .snippet(ORDER_KEY);
    let params = |level: u32, mode: u32| -> Result<NucleusParams> {
        Ok(NucleusParams {
            level,
            mode,
            parts: dim(NAME, "parts", parts)?,
            span: NUCLEUS_SPAN as u32,
            vocab: dim(NAME, "vocabulary", vocab)?,
        })
    };
    let stats_bind = (ROW_STATS, &stats.out.buffer);
    let mut select = Vec::with_capacity(16);
    for (mode, level) in [1, 0].into_iter().flat_map(|m| (0..4).map(move |l| (m, l))) {
        select.push(
            build(
                ctx,
                &KERNEL,
                &spec,
                &params(level, mode)?,
                &[
                    (LOGIT_BITS, &logits.buffer),
                    stats_bind,
                    (STATE_IN, &state.buffer),
                    (PART_HIST, &part_hist.buffer),
                ],
                grid(ctx, NAME, parts as u64)?,
            )
            .await?,
        );
        select.push(
            build(
                ctx,
                &KERNEL.entry(NAME, "pick"),
                &spec,
                &params(level, mode)?,
                &[(HIST_IN, &part_hist.buffer), (STATE, &state.buffer)],
                grid(ctx, NAME, 1)?,
            )
            .await?,
        );
    }
    let cut = build(
        ctx,
        &KERNEL.entry(NAME, "cut"),
        &spec,
        &params(0, 0)?,
        &[
            (LOGIT_BITS, &logits.buffer),
            stats_bind,
            (STATE_IN, &state.buffer),
            (CUT, &row.buffer),
        ],
        grid(ctx, NAME, (vocab as u64).div_ceil(NUCLEUS_BINS as u64))?,
    )
    .await?;
    let out = topk_output(ctx, &format!("{}.nucleus_drawn", logits.name()), &row, 1)?;
    let draw = gumbel_argmax(ctx, &row, draw, &out).await?;
    Ok(Nucleus {
        select,
        cut,
        draw,
        state,
        _parts: part_hist,
        row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cut_rows_to_one_workgroup() {
        // Small rows: one level.
        assert_eq!(
            plan(1, 1),
            vec![Level {
                n: 1,
                parts: 1,
                span: 1
            }]
        );
        assert_eq!(plan(2048, 64).len(), 1);
        // 262144 / 1024 = 256 workgroups of 64 → 16384 → 16 workgroups → 1024 → one.
        let p = plan(262_144, 64);
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].parts, p[1].n, p[1].parts, p[2].n),
            (256, 16_384, 16, 1024)
        );
        assert_eq!(plan(151_936, 64).len(), 3);
        assert_eq!(plan(49_152, 64).len(), 3);
        assert_eq!(plan(49_152, 32).len(), 2);
        // Argmax: 4096 per workgroup, then one workgroup over the 64 winners.
        let p = plan(262_144, 1);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].parts, p[1].n), (64, 64));
        for (vocab, kp) in [(262_144, 64), (151_936, 2), (3, 4), (70_000, 1)] {
            let p = plan(vocab, kp);
            assert_eq!(p[0].n, vocab);
            assert_eq!(p.last().unwrap().parts, 1);
            for w in p.windows(2) {
                assert_eq!(w[1].n, w[0].parts * kp);
                assert!(w[0].parts * w[0].span >= w[0].n);
            }
        }
    }

    #[test]
    fn output_shape_replaces_the_last_dimension() {
        assert_eq!(topk_shape(&[3, 50], 4), vec![3, 4, 2]);
        assert_eq!(topk_shape(&[50], 1), vec![1, 2]);
        assert_eq!(topk_shape(&[2, 3, 7], 5), vec![2, 3, 5, 2]);
    }
}
