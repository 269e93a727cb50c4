//! The generic decoder: one forward pass for every architecture, built from the block
//! description ([`ModelConfig`]) and the architecture's tensor roles
//! ([`super::arch::ArchSpec`]). Every buffer and bind group is made once, for a number of tokens
//! per step; a step writes the token ids and the per-step uniform, records the graph into one
//! command buffer and submits it once.
//!
//! A layer, as recorded (decode dispatches in brackets):
//! - q, k, v: one projection with the attention RMSNorm as its prologue and the biases in its
//!   epilogue [1] (three when q, k and v are stored in different formats: a Q4_K_M file keeps some
//!   `attn_v` in Q6_K);
//! - q/k norm: RMSNorm over each head of q and of k (Qwen3, Gemma 3), in the dispatch of RoPE
//!   and the KV-cache write where the layer rotates [0]
//!   ([`kernels::qk_norm_rope_kv_write`]), else two of its own [2] (OLMo 2's norm spans all
//!   heads);
//! - RoPE (the layer's own, or none) fused into the KV-cache write [1]; in a decode step (up to
//!   [`kernels::MATVEC_MAX_ROWS`] tokens) with nothing between the projection and RoPE (no q/k
//!   norm, a single q, k, v matrix, the whole head rotating) the projection's epilogue rotates q
//!   and k and writes the cache itself [0] ([`kernels::linear_qkv_rope`]);
//! - attention, with the layer's sliding window and soft-cap [1]; a long context is split into
//!   chunks whose partial results a combine pass merges [+1], except on the kernels made for
//!   GPUs, where the output projection combines them as it loads its input
//!   ([`kernels::Linear::combine`]);
//! - the output projection, added to the residual stream in its epilogue [1]; with sandwich norms
//!   (Gemma, OLMo 2) it writes a scratch row whose RMSNorm the next projection that reads the
//!   stream adds as it loads its input, storing the sum to the stream's other buffer
//!   ([`kernels::Linear::residual`]: a decode step on the kernels for GPUs) [1], else an RMSNorm
//!   dispatch adds it to the stream [2];
//! - gate and up in one projection with the MLP RMSNorm as prologue and the gated activation
//!   (SiLU or GELU-tanh) as epilogue [1] (gate, up and the activation apart when their formats
//!   differ [3]);
//! - the down projection, added to the stream [1], or through a post-norm likewise [1] or [2]
//!   (into the next layer's q, k, v projection where its bindings fit the device's storage-buffer
//!   limit; the last layer's by a dispatch).
//!
//! Decode dispatches per layer on the kernels for GPUs (on those for CPU adapters, whose kernels
//! add every post-norm by a dispatch): Llama/Qwen2 5; Qwen3 6; Gemma 2 6 (7; its MLP's post-norm
//! is a dispatch, added before the next projection, which rotates in its epilogue); Gemma 3 6 (8;
//! 7 on the baseline profile, whose 8 storage buffers leave out the fold into a q, k, v
//! projection with three outputs); OLMo 2 8 (10); Phi-3, which rotates half of each head, 6. The
//! last layer adds one for its MLP's post-norm; a CPU adapter one more when attention splits the
//! context. Beyond Llama's 5: the RoPE and cache-write dispatch where a q/k norm sits between
//! the projection and RoPE (it reduces over a head, which the projection's workgroups do not
//! hold), and the post-norm adds no following projection takes. (On the baseline profile's
//! 8 storage buffers a q, k, v projection with a bias in a vec4 format on a CPU adapter keeps its
//! RoPE dispatch: see [`kernels::qkv_rope_fits`].)

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, PendingReadback, ReadSlot, Recorder};
use crate::kernels::{
    self, AttentionOptions, AttentionScratch, Draw, DrawState, KvCache, Linear, LogitStats,
    Nucleus, RopeKv, RopeTable, StepState, TopK,
};
use crate::model::config::{LayerRope, LayerSpec, RopeScaling};
use crate::model::weights::DecoderWeights;
use crate::model::ModelConfig;
use crate::sample::{SamplingPlan, MAX_LOGIT_BIAS};

/// A projection: one stacked matrix (one dispatch), or its parts when they cannot be stacked.
pub(crate) enum Proj {
    Fused {
        w: GpuTensor,
        bias: Option<GpuTensor>,
    },
    Parts {
        ws: Vec<GpuTensor>,
        biases: Vec<Option<GpuTensor>>,
    },
}

impl Proj {
    pub(crate) fn tensors(&self) -> Vec<&GpuTensor> {
        match self {
            Proj::Fused { w, bias } => std::iter::once(w).chain(bias).collect(),
            Proj::Parts { ws, biases } => ws.iter().chain(biases.iter().flatten()).collect(),
        }
    }

    /// Whether every dispatch of the projection into `outputs` tensors (with an RMSNorm
    /// prologue when `norm`) can add a post-norm to its input ([`kernels::residual_fits`]).
    fn residual_fits(&self, ctx: &GpuContext, rows: usize, outputs: usize, norm: bool) -> bool {
        match self {
            Proj::Fused { bias, .. } => {
                kernels::residual_fits(ctx, rows, outputs, bias.is_some(), norm)
            }
            Proj::Parts { biases, .. } => biases
                .iter()
                .all(|b| kernels::residual_fits(ctx, rows, 1, b.is_some(), norm)),
        }
    }

    /// The dispatches that write `x`'s projection into `outs` by column range (one output per
    /// part), with `opts` and the projection's own biases.
    pub(crate) async fn record(
        &self,
        ctx: &GpuContext,
        x: &GpuTensor,
        outs: &[&GpuTensor],
        opts: &Linear<'_>,
    ) -> Result<Vec<Dispatch>> {
        match self {
            Proj::Fused { w, bias } => {
                let opts = Linear {
                    bias: bias.as_ref(),
                    ..*opts
                };
                Ok(vec![kernels::linear_split(ctx, w, x, outs, &opts).await?])
            }
            Proj::Parts { ws, biases } => {
                let mut d = Vec::with_capacity(ws.len());
                for ((w, b), out) in ws.iter().zip(biases).zip(outs) {
                    let opts = Linear {
                        bias: b.as_ref(),
                        ..*opts
                    };
                    d.push(kernels::linear_with(ctx, w, x, out, &opts).await?);
                }
                Ok(d)
            }
        }
    }
}

/// The residual stream while a step's graph is recorded. A post-norm's output (`h`) waits in
/// `pending` for the next projection that reads the stream, which adds it as it loads its input
/// ([`Linear::residual`]) and stores the sum to the stream's other buffer where the kernel allows
/// it (a decode step on the kernels for GPUs, within the storage-buffer limit), so the add needs
/// no dispatch; elsewhere an [`kernels::rmsnorm_add`] dispatch adds it in place first.
struct Stream<'a> {
    /// The buffer holding the stream.
    cur: &'a GpuTensor,
    /// The other buffer, when post-norms can be folded.
    alt: Option<&'a GpuTensor>,
    /// The post-norm output and weight not yet added.
    pending: Option<(&'a GpuTensor, &'a GpuTensor)>,
    eps: f32,
}

impl<'a> Stream<'a> {
    /// For a projection that reads the stream: the pending post-norm as its input's residual
    /// when `fits` (and the stream then moves to the other buffer once the caller has recorded
    /// the projection: [`Stream::advance`]); else the add as a dispatch of its own, in `d`.
    async fn take(
        &mut self,
        ctx: &GpuContext,
        d: &mut Vec<Dispatch>,
        fits: bool,
    ) -> Result<Option<kernels::Residual<'a>>> {
        match (self.pending.take(), self.alt) {
            (Some((h, g)), Some(alt)) if fits => Ok(Some(kernels::Residual {
                h,
                g,
                eps: self.eps,
                out: alt,
            })),
            (Some((h, g)), _) => {
                d.push(kernels::rmsnorm_add(ctx, h, g, self.eps, self.cur).await?);
                Ok(None)
            }
            (None, _) => Ok(None),
        }
    }

    /// After the projections that read `residual` are recorded: the stream is where they stored it.
    fn advance(&mut self, residual: Option<kernels::Residual<'a>>) {
        if let (Some(r), Some(alt)) = (residual, self.alt) {
            self.alt = Some(self.cur);
            self.cur = alt;
            debug_assert!(std::ptr::eq(r.out, alt));
        }
    }

    /// The stream with every post-norm added (what the LM head and the final norm read).
    async fn settle(&mut self, ctx: &GpuContext, d: &mut Vec<Dispatch>) -> Result<&'a GpuTensor> {
        self.take(ctx, d, false).await?;
        Ok(self.cur)
    }
}

/// The weights of one layer on the GPU.
struct Layer {
    spec: LayerSpec,
    attn_norm: Option<GpuTensor>,
    qkv: Proj,
    q_norm: Option<GpuTensor>,
    k_norm: Option<GpuTensor>,
    o: GpuTensor,
    post_attn_norm: Option<GpuTensor>,
    ffn_norm: Option<GpuTensor>,
    /// Gate rows then up rows (fused), or [gate, up].
    gate_up: Proj,
    down: GpuTensor,
    post_ffn_norm: Option<GpuTensor>,
    /// A decode step's q, k, v projection rotates and writes the KV cache in its epilogue
    /// ([`kernels::linear_qkv_rope`]): the layer rotates (no q/k norm between), q, k and v are
    /// one matrix, and the kernel fits this device.
    fused_rope: bool,
    /// The per-head q and k norms run in the RoPE and KV-cache write's dispatch
    /// ([`kernels::qk_norm_rope_kv_write`]): the layer rotates, and each norm's weight is one
    /// head (OLMo 2's span all heads).
    normed_rope: bool,
    /// Of the layer's post-norms, how many a decode step adds to the stream without a dispatch
    /// of their own (in the next projection's input, [`Stream`]): the attention block's in the
    /// MLP's gate/up, the MLP's in the next layer's q, k, v projection.
    post_folds: usize,
}

impl Layer {
    fn tensors(&self) -> impl Iterator<Item = &GpuTensor> {
        let mut all = vec![&self.o, &self.down];
        all.extend(self.qkv.tensors());
        all.extend(self.gate_up.tensors());
        all.extend(
            [
                &self.attn_norm,
                &self.ffn_norm,
                &self.q_norm,
                &self.k_norm,
                &self.post_attn_norm,
                &self.post_ffn_norm,
            ]
            .into_iter()
            .flatten(),
        );
        all.into_iter()
    }
}

/// What a step reads back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Readout<'a> {
    /// Nothing: an intermediate prefill chunk (the submit does not wait).
    Nothing,
    /// What `plan` needs to pick the last token's successor, after the GPU applies `penalties`
    /// ((token, count) per distinct token of the window) with `draw`'s parameters to its logits;
    /// `draw`'s row is set here.
    Sample {
        plan: SamplingPlan,
        draw: Draw,
        penalties: &'a [(u32, u32)],
        /// The logit bias, (token, bias) per distinct token (`draw.n_bias` of them).
        biases: &'a [(u32, f32)],
        /// Also read the best candidates and the softmax statistics with a greedy or Gumbel
        /// pick (for log probabilities): [`StepOutput::TokenAndCandidates`].
        with_candidates: bool,
        /// With a truncating plan (candidates, or a top-k above them): draw on the GPU from
        /// what these `(top_k, top_p, min_p)` keep ([`kernels::Nucleus`], keyed by `draw`'s
        /// Gumbel key) and read back the token ([`StepOutput::Token`], or with
        /// `with_candidates` [`StepOutput::TokenAndCandidates`]) instead of the candidates or
        /// the row.
        nucleus: Option<(usize, f32, f32)>,
    },
    /// The last token's whole row of logits, as computed.
    Logits,
}

/// What a step read back (see [`Readout`]).
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutput {
    Nothing,
    /// The token the GPU picked (greedy or Gumbel).
    Token(u32),
    /// The token the GPU picked, with the candidates and statistics of
    /// [`StepOutput::Candidates`].
    TokenAndCandidates {
        token: u32,
        candidates: Vec<(u32, f32)>,
        stats: (f32, f32),
    },
    /// The GPU's best (token, logit) candidates, best first, and the row's softmax statistics
    /// (max, Σ exp(x − max)).
    Candidates {
        candidates: Vec<(u32, f32)>,
        stats: (f32, f32),
    },
    /// [vocab], indexed by token id (penalized when the readout asked for penalties).
    Logits(Vec<f32>),
}

/// Where a step's token ids come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepInput<'a> {
    /// Tokens the host writes into the graph's id buffer before the submit.
    Host(&'a [u32]),
    /// One token the GPU already put in the graph's id buffer: the pick of the step submitted
    /// just before, copied there by [`Decoder::submit_pick`] with this graph's [`Graph::ids`] as
    /// its `feed`. The host never sees it before this step runs.
    Gpu,
}

/// A step submitted by [`Decoder::submit_pick`] whose picked token is not read back yet.
pub struct PendingPick<'c> {
    readback: PendingReadback<'c>,
    slot: ReadSlot,
    /// The word of the pick's output holding the token (its row's index).
    word: usize,
}

impl PendingPick<'_> {
    /// Waits for the step and returns the token the GPU picked.
    pub async fn token(self) -> Result<u32> {
        let readback = self.readback.wait().await?;
        readback
            .words(self.slot)
            .get(self.word)
            .copied()
            .ok_or_else(|| Error::Readback("the pick's readback is shorter than its output".into()))
    }
}

/// A decoder-only transformer on the GPU: weights, KV cache, RoPE tables.
pub struct Decoder {
    pub config: ModelConfig,
    /// The embedding table and the LM head as (first row, rows): one part unless the matrix is
    /// larger than a storage binding. A tied head shares the embedding's tensors.
    embed: Vec<(usize, GpuTensor)>,
    out_norm: GpuTensor,
    output: Vec<(usize, GpuTensor)>,
    layers: Vec<Layer>,
    kv: KvCache,
    /// The most tokens a step may carry, when sliding-window layers keep a ring
    /// ([`kv_slots`]).
    max_step: Option<usize>,
    rope: RopeTable,
    rope_local: Option<RopeTable>,
}

/// Positions each layer's KV cache holds for a context of `max_ctx` when no step carries more
/// than `max_step` tokens (`None`: no bound, every layer holds the whole context). A causal
/// layer with a sliding window of `w` needs only `w + max_step − 1` of them, the window of a
/// step's first token and the step's own rows, kept as a ring (position p in row p % slots):
/// Gemma 3 4B's local layers (window 1024) at a 4096-token context with steps of 128 tokens
/// hold 1151 positions instead of 4096.
pub fn kv_slots(c: &ModelConfig, max_ctx: usize, max_step: Option<usize>) -> Vec<usize> {
    c.layer_specs
        .iter()
        .map(|s| match (s.window, max_step) {
            (Some(w), Some(step)) if !c.bidirectional => (w + step.max(1) - 1).min(max_ctx),
            _ => max_ctx,
        })
        .collect()
}

/// Whether every layer still holds the keys and values a step from position `reuse` needs
/// (the window before it), after steps wrote positions up to `written` (exclusive: the highest
/// end of any step since the cache was last filled from position 0). A ring of `slots`
/// positions keeps the last `slots` positions written, so a generation that reuses a cached
/// prefix may find its window overwritten by the previous generation's later positions: then
/// it must start over from position 0.
pub fn kv_reusable(
    c: &ModelConfig,
    slots: &[usize],
    max_ctx: usize,
    reuse: usize,
    written: usize,
) -> bool {
    reuse == 0
        || c.layer_specs.iter().zip(slots).all(|(s, &n)| {
            n >= max_ctx
                || s.window
                    .is_none_or(|w| reuse.saturating_sub(w - 1) + n >= written)
        })
}

/// The dispatches of one forward step over up to `max_tokens` tokens, with their buffers.
pub struct Graph {
    pub step: StepState,
    ids: GpuTensor,
    /// With logits for the last token only: a one-element buffer holding its index in the step.
    last: Option<GpuTensor>,
    /// [max_tokens, vocab], or [1, vocab] when only the last token's logits are computed.
    pub logits: GpuTensor,
    pub dispatches: Vec<Dispatch>,
    /// How many of `dispatches` are the layers' (the rest are the LM head's, which
    /// [`Decoder::final_hidden`] does not run).
    body: usize,
    /// Packed inputs: each token's `[first, end)` positions (see [`Decoder::graph_packed`]).
    segments: Option<GpuTensor>,
    /// The best candidates of every token's logits, computed on the GPU so a step reads back
    /// 8·k bytes per token instead of the vocabulary, and the rows' softmax statistics.
    candidates: TopK,
    stats: LogitStats,
    /// Greedy and Gumbel-max picks of every row.
    argmax: TopK,
    gumbel: TopK,
    /// The truncated draw (top-k, top-p, min-p) on the GPU, built on the graph's first one
    /// ([`Decoder::prepare_nucleus`]).
    nucleus: Option<Nucleus>,
    /// The step's draw and penalty parameters, and the penalty list (capacity: the positions).
    draw: DrawState,
    pens: GpuTensor,
    penalize: Dispatch,
    /// The rows of the residual stream after the last layer and the final norm, [max_tokens,
    /// hidden], and the dispatch that norms them (only [`Decoder::final_hidden`] runs it: the
    /// LM head norms its rows in its prologue).
    normed: GpuTensor,
    final_norm: Dispatch,
    /// A grammar's allowed tokens for the next pick (one bit per token), and its dispatch.
    allowed: GpuTensor,
    mask: Dispatch,
    /// The logit bias (capacity: [`MAX_LOGIT_BIAS`] tokens), and its dispatch.
    biases: GpuTensor,
    bias: Dispatch,
}

impl Graph {
    /// The row of `logits` that holds the last of a step's `n` tokens (the only row when the
    /// graph computes logits for the last token only).
    fn last_row(&self, n: usize) -> usize {
        if self.logits.rows() == 1 {
            0
        } else {
            n - 1
        }
    }

    /// The token ids the step reads: [max_tokens] i32. The `feed` of [`Decoder::submit_pick`].
    pub fn ids(&self) -> &GpuTensor {
        &self.ids
    }

    /// Every dispatch of a greedy step, in order: the forward pass, then the argmax.
    pub fn all_dispatches(&self) -> Vec<Dispatch> {
        let mut all = self.dispatches.clone();
        all.extend(self.argmax.dispatches().iter().cloned());
        all
    }
}

/// 1-D parameters (norm weights, biases) as the f32 vectors the kernels take, each value `x`
/// made `(x + offset) * scale` (Gemma's Hugging Face norms store `w - 1`; Granite's logit
/// divisor goes into the final norm). Tensors already in f32 that stay as they are are kept;
/// the others are read back in one submit, converted and uploaded anew.
pub(crate) async fn vectors_to_f32(
    ctx: &GpuContext,
    tensors: Vec<(GpuTensor, f32, f32)>,
) -> Result<Vec<GpuTensor>> {
    let mut rec = ctx.recorder();
    let mut slots = Vec::with_capacity(tensors.len());
    for (t, offset, scale) in &tensors {
        let keep = t.dtype() == DType::F32 && *offset == 0.0 && *scale == 1.0;
        slots.push((!keep).then(|| rec.read(t)));
    }
    if slots.iter().all(Option::is_none) {
        return Ok(tensors.into_iter().map(|(t, _, _)| t).collect());
    }
    let back = rec.submit_and_read().await?;
    let mut out = Vec::with_capacity(tensors.len());
    for ((t, offset, scale), slot) in tensors.into_iter().zip(slots) {
        match slot {
            None => out.push(t),
            Some(slot) => {
                let mut v = back.f32(slot)?;
                v.iter_mut().for_each(|x| *x = (*x + offset) * scale);
                let f = ctx.upload_f32(t.name(), t.shape(), &v)?;
                t.destroy();
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// The global RoPE's frequency factors and cos/sin scale for a context of `max_ctx`, from the
/// configuration and the GGUF factor tensors' values (`rope_freqs`, LongRoPE short and long).
pub(crate) fn rope_scaling_of(
    c: &ModelConfig,
    max_ctx: usize,
    [freqs, short, long]: [Option<Vec<f32>>; 3],
) -> (Option<Vec<f32>>, f32) {
    let half = c.rope.rotary_dim / 2;
    match &c.rope_scaling {
        RopeScaling::None => (freqs, 1.0),
        RopeScaling::Linear(f) => (Some(vec![*f; half]), 1.0),
        RopeScaling::LongRope {
            short: s,
            long: l,
            original,
            attention_factor,
        } => {
            let beyond = max_ctx > *original;
            let chosen = match (beyond, s.is_empty()) {
                (false, false) => Some(s.clone()),
                (true, false) => Some(l.clone()),
                (false, true) => short,
                (true, true) => long,
            };
            (chosen, *attention_factor)
        }
        RopeScaling::Yarn(y) => (
            Some(y.frequency_factors(c.rope.rotary_dim, c.rope.theta)),
            y.attention_factor,
        ),
    }
}

/// The RoPE table a layer rotates with: the global one, the local one, or none.
fn layer_table<'a>(
    rope: LayerRope,
    global: &'a RopeTable,
    local: Option<&'a RopeTable>,
) -> Option<&'a RopeTable> {
    match rope {
        LayerRope::Global => Some(global),
        LayerRope::Local => local,
        LayerRope::None => None,
    }
}

/// Stacks `parts` (rows) into one matrix when they share a format, else keeps them apart.
pub(crate) async fn stack(
    ctx: &GpuContext,
    name: &str,
    parts: Vec<GpuTensor>,
    biases: Vec<Option<GpuTensor>>,
) -> Result<Proj> {
    let same = parts.iter().all(|p| p.dtype() == parts[0].dtype());
    if !same {
        return Ok(Proj::Parts { ws: parts, biases });
    }
    let refs: Vec<&GpuTensor> = parts.iter().collect();
    let w = kernels::concat_rows(ctx, name, &refs).await?;
    let bias = if biases.iter().all(Option::is_some) {
        let b: Vec<&GpuTensor> = biases.iter().flatten().collect();
        Some(kernels::concat_rows(ctx, &format!("{name}.bias"), &b).await?)
    } else {
        None
    };
    parts
        .iter()
        .chain(biases.iter().flatten())
        .for_each(GpuTensor::destroy);
    Ok(Proj::Fused { w, bias })
}

impl Decoder {
    /// Takes the loaded tensors (GGUF or Hugging Face names, as the configuration says) and
    /// makes a KV cache of `max_ctx` positions in `kv_dtype` (f32 for the exact path; f16 halves
    /// its memory). Every tensor is checked against the configuration first.
    pub async fn new(
        ctx: &GpuContext,
        config: ModelConfig,
        tensors: HashMap<String, GpuTensor>,
        max_ctx: usize,
        kv_dtype: DType,
    ) -> Result<Self> {
        Self::with_max_step(ctx, config, tensors, max_ctx, kv_dtype, None).await
    }

    /// As [`Decoder::new`], for steps of at most `max_step` tokens: then sliding-window layers
    /// keep only the positions their window needs ([`kv_slots`]), and a graph for longer steps
    /// is refused.
    pub async fn with_max_step(
        ctx: &GpuContext,
        config: ModelConfig,
        tensors: HashMap<String, GpuTensor>,
        max_ctx: usize,
        kv_dtype: DType,
        max_step: Option<usize>,
    ) -> Result<Self> {
        let c = &config;
        let w = DecoderWeights::take(c, tensors)?;
        // Every 1-D parameter (norm weights, biases) goes through one conversion to f32.
        let mut vectors = vec![(w.out_norm.clone(), c.norm_offset, c.out_norm_scale())];
        for l in &w.layers {
            vectors.extend(
                l.vectors(c.norm_offset)
                    .into_iter()
                    .map(|(t, o)| (t.clone(), o, 1.0)),
            );
        }
        let mut converted = vectors_to_f32(ctx, vectors).await?.into_iter();
        let out_norm = converted.next().expect("the output norm");
        let mut layers = Vec::with_capacity(c.layers);
        for (l, raw) in w.layers.into_iter().enumerate() {
            let r = raw.map(&mut converted, |m| m);
            let qkv = if r.qkv.len() == 1 {
                Proj::Fused {
                    w: r.qkv.into_iter().next().expect("one"),
                    bias: None,
                }
            } else {
                stack(ctx, &format!("blk.{l}.qkv"), r.qkv, r.qkv_bias).await?
            };
            let gate_up = if r.gate_up.len() == 1 {
                Proj::Fused {
                    w: r.gate_up.into_iter().next().expect("one"),
                    bias: None,
                }
            } else {
                stack(
                    ctx,
                    &format!("blk.{l}.gate_up"),
                    r.gate_up,
                    vec![None, None],
                )
                .await?
            };
            layers.push(Layer {
                spec: c.layer_specs[l],
                attn_norm: r.attn_norm,
                qkv,
                q_norm: r.q_norm,
                k_norm: r.k_norm,
                o: r.o,
                post_attn_norm: r.post_attn_norm,
                ffn_norm: r.ffn_norm,
                gate_up,
                down: r.down,
                post_ffn_norm: r.post_ffn_norm,
                fused_rope: false,
                normed_rope: false,
                post_folds: 0,
            });
        }
        let embed = w.embed;
        let output = w.output;
        let factor_tensors = w.rope_factors.into_iter().collect();

        let slots = kv_slots(c, max_ctx, max_step);
        let kv = KvCache::with_slots(ctx, max_ctx, &slots, c.kv_heads, c.head_dim, kv_dtype)?;
        let rope = Self::global_rope(ctx, c, max_ctx, factor_tensors).await?;
        let rope_local = match c.rope_local {
            Some(r) => Some(RopeTable::new(ctx, r, max_ctx)?),
            None => None,
        };
        for l in &mut layers {
            let table = layer_table(l.spec.rope, &rope, rope_local.as_ref());
            l.fused_rope = match (&l.qkv, table, &l.q_norm) {
                (Proj::Fused { w, bias }, Some(table), None) => {
                    kernels::qkv_rope_fits(ctx, w, 1, table.config(), &kv, bias.is_some(), true)
                }
                _ => false,
            };
            l.normed_rope = match (table, &l.q_norm, &l.k_norm) {
                (Some(_), Some(gq), Some(gk)) => {
                    gq.shape() == [c.head_dim] && gk.shape() == [c.head_dim]
                }
                _ => false,
            };
        }
        // What a decode step's graph folds ([`Stream::take`] with [`Proj::residual_fits`]).
        let folds = |proj: &Proj, outputs: usize, norm: &Option<GpuTensor>| {
            proj.residual_fits(ctx, 1, outputs, norm.is_some())
        };
        for i in 0..layers.len() {
            let l = &layers[i];
            let attn = l.post_attn_norm.is_some() && folds(&l.gate_up, 1, &l.ffn_norm);
            let ffn = l.post_ffn_norm.is_some()
                && layers
                    .get(i + 1)
                    .is_some_and(|n| !n.fused_rope && folds(&n.qkv, 3, &n.attn_norm));
            layers[i].post_folds = usize::from(attn) + usize::from(ffn);
        }
        let output = output.unwrap_or_else(|| embed.clone());
        Ok(Decoder {
            config,
            embed,
            out_norm,
            output,
            layers,
            kv,
            max_step,
            rope,
            rope_local,
        })
    }

    /// Whether a step from position `reuse` finds the window it needs in the KV cache after
    /// steps wrote up to `written` ([`kv_reusable`]).
    pub fn kv_reusable(&self, reuse: usize, written: usize) -> bool {
        let slots: Vec<usize> = (0..self.kv.n_layers()).map(|l| self.kv.slots(l)).collect();
        kv_reusable(&self.config, &slots, self.kv.max_ctx(), reuse, written)
    }

    /// The global RoPE table: the configuration's frequencies, divided by GGUF's factor tensors
    /// (`rope_freqs`, or LongRoPE's short / long by the context) or the configuration's factors
    /// (linear, LongRoPE), with LongRoPE's factor on cos/sin.
    async fn global_rope(
        ctx: &GpuContext,
        c: &ModelConfig,
        max_ctx: usize,
        factor_tensors: Vec<Option<GpuTensor>>,
    ) -> Result<RopeTable> {
        let mut read = Vec::new();
        for t in factor_tensors {
            read.push(match t {
                Some(t) => {
                    let v = ctx.read_f32(&t).await?;
                    t.destroy();
                    Some(v)
                }
                None => None,
            });
        }
        let (factors, mscale) = rope_scaling_of(c, max_ctx, read.try_into().expect("three roles"));
        RopeTable::with_options(ctx, c.rope, max_ctx, factors.as_deref(), mscale)
    }

    /// Builds the graph of a step over up to `max_tokens` tokens (1 for decode; the prefill
    /// chunk otherwise). Logits are computed for every token, and their best `candidates`
    /// (1..=64) on the GPU.
    pub async fn graph(
        &self,
        ctx: &GpuContext,
        max_tokens: usize,
        candidates: usize,
    ) -> Result<Graph> {
        let positions = self.kv.max_ctx();
        self.graph_with(ctx, max_tokens, positions, candidates, true)
            .await
    }

    /// As [`Decoder::graph`]; with `all_logits` false only the last token of a step gets
    /// logits (the output projection, the model's largest matrix, runs on one row): what
    /// generation needs.
    ///
    /// Attention is sized for `positions` (at most the KV cache's): a step of this graph must
    /// end there. Smaller graphs for short sequences spare drivers that pay for every launched
    /// workgroup (CPU implementations) the attention chunks a long context would add.
    pub async fn graph_with(
        &self,
        ctx: &GpuContext,
        max_tokens: usize,
        positions: usize,
        candidates: usize,
        all_logits: bool,
    ) -> Result<Graph> {
        self.build_graph(ctx, max_tokens, positions, candidates, all_logits, false)
            .await
    }

    /// The graph of an embedder's pass over several inputs packed one after another (up to
    /// `max_tokens` in all, from position 0, at most the KV cache's positions): each token
    /// attends within its own input only, and RoPE rotates by the pass's positions (which keeps
    /// every distance within an input). Run by [`Decoder::final_hidden_packed`].
    pub async fn graph_packed(&self, ctx: &GpuContext, max_tokens: usize) -> Result<Graph> {
        self.build_graph(ctx, max_tokens, max_tokens, 1, false, true)
            .await
    }

    async fn build_graph(
        &self,
        ctx: &GpuContext,
        max_tokens: usize,
        positions: usize,
        candidates: usize,
        all_logits: bool,
        packed: bool,
    ) -> Result<Graph> {
        let c = &self.config;
        let t = max_tokens;
        if let Some(m) = self.max_step.filter(|&m| t > m) {
            return Err(Error::InvalidRequest(format!(
                "a step of {t} tokens, more than the {m} this decoder's KV cache was sized for"
            )));
        }
        let step = StepState::new(ctx, t, positions)?;
        let segments = packed
            .then(|| ctx.zeros("segments", &[t, 2], DType::I32))
            .transpose()?;
        let f32z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32);
        let ids = ctx.zeros("ids", &[t], DType::I32)?;
        let x = f32z("x", &[t, c.hidden])?;
        let q = f32z("q", &[t, c.heads * c.head_dim])?;
        let k = f32z("k", &[t, c.kv_heads * c.head_dim])?;
        let v = f32z("v", &[t, c.kv_heads * c.head_dim])?;
        let o = f32z("o", &[t, c.heads * c.head_dim])?;
        let a = f32z("act", &[t, c.ffn])?;
        let logit_rows = if all_logits { t } else { 1 };
        let logits = f32z("logits", &[logit_rows, c.vocab])?;
        let q3 = q.reshape(&[t, c.heads, c.head_dim])?;
        let k3 = k.reshape(&[t, c.kv_heads, c.head_dim])?;
        let v3 = v.reshape(&[t, c.kv_heads, c.head_dim])?;
        let o3 = o.reshape(&[t, c.heads, c.head_dim])?;
        // q and k after their norm, where it is a dispatch of its own (OLMo 2's spans all heads).
        let apart = self
            .layers
            .iter()
            .any(|l| l.q_norm.is_some() && !l.normed_rope);
        let (qn, kn) = if apart {
            (
                Some(f32z("q normed", &[t, c.heads, c.head_dim])?),
                Some(f32z("k normed", &[t, c.kv_heads, c.head_dim])?),
            )
        } else {
            (None, None)
        };
        // Post-norm inputs (Gemma), and the separate gate / up outputs of unfusable MLPs.
        let needs_parts = self
            .layers
            .iter()
            .any(|l| matches!(l.gate_up, Proj::Parts { .. }));
        let h = c
            .post_norms
            .then(|| f32z("block output", &[t, c.hidden]))
            .transpose()?;
        let (gate, up) = if needs_parts {
            (
                Some(f32z("gate", &[t, c.ffn])?),
                Some(f32z("up", &[t, c.ffn])?),
            )
        } else {
            (None, None)
        };
        // The stream's second buffer, for post-norms folded into the next projection.
        let x_alt = (h.is_some() && kernels::residual_fits(ctx, t, 1, false, false))
            .then(|| f32z("x'", &[t, c.hidden]))
            .transpose()?;
        let mut stream = Stream {
            cur: &x,
            alt: x_alt.as_ref(),
            pending: None,
            eps: c.rms_eps,
        };

        let embed_scale = c.embed_scale.unwrap_or(1.0);
        let mut d = Vec::new();
        if let [(_, table)] = self.embed.as_slice() {
            d.push(kernels::embed_scaled(ctx, table, &ids, &x, embed_scale).await?);
        } else {
            for (row, table) in &self.embed {
                d.push(kernels::embed_part(ctx, table, *row, &ids, &x, embed_scale).await?);
            }
        }
        let mut scratch: Option<AttentionScratch> = None;
        for (l, w) in self.layers.iter().enumerate() {
            let attn_in = Linear {
                norm: w.attn_norm.as_ref().map(|n| (n, c.rms_eps)),
                ..Default::default()
            };
            let table = layer_table(w.spec.rope, &self.rope, self.rope_local.as_ref());
            let fused = match (&w.qkv, table) {
                (Proj::Fused { w: wqkv, bias }, Some(table))
                    if w.fused_rope && t <= kernels::MATVEC_MAX_ROWS =>
                {
                    Some((wqkv, bias.as_ref(), table))
                }
                _ => None,
            };
            let qr = if let Some((wqkv, bias, table)) = fused {
                let out = RopeKv {
                    table,
                    step: &step,
                    cache: &self.kv,
                    layer: l,
                };
                let opts = Linear { bias, ..attn_in };
                let x = stream.settle(ctx, &mut d).await?;
                d.push(kernels::linear_qkv_rope(ctx, wqkv, x, &q, &out, &opts).await?);
                &q3
            } else if let (true, Some(table), Some(q_norm), Some(k_norm)) =
                (w.normed_rope, table, &w.q_norm, &w.k_norm)
            {
                Self::project_stream(ctx, &mut d, &mut stream, &w.qkv, &[&q, &k, &v], attn_in)
                    .await?;
                let norm = kernels::QkNorm {
                    q_norm,
                    k_norm,
                    eps: c.rms_eps,
                };
                d.push(
                    kernels::qk_norm_rope_kv_write(
                        ctx, table, &step, &q3, &k3, &v3, norm, &self.kv, l,
                    )
                    .await?,
                );
                &q3
            } else {
                Self::project_stream(ctx, &mut d, &mut stream, &w.qkv, &[&q, &k, &v], attn_in)
                    .await?;
                let (qr, kr) = match (&qn, &kn, &w.q_norm, &w.k_norm) {
                    (Some(qn), Some(kn), Some(gq), Some(gk)) => {
                        // Rows as long as the norm's weight: a head, or all of them (OLMo 2).
                        let rows = |x: &GpuTensor, g: &GpuTensor| {
                            x.reshape(&[x.numel() / g.numel(), g.numel()])
                        };
                        d.push(
                            kernels::rmsnorm(ctx, &rows(&q3, gq)?, gq, c.rms_eps, &rows(qn, gq)?)
                                .await?,
                        );
                        d.push(
                            kernels::rmsnorm(ctx, &rows(&k3, gk)?, gk, c.rms_eps, &rows(kn, gk)?)
                                .await?,
                        );
                        (qn, kn)
                    }
                    _ => (&q3, &k3),
                };
                d.push(match table {
                    Some(table) => {
                        kernels::rope_kv_write(ctx, table, &step, qr, kr, &v3, &self.kv, l).await?
                    }
                    None => kernels::kv_write(ctx, &step, &self.kv, l, kr, &v3).await?,
                });
                qr
            };
            let opts = AttentionOptions {
                scale: Some(c.attn_scale),
                scratch: scratch.clone(),
                window: w.spec.window,
                softcap: c.attn_softcap,
                bidirectional: c.bidirectional,
                segments: segments.clone(),
                ..Default::default()
            };
            let att = kernels::attention(ctx, &step, qr, &self.kv, l, &o3, &opts).await?;
            scratch = att.scratch().cloned();
            // With a split context the output projection combines the chunks as it loads them
            // where it can, and attention's combine pass is not recorded.
            let o_in = match att.without_combine() {
                Some((chunks, parts)) if kernels::combine_fits(ctx, parts, t) => {
                    d.push(chunks.clone());
                    Linear {
                        combine: Some((parts, &step)),
                        ..Default::default()
                    }
                }
                _ => {
                    d.extend(att.dispatches().iter().cloned());
                    Linear::default()
                }
            };
            let post = h.as_ref().zip(w.post_attn_norm.as_ref());
            Self::project_into_stream(ctx, &mut d, &w.o, (&o, o_in), &mut stream, post).await?;
            let ffn_in = Linear {
                norm: w.ffn_norm.as_ref().map(|n| (n, c.rms_eps)),
                gate_act: c.activation,
                ..Default::default()
            };
            match (&w.gate_up, &gate, &up) {
                (Proj::Fused { w: gu, .. }, _, _) => {
                    let fits = w.gate_up.residual_fits(ctx, t, 1, ffn_in.norm.is_some());
                    let residual = stream.take(ctx, &mut d, fits).await?;
                    let opts = Linear { residual, ..ffn_in };
                    d.push(kernels::linear_swiglu(ctx, gu, stream.cur, &a, &opts).await?);
                    stream.advance(residual);
                }
                (parts @ Proj::Parts { .. }, Some(g), Some(u)) => {
                    Self::project_stream(ctx, &mut d, &mut stream, parts, &[g, u], ffn_in).await?;
                    d.push(kernels::gated(ctx, g, u, &a, c.activation).await?);
                }
                _ => unreachable!("gate/up buffers exist when a layer keeps them apart"),
            }
            let post = h.as_ref().zip(w.post_ffn_norm.as_ref());
            let down_in = (&a, Linear::default());
            Self::project_into_stream(ctx, &mut d, &w.down, down_in, &mut stream, post).await?;
        }
        // The stream with the last post-norm added: what the head and the final norm read.
        let x = stream.settle(ctx, &mut d).await?;
        // The layers' dispatches end here; the LM head's follow.
        let body = d.len();
        // The final norm is the output projection's prologue.
        let head = Linear {
            norm: Some((&self.out_norm, c.rms_eps)),
            ..Default::default()
        };
        // Only the last token's logits: gather its row of x (an embedding lookup in an f32
        // table, at the index `last` holds), then norm and project one row.
        let (last, head_in) = if t > 1 && !all_logits {
            let last = ctx.zeros("last token", &[1], DType::I32)?;
            let row = f32z("last row", &[1, c.hidden])?;
            d.push(kernels::embed(ctx, x, &last, &row).await?);
            (Some(last), row)
        } else {
            (None, x.clone())
        };
        // One dispatch per part of a split head, each writing its range of the vocabulary.
        let split = self.output.len() > 1;
        for (row, w) in &self.output {
            let opts = Linear {
                col_offset: split.then_some(*row),
                ..head
            };
            d.push(kernels::linear_with(ctx, w, &head_in, &logits, &opts).await?);
        }
        if let Some(cap) = c.final_softcap {
            d.push(kernels::softcap(ctx, &logits, cap).await?);
        }
        let out = kernels::topk_output(ctx, "candidates", &logits, candidates)?;
        let candidates = kernels::topk(ctx, &logits, candidates, &out).await?;
        let stats = kernels::logit_stats(ctx, &logits).await?;
        let out = kernels::topk_output(ctx, "argmax", &logits, 1)?;
        let argmax = kernels::argmax(ctx, &logits, &out).await?;
        let draw = DrawState::new(ctx);
        let out = kernels::topk_output(ctx, "drawn", &logits, 1)?;
        let gumbel = kernels::gumbel_argmax(ctx, &logits, &draw, &out).await?;
        // Each distinct token of the penalty window once: at most one per position.
        let pens = ctx.zeros("penalties", &[positions, 2], DType::I32)?;
        let penalize = kernels::penalize(ctx, &logits, &draw, &pens).await?;
        let allowed = ctx.zeros(
            "allowed tokens",
            &[kernels::mask_words(c.vocab)],
            DType::I32,
        )?;
        let mask = kernels::mask_logits(ctx, &logits, &draw, &allowed).await?;
        let biases = ctx.zeros("logit bias", &[MAX_LOGIT_BIAS, 2], DType::I32)?;
        let bias = kernels::bias_logits(ctx, &logits, &draw, &biases).await?;
        let normed = f32z("final hidden", &[t, c.hidden])?;
        let final_norm = kernels::rmsnorm(ctx, x, &self.out_norm, c.rms_eps, &normed).await?;
        Ok(Graph {
            step,
            ids,
            last,
            logits,
            dispatches: d,
            body,
            segments,
            normed,
            final_norm,
            candidates,
            stats,
            argmax,
            gumbel,
            nucleus: None,
            draw,
            pens,
            penalize,
            allowed,
            mask,
            biases,
            bias,
        })
    }

    /// `x += input · Wᵀ`, in the projection's epilogue; with a post-norm `(h, g)`, `h = input ·
    /// Wᵀ`, left pending in the stream (`x += rmsnorm(h) · g` comes with the next projection that
    /// reads it, or a dispatch). `input` comes with how it is read (plain, or combining split
    /// attention's chunks).
    async fn project_into_stream<'a>(
        ctx: &GpuContext,
        d: &mut Vec<Dispatch>,
        w: &GpuTensor,
        (input, read): (&GpuTensor, Linear<'_>),
        stream: &mut Stream<'a>,
        post: Option<(&'a GpuTensor, &'a GpuTensor)>,
    ) -> Result<()> {
        if let Some((h, g)) = post {
            // h is free: the projections that read the last post-norm's h ran before this one.
            let x = stream.settle(ctx, d).await?;
            debug_assert!(!std::ptr::eq(x, h));
            d.push(kernels::linear_with(ctx, w, input, h, &read).await?);
            stream.pending = Some((h, g));
        } else {
            let residual = Linear {
                accumulate: true,
                ..read
            };
            let x = stream.settle(ctx, d).await?;
            d.push(kernels::linear_with(ctx, w, input, x, &residual).await?);
        }
        Ok(())
    }

    /// The projection `proj` of the stream into `outs`, with `opts` (the prologue): the pending
    /// post-norm added as the input loads where every dispatch of it can, else first.
    async fn project_stream<'a>(
        ctx: &GpuContext,
        d: &mut Vec<Dispatch>,
        stream: &mut Stream<'a>,
        proj: &Proj,
        outs: &[&GpuTensor],
        opts: Linear<'_>,
    ) -> Result<()> {
        let rows = stream.cur.rows();
        let fits = proj.residual_fits(ctx, rows, outs.len(), opts.norm.is_some());
        let residual = stream.take(ctx, d, fits).await?;
        let opts = Linear { residual, ..opts };
        d.extend(proj.record(ctx, stream.cur, outs, &opts).await?);
        stream.advance(residual);
        Ok(())
    }

    /// Runs one step of `tokens` (at most the graph's step size) at positions `offset..`, and
    /// reads back what `readout` asks for, of the step's last token. One submit; with
    /// [`Readout::Nothing`] it does not wait for the GPU, and the LM head does not run (a prompt's
    /// steps before its last fill the KV cache only: the head is the model's largest matrix, and
    /// for a large vocabulary larger than all the layers together).
    pub async fn step(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
        readout: Readout<'_>,
    ) -> Result<StepOutput> {
        let head = !matches!(readout, Readout::Nothing);
        let rec = self.record_step(ctx, graph, StepInput::Host(tokens), offset, head)?;
        self.finish_step(ctx, graph, rec, tokens.len(), readout, false)
            .await
    }

    /// As [`Decoder::step`] with a [`Readout::Sample`], the pick restricted to the tokens a
    /// grammar allows: the forward pass is submitted first, `mask` computes the allowed tokens
    /// on the host while the GPU runs it (one bit per token id, low bit first, at least
    /// [`kernels::mask_words`] of the vocabulary words), and the mask is applied to the logits
    /// on the GPU after the penalties and before the pick, in a second submit. The readback is
    /// what the plan reads without a mask.
    pub async fn step_masked(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
        readout: Readout<'_>,
        mask: impl FnOnce() -> Result<Vec<u32>>,
    ) -> Result<StepOutput> {
        self.record_step(ctx, graph, StepInput::Host(tokens), offset, true)?
            .submit()?;
        let words = mask()?;
        let need = kernels::mask_words(self.config.vocab);
        if words.len() < need {
            return Err(Error::ShapeMismatch {
                kernel: "mask_logits",
                detail: format!(
                    "a token mask of {} words for a vocabulary that needs {need}",
                    words.len()
                ),
            });
        }
        ctx.write_i32(&graph.allowed, bytemuck::cast_slice(&words[..need]))?;
        self.finish_step(ctx, graph, ctx.recorder(), tokens.len(), readout, true)
            .await
    }

    /// Records into `rec` (which holds the step's forward pass, or nothing when it was
    /// submitted already) what `readout` needs of the last of the step's `n` tokens, submits,
    /// and reads it back; `masked` applies the token mask in [`Graph`]'s `allowed` before a
    /// pick.
    async fn finish_step(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        mut rec: Recorder<'_>,
        n: usize,
        readout: Readout<'_>,
        masked: bool,
    ) -> Result<StepOutput> {
        // The row of the last token in `logits`.
        let row = graph.last_row(n);
        match readout {
            Readout::Nothing => {
                rec.submit()?;
                Ok(StepOutput::Nothing)
            }
            Readout::Logits => Ok(StepOutput::Logits(
                self.submit_reading_row(rec, graph, row).await?,
            )),
            Readout::Sample {
                plan,
                mut draw,
                penalties,
                biases,
                with_candidates,
                nucleus,
            } => {
                if penalties.len() > graph.pens.rows() {
                    return Err(Error::ShapeMismatch {
                        kernel: "penalize",
                        detail: format!(
                            "{} distinct tokens in the penalty window, more than the {} \
                             positions of this graph",
                            penalties.len(),
                            graph.pens.rows()
                        ),
                    });
                }
                draw.row = row as u32;
                draw.n_pen = penalties.len() as u32;
                graph.draw.set(ctx, &draw);
                if !penalties.is_empty() {
                    let words: Vec<i32> = penalties
                        .iter()
                        .flat_map(|&(t, c)| [t as i32, c as i32])
                        .collect();
                    ctx.write_i32(&graph.pens, &words)?;
                    rec.dispatch(&graph.penalize);
                }
                Self::record_bias(ctx, graph, &mut rec, biases)?;
                if masked {
                    rec.dispatch(&graph.mask);
                }
                let truncating = matches!(plan, SamplingPlan::Candidates | SamplingPlan::FullRow);
                if let (Some(limits), true) = (nucleus, truncating) {
                    self.prepare_nucleus(ctx, graph).await?;
                    let nucleus = graph.nucleus.as_ref().expect("prepared above");
                    let stats = graph.stats.record(&mut rec);
                    let slot = nucleus.record(ctx, &mut rec, row, limits)?;
                    let candidates = with_candidates.then(|| graph.candidates.record(&mut rec));
                    let readback = rec.submit_and_read().await?;
                    let token = nucleus.read(&readback, slot)?;
                    return Ok(match candidates {
                        None => StepOutput::Token(token),
                        Some(c) => StepOutput::TokenAndCandidates {
                            token,
                            candidates: graph.candidates.read(&readback, c)?.swap_remove(row),
                            stats: graph.stats.read(&readback, stats)?[row],
                        },
                    });
                }
                match plan {
                    SamplingPlan::Greedy | SamplingPlan::Gumbel => {
                        let pick = if plan == SamplingPlan::Greedy {
                            &graph.argmax
                        } else {
                            &graph.gumbel
                        };
                        let slot = pick.record(&mut rec);
                        let more = with_candidates.then(|| {
                            (
                                graph.candidates.record(&mut rec),
                                graph.stats.record(&mut rec),
                            )
                        });
                        let readback = rec.submit_and_read().await?;
                        let token = pick.read(&readback, slot)?[row][0].0;
                        match more {
                            None => Ok(StepOutput::Token(token)),
                            Some((c, s)) => Ok(StepOutput::TokenAndCandidates {
                                token,
                                candidates: graph.candidates.read(&readback, c)?.swap_remove(row),
                                stats: graph.stats.read(&readback, s)?[row],
                            }),
                        }
                    }
                    SamplingPlan::Candidates => {
                        let slot = graph.candidates.record(&mut rec);
                        let stats_slot = graph.stats.record(&mut rec);
                        let readback = rec.submit_and_read().await?;
                        let mut rows = graph.candidates.read(&readback, slot)?;
                        let stats = graph.stats.read(&readback, stats_slot)?;
                        Ok(StepOutput::Candidates {
                            candidates: rows.swap_remove(row),
                            stats: stats[row],
                        })
                    }
                    SamplingPlan::FullRow => Ok(StepOutput::Logits(
                        self.submit_reading_row(rec, graph, row).await?,
                    )),
                }
            }
        }
    }

    /// Submits one step of `input` at `offset` whose token the GPU picks under `plan` (greedy,
    /// Gumbel, or a truncating plan drawn from the nucleus that `nucleus` = `(top_k, top_p,
    /// min_p)` keep, with `draw`'s Gumbel key; no penalties: nothing the host must compute from
    /// the previous token), and returns without waiting for it. With a `feed` (the
    /// [`Graph::ids`] of the graph the next step runs on), the pick is also copied there on the
    /// GPU, so the next step can be submitted with [`StepInput::Gpu`] before this one is read
    /// back.
    ///
    /// Why submitting the next step on the same graph is safe while this one runs: everything
    /// the host changes between the two submits goes through the queue — the step uniform
    /// ([`StepState::set`]) and the draw ([`DrawState::set`]) by `write_buffer` — and WebGPU
    /// orders a queue write after all work submitted before it, so this step reads its own
    /// values to the end. The token ids are not written by the host at all: this step's copy
    /// writes them after its own embedding read (same command buffer, after the compute pass),
    /// and the next step reads them. The pick's output and the logits are rewritten by the
    /// next step only after this step's command buffer, which copied the pick into its own
    /// staging buffer (one per pending readback, from the context's ring), has finished.
    #[allow(clippy::too_many_arguments)]
    pub fn submit_pick<'c>(
        &self,
        ctx: &'c GpuContext,
        graph: &mut Graph,
        input: StepInput<'_>,
        offset: usize,
        (plan, nucleus): (SamplingPlan, Option<(usize, f32, f32)>),
        mut draw: Draw,
        biases: &[(u32, f32)],
        feed: Option<&GpuTensor>,
    ) -> Result<PendingPick<'c>> {
        let on_gpu =
            matches!(plan, SamplingPlan::Greedy | SamplingPlan::Gumbel) || nucleus.is_some();
        if !on_gpu || draw.n_pen != 0 {
            return Err(Error::InvalidRequest(format!(
                "a step whose pick feeds the next one needs greedy, Gumbel or nucleus sampling \
                 without penalties, not {plan:?} with {} penalized tokens",
                draw.n_pen
            )));
        }
        let n = match input {
            StepInput::Host(tokens) => tokens.len(),
            StepInput::Gpu => 1,
        };
        let mut rec = self.record_step(ctx, graph, input, offset, true)?;
        let row = graph.last_row(n);
        draw.row = row as u32;
        graph.draw.set(ctx, &draw);
        Self::record_bias(ctx, graph, &mut rec, biases)?;
        // (value bits, index) per row: the token is the second word of its row.
        let (output, word) = match nucleus {
            Some(limits) => {
                let n = graph.nucleus.as_ref().ok_or_else(|| {
                    Error::InvalidRequest(
                        "a nucleus pick needs Decoder::prepare_nucleus on its graph first".into(),
                    )
                })?;
                rec.dispatch_all(graph.stats.dispatches());
                n.record_pick(ctx, &mut rec, row, limits)?;
                (n.output().clone(), 1)
            }
            None => {
                let pick = if plan == SamplingPlan::Greedy {
                    &graph.argmax
                } else {
                    &graph.gumbel
                };
                rec.dispatch_all(pick.dispatches());
                (pick.output().clone(), row * 2 * pick.k() + 1)
            }
        };
        if let Some(ids) = feed {
            rec.copy_words(&output, word, ids, 0, 1)?;
        }
        let slot = rec.read(&output);
        Ok(PendingPick {
            readback: rec.submit_reading()?,
            slot,
            word,
        })
    }

    /// Writes a logit bias into `graph` and records its dispatch (nothing for an empty one).
    /// The draw set for the step must count its entries (`n_bias`).
    fn record_bias(
        ctx: &GpuContext,
        graph: &Graph,
        rec: &mut Recorder<'_>,
        biases: &[(u32, f32)],
    ) -> Result<()> {
        if biases.is_empty() {
            return Ok(());
        }
        if biases.len() > graph.biases.rows() {
            return Err(Error::ShapeMismatch {
                kernel: "bias_logits",
                detail: format!(
                    "a logit bias of {} tokens, more than its {} slots",
                    biases.len(),
                    graph.biases.rows()
                ),
            });
        }
        let words: Vec<i32> = biases
            .iter()
            .flat_map(|&(t, b)| [t as i32, b.to_bits() as i32])
            .collect();
        ctx.write_i32(&graph.biases, &words)?;
        rec.dispatch(&graph.bias);
        Ok(())
    }

    /// Builds `graph`'s nucleus draw if it has none yet (its pipelines), for
    /// [`Decoder::submit_pick`].
    pub async fn prepare_nucleus(&self, ctx: &GpuContext, graph: &mut Graph) -> Result<()> {
        if graph.nucleus.is_none() {
            let built = kernels::nucleus(ctx, &graph.logits, &graph.stats, &graph.draw).await?;
            graph.nucleus = Some(built);
        }
        Ok(())
    }

    /// The last step's row of logits for its `n`-th token (1-based: the step's length), as the
    /// GPU left them (penalized when the step applied penalties): the whole-row fallback of
    /// [`SamplingPlan::Candidates`]. No dispatches; one readback.
    pub async fn read_logits(&self, ctx: &GpuContext, graph: &Graph, n: usize) -> Result<Vec<f32>> {
        self.submit_reading_row(ctx.recorder(), graph, graph.last_row(n))
            .await
    }

    /// Submits what `rec` recorded with a read of row `row` of `graph`'s logits, and returns
    /// that row.
    async fn submit_reading_row(
        &self,
        mut rec: Recorder<'_>,
        graph: &Graph,
        row: usize,
    ) -> Result<Vec<f32>> {
        let slot = rec.read(&graph.logits);
        let all = rec.submit_and_read().await?.f32(slot)?;
        let v = self.config.vocab;
        Ok(all[row * v..(row + 1) * v].to_vec())
    }

    /// Checks a step's tokens, writes its uniform and (from the host) token ids, and records its
    /// dispatches.
    fn record_step<'c>(
        &self,
        ctx: &'c GpuContext,
        graph: &mut Graph,
        input: StepInput<'_>,
        offset: usize,
        head: bool,
    ) -> Result<Recorder<'c>> {
        let n = match input {
            StepInput::Host(tokens) => tokens.len(),
            StepInput::Gpu => 1,
        };
        if n == 0 {
            return Err(Error::ShapeMismatch {
                kernel: "step",
                detail: "a step needs at least one token".into(),
            });
        }
        if let StepInput::Host(tokens) = input {
            if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
                return Err(Error::InvalidTensor {
                    tensor: "token ids".into(),
                    detail: format!(
                        "token {bad} is outside the model's vocabulary of {}",
                        self.config.vocab
                    ),
                });
            }
        }
        graph.step.set(ctx, offset, n)?;
        if let StepInput::Host(tokens) = input {
            let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
            ctx.write_i32(&graph.ids, &ids)?;
        }
        if let Some(last) = &graph.last {
            ctx.write_i32(last, &[n as i32 - 1])?;
        }
        let mut rec = ctx.recorder();
        let end = if head {
            graph.dispatches.len()
        } else {
            graph.body
        };
        rec.dispatch_all(&graph.dispatches[..end]);
        Ok(rec)
    }

    /// Every weight tensor, once (a tied output projection is the embedding table).
    fn weights(&self) -> impl Iterator<Item = &GpuTensor> {
        let tied = self.output[0].1.buffer == self.embed[0].1.buffer;
        let output = self.output.iter().filter(move |_| !tied).map(|(_, t)| t);
        self.embed
            .iter()
            .map(|(_, t)| t)
            .chain([&self.out_norm])
            .chain(output)
            .chain(self.layers.iter().flat_map(Layer::tensors))
    }

    /// The GPU memory of the weights, and of the KV cache with the RoPE tables, in bytes.
    pub fn gpu_bytes(&self) -> (u64, u64) {
        let weights = self.weights().map(GpuTensor::size_bytes).sum();
        let ropes =
            self.rope.size_bytes() + self.rope_local.as_ref().map_or(0, RopeTable::size_bytes);
        (weights, self.kv.size_bytes() + ropes)
    }

    /// Decode dispatches per layer, by layer, not counting attention's combine (one more when a
    /// long context is split into chunks on a CPU adapter's kernels); the module docs say why
    /// each is there.
    pub fn dispatches_per_layer(&self) -> Vec<usize> {
        self.layers
            .iter()
            .map(|l| {
                let qkv = match &l.qkv {
                    Proj::Fused { .. } => 1,
                    Proj::Parts { ws, .. } => ws.len(),
                };
                let mlp = match &l.gate_up {
                    Proj::Fused { .. } => 1,
                    Proj::Parts { .. } => 3,
                };
                // Norms of their own, unless the RoPE and KV-cache write does them.
                let qk = if l.q_norm.is_some() && !l.normed_rope {
                    2
                } else {
                    0
                };
                // Post-norm adds that run as dispatches: the last layer's MLP's always does.
                let post = usize::from(l.post_attn_norm.is_some())
                    + usize::from(l.post_ffn_norm.is_some())
                    - l.post_folds;
                // rope/kv write (unless the projection does it), attention, o, down.
                let write = usize::from(!l.fused_rope);
                qkv + qk + write + 1 + 1 + mlp + 1 + post
            })
            .collect()
    }

    /// How many tensors (row ranges) hold the embedding table and the LM head.
    pub fn table_parts(&self) -> (usize, usize) {
        (self.embed.len(), self.output.len())
    }

    /// Positions the KV cache holds.
    pub fn context(&self) -> usize {
        self.kv.max_ctx()
    }

    /// Frees the weights and the KV cache at once (the model is unusable afterwards).
    pub fn destroy(&self) {
        self.weights().for_each(GpuTensor::destroy);
        for l in 0..self.kv.n_layers() {
            if let Some((k, v)) = self.kv.layer(l) {
                k.destroy();
                v.destroy();
            }
        }
    }

    /// Runs `tokens` (at most the graph's step size) at positions `offset..` (filling the KV
    /// cache there, as a step does), and returns every token's hidden state after the final
    /// norm, [tokens, hidden]: what a decoder-based embedder pools.
    pub async fn final_hidden(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Vec<f32>> {
        let mut rec = self.record_step(ctx, graph, StepInput::Host(tokens), offset, false)?;
        rec.dispatch(&graph.final_norm);
        let slot = rec.read(&graph.normed);
        let mut rows = rec.submit_and_read().await?.f32(slot)?;
        rows.truncate(tokens.len() * self.config.hidden);
        Ok(rows)
    }

    /// Runs several inputs packed one after another through a graph of
    /// [`Decoder::graph_packed`] (their tokens at most its step size in all) and returns their
    /// hidden states after the final norm, `[tokens, hidden]`, inputs in order.
    pub async fn final_hidden_packed(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        inputs: &[&[u32]],
    ) -> Result<Vec<f32>> {
        let Some(segments) = &graph.segments else {
            return Err(Error::ShapeMismatch {
                kernel: "step",
                detail: "packed inputs need a graph built for them (graph_packed)".into(),
            });
        };
        let tokens: Vec<u32> = inputs.concat();
        if tokens.len() > graph.step.max_tokens() {
            return Err(Error::ShapeMismatch {
                kernel: "step",
                detail: format!(
                    "{} packed tokens are more than the graph's step of {}",
                    tokens.len(),
                    graph.step.max_tokens()
                ),
            });
        }
        let mut pairs = Vec::with_capacity(2 * tokens.len());
        let mut first = 0;
        for input in inputs {
            let end = first + input.len();
            pairs.extend(input.iter().flat_map(|_| [first as i32, end as i32]));
            first = end;
        }
        ctx.write_i32(segments, &pairs)?;
        self.final_hidden(ctx, graph, &tokens, 0).await
    }

    /// Runs `tokens` (at most the graph's step size) at positions `offset..`, and returns the
    /// logits of every token, [tokens, vocab].
    pub async fn forward(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Vec<f32>> {
        let mut rec = self.record_step(ctx, graph, StepInput::Host(tokens), offset, true)?;
        let slot = rec.read(&graph.logits);
        let mut logits = rec.submit_and_read().await?.f32(slot)?;
        logits.truncate(tokens.len() * self.config.vocab);
        Ok(logits)
    }
}
