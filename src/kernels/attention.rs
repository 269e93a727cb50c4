//! Attention over a GPU KV cache: the per-step state, the cache and its write kernel, and causal
//! grouped-query attention split over the context (flash decoding).
//!
//! Everything is built once. A step (a decode token, or a batch of prompt tokens) differs from the
//! last only in where it starts and how many tokens it carries; those two numbers live in a
//! 16-byte uniform ([`StepState`]) that every kernel of a step binds at build time and that the
//! caller rewrites before each submit. Dispatch sizes come from the largest step and the whole
//! context, and workgroups past the current step or context exit at once.
//!
//! A layer's attention, per step: [`kv_write`] (append the step's k/v rows to the cache), then the
//! dispatches of [`attention`] (one when the context is a single chunk, else the chunked pass and
//! a combine). RoPE ([`rope_qk`](crate::kernels::rope_qk)) runs before both, or with the write in
//! one dispatch ([`rope_kv_write`]), which is what a model's graph records.

use std::fmt;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::rope::{check_table, check_target, RopeLayout, RopeTable, TABLE};
use crate::kernels::{build, Bind};
use crate::kernels::{check_eps, dim, expect_distinct, expect_dtype, grid, mismatch, WG};

const KV_WRITE_SRC: &str = include_str!("../../shaders/kv_write.wgsl");
const ROPE_KV_WRITE_SRC: &str = include_str!("../../shaders/rope_kv_write.wgsl");
const QK_NORM_ROPE_KV_SRC: &str = include_str!("../../shaders/qk_norm_rope_kv.wgsl");
/// `to_word`: how a cache row's words are stored, shared by both cache writes.
pub(crate) const KV_STORE: &str = include_str!("../../shaders/kv_store.wgsl");
const ATTENTION_SRC: &str = include_str!("../../shaders/attention.wgsl");
const ATTENTION_ROWS_SRC: &str = include_str!("../../shaders/attention_rows.wgsl");
const ATTENTION_COMMON: &str = include_str!("../../shaders/attention_common.wgsl");
const COMBINE_SRC: &str = include_str!("../../shaders/attention_combine.wgsl");

crate::uniform! {
    /// The step a graph's dispatches run: its first position and its token count.
    pub(crate) struct Step {
        offset: u32,
        n_tokens: u32,
    }
}

/// The step uniform, as the kernels built against a [`StepState`] bind it.
pub(crate) const STEP: Slot = Slot::uniform::<Step>("step");

/// Where a step starts in the sequence and how many tokens it carries, in a small uniform buffer
/// the kernels built against it read. Rewriting it ([`StepState::set`]) is all a new step needs.
///
/// `max_tokens` is the most tokens one step may carry (1 for a decode graph, the prompt chunk for a
/// prefill graph) and sizes the dispatches built against it; `max_positions` is the context
/// (KV cache and RoPE table must cover it). Starts as an empty step at position 0.
#[derive(Debug)]
pub struct StepState {
    buffer: wgpu::Buffer,
    _held: std::sync::Arc<crate::gpu::Held>,
    max_tokens: usize,
    max_positions: usize,
    offset: usize,
    n_tokens: usize,
}

impl StepState {
    pub fn new(ctx: &GpuContext, max_tokens: usize, max_positions: usize) -> Result<Self> {
        if max_tokens == 0 || max_tokens > max_positions {
            return Err(mismatch(
                "step",
                format!(
                    "max_tokens {max_tokens} must be at least 1 and at most max_positions \
                     {max_positions}"
                ),
            ));
        }
        dim("step", "max_positions", max_positions)?;
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("pocketlm step"),
                // Uniform buffers are sized in 16-byte units.
                contents: &[0; 16],
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        Ok(StepState {
            _held: crate::gpu::Held::new(buffer.size()),
            buffer,
            max_tokens,
            max_positions,
            offset: 0,
            n_tokens: 0,
        })
    }

    /// Makes the next submitted work a step of `n_tokens` tokens at positions
    /// `offset..offset + n_tokens`. Refused (nothing written) when the step carries more than
    /// `max_tokens` or runs past the context.
    ///
    /// The write goes through the queue: it lands after the work already submitted and before the
    /// next submit, so set, record and submit once per step (a second `set` before the submit
    /// replaces the first).
    pub fn set(&mut self, ctx: &GpuContext, offset: usize, n_tokens: usize) -> Result<()> {
        if n_tokens > self.max_tokens {
            return Err(mismatch(
                "step",
                format!(
                    "a step of {n_tokens} tokens is more than the {} its dispatches were built \
                     for; split it",
                    self.max_tokens
                ),
            ));
        }
        let end = offset.saturating_add(n_tokens);
        if end > self.max_positions {
            return Err(mismatch(
                "step",
                format!(
                    "a step of {n_tokens} tokens at position {offset} ends at position {end}, past \
                     the context of {} positions (KV cache, RoPE table); the sequence is longer \
                     than the context: shorten the prompt or start a new sequence",
                    self.max_positions
                ),
            ));
        }
        let u = Step {
            offset: offset as u32,
            n_tokens: n_tokens as u32,
        };
        ctx.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(&u));
        self.offset = offset;
        self.n_tokens = n_tokens;
        Ok(())
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The step uniform bound to [`STEP`].
    pub(crate) fn bind(&self) -> Bind<'_> {
        (STEP, &self.buffer)
    }
}

/// Per-layer key and value caches, each `[max_ctx, n_kv_heads, head_dim]`.
///
/// Stored as f16 (pairs packed in u32 words with `pack2x16float`, which needs no `shader-f16`;
/// rows of odd `head_dim` padded by one half) on both profiles, unless f32 is chosen (the
/// `dtype` of [`KvCache::with_slots`], `EngineOptions::kv_dtype`). Memory:
/// `2 · n_layers · max_ctx · n_kv_heads · padded(head_dim) · (2 or 4)` bytes; e.g. SmolLM2-135M
/// (30 layers, 3 kv heads of 64) at 8192 positions takes 180 MiB in f16, 360 MiB in f32. Each
/// layer's k and v is one binding, so `max_ctx · n_kv_heads · padded(head_dim) · (2 or 4)` must
/// not exceed the adapter's storage-binding limit (128 MiB on the baseline profile); a larger
/// cache is refused before anything is allocated.
///
/// f16 rounds each stored element to 11 significant bits (relative error ≤ 2⁻¹¹ when rounded to
/// nearest; WGSL also allows the other neighbour, ≤ 2⁻¹⁰) and saturates at ±65504.
///
/// A layer can hold fewer positions than the context ([`KvCache::with_slots`]): a sliding-window
/// layer that sees at most `window` positions back needs only `window + largest step − 1` of them
/// (the window of a step's first token and the step's own rows). Position `p` then lives in row
/// `p % slots`, a ring: each write overwrites a position no query of the step can see.
#[derive(Clone, Debug)]
pub struct KvCache {
    layers: Vec<(GpuTensor, GpuTensor)>,
    /// Rows per layer: `max_ctx`, or fewer for a ring.
    slots: Vec<usize>,
    max_ctx: usize,
    n_kv_heads: usize,
    head_dim: usize,
    dtype: DType,
}

impl KvCache {
    /// Frees every layer's GPU memory now rather than when the last clone is dropped; using the
    /// cache afterwards is a GPU validation error.
    pub fn destroy(&self) {
        for (k, v) in &self.layers {
            k.destroy();
            v.destroy();
        }
    }

    /// The cache element type for this device: f16 on both profiles (half the memory and half
    /// the bytes attention reads; the baseline packs pairs without `shader-f16`).
    pub fn default_dtype(_ctx: &GpuContext) -> DType {
        DType::F16
    }

    /// Bytes of one layer's k (or v) buffer; `None` on overflow.
    pub fn layer_bytes(
        max_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Option<u64> {
        let rows = max_ctx.checked_mul(n_kv_heads)?;
        (dtype.gpu_words(rows, head_dim)? as u64).checked_mul(4)
    }

    /// Bytes of the whole cache; `None` on overflow.
    pub fn bytes(
        n_layers: usize,
        max_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Option<u64> {
        Self::layer_bytes(max_ctx, n_kv_heads, head_dim, dtype)?.checked_mul(2 * n_layers as u64)
    }

    pub fn new(
        ctx: &GpuContext,
        n_layers: usize,
        max_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let dtype = Self::default_dtype(ctx);
        Self::with_dtype(ctx, n_layers, max_ctx, n_kv_heads, head_dim, dtype)
    }

    pub fn with_dtype(
        ctx: &GpuContext,
        n_layers: usize,
        max_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Result<Self> {
        Self::with_slots(
            ctx,
            max_ctx,
            &vec![max_ctx; n_layers],
            n_kv_heads,
            head_dim,
            dtype,
        )
    }

    /// A cache for a context of `max_ctx` positions whose layer `l` holds `slots[l]` of them
    /// (at most `max_ctx`; fewer makes the layer a ring, for a sliding window: see the type).
    pub fn with_slots(
        ctx: &GpuContext,
        max_ctx: usize,
        slots: &[usize],
        n_kv_heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Result<Self> {
        const NAME: &str = "kv_cache";
        let n_layers = slots.len();
        if !matches!(dtype, DType::F16 | DType::F32) {
            return Err(Error::UnsupportedDType {
                kernel: NAME,
                tensor: "kv cache".into(),
                dtype,
                expected: "f16 or f32",
            });
        }
        if n_layers == 0 || max_ctx == 0 || n_kv_heads == 0 || head_dim == 0 {
            return Err(mismatch(
                NAME,
                format!(
                    "layers {n_layers}, max_ctx {max_ctx}, kv heads {n_kv_heads} and head_dim \
                     {head_dim} must all be at least 1"
                ),
            ));
        }
        dim(NAME, "max_ctx", max_ctx)?;
        if let Some(&s) = slots.iter().find(|&&s| s == 0 || s > max_ctx) {
            return Err(mismatch(
                NAME,
                format!("a layer of {s} positions, outside 1..={max_ctx}"),
            ));
        }
        // Said before allocating anything: the largest layer's buffers.
        let largest = slots.iter().copied().max().unwrap_or(max_ctx);
        let bytes = Self::layer_bytes(largest, n_kv_heads, head_dim, dtype).unwrap_or(u64::MAX);
        let caps = ctx.capabilities();
        let limit = caps.max_storage_binding_bytes.min(caps.max_buffer_bytes);
        if bytes > limit {
            return Err(Error::TooLarge {
                tensor: format!(
                    "kv cache layer ([{largest}, {n_kv_heads}, {head_dim}] {dtype}; shorten the \
                     context)"
                ),
                bytes,
                limit,
            });
        }
        let mut layers = Vec::with_capacity(n_layers);
        for (l, &rows) in slots.iter().enumerate() {
            let shape = [rows, n_kv_heads, head_dim];
            layers.push((
                ctx.zeros(&format!("kv cache k{l}"), &shape, dtype)?,
                ctx.zeros(&format!("kv cache v{l}"), &shape, dtype)?,
            ));
        }
        Ok(KvCache {
            layers,
            slots: slots.to_vec(),
            max_ctx,
            n_kv_heads,
            head_dim,
            dtype,
        })
    }

    /// The k and v tensors of a layer.
    pub fn layer(&self, layer: usize) -> Option<(&GpuTensor, &GpuTensor)> {
        self.layers.get(layer).map(|(k, v)| (k, v))
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn max_ctx(&self) -> usize {
        self.max_ctx
    }

    /// Positions layer `layer` holds: `max_ctx`, or fewer for a ring (a sliding window's).
    pub fn slots(&self, layer: usize) -> usize {
        self.slots.get(layer).copied().unwrap_or(self.max_ctx)
    }

    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn size_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|(k, v)| k.size_bytes() + v.size_bytes())
            .sum()
    }

    /// Words per (position, kv head) row as stored.
    pub(crate) fn row_words(&self) -> usize {
        self.dtype.padded_row_len(self.head_dim) * self.dtype.block_bytes() / 4
    }

    pub(crate) fn check_layer(
        &self,
        name: &'static str,
        layer: usize,
        step: &StepState,
    ) -> Result<()> {
        if layer >= self.layers.len() {
            return Err(mismatch(
                name,
                format!(
                    "layer {layer} is out of range: the KV cache has {} layers",
                    self.layers.len()
                ),
            ));
        }
        if self.max_ctx < step.max_positions() {
            return Err(mismatch(
                name,
                format!(
                    "the KV cache holds {} positions, fewer than the step's context of {}",
                    self.max_ctx,
                    step.max_positions()
                ),
            ));
        }
        Ok(())
    }
}

fn kv_shape_check(
    name: &'static str,
    cache: &KvCache,
    step: &StepState,
    t: &GpuTensor,
) -> Result<usize> {
    expect_dtype(name, t, &[DType::F32], "f32 k/v rows")?;
    let want = [cache.n_kv_heads, cache.head_dim];
    match *t.shape() {
        [tokens, h, d] if [h, d] == want && tokens >= step.max_tokens() => Ok(tokens),
        _ => Err(mismatch(
            name,
            format!(
                "'{}' is {:?}, expected [tokens ≥ {}, {}, {}] (step's max tokens, the cache's kv \
                 heads and head_dim)",
                t.name(),
                t.shape(),
                step.max_tokens(),
                cache.n_kv_heads,
                cache.head_dim
            ),
        )),
    }
}

crate::uniform! {
    struct KvWriteParams {
        kv_heads: u32,
        head_dim: u32,
        /// Words per (position, kv head) row of the cache.
        row_words: u32,
        /// Positions the layer holds: position p is row p % slots.
        slots: u32,
    }
}

/// The new rows of the step, `[tokens, kv heads, head_dim]` f32.
const K_IN: Slot = Slot::read("k_in", "f32");
const V_IN: Slot = Slot::read("v_in", "f32");
/// One layer of the cache as [`KvCache`] stores it (f16 pairs or f32, in words).
pub(crate) const K_CACHE: Slot = Slot::read_write("k_cache", "u32");
pub(crate) const V_CACHE: Slot = Slot::read_write("v_cache", "u32");

/// Writes the step's new rows `k`, `v` ([tokens, n_kv_heads, head_dim], f32; token `t` at
/// position `step.offset + t`) into `layer` of the cache, converting to the cache's type.
pub async fn kv_write(
    ctx: &GpuContext,
    step: &StepState,
    cache: &KvCache,
    layer: usize,
    k: &GpuTensor,
    v: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "kv_write";
    cache.check_layer(NAME, layer, step)?;
    kv_shape_check(NAME, cache, step, k)?;
    kv_shape_check(NAME, cache, step, v)?;
    let (kc, vc) = &cache.layers[layer];
    let row_words = cache.row_words();
    let words = step
        .max_tokens()
        .checked_mul(cache.n_kv_heads * row_words)
        .ok_or_else(|| mismatch(NAME, "step rows overflow".into()))?;
    dim(NAME, "words per step", words)?;
    const KERNEL: Kernel = Kernel::new(
        NAME,
        KV_WRITE_SRC,
        NAME,
        Interface::new::<KvWriteParams>(&[STEP, K_IN, V_IN, K_CACHE, V_CACHE]),
    );
    let spec = Specialization::default()
        .with("WG", WG)
        .with("KV_F16", u32::from(cache.dtype == DType::F16))
        .snippet(KV_STORE);
    let params = KvWriteParams {
        kv_heads: dim(NAME, "kv heads", cache.n_kv_heads)?,
        head_dim: dim(NAME, "head_dim", cache.head_dim)?,
        row_words: dim(NAME, "row words", row_words)?,
        slots: dim(NAME, "slots", cache.slots(layer))?,
    };
    let wg = grid(ctx, NAME, (words as u64).div_ceil(u64::from(WG)))?;
    let binds = [
        step.bind(),
        (K_IN, &k.buffer),
        (V_IN, &v.buffer),
        (K_CACHE, &kc.buffer),
        (V_CACHE, &vc.buffer),
    ];
    build(ctx, &KERNEL, &spec, &params, &binds, wg).await
}

crate::uniform! {
    struct RopeKvWriteParams {
        heads: u32,
        kv_heads: u32,
        head_dim: u32,
        /// rotary_dim / 2.
        half: u32,
        /// 1: pairs (i, i + half); 0: pairs (2i, 2i + 1).
        neox: u32,
        /// Words per (position, kv head) row of the cache.
        row_words: u32,
        /// Positions the layer holds: position p is row p % slots.
        slots: u32,
        /// The q/k norms' eps ([`qk_norm_rope_kv_write`]; 0 and unread without them).
        eps: f32,
    }
}

/// The queries, rotated in place.
const Q_ROTATE: Slot = Slot::read_write("q", "f32");

/// [`rope_qk`](crate::kernels::rope_qk) and [`kv_write`] in one dispatch: rotates `q`
/// [tokens, heads, head_dim] in place, and writes the rotated rows of `k` and the rows of `v`
/// ([tokens, n_kv_heads, head_dim], f32; token `t` at position `step.offset + t`) into `layer` of
/// the cache, converting to the cache's type. `k` itself is left unrotated (only the cache holds
/// the rotated keys). Any RoPE layout and rotary_dim of the table; head_dim must be the cache's.
#[allow(clippy::too_many_arguments)]
pub async fn rope_kv_write(
    ctx: &GpuContext,
    table: &RopeTable,
    step: &StepState,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    cache: &KvCache,
    layer: usize,
) -> Result<Dispatch> {
    rope_kv_write_normed(ctx, table, step, (q, k, v), None, cache, layer).await
}

/// The per-head RMSNorms of q and k ([`crate::kernels::rmsnorm`] over rows of head_dim, with
/// weights `q_norm` and `k_norm` of [head_dim], and `eps`) that Qwen3 and Gemma 3 apply before
/// RoPE.
#[derive(Clone, Copy, Debug)]
pub struct QkNorm<'a> {
    pub q_norm: &'a GpuTensor,
    pub k_norm: &'a GpuTensor,
    pub eps: f32,
}

/// [`rope_kv_write`] of q and k after their per-head RMSNorms, in one dispatch (one workgroup
/// per token and head): the results of two [`crate::kernels::rmsnorm`] dispatches (into other
/// buffers) and [`rope_kv_write`] on their outputs, with q normed and rotated in place.
#[allow(clippy::too_many_arguments)]
pub async fn qk_norm_rope_kv_write(
    ctx: &GpuContext,
    table: &RopeTable,
    step: &StepState,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    norm: QkNorm<'_>,
    cache: &KvCache,
    layer: usize,
) -> Result<Dispatch> {
    rope_kv_write_normed(ctx, table, step, (q, k, v), Some(norm), cache, layer).await
}

/// The norms' weights, [head_dim] each.
const Q_NORM: Slot = Slot::read("q_norm", "f32");
const K_NORM: Slot = Slot::read("k_norm", "f32");

async fn rope_kv_write_normed(
    ctx: &GpuContext,
    table: &RopeTable,
    step: &StepState,
    (q, k, v): (&GpuTensor, &GpuTensor, &GpuTensor),
    norm: Option<QkNorm<'_>>,
    cache: &KvCache,
    layer: usize,
) -> Result<Dispatch> {
    let name = if norm.is_some() {
        "qk_norm_rope_kv_write"
    } else {
        "rope_kv_write"
    };
    check_table(name, table, step)?;
    let heads = check_target(name, table, step, q)?;
    cache.check_layer(name, layer, step)?;
    kv_shape_check(name, cache, step, k)?;
    kv_shape_check(name, cache, step, v)?;
    if table.config().head_dim != cache.head_dim {
        return Err(mismatch(
            name,
            format!(
                "the RoPE table rotates heads of {}, the KV cache holds heads of {}",
                table.config().head_dim,
                cache.head_dim
            ),
        ));
    }
    let (kc, vc) = &cache.layers[layer];
    expect_distinct(name, q, &[k, v, kc, vc, table.table()])?;
    let row_words = cache.row_words();
    let half = table.config().rotary_dim / 2;
    let kv_f16 = u32::from(cache.dtype == DType::F16);
    let specialize = |base: Specialization| {
        base.with("KV_F16", kv_f16)
            .snippet(crate::kernels::rope::ROPE_PAIRS)
            .snippet(crate::kernels::rope::ROPE_ROTATE)
            .snippet(KV_STORE)
    };
    let head_dim = dim(name, "head_dim", cache.head_dim)?;
    let binds = [
        step.bind(),
        (TABLE, &table.table().buffer),
        (Q_ROTATE, &q.buffer),
        (K_IN, &k.buffer),
        (V_IN, &v.buffer),
        (K_CACHE, &kc.buffer),
        (V_CACHE, &vc.buffer),
    ];
    let params = RopeKvWriteParams {
        heads: dim(name, "heads", heads)?,
        kv_heads: dim(name, "kv heads", cache.n_kv_heads)?,
        head_dim,
        half: dim(name, "rotary_dim / 2", half)?,
        neox: u32::from(table.config().layout == RopeLayout::NeoX),
        row_words: dim(name, "row words", row_words)?,
        slots: dim(name, "slots", cache.slots(layer))?,
        eps: 0.0,
    };
    let per_token = match norm {
        // A workgroup per head of q and of k.
        Some(_) => heads + cache.n_kv_heads,
        // An invocation per pair of q and per word of the cache's k and v rows.
        None => heads * half + cache.n_kv_heads * row_words,
    };
    let items = step
        .max_tokens()
        .checked_mul(per_token)
        .ok_or_else(|| mismatch(name, "step rows overflow".into()))?;
    dim(name, "items per step", items)?;
    let Some(norm) = norm else {
        const KERNEL: Kernel = Kernel::new(
            "rope_kv_write",
            ROPE_KV_WRITE_SRC,
            "rope_kv_write",
            Interface::new::<RopeKvWriteParams>(&[
                STEP, TABLE, Q_ROTATE, K_IN, V_IN, K_CACHE, V_CACHE,
            ]),
        );
        let wg = grid(ctx, name, (items as u64).div_ceil(u64::from(WG)))?;
        let spec = specialize(Specialization::default().with("WG", WG));
        return build(ctx, &KERNEL, &spec, &params, &binds, wg).await;
    };
    for (what, g) in [("q_norm", norm.q_norm), ("k_norm", norm.k_norm)] {
        expect_dtype(name, g, &[DType::F32], "f32 norm weights")?;
        if g.shape() != [cache.head_dim] {
            return Err(mismatch(
                name,
                format!(
                    "{what} '{}' is {:?}, expected [{}] (a head)",
                    g.name(),
                    g.shape(),
                    cache.head_dim
                ),
            ));
        }
    }
    check_eps(name, "eps", norm.eps)?;
    // q is written while every workgroup reads the norms' weights.
    expect_distinct(name, q, &[norm.q_norm, norm.k_norm])?;
    const KERNEL: Kernel = Kernel::new(
        "qk_norm_rope_kv_write",
        QK_NORM_ROPE_KV_SRC,
        "qk_norm_rope_kv_write",
        Interface::new::<RopeKvWriteParams>(&[
            STEP, TABLE, Q_ROTATE, K_IN, V_IN, K_CACHE, V_CACHE, Q_NORM, K_NORM,
        ]),
    )
    .reducing();
    let params = RopeKvWriteParams {
        eps: norm.eps,
        ..params
    };
    // rmsnorm's workgroup size and reduction: the same partial sums in the same order.
    let spec = specialize(crate::kernels::reduce_spec(ctx, 1)).with("HEAD_DIM", head_dim);
    let mut all = binds.to_vec();
    all.extend([(Q_NORM, &norm.q_norm.buffer), (K_NORM, &norm.k_norm.buffer)]);
    let wg = grid(ctx, name, items as u64)?;
    build(ctx, &KERNEL, &spec, &params, &all, wg).await
}

/// The largest head_dim [`attention`] takes (Gemma's 256).
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;

/// Query rows (heads × tokens) one attention workgroup serves with each key it loads: the query
/// heads of a group served together (a decode step's rows), and the most rows of a step of
/// several tokens on CPU adapters.
const ROWS: usize = 8;
/// The most query rows of a prefill step's workgroup on GPUs: each staged tile of keys and values
/// serves up to this many (tokens × heads of a group), so a long prompt re-reads the cache once
/// per 32 rows instead of once per 8 (once per pair of tokens for 3 heads a group). CPU adapters
/// keep [`ROWS`]: there the output accumulators of more rows cost more than the cache reads.
const PREFILL_ROWS: usize = 32;
/// Workgroups the default chunking aims for when the context is full, to fill a GPU.
const TARGET_WORKGROUPS: usize = 256;
/// The shortest default chunk: below this the per-chunk overhead (q staging, partial results,
/// combine) outweighs the parallelism.
const MIN_CHUNK: usize = 64;
/// The default chunking never makes partial results larger than this.
const SCRATCH_BUDGET: u64 = 32 << 20;

/// How [`attention`] runs; everything has a default.
#[derive(Clone, Debug, Default)]
pub struct AttentionOptions {
    /// Multiplies q·k; default `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Context positions per chunk (split-K); default: enough chunks to give the GPU about 256
    /// workgroups at full context, within 32 MiB of partial results.
    pub chunk_len: Option<usize>,
    /// Partial-result buffers to use (e.g. those of another layer's [`Attention::scratch`]: the
    /// layers run one after the other); default: new ones.
    pub scratch: Option<AttentionScratch>,
    /// A sliding window: the query at position q sees keys `q - window + 1 ..= q` (Mistral,
    /// Gemma's local layers), or with `bidirectional` those with `|q - k| < window`
    /// (EmbeddingGemma's local layers); default: every earlier (or every) position.
    pub window: Option<usize>,
    /// Attention-logit soft-capping (Gemma 2): each scaled score s becomes `cap · tanh(s / cap)`.
    pub softcap: Option<f32>,
    /// Every token of the step sees every position of the step (and the cache before it), not
    /// only those up to its own: an encoder's attention.
    pub bidirectional: bool,
    /// Inputs packed one after another in the step (an embedder's batch): per step token, the
    /// cache positions `[first, end)` of its own input as a pair of 32-bit integers
    /// (`[tokens, 2]`); each token sees only those (causal: those up to its own).
    pub segments: Option<GpuTensor>,
}

/// Buffers for the per-chunk partial results, shareable by every layer with the same shapes.
#[derive(Clone, Debug)]
pub struct AttentionScratch {
    pub(crate) part_o: GpuTensor,
    pub(crate) part_ml: GpuTensor,
}

impl AttentionScratch {
    pub fn size_bytes(&self) -> u64 {
        self.part_o.size_bytes() + self.part_ml.size_bytes()
    }
}

/// What the combine pass of a split attention reads: the partial results and their layout, for
/// a matrix-vector product that combines them as it loads its input instead
/// ([`crate::kernels::Linear::combine`]).
#[derive(Clone, Debug)]
pub struct AttentionParts {
    pub(crate) scratch: AttentionScratch,
    pub(crate) n_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) n_chunks: usize,
    pub(crate) chunk_len: usize,
    /// 0: no window.
    pub(crate) window: u32,
    /// Neither bidirectional nor packed: the only attention a combining input takes.
    pub(crate) causal: bool,
}

/// A layer's attention, ready to record: one dispatch when the whole context is one chunk,
/// otherwise the chunked pass and the combine.
#[derive(Clone, Debug)]
pub struct Attention {
    dispatches: Vec<Dispatch>,
    chunk_len: usize,
    n_chunks: usize,
    tile: usize,
    /// With a split context: the partial results and their layout.
    parts: Option<AttentionParts>,
}

impl Attention {
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// With a split context, the chunked pass alone and what its combine would read: a consumer
    /// that combines as it loads ([`crate::kernels::combine_fits`]) records this dispatch only.
    pub fn without_combine(&self) -> Option<(&Dispatch, &AttentionParts)> {
        self.parts.as_ref().map(|p| (&self.dispatches[0], p))
    }

    /// Context positions per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    pub fn n_chunks(&self) -> usize {
        self.n_chunks
    }

    /// Keys a workgroup stages per step of its online softmax.
    pub fn keys_per_tile(&self) -> usize {
        self.tile
    }

    /// The partial-result buffers (none when there is a single chunk).
    pub fn scratch(&self) -> Option<&AttentionScratch> {
        self.parts.as_ref().map(|p| &p.scratch)
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attention: {} chunk(s) of {} positions, {} keys per tile, {} dispatch(es)",
            self.n_chunks,
            self.chunk_len,
            self.tile,
            self.dispatches.len()
        )
    }
}

/// How the work is cut, chosen from the shapes and the device's workgroup memory.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Query heads per workgroup (of one kv head's group), tokens per workgroup, rows = gb · tq.
    gb: usize,
    tq: usize,
    r: usize,
    /// Invocations per workgroup.
    wg: u32,
    /// Keys per tile and the split of each score's dot product.
    tk: usize,
    p: usize,
    head_blocks: usize,
    token_blocks: usize,
}

/// Invocations per attention workgroup for `r` query rows of `hd` elements: 256 on GPUs. CPU
/// adapters run a workgroup's invocations as SIMD groups of 4 to 16 lanes on one thread and, at
/// each of the kernel's barriers, switch between all of its groups (SwiftShader resumes each as a
/// coroutine, which costs far more than the work between two barriers of a decode step): there,
/// as few as keep each invocation's output accumulators (OUTS = r·hd / WG) at most 16.
fn attention_wg(cpu: bool, r: usize, hd: usize) -> u32 {
    if cpu {
        ((r * hd).div_ceil(16).next_power_of_two() as u32).clamp(16, WG)
    } else {
        WG
    }
}

/// Dot-product parts per score: enough that R·TK·P invocations keep the workgroup busy.
fn score_parts(r: usize, tk: usize, hd: usize, wg: u32) -> usize {
    let mut p = 1;
    while r * tk * p * 2 <= wg as usize && p * 2 <= hd {
        p *= 2;
    }
    p
}

/// Workgroup memory (f32 words) of a plan; see attention.wgsl.
fn workgroup_words(r: usize, tk: usize, p: usize, hd: usize) -> usize {
    let part = if p > 1 { r * tk * p } else { 1 };
    r * hd + tk * (hd + 1) + part + r * tk + 2 * r
}

/// Workgroup-memory words a plan may use on a device with `bytes` of workgroup storage:
/// implementations may round each of the six workgroup variables up to 16 bytes.
fn workgroup_budget(bytes: u32) -> usize {
    (bytes as usize / 4).saturating_sub(24)
}

/// Query rows of a workgroup of the CPU adapters' row kernel (attention_rows.wgsl), one per
/// invocation.
const LANE_ROWS: usize = 64;

/// The row kernel's cut: up to [`LANE_ROWS`] rows of one kv head's group a workgroup (its heads
/// of as many tokens as fit), in workgroups of at least 8 invocations (lavapipe's SIMD width);
/// one key at a time.
fn rows_plan(group: usize, max_tokens: usize) -> Plan {
    let head_blocks = group.div_ceil(LANE_ROWS);
    let gb = group.div_ceil(head_blocks);
    let tq = (LANE_ROWS / gb).clamp(1, max_tokens);
    let r = gb * tq;
    Plan {
        gb,
        tq,
        r,
        wg: r.next_power_of_two().max(8) as u32,
        tk: 1,
        p: 1,
        head_blocks,
        token_blocks: max_tokens.div_ceil(tq),
    }
}

fn plan(budget: usize, group: usize, hd: usize, max_tokens: usize, cpu: bool) -> Plan {
    let head_blocks = group.div_ceil(ROWS);
    let gb = group.div_ceil(head_blocks);
    let rows = if cpu { ROWS } else { PREFILL_ROWS };
    let mut tq = (rows / gb).clamp(1, max_tokens);
    loop {
        let r = gb * tq;
        let wg = attention_wg(cpu, r, hd);
        // Every WebGPU device has 16 KiB of workgroup memory: rows ≤ 8 and head_dim ≤ 256 fit
        // with a tile of 4 keys (3380 words), so the search always ends.
        let (tk, p) = [64, 32, 16, 8, 4, 2, 1]
            .iter()
            .map(|&tk| (tk, score_parts(r, tk, hd, wg)))
            .find(|&(tk, p)| workgroup_words(r, tk, p, hd) <= budget)
            .unwrap_or((1, 1));
        // More tokens per workgroup save K/V reads, but not at the price of tiny tiles.
        if tk >= 16 || tq == 1 {
            return Plan {
                gb,
                tq,
                r,
                wg,
                tk,
                p,
                head_blocks,
                token_blocks: max_tokens.div_ceil(tq),
            };
        }
        tq /= 2;
    }
}

crate::uniform! {
    struct AttentionParams {
        n_heads: u32,
        kv_heads: u32,
        /// Query heads per kv head.
        group: u32,
        /// ceil(group / GB).
        head_blocks: u32,
        /// ceil(largest step / TQ).
        token_blocks: u32,
        n_chunks: u32,
        chunk_len: u32,
        scale: f32,
        /// A key is visible to a query less than this many positions back (and, bidirectional,
        /// ahead); 0: no limit.
        window: u32,
        /// Scores become softcap · tanh(score / softcap); 0: no capping.
        softcap: f32,
        /// 1: every token sees the whole step (encoders); 0: causal.
        bidirectional: u32,
        /// 1: each token sees only its own input's positions, `segments[t]`.
        packed: u32,
        /// Positions the layer's cache holds: position p is row p % slots.
        slots: u32,
    }
}

crate::uniform! {
    struct CombineParams {
        n_heads: u32,
        n_chunks: u32,
        chunk_len: u32,
        head_dim: u32,
        bidirectional: u32,
        packed: u32,
        window: u32,
    }
}

const Q: Slot = Slot::read("q", "f32");
const K_ATTEND: Slot = Slot::read("k_cache", "u32");
const V_ATTEND: Slot = Slot::read("v_cache", "u32");
/// SINGLE: the output `[tokens, n_heads, HD]`; otherwise the partial outputs
/// `[tokens · n_heads, n_chunks, HD]`.
const OUT: Slot = Slot::read_write("out", "f32");
/// (m, l) per `[tokens · n_heads, n_chunks]`; not written when SINGLE (but bound).
const PART_ML: Slot = Slot::read_write("part_ml", "vec2<f32>");
/// Packed inputs: each token's `[first, end)` cache positions (bound but unread otherwise).
const SEGMENTS: Slot = Slot::read("segments", "vec2<u32>");
const ATTENTION: Kernel = Kernel::new(
    "attention",
    ATTENTION_SRC,
    "attention",
    Interface::new::<AttentionParams>(&[STEP, Q, K_ATTEND, V_ATTEND, OUT, PART_ML, SEGMENTS]),
);
/// The row kernel reads the cache as vec4s of words.
const K_ROWS: Slot = Slot::read("k_cache", "vec4<u32>");
const V_ROWS: Slot = Slot::read("v_cache", "vec4<u32>");
const ATTENTION_ROWS: Kernel = Kernel::new(
    "attention",
    ATTENTION_ROWS_SRC,
    "attention_rows",
    Interface::new::<AttentionParams>(&[STEP, Q, K_ROWS, V_ROWS, OUT, PART_ML, SEGMENTS]),
);
/// The combine pass reads the partial outputs and (m, l) pairs and writes the output.
pub(crate) const PART_O: Slot = Slot::read("part_o", "f32");
pub(crate) const PART_ML_IN: Slot = Slot::read("part_ml", "vec2<f32>");
const COMBINE: Kernel = Kernel::new(
    "attention_combine",
    COMBINE_SRC,
    "attention_combine",
    Interface::new::<CombineParams>(&[STEP, PART_O, PART_ML_IN, OUT, SEGMENTS]),
);

/// Causal grouped-query attention of `q` [tokens, n_heads, head_dim] (f32) against `layer` of the
/// cache, into `out` (same shape): query token `t` of the step, at position `step.offset + t`,
/// attends to cache positions `0..=step.offset + t` (the step's own rows must already be written:
/// record [`kv_write`] first). Query head `h` reads kv head `h / (n_heads / n_kv_heads)`.
/// Softmax with a running max, in f32. Rows past the step's tokens are left alone.
pub async fn attention(
    ctx: &GpuContext,
    step: &StepState,
    q: &GpuTensor,
    cache: &KvCache,
    layer: usize,
    out: &GpuTensor,
    options: &AttentionOptions,
) -> Result<Attention> {
    const NAME: &str = "attention";
    cache.check_layer(NAME, layer, step)?;
    expect_dtype(NAME, q, &[DType::F32], "f32 queries")?;
    expect_dtype(NAME, out, &[DType::F32], "an f32 output")?;
    expect_distinct(NAME, out, &[q])?;
    let (hd, nkv) = (cache.head_dim, cache.n_kv_heads);
    let [tokens, n_heads, q_hd] = *q.shape() else {
        return Err(mismatch(
            NAME,
            format!(
                "q '{}' must be 3-D [tokens, heads, head_dim], got {:?}",
                q.name(),
                q.shape()
            ),
        ));
    };
    if q_hd != hd {
        return Err(mismatch(
            NAME,
            format!(
                "q '{}' {:?} has heads of {q_hd}, the KV cache's have {hd}",
                q.name(),
                q.shape()
            ),
        ));
    }
    if n_heads == 0 || n_heads % nkv != 0 {
        return Err(mismatch(
            NAME,
            format!(
                "q '{}' has {n_heads} heads, which is not a multiple of the KV cache's {nkv} kv \
                 heads (grouped-query attention shares each kv head among n_heads / n_kv_heads \
                 query heads)",
                q.name()
            ),
        ));
    }
    if tokens < step.max_tokens() {
        return Err(mismatch(
            NAME,
            format!(
                "q '{}' {:?} holds {tokens} tokens, fewer than the {} a step may carry",
                q.name(),
                q.shape(),
                step.max_tokens()
            ),
        ));
    }
    if out.shape() != q.shape() {
        return Err(mismatch(
            NAME,
            format!(
                "output '{}' is {:?}, expected the shape of q '{}' {:?}",
                out.name(),
                out.shape(),
                q.name(),
                q.shape()
            ),
        ));
    }
    if hd > ATTENTION_MAX_HEAD_DIM {
        return Err(mismatch(
            NAME,
            format!("head_dim {hd} is more than the {ATTENTION_MAX_HEAD_DIM} attention supports"),
        ));
    }
    let scale = options.scale.unwrap_or((1.0 / (hd as f64).sqrt()) as f32);
    if !scale.is_finite() {
        return Err(mismatch(NAME, format!("scale must be finite, got {scale}")));
    }
    let window = match options.window {
        Some(0) => return Err(mismatch(NAME, "a sliding window must be at least 1".into())),
        // A window that covers the whole context is no window.
        Some(w) if w < step.max_positions() => dim(NAME, "window", w)?,
        _ => 0,
    };
    if let Some(seg) = &options.segments {
        if seg.shape() != [step.max_tokens(), 2] || seg.dtype() != DType::I32 {
            return Err(mismatch(
                NAME,
                format!(
                    "segments '{}' must be [{}, 2] 32-bit integers, got {:?} {:?}",
                    seg.name(),
                    step.max_tokens(),
                    seg.shape(),
                    seg.dtype()
                ),
            ));
        }
    }
    let softcap = options.softcap.unwrap_or(0.0);
    if !(softcap.is_finite() && softcap >= 0.0) {
        return Err(mismatch(
            NAME,
            format!("softcap must be finite and positive, got {softcap}"),
        ));
    }
    // A ring holds the positions a causal window sees from every token of a step: the first
    // token's window and the step's own rows. A graph for fewer positions than the ring holds
    // never wraps it (and its window, if as long as those positions, is no window).
    let slots = cache.slots(layer);
    if slots < step.max_positions()
        && (window == 0
            || options.bidirectional
            || options.segments.is_some()
            || slots < window as usize + step.max_tokens() - 1)
    {
        return Err(mismatch(
            NAME,
            format!(
                "layer {layer}'s cache is a ring of {slots} positions, which holds only a causal \
                 window of at most {slots} + 1 − {} positions (the step's tokens); this attention \
                 has {}",
                step.max_tokens(),
                if window == 0 {
                    "no window".to_string()
                } else if options.bidirectional || options.segments.is_some() {
                    "bidirectional or packed inputs".to_string()
                } else {
                    format!("a window of {window}")
                }
            ),
        ));
    }
    let group = n_heads / nkv;
    let max_tokens = step.max_tokens();
    let max_ctx = step.max_positions();
    let budget = workgroup_budget(ctx.capabilities().max_workgroup_storage_bytes);
    let cpu = ctx.capabilities().cpu;
    // CPU adapters take the row kernel where rows are whole vec4s of elements and of words.
    let rows_kernel = cpu && hd.is_multiple_of(4) && cache.row_words().is_multiple_of(4);
    let pl = if rows_kernel {
        rows_plan(group, max_tokens)
    } else {
        plan(budget, group, hd, max_tokens, cpu)
    };
    let wg = pl.wg;
    let rows = max_tokens * n_heads;
    let part_bytes = |chunks: usize| (rows * chunks * hd) as u64 * 4;

    let chunk_len = match options.chunk_len {
        Some(0) => return Err(mismatch(NAME, "chunk_len must be at least 1".into())),
        Some(c) => c.min(max_ctx),
        None => {
            let per_chunk = nkv * pl.head_blocks * pl.token_blocks;
            let want = TARGET_WORKGROUPS.div_ceil(per_chunk);
            let mut c = match ctx.capabilities().attention_chunk {
                // The context's tuning override, as given.
                Some(c) => (c as usize).clamp(1, max_ctx),
                None if want <= 1 => max_ctx,
                None => max_ctx
                    .div_ceil(want)
                    .max(MIN_CHUNK)
                    .next_multiple_of(pl.tk)
                    .min(max_ctx),
            };
            while c < max_ctx && part_bytes(max_ctx.div_ceil(c)) > SCRATCH_BUDGET {
                c = (c * 2).min(max_ctx);
            }
            c
        }
    };
    let n_chunks = max_ctx.div_ceil(chunk_len);
    let single = n_chunks == 1;

    let mut scratch = None;
    if !single {
        let need_o = rows * n_chunks * hd;
        let need_ml = rows * n_chunks * 2;
        let s = match &options.scratch {
            Some(s) => {
                if s.part_o.numel() < need_o || s.part_ml.numel() < need_ml {
                    return Err(mismatch(
                        NAME,
                        format!(
                            "the scratch given holds {} + {} values, this attention needs {need_o} \
                             + {need_ml}",
                            s.part_o.numel(),
                            s.part_ml.numel()
                        ),
                    ));
                }
                s.clone()
            }
            None => AttentionScratch {
                part_o: ctx.zeros(
                    "attention partial outputs",
                    &[rows, n_chunks, hd],
                    DType::F32,
                )?,
                part_ml: ctx.zeros(
                    "attention partial max/sum",
                    &[rows, n_chunks, 2],
                    DType::F32,
                )?,
            },
        };
        scratch = Some(s);
    }
    let f16 = cache.dtype == DType::F16;
    let hw = if f16 { hd.div_ceil(2) } else { hd };
    let outs = (pl.r * hd).div_ceil(wg as usize);
    let spec = Specialization::default()
        .with("WG", wg)
        .with("HD", hd as u32)
        .with("HW", hw as u32)
        .with("KS", hd as u32 + 1)
        .with("GB", pl.gb as u32)
        .with("TQ", pl.tq as u32)
        .with("R", pl.r as u32)
        .with("TK", pl.tk as u32)
        .with("P", pl.p as u32)
        .with(
            "PART",
            if pl.p > 1 {
                (pl.r * pl.tk * pl.p) as u32
            } else {
                1
            },
        )
        .with("OUTS", outs as u32)
        .with("KV_F16", u32::from(f16))
        .with("SINGLE", u32::from(single))
        .with("HD4", hd as u32 / 4)
        .with("RW4", hw as u32 / 4)
        .snippet(ATTENTION_COMMON);
    let (kernel, k_slot, v_slot) = if rows_kernel {
        (&ATTENTION_ROWS, K_ROWS, V_ROWS)
    } else {
        (&ATTENTION, K_ATTEND, V_ATTEND)
    };
    let params = AttentionParams {
        n_heads: dim(NAME, "heads", n_heads)?,
        kv_heads: dim(NAME, "kv heads", nkv)?,
        group: group as u32,
        head_blocks: pl.head_blocks as u32,
        token_blocks: dim(NAME, "token blocks", pl.token_blocks)?,
        n_chunks: dim(NAME, "chunks", n_chunks)?,
        chunk_len: dim(NAME, "chunk_len", chunk_len)?,
        scale,
        window,
        softcap,
        bidirectional: u32::from(options.bidirectional),
        packed: u32::from(options.segments.is_some()),
        slots: dim(NAME, "slots", slots)?,
    };
    dim(
        NAME,
        "output rows × chunks × head_dim",
        rows * n_chunks * hd,
    )?;
    let groups = (pl.token_blocks * pl.head_blocks * nkv) as u64 * n_chunks as u64;
    let wg = grid(ctx, NAME, groups)?;
    let (kc, vc) = &cache.layers[layer];
    // Without packed inputs the segments binding is declared but never read.
    let unpacked;
    let segments = match &options.segments {
        Some(seg) => &seg.buffer,
        None => {
            unpacked = ctx.zeros("attention unpacked", &[1, 2], DType::I32)?;
            &unpacked.buffer
        }
    };
    let inputs = [
        step.bind(),
        (Q, &q.buffer),
        (k_slot, &kc.buffer),
        (v_slot, &vc.buffer),
        (SEGMENTS, segments),
    ];
    let mut dispatches = Vec::with_capacity(2);
    match &scratch {
        None => {
            // The (m, l) binding is declared but never written with one chunk.
            let dummy = ctx.zeros("attention unused", &[1, 2], DType::F32)?;
            let mut binds = inputs.to_vec();
            binds.extend([(OUT, &out.buffer), (PART_ML, &dummy.buffer)]);
            dispatches.push(build(ctx, kernel, &spec, &params, &binds, wg).await?);
        }
        Some(s) => {
            let mut binds = inputs.to_vec();
            binds.extend([(OUT, &s.part_o.buffer), (PART_ML, &s.part_ml.buffer)]);
            dispatches.push(build(ctx, kernel, &spec, &params, &binds, wg).await?);
            let cspec = Specialization::default().with("WG", WG);
            let cparams = CombineParams {
                n_heads: n_heads as u32,
                n_chunks: n_chunks as u32,
                chunk_len: chunk_len as u32,
                head_dim: hd as u32,
                bidirectional: u32::from(options.bidirectional),
                packed: u32::from(options.segments.is_some()),
                window,
            };
            let elems = dim(NAME, "output elements", rows * hd)?;
            let cwg = grid(ctx, "attention_combine", u64::from(elems.div_ceil(WG)))?;
            let binds = [
                step.bind(),
                (PART_O, &s.part_o.buffer),
                (PART_ML_IN, &s.part_ml.buffer),
                (OUT, &out.buffer),
                (SEGMENTS, segments),
            ];
            dispatches.push(build(ctx, &COMBINE, &cspec, &cparams, &binds, cwg).await?);
        }
    }
    let parts = scratch.map(|scratch| AttentionParts {
        scratch,
        n_heads,
        head_dim: hd,
        n_chunks,
        chunk_len,
        window,
        causal: !options.bidirectional && options.segments.is_none(),
    });
    Ok(Attention {
        dispatches,
        chunk_len,
        n_chunks,
        tile: pl.tk,
        parts,
    })
}

/// Runs RoPE, the cache write and attention on the GPU against the CPU references of
/// [`crate::reference::attention`], for the native tests, the browser tests and diagnostics.
#[cfg(feature = "harness")]
pub mod check {
    use std::fmt;

    use crate::error::Result;
    use crate::gpu::{DType, GpuContext};
    use crate::kernels::rope::{rope, rope_qk, RopeConfig, RopeTable};
    use crate::reference::attention as reference;
    use crate::reference::attention::{AttentionShape, AttentionSplit, KvError};
    use crate::reference::Rng;

    use super::{
        attention, kv_write, qk_norm_rope_kv_write, rope_kv_write, AttentionOptions, KvCache,
        QkNorm, StepState,
    };

    pub use crate::selfcheck::Outcome;

    /// Compares element-wise; a tolerance of 0 demands equality.
    pub fn compare(what: String, gpu: &[f32], want: &[f64], tol: &[f64]) -> Outcome {
        if want.len() != tol.len() {
            return crate::selfcheck::compare(what, gpu, &[], |_| 0.0);
        }
        crate::selfcheck::compare(what, gpu, want, |i| tol[i])
    }

    /// RoPE on `tokens` tokens at `offset`; the tensors hold one more token row, which the step
    /// does not cover and must come back unchanged. `k_heads > 0` rotates a k tensor too, in the
    /// same dispatch (`rope_qk`).
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct RopeCase {
        pub tokens: usize,
        pub heads: usize,
        pub k_heads: usize,
        pub offset: usize,
        pub config: RopeConfig,
    }

    impl fmt::Display for RopeCase {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let c = &self.config;
            write!(
                f,
                "rope {:?} q[{}×{}×{}]{} rotary {} theta {} at {}{}",
                c.layout,
                self.tokens,
                self.heads,
                c.head_dim,
                if self.k_heads > 0 {
                    format!(" + k[{}×{}]", self.tokens, self.k_heads)
                } else {
                    String::new()
                },
                c.rotary_dim,
                c.theta,
                self.offset,
                if c.llama3.is_some() { " llama3" } else { "" }
            )
        }
    }

    pub async fn run_rope(ctx: &GpuContext, case: &RopeCase, seed: u64) -> Result<Vec<Outcome>> {
        let mut rng = Rng::new(seed);
        let c = case.config;
        let rows = case.tokens + 1;
        let max_positions = case.offset + rows;
        let table = RopeTable::new(ctx, c, max_positions)?;
        let mut step = StepState::new(ctx, rows, max_positions)?;
        let mut tensors = vec![("q", case.heads)];
        if case.k_heads > 0 {
            tensors.push(("k", case.k_heads));
        }
        let mut host = Vec::new();
        let mut gpu_t = Vec::new();
        for &(name, heads) in &tensors {
            let x = rng.vec(rows * heads * c.head_dim, -2.0, 2.0);
            gpu_t.push(ctx.upload_f32(name, &[rows, heads, c.head_dim], &x)?);
            host.push(x);
        }
        step.set(ctx, case.offset, case.tokens)?;
        let d = if case.k_heads > 0 {
            rope_qk(ctx, &table, &step, &gpu_t[0], &gpu_t[1]).await?
        } else {
            rope(ctx, &table, &step, &gpu_t[0]).await?
        };
        let mut rec = ctx.recorder();
        rec.dispatch(&d);
        let slots: Vec<_> = gpu_t.iter().map(|t| rec.read(t)).collect();
        let back = rec.submit_and_read().await?;
        let mut outcomes = Vec::new();
        for (i, &(name, heads)) in tensors.iter().enumerate() {
            let gpu = back.f32(slots[i])?;
            let (mut want, mut tol) =
                reference::rope(&host[i], case.tokens, heads, &c, case.offset)?;
            // The row past the step stays as it was.
            let tail = &host[i][case.tokens * heads * c.head_dim..];
            want.extend(tail.iter().map(|&v| f64::from(v)));
            tol.extend(std::iter::repeat_n(0.0, tail.len()));
            outcomes.push(compare(format!("{case}: {name}"), &gpu, &want, &tol));
        }
        Ok(outcomes)
    }

    /// RoPE fused with the cache write ([`rope_kv_write`]): a step of `tokens` tokens at `offset`
    /// rotates q and writes rotated k and plain v rows to layer 1 of a two-layer cache of `dtype`;
    /// the tensors hold one more token row, which the step does not cover: its q stays as it was
    /// and its cache row stays zero. With `norm`, q and k are RMSNormed per head first (random
    /// weights, eps 1e-6), in the same dispatch ([`qk_norm_rope_kv_write`]).
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct RopeKvCase {
        pub tokens: usize,
        pub heads: usize,
        pub k_heads: usize,
        pub offset: usize,
        pub config: RopeConfig,
        pub cache: DType,
        pub norm: bool,
    }

    impl fmt::Display for RopeKvCase {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let c = &self.config;
            write!(
                f,
                "{}rope_kv_write {:?} q[{}×{}×{}] + k/v[{}×{}] rotary {} at {}, {} cache",
                if self.norm { "qk_norm_" } else { "" },
                c.layout,
                self.tokens,
                self.heads,
                c.head_dim,
                self.tokens,
                self.k_heads,
                c.rotary_dim,
                self.offset,
                self.cache
            )
        }
    }

    /// Runs the case; outcomes: q against [`reference::rope`] (of [`crate::reference::rmsnorm`]'s
    /// rows with `norm`), the cache's k against the rotated rows as stored
    /// ([`reference::kv_store`]), the cache's v against [`reference::kv_write`].
    pub async fn run_rope_kv_write(
        ctx: &GpuContext,
        case: &RopeKvCase,
        seed: u64,
    ) -> Result<Vec<Outcome>> {
        let mut rng = Rng::new(seed);
        let c = case.config;
        let hd = c.head_dim;
        let rows = case.tokens + 1;
        let max_positions = case.offset + rows;
        let table = RopeTable::new(ctx, c, max_positions)?;
        let cache = KvCache::with_dtype(ctx, 2, max_positions, case.k_heads, hd, case.cache)?;
        let layer = 1;
        let mut step = StepState::new(ctx, rows, max_positions)?;
        let q = rng.vec(rows * case.heads * hd, -2.0, 2.0);
        let k = rng.vec(rows * case.k_heads * hd, -2.0, 2.0);
        let v = rng.vec(rows * case.k_heads * hd, -2.0, 2.0);
        let qt = ctx.upload_f32("q", &[rows, case.heads, hd], &q)?;
        let kt = ctx.upload_f32("k", &[rows, case.k_heads, hd], &k)?;
        let vt = ctx.upload_f32("v", &[rows, case.k_heads, hd], &v)?;
        const EPS: f32 = 1e-6;
        let norms = if case.norm {
            let (gq, gk) = (rng.vec(hd, -1.5, 1.5), rng.vec(hd, -1.5, 1.5));
            let up = (
                ctx.upload_f32("q_norm", &[hd], &gq)?,
                ctx.upload_f32("k_norm", &[hd], &gk)?,
            );
            Some(((gq, gk), up))
        } else {
            None
        };
        step.set(ctx, case.offset, case.tokens)?;
        let d = match &norms {
            Some((_, (gq, gk))) => {
                let norm = QkNorm {
                    q_norm: gq,
                    k_norm: gk,
                    eps: EPS,
                };
                qk_norm_rope_kv_write(ctx, &table, &step, &qt, &kt, &vt, norm, &cache, layer)
                    .await?
            }
            None => rope_kv_write(ctx, &table, &step, &qt, &kt, &vt, &cache, layer).await?,
        };
        let (kc, vc) = cache.layer(layer).expect("layer 1 exists");
        let mut rec = ctx.recorder();
        rec.dispatch(&d);
        let (sq, sk, sv) = (rec.read(&qt), rec.read(kc), rec.read(vc));
        let back = rec.submit_and_read().await?;
        let (gpu_q, gpu_k, gpu_v) = (back.f32(sq)?, back.f32(sk)?, back.f32(sv)?);

        // RoPE of the step's rows of x [rows, heads, hd], normed first with `g` if given.
        let rotated = |x: &[f32], heads: usize, g: Option<&Vec<f32>>| {
            let x = &x[..case.tokens * heads * hd];
            match g {
                Some(g) => {
                    let normed = crate::reference::rmsnorm(x, hd, g, EPS);
                    let tol = normed
                        .iter()
                        .map(|&e| crate::reference::rmsnorm_tolerance(hd, e))
                        .collect();
                    reference::rope_inexact(normed, tol, case.tokens, heads, &c, case.offset)
                }
                None => reference::rope(x, case.tokens, heads, &c, case.offset),
            }
        };
        let (gq, gk) = match &norms {
            Some(((gq, gk), _)) => (Some(gq), Some(gk)),
            None => (None, None),
        };
        let mut outcomes = Vec::new();
        let (mut want, mut tol) = rotated(&q, case.heads, gq)?;
        let tail = &q[case.tokens * case.heads * hd..];
        want.extend(tail.iter().map(|&x| f64::from(x)));
        tol.extend(std::iter::repeat_n(0.0, tail.len()));
        outcomes.push(compare(format!("{case}: q"), &gpu_q, &want, &tol));

        let f16 = case.cache == DType::F16;
        let row = case.k_heads * hd;
        let start = case.offset * row;
        let (rk, rt) = rotated(&k, case.k_heads, gk)?;
        let mut want = vec![0.0; max_positions * row];
        let mut tol = vec![0.0; max_positions * row];
        for (i, (&e, &t)) in rk.iter().zip(&rt).enumerate() {
            (want[start + i], tol[start + i]) = reference::kv_store(e, t, f16);
        }
        outcomes.push(compare(
            format!("{case}: {} cache k", case.cache),
            &gpu_k,
            &want,
            &tol,
        ));
        let mut want = vec![0.0; max_positions * row];
        let mut tol = vec![0.0; max_positions * row];
        reference::kv_write(
            &mut want,
            &mut tol,
            row,
            case.offset,
            &v[..case.tokens * row],
            f16,
        );
        outcomes.push(compare(
            format!("{case}: {} cache v", case.cache),
            &gpu_v,
            &want,
            &tol,
        ));
        Ok(outcomes)
    }

    /// One step of attention: `offset` positions of history written to the cache first (as one
    /// earlier step), then a step of `tokens` tokens whose k/v rows are appended and whose queries
    /// attend. `spare` extra token rows in the tensors lie past the step and must stay untouched.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct AttentionCase {
        pub tokens: usize,
        pub spare: usize,
        pub n_heads: usize,
        pub n_kv_heads: usize,
        pub head_dim: usize,
        pub offset: usize,
        pub max_ctx: usize,
        /// Cache element type; `None`: the profile's default.
        pub cache: Option<DType>,
        pub scale: Option<f32>,
        pub chunk_len: Option<usize>,
        /// Sliding window (positions a query sees, itself included).
        pub window: Option<usize>,
        /// Attention-logit soft-capping.
        pub softcap: Option<f32>,
        /// Every token sees the whole step.
        pub bidirectional: bool,
        /// From position 0: the step is this many inputs packed one after another
        /// (`reference::packed_starts`); 0: not packed.
        pub packed: usize,
    }

    impl AttentionCase {
        /// A decode step (one token) at the end of a full context of `max_ctx`.
        pub fn decode(n_heads: usize, n_kv_heads: usize, head_dim: usize, max_ctx: usize) -> Self {
            AttentionCase {
                tokens: 1,
                spare: 0,
                n_heads,
                n_kv_heads,
                head_dim,
                offset: max_ctx - 1,
                max_ctx,
                cache: None,
                scale: None,
                chunk_len: None,
                window: None,
                softcap: None,
                bidirectional: false,
                packed: 0,
            }
        }
    }

    impl fmt::Display for AttentionCase {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "attention {} tokens (+{}) at {} of {}, {}/{} heads of {}, cache {}",
                self.tokens,
                self.spare,
                self.offset,
                self.max_ctx,
                self.n_heads,
                self.n_kv_heads,
                self.head_dim,
                self.cache.map_or("default".to_string(), |d| d.to_string())
            )?;
            if let Some(s) = self.scale {
                write!(f, ", scale {s}")?;
            }
            if let Some(c) = self.chunk_len {
                write!(f, ", chunks of {c}")?;
            }
            if let Some(w) = self.window {
                write!(f, ", window {w}")?;
            }
            if let Some(c) = self.softcap {
                write!(f, ", softcap {c}")?;
            }
            if self.bidirectional {
                write!(f, ", bidirectional")?;
            }
            if self.packed > 0 {
                write!(f, ", {} inputs packed", self.packed)?;
            }
            Ok(())
        }
    }

    /// Queries with a scale per row, so that some softmaxes are flat and some peaked.
    fn queries(rng: &mut Rng, rows: usize, hd: usize) -> Vec<f32> {
        let mut q = Vec::with_capacity(rows * hd);
        for _ in 0..rows {
            let s = rng.uniform(0.25, 10.0);
            q.extend(rng.vec(hd, -s, s));
        }
        q
    }

    /// Runs the case; outcomes: the cache's k and v against the rows written, the attention
    /// output against the reference on the cache as stored, and (f16 caches) against the
    /// reference on the f32 rows, whose bound includes the f16 rounding.
    pub async fn run_attention(
        ctx: &GpuContext,
        case: &AttentionCase,
        seed: u64,
    ) -> Result<Vec<Outcome>> {
        let mut rng = Rng::new(seed);
        let AttentionCase {
            tokens,
            spare,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            offset,
            max_ctx,
            ..
        } = *case;
        let dtype = case.cache.unwrap_or_else(|| KvCache::default_dtype(ctx));
        // Two layers, the second in use: layer indexing is part of the test.
        let cache = KvCache::with_dtype(ctx, 2, max_ctx, nkv, hd, dtype)?;
        let layer = 1;
        let rows = tokens + spare;
        let row = nkv * hd;

        let hist_k = rng.vec(offset * row, -1.0, 1.0);
        let hist_v = rng.vec(offset * row, -1.0, 1.0);
        if offset > 0 {
            let mut hist = StepState::new(ctx, offset, max_ctx)?;
            let hk = ctx.upload_f32("history k", &[offset, nkv, hd], &hist_k)?;
            let hv = ctx.upload_f32("history v", &[offset, nkv, hd], &hist_v)?;
            hist.set(ctx, 0, offset)?;
            let d = kv_write(ctx, &hist, &cache, layer, &hk, &hv).await?;
            let mut rec = ctx.recorder();
            rec.dispatch(&d);
            rec.submit()?;
        }

        let new_k = rng.vec(rows * row, -1.0, 1.0);
        let new_v = rng.vec(rows * row, -1.0, 1.0);
        let q = queries(&mut rng, rows * nh, hd);
        let kt = ctx.upload_f32("k", &[rows, nkv, hd], &new_k)?;
        let vt = ctx.upload_f32("v", &[rows, nkv, hd], &new_v)?;
        let qt = ctx.upload_f32("q", &[rows, nh, hd], &q)?;
        const SENTINEL: f32 = 7.25;
        let ot = ctx.upload_f32("out", &[rows, nh, hd], &vec![SENTINEL; rows * nh * hd])?;
        let mut step = StepState::new(ctx, rows, max_ctx)?;
        step.set(ctx, offset, tokens)?;
        let write = kv_write(ctx, &step, &cache, layer, &kt, &vt).await?;
        let segments = match case.packed {
            0 => None,
            inputs => {
                let starts = reference::packed_starts(tokens, inputs);
                let mut pairs = vec![0i32; 2 * rows];
                for w in starts.windows(2) {
                    for t in w[0]..w[1] {
                        pairs[2 * t] = w[0] as i32;
                        pairs[2 * t + 1] = w[1] as i32;
                    }
                }
                Some(ctx.upload_i32("segments", &[rows, 2], &pairs)?)
            }
        };
        let opts = AttentionOptions {
            scale: case.scale,
            chunk_len: case.chunk_len,
            scratch: None,
            window: case.window,
            softcap: case.softcap,
            bidirectional: case.bidirectional,
            segments,
        };
        let att = attention(ctx, &step, &qt, &cache, layer, &ot, &opts).await?;
        let (kc, vc) = cache.layer(layer).expect("layer 1 exists");
        let mut rec = ctx.recorder();
        rec.dispatch(&write);
        rec.dispatch_all(att.dispatches());
        let (so, sk, sv) = (rec.read(&ot), rec.read(kc), rec.read(vc));
        let back = rec.submit_and_read().await?;
        let (gpu_o, gpu_k, gpu_v) = (back.f32(so)?, back.f32(sk)?, back.f32(sv)?);

        let f16 = dtype == DType::F16;
        let mut outcomes = Vec::new();
        for (name, hist, new, gpu) in [
            ("k", &hist_k, &new_k, &gpu_k),
            ("v", &hist_v, &new_v, &gpu_v),
        ] {
            let mut want = vec![0.0; max_ctx * row];
            let mut tol = vec![0.0; max_ctx * row];
            reference::kv_write(&mut want, &mut tol, row, 0, hist, f16);
            reference::kv_write(&mut want, &mut tol, row, offset, &new[..tokens * row], f16);
            outcomes.push(compare(
                format!("{case}: {dtype} cache {name}"),
                gpu,
                &want,
                &tol,
            ));
        }

        let shape = AttentionShape {
            tokens,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            offset,
            window: case.window.filter(|&w| w < max_ctx).unwrap_or(0),
            softcap: case.softcap.unwrap_or(0.0),
            bidirectional: case.bidirectional,
            packed: case.packed,
        };
        let split = AttentionSplit {
            chunk_len: att.chunk_len(),
            tile: att.keys_per_tile(),
        };
        let scale = case.scale.unwrap_or((1.0 / (hd as f64).sqrt()) as f32);
        let pad = |mut v: Vec<f64>, mut t: Vec<f64>| {
            // Rows past the step keep the sentinel.
            v.resize(rows * nh * hd, f64::from(SENTINEL));
            t.resize(rows * nh * hd, 0.0);
            (v, t)
        };
        let (want, tol) =
            reference::attention(&q, &gpu_k, &gpu_v, &shape, scale, split, KvError::EXACT);
        let (want, tol) = pad(want, tol);
        outcomes.push(compare(
            format!("{case}: {att}, on the cache as stored"),
            &gpu_o,
            &want,
            &tol,
        ));
        if f16 {
            let mut k = hist_k.clone();
            k.extend_from_slice(&new_k[..tokens * row]);
            let mut v = hist_v.clone();
            v.extend_from_slice(&new_v[..tokens * row]);
            let (want, tol) = reference::attention(&q, &k, &v, &shape, scale, split, KvError::F16);
            let (want, tol) = pad(want, tol);
            outcomes.push(compare(
                format!("{case}: {att}, on the f32 k/v (bound includes f16 rounding)"),
                &gpu_o,
                &want,
                &tol,
            ));
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within WebGPU's minimum of 16 KiB of workgroup memory, every supported shape gets a plan
    /// that fits, with at most 8 rows, and at most 8 outputs per invocation on GPUs (16 on CPU
    /// adapters, whose workgroups are smaller).
    #[test]
    fn plans_fit_the_smallest_workgroup_memory() {
        let budget = workgroup_budget(16384);
        for cpu in [false, true] {
            let (max_outs, max_rows) = if cpu { (16, ROWS) } else { (16, PREFILL_ROWS) };
            for hd in 1..=ATTENTION_MAX_HEAD_DIM {
                for group in [1, 2, 3, 5, 7, 8, 9, 12, 16, 71] {
                    for tokens in [1, 2, 3, 17, 64, 512] {
                        let p = plan(budget, group, hd, tokens, cpu);
                        let wg = p.wg as usize;
                        assert!(p.r <= max_rows && p.r == p.gb * p.tq, "{p:?}");
                        assert!(p.gb * p.head_blocks >= group && p.tq * p.token_blocks >= tokens);
                        assert!(p.tk >= 4, "hd {hd} group {group}: {p:?}");
                        assert!(workgroup_words(p.r, p.tk, p.p, hd) <= budget, "{p:?}");
                        assert!((p.r * hd).div_ceil(wg) <= max_outs, "{p:?}");
                        assert!(p.r * p.tk * p.p <= wg.max(p.r * p.tk));
                        assert!((16..=WG as usize).contains(&wg) && (cpu || wg == WG as usize));
                    }
                }
            }
        }
        // A decode step on a CPU adapter: SmolLM2's 3 query heads per kv head of 64.
        assert_eq!(plan(budget, 3, 64, 1, true).wg, 16);
        // Decode of a Llama-style model: one token, all heads of a group in one workgroup.
        let p = plan(budget, 4, 64, 1, false);
        assert_eq!((p.gb, p.tq, p.tk, p.head_blocks), (4, 1, 32, 1));
        // A SmolLM2 prefill step on a GPU: 10 tokens × 3 heads share each tile of 16 keys (on a
        // CPU adapter 2 × 3).
        let p = plan(budget, 3, 64, 64, false);
        assert_eq!((p.gb, p.tq, p.tk, p.token_blocks), (3, 10, 16, 7));
        assert_eq!(plan(budget, 3, 64, 64, true).r, 6);
        // Llama 3.2 1B (4 heads a group of 64) on 32 KiB: 8 tokens × 4 heads, tiles of 32 keys.
        let p = plan(workgroup_budget(32768), 4, 64, 512, false);
        assert_eq!((p.r, p.tk), (32, 32));
    }
}
