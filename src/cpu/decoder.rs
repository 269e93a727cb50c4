//! The generic decoder on the CPU: the same [`ModelConfig`] and weights by role as the GPU's
//! [`crate::model::Decoder`], one step at a time, and the same [`Readout`] of the last token
//! (penalties, logit bias and a grammar's mask applied to the logits, then the greedy, Gumbel or
//! candidate pick), so the engine drives both backends with one loop.

use std::collections::HashMap;

use crate::cpu::kernels::{self, kv_f16, AttentionShape, KvRows};
use crate::cpu::{CpuContext, HostTensor};
use crate::error::{Error, Result};
use crate::kernels::{RopeConfig, RopeLayout, MASKED_LOGIT};
use crate::load::StoredTensor;
use crate::model::weights::DecoderWeights;
use crate::model::{LayerRope, LayerSpec, ModelConfig, Readout, StepOutput};
use crate::quant::DType;
use crate::sample::{
    argmax_index, canonical, gumbel_uniform, row_softmax_stats, top_of_row, SamplingPlan,
};

/// One layer's weights: matrices as stored, 1-D parameters in f32 (norm offsets applied).
struct Layer {
    spec: LayerSpec,
    attn_norm: Option<Vec<f32>>,
    /// One stacked matrix (q, k, v rows) or three.
    qkv: Vec<HostTensor>,
    /// q, k and v biases, concatenated.
    qkv_bias: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: HostTensor,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Option<Vec<f32>>,
    /// One stacked matrix (gate rows, then up) or two.
    gate_up: Vec<HostTensor>,
    down: HostTensor,
    post_ffn_norm: Option<Vec<f32>>,
}

/// Fewest positions the KV cache grows by at a time.
const KV_STEP: usize = 64;

/// A layer's keys and values, [positions, kv_heads, head_dim] each, grown as positions fill:
/// f32, or f16 as [`kv_f16`] rounds them (half the memory).
enum KvLayer {
    F32 { keys: Vec<f32>, values: Vec<f32> },
    F16 { keys: Vec<u16>, values: Vec<u16> },
}

impl KvLayer {
    fn new(dtype: DType) -> Self {
        match dtype {
            DType::F16 => KvLayer::F16 {
                keys: Vec::new(),
                values: Vec::new(),
            },
            _ => KvLayer::F32 {
                keys: Vec::new(),
                values: Vec::new(),
            },
        }
    }

    /// Grows keys and values to `len` values each. Capacity grows by a quarter (at least
    /// `step` values), up to `most` (the layer's positions): a cache filled to 2080 of 4096
    /// positions holds room for 2600, where doubling held 4096 (in wasm, memory once grown is
    /// never given back); the copies this costs are a few per doubling of the length.
    fn grow(&mut self, len: usize, step: usize, most: usize) {
        fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize, step: usize, most: usize) {
            if v.capacity() < len {
                let cap = v.capacity();
                let cap = (cap + (cap / 4).max(step)).min(most).max(len);
                v.reserve_exact(cap - v.len());
            }
            if v.len() < len {
                v.resize(len, T::default());
            }
        }
        match self {
            KvLayer::F32 { keys, values } => {
                grow(keys, len, step, most);
                grow(values, len, step, most);
            }
            KvLayer::F16 { keys, values } => {
                grow(keys, len, step, most);
                grow(values, len, step, most);
            }
        }
    }

    /// Writes one position's keys `k` and values `v` at value `at`.
    fn write(&mut self, at: usize, k: &[f32], v: &[f32]) {
        match self {
            KvLayer::F32 { keys, values } => {
                keys[at..at + k.len()].copy_from_slice(k);
                values[at..at + v.len()].copy_from_slice(v);
            }
            KvLayer::F16 { keys, values } => {
                for (d, &x) in keys[at..at + k.len()].iter_mut().zip(k) {
                    *d = kv_f16(x);
                }
                for (d, &x) in values[at..at + v.len()].iter_mut().zip(v) {
                    *d = kv_f16(x);
                }
            }
        }
    }

    /// The first `len` values of keys and values.
    fn rows(&self, len: usize) -> KvRows<'_> {
        match self {
            KvLayer::F32 { keys, values } => KvRows::F32 {
                keys: &keys[..len],
                values: &values[..len],
            },
            KvLayer::F16 { keys, values } => KvRows::F16 {
                keys: &keys[..len],
                values: &values[..len],
            },
        }
    }

    /// Bytes of memory held (capacity, not length).
    fn bytes(&self) -> u64 {
        match self {
            KvLayer::F32 { keys, values } => (keys.capacity() + values.capacity()) as u64 * 4,
            KvLayer::F16 { keys, values } => (keys.capacity() + values.capacity()) as u64 * 2,
        }
    }

    fn cleared(&self) -> Self {
        match self {
            KvLayer::F32 { .. } => KvLayer::new(DType::F32),
            KvLayer::F16 { .. } => KvLayer::new(DType::F16),
        }
    }
}

/// A decoder-only transformer on the CPU: weights in host memory, an f32 or f16 KV cache, RoPE
/// tables.
pub struct CpuDecoder {
    pub config: ModelConfig,
    embed: HostTensor,
    output: HostTensor,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    kv: Vec<KvLayer>,
    /// Positions each layer's cache holds ([`crate::model::decoder::kv_slots`]).
    slots: Vec<usize>,
    max_ctx: usize,
    /// The most tokens a step may carry, when sliding-window layers keep a ring.
    max_step: Option<usize>,
    rope: Vec<f32>,
    rope_local: Option<Vec<f32>>,
    /// The last step's logits of its last token, as picked from (penalties, bias, mask applied).
    last_logits: Vec<f32>,
}

/// The one part of a table the host holds (host loads never split a matrix).
fn whole(parts: Vec<(usize, HostTensor)>) -> Result<HostTensor> {
    let mut it = parts.into_iter();
    match (it.next(), it.next()) {
        (Some((_, t)), None) => Ok(t),
        (first, _) => Err(Error::InvalidTensor {
            tensor: first.map(|(_, t)| t.name().to_string()).unwrap_or_default(),
            detail: "is split into parts, which only GPU loads make".into(),
        }),
    }
}

impl CpuDecoder {
    /// Takes the loaded tensors (checked against the configuration) and prepares a KV cache of
    /// up to `max_ctx` positions in `kv_dtype` (f32, or f16 for half the memory; as
    /// [`crate::model::Decoder::new`]).
    pub fn new(
        config: ModelConfig,
        tensors: HashMap<String, HostTensor>,
        max_ctx: usize,
        kv_dtype: DType,
    ) -> Result<Self> {
        Self::with_max_step(config, tensors, max_ctx, kv_dtype, None)
    }

    /// As [`CpuDecoder::new`], for steps of at most `max_step` tokens: sliding-window layers
    /// then keep only the positions their window needs, as a ring
    /// ([`crate::model::decoder::kv_slots`]), and a longer step is refused.
    pub fn with_max_step(
        config: ModelConfig,
        tensors: HashMap<String, HostTensor>,
        max_ctx: usize,
        kv_dtype: DType,
        max_step: Option<usize>,
    ) -> Result<Self> {
        if !matches!(kv_dtype, DType::F32 | DType::F16) {
            return Err(Error::InvalidRequest(format!(
                "the KV cache is f16 or f32, not {kv_dtype:?}"
            )));
        }
        let c = &config;
        let w = DecoderWeights::take(c, tensors)?;
        let vector = |t: &HostTensor, offset: f32| -> Result<Vec<f32>> {
            let mut v = t.to_f32()?;
            if offset != 0.0 {
                v.iter_mut().for_each(|x| *x += offset);
            }
            Ok(v)
        };
        let mut out_norm = vector(&w.out_norm, c.norm_offset)?;
        let scale = c.out_norm_scale();
        if scale != 1.0 {
            out_norm.iter_mut().for_each(|x| *x *= scale);
        }
        let mut layers = Vec::with_capacity(c.layers);
        for (l, raw) in w.layers.into_iter().enumerate() {
            let vectors = raw
                .vectors(c.norm_offset)
                .into_iter()
                .map(|(t, o)| vector(t, o))
                .collect::<Result<Vec<_>>>()?;
            let r = raw.map(&mut vectors.into_iter(), |m| m);
            let qkv_bias = if r.qkv_bias.iter().all(Option::is_some) && !r.qkv_bias.is_empty() {
                Some(r.qkv_bias.into_iter().flatten().flatten().collect())
            } else {
                None
            };
            layers.push(Layer {
                spec: c.layer_specs[l],
                attn_norm: r.attn_norm,
                qkv: r.qkv,
                qkv_bias,
                q_norm: r.q_norm,
                k_norm: r.k_norm,
                o: r.o,
                post_attn_norm: r.post_attn_norm,
                ffn_norm: r.ffn_norm,
                gate_up: r.gate_up,
                down: r.down,
                post_ffn_norm: r.post_ffn_norm,
            });
        }
        let factors = w
            .rope_factors
            .iter()
            .map(|t| t.as_ref().map(HostTensor::to_f32).transpose())
            .collect::<Result<Vec<_>>>()?;
        let (factors, mscale) = crate::model::decoder::rope_scaling_of(
            c,
            max_ctx,
            factors.try_into().expect("three factor roles"),
        );
        let rope = crate::kernels::rope_table_data(&c.rope, max_ctx, factors.as_deref(), mscale)?;
        let rope_local = match c.rope_local {
            Some(r) => Some(crate::kernels::rope_table_data(&r, max_ctx, None, 1.0)?),
            None => None,
        };
        let embed = whole(w.embed)?;
        let output = match w.output {
            Some(parts) => whole(parts)?,
            None => embed.clone(),
        };
        let kv = (0..c.layers).map(|_| KvLayer::new(kv_dtype)).collect();
        let slots = crate::model::decoder::kv_slots(c, max_ctx, max_step);
        Ok(CpuDecoder {
            config,
            embed,
            output,
            out_norm,
            layers,
            kv,
            slots,
            max_ctx,
            max_step,
            rope,
            rope_local,
            last_logits: Vec::new(),
        })
    }

    /// Positions the KV cache can hold.
    pub fn context(&self) -> usize {
        self.max_ctx
    }

    /// Whether a step from position `reuse` finds the window it needs in the KV cache after
    /// steps wrote up to `written` ([`crate::model::decoder::kv_reusable`]).
    pub fn kv_reusable(&self, reuse: usize, written: usize) -> bool {
        crate::model::decoder::kv_reusable(&self.config, &self.slots, self.max_ctx, reuse, written)
    }

    /// Bytes of host memory the weights and the KV cache (as filled so far) take.
    pub fn host_bytes(&self) -> (u64, u64) {
        let mut weights = self.embed.size_bytes();
        if self.output.bytes().as_ptr() != self.embed.bytes().as_ptr() {
            weights += self.output.size_bytes();
        }
        for l in &self.layers {
            let mats = l.qkv.iter().chain(&l.gate_up).chain([&l.o, &l.down]);
            weights += mats.map(StoredTensor::size_bytes).sum::<u64>();
        }
        let kv = self.kv.iter().map(KvLayer::bytes).sum();
        (weights, kv)
    }

    /// Frees the KV cache's memory.
    pub fn clear_cache(&mut self) {
        self.kv.iter_mut().for_each(|l| *l = l.cleared());
    }

    /// Runs `tokens` at positions `offset..` through the model and returns what `readout` asks
    /// of the last token's logits; `mask` (one bit per token id) restricts a pick to the tokens
    /// a grammar allows.
    pub fn step(
        &mut self,
        cpu: &CpuContext,
        tokens: &[u32],
        offset: usize,
        readout: Readout<'_>,
        mask: Option<Vec<u32>>,
    ) -> Result<StepOutput> {
        let n = tokens.len();
        let x = self.forward(cpu, tokens, offset, None)?;
        if readout == Readout::Nothing {
            return Ok(StepOutput::Nothing);
        }
        let mut logits = self.head(cpu, &x[(n - 1) * self.config.hidden..])?;
        let out = pick(&mut logits, readout, mask.as_deref())?;
        self.last_logits = logits;
        Ok(out)
    }

    /// Every token's hidden state after the final norm, [tokens, hidden], of several inputs
    /// packed one after another from position 0 (which fills the KV cache there), each
    /// attending within its own input (RoPE rotates by the pass's positions, which keeps every
    /// distance within an input): what a decoder-based embedder pools.
    pub fn final_hidden_packed(&mut self, cpu: &CpuContext, inputs: &[&[u32]]) -> Result<Vec<f32>> {
        let tokens: Vec<u32> = inputs.concat();
        let mut starts = Vec::with_capacity(inputs.len() + 1);
        let mut first = 0;
        for input in inputs {
            starts.push(first);
            first += input.len();
        }
        starts.push(first);
        let x = self.forward(cpu, &tokens, 0, Some(&starts))?;
        let mut normed = vec![0f32; x.len()];
        kernels::rmsnorm(&x, &self.out_norm, self.config.rms_eps, &mut normed);
        Ok(normed)
    }

    /// The logits [tokens, vocab] of every token of a step at positions `offset..` (which
    /// fills the KV cache there, as a step does).
    pub fn forward_logits(
        &mut self,
        cpu: &CpuContext,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Vec<f32>> {
        let x = self.forward(cpu, tokens, offset, None)?;
        self.head(cpu, &x)
    }

    /// The final norm and the LM head (with the final soft-cap) of hidden-state rows.
    fn head(&self, cpu: &CpuContext, x: &[f32]) -> Result<Vec<f32>> {
        let c = &self.config;
        let rows = x.len() / c.hidden;
        let mut normed = vec![0f32; x.len()];
        kernels::rmsnorm(x, &self.out_norm, c.rms_eps, &mut normed);
        let mut logits = vec![0f32; rows * c.vocab];
        kernels::matmul(cpu.pool(), &self.output, &normed, rows, &mut logits, false)?;
        if let Some(cap) = c.final_softcap {
            logits
                .iter_mut()
                .for_each(|l| *l = kernels::softcap(*l, cap));
        }
        Ok(logits)
    }

    /// The last step's row of logits as its pick saw them.
    pub fn last_logits(&self) -> Vec<f32> {
        self.last_logits.clone()
    }

    /// The hidden states [n, hidden] after the last layer, for `tokens` at positions
    /// `offset..` (at least one, within the KV cache).
    ///
    /// With `starts` (offset 0), the tokens are inputs packed one after another (each input's
    /// first row, then the number of rows), each attending within its own input only.
    fn forward(
        &mut self,
        cpu: &CpuContext,
        tokens: &[u32],
        offset: usize,
        starts: Option<&[usize]>,
    ) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n == 0 || offset + n > self.max_ctx {
            return Err(Error::ContextOverflow {
                prompt_tokens: offset + n,
                context: self.max_ctx,
            });
        }
        if let Some(m) = self.max_step.filter(|&m| n > m) {
            return Err(Error::InvalidRequest(format!(
                "a step of {n} tokens, more than the {m} this decoder's KV cache was sized for"
            )));
        }
        let c = &self.config;
        let pool = cpu.pool();
        let (hd, qw, kvw) = (c.head_dim, c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let mut x = vec![0f32; n * c.hidden];
        let scale = c.embed_scale.unwrap_or(1.0);
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= c.vocab {
                return Err(Error::InvalidRequest(format!(
                    "token {id} is outside the model's vocabulary of {}",
                    c.vocab
                )));
            }
            let row = &mut x[t * c.hidden..(t + 1) * c.hidden];
            kernels::table_row(&self.embed, id as usize, scale, row)?;
        }
        let mut xn = vec![0f32; n * c.hidden];
        let mut qkv = vec![0f32; n * (qw + 2 * kvw)];
        let (mut q, mut k, mut v) = (vec![0f32; n * qw], vec![0f32; n * kvw], vec![0f32; n * kvw]);
        let mut att = vec![0f32; n * qw];
        let mut gu = vec![0f32; n * 2 * c.ffn];
        let mut gate = vec![0f32; n * c.ffn];
        let mut up = vec![0f32; n * c.ffn];
        let mut h = vec![0f32; n * c.hidden];
        let end = offset + n;
        for (l, w) in self.layers.iter().enumerate() {
            pre_norm(&x, w.attn_norm.as_deref(), c.rms_eps, &mut xn);
            // q, k, v: one stacked product, or one per part.
            if let [stacked] = w.qkv.as_slice() {
                kernels::matmul(pool, stacked, &xn, n, &mut qkv, false)?;
                for t in 0..n {
                    let row = &qkv[t * (qw + 2 * kvw)..(t + 1) * (qw + 2 * kvw)];
                    q[t * qw..(t + 1) * qw].copy_from_slice(&row[..qw]);
                    k[t * kvw..(t + 1) * kvw].copy_from_slice(&row[qw..qw + kvw]);
                    v[t * kvw..(t + 1) * kvw].copy_from_slice(&row[qw + kvw..]);
                }
            } else {
                for (part, out) in w.qkv.iter().zip([&mut q, &mut k, &mut v]) {
                    kernels::matmul(pool, part, &xn, n, out, false)?;
                }
            }
            if let Some(b) = &w.qkv_bias {
                for (out, bias) in [
                    (&mut q, &b[..qw]),
                    (&mut k, &b[qw..qw + kvw]),
                    (&mut v, &b[qw + kvw..]),
                ] {
                    for row in out.chunks_exact_mut(bias.len()) {
                        row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
                    }
                }
            }
            if let (Some(gq), Some(gk)) = (&w.q_norm, &w.k_norm) {
                kernels::rmsnorm_in_place(&mut q, gq, c.rms_eps);
                kernels::rmsnorm_in_place(&mut k, gk, c.rms_eps);
            }
            let table: Option<(&Vec<f32>, &RopeConfig)> = match w.spec.rope {
                LayerRope::Global => Some((&self.rope, &c.rope)),
                LayerRope::Local => self.rope_local.as_ref().zip(c.rope_local.as_ref()),
                LayerRope::None => None,
            };
            if let Some((table, r)) = table {
                let neox = r.layout == RopeLayout::NeoX;
                kernels::rope(&mut q, c.heads, hd, r.rotary_dim, neox, table, offset);
                kernels::rope(&mut k, c.kv_heads, hd, r.rotary_dim, neox, table, offset);
            }
            let cache = &mut self.kv[l];
            // Position p in row p % slots: in order, or a ring for a sliding window's layer.
            let slots = self.slots[l];
            let rows = end.min(slots);
            cache.grow(rows * kvw, KV_STEP * kvw, slots * kvw);
            for t in 0..n {
                let at = (offset + t) % slots * kvw;
                cache.write(at, &k[t * kvw..(t + 1) * kvw], &v[t * kvw..(t + 1) * kvw]);
            }
            let shape = AttentionShape {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: hd,
                scale: c.attn_scale,
                window: w.spec.window,
                softcap: c.attn_softcap,
                bidirectional: c.bidirectional,
                ring: (slots < self.max_ctx).then_some(slots),
            };
            let rows = cache.rows(rows * kvw);
            match starts {
                Some(starts) => kernels::attention_packed(pool, &shape, &q, rows, starts, &mut att),
                None => kernels::attention(pool, &shape, &q, rows, offset, &mut att),
            }
            match &w.post_attn_norm {
                Some(g) => {
                    kernels::matmul(pool, &w.o, &att, n, &mut h, false)?;
                    kernels::rmsnorm_add(&h, g, c.rms_eps, &mut x);
                }
                None => kernels::matmul(pool, &w.o, &att, n, &mut x, true)?,
            }
            pre_norm(&x, w.ffn_norm.as_deref(), c.rms_eps, &mut xn);
            if let [stacked] = w.gate_up.as_slice() {
                kernels::matmul(pool, stacked, &xn, n, &mut gu, false)?;
                for t in 0..n {
                    let row = &gu[t * 2 * c.ffn..(t + 1) * 2 * c.ffn];
                    gate[t * c.ffn..(t + 1) * c.ffn].copy_from_slice(&row[..c.ffn]);
                    up[t * c.ffn..(t + 1) * c.ffn].copy_from_slice(&row[c.ffn..]);
                }
            } else {
                kernels::matmul(pool, &w.gate_up[0], &xn, n, &mut gate, false)?;
                kernels::matmul(pool, &w.gate_up[1], &xn, n, &mut up, false)?;
            }
            kernels::gated(pool, &mut gate, &up, c.activation);
            match &w.post_ffn_norm {
                Some(g) => {
                    kernels::matmul(pool, &w.down, &gate, n, &mut h, false)?;
                    kernels::rmsnorm_add(&h, g, c.rms_eps, &mut x);
                }
                None => kernels::matmul(pool, &w.down, &gate, n, &mut x, true)?,
            }
        }
        Ok(x)
    }
}

/// A block's input to its attention or MLP: RMSNorm with `norm`'s weight, or the stream as it
/// is where the block has no pre-norm (OLMo 2).
fn pre_norm(x: &[f32], norm: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    match norm {
        Some(w) => kernels::rmsnorm(x, w, eps, out),
        None => out.copy_from_slice(x),
    }
}

/// What the GPU's sampling kernels do after a step, on the host: penalties, logit bias and the
/// grammar's mask applied to `logits` (in place), then the pick `readout` asks for.
fn pick(logits: &mut [f32], readout: Readout<'_>, mask: Option<&[u32]>) -> Result<StepOutput> {
    let Readout::Sample {
        plan,
        draw,
        penalties,
        biases,
        with_candidates,
        // The CPU backend finishes truncating draws from its row.
        nucleus: _,
    } = readout
    else {
        return Ok(StepOutput::Logits(logits.to_vec()));
    };
    for &(token, count) in penalties {
        if let Some(l) = logits.get_mut(token as usize) {
            let mut v = *l;
            if v <= 0.0 {
                v *= draw.repetition;
            } else {
                v /= draw.repetition;
            }
            *l = v - (count as f32 * draw.frequency + draw.presence);
        }
    }
    for &(token, bias) in biases {
        if let Some(l) = logits.get_mut(token as usize) {
            *l += bias;
        }
    }
    if let Some(words) = mask {
        for (i, l) in logits.iter_mut().enumerate() {
            if words.get(i / 32).is_none_or(|w| (w >> (i % 32)) & 1 == 0) {
                *l = MASKED_LOGIT;
            }
        }
    }
    let candidates = || {
        let (max, sum) = row_softmax_stats(logits);
        (
            top_of_row(logits, crate::engine::CANDIDATES),
            (max, sum as f32),
        )
    };
    let token = match plan {
        SamplingPlan::Greedy => argmax_index(logits.iter().map(|&l| canonical(l))),
        SamplingPlan::Gumbel => {
            let key = u64::from(draw.key_lo) | (u64::from(draw.key_hi) << 32);
            argmax_index(logits.iter().enumerate().map(|(i, &l)| {
                let u = gumbel_uniform(key, draw.row, i as u32);
                canonical(l) * draw.inv_temp - (-u.ln()).ln()
            }))
        }
        SamplingPlan::Candidates => {
            let (candidates, stats) = candidates();
            return Ok(StepOutput::Candidates { candidates, stats });
        }
        SamplingPlan::FullRow => return Ok(StepOutput::Logits(logits.to_vec())),
    };
    if with_candidates {
        let (candidates, stats) = candidates();
        return Ok(StepOutput::TokenAndCandidates {
            token,
            candidates,
            stats,
        });
    }
    Ok(StepOutput::Token(token))
}
