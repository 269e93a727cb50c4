//! The Llama-family forward pass as a fixed graph of kernel dispatches: every buffer and bind
//! group is made once, for a number of tokens per step; a step writes the token ids and the
//! per-step uniform, records the graph into one command buffer and submits it once.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Recorder};
use crate::kernels::{
    self, AttentionOptions, AttentionScratch, KvCache, Linear, RopeTable, StepState, TopK,
};
use crate::model::ModelConfig;

/// The weights of one layer as the checkpoint has them.
struct RawLayer {
    attn_norm: GpuTensor,
    q: GpuTensor,
    k: GpuTensor,
    v: GpuTensor,
    q_bias: Option<GpuTensor>,
    k_bias: Option<GpuTensor>,
    v_bias: Option<GpuTensor>,
    o: GpuTensor,
    ffn_norm: GpuTensor,
    gate: GpuTensor,
    up: GpuTensor,
    down: GpuTensor,
}

/// The weights of one layer on the GPU: q, k and v stacked into one projection (one dispatch
/// writes the three outputs), and gate and up into one (one dispatch applies SwiGLU).
struct Layer {
    attn_norm: GpuTensor,
    qkv: GpuTensor,
    qkv_bias: Option<GpuTensor>,
    o: GpuTensor,
    ffn_norm: GpuTensor,
    gate_up: GpuTensor,
    down: GpuTensor,
}

impl Layer {
    /// Stacks the projections (GPU copies); the parts are freed.
    async fn fuse(ctx: &GpuContext, l: usize, raw: RawLayer) -> Result<Layer> {
        let qkv =
            kernels::concat_rows(ctx, &format!("blk.{l}.qkv"), &[&raw.q, &raw.k, &raw.v]).await?;
        let qkv_bias = match (&raw.q_bias, &raw.k_bias, &raw.v_bias) {
            (Some(q), Some(k), Some(v)) => {
                Some(kernels::concat_rows(ctx, &format!("blk.{l}.qkv_bias"), &[q, k, v]).await?)
            }
            _ => None,
        };
        let gate_up =
            kernels::concat_rows(ctx, &format!("blk.{l}.gate_up"), &[&raw.gate, &raw.up]).await?;
        for t in [&raw.q, &raw.k, &raw.v, &raw.gate, &raw.up]
            .into_iter()
            .chain(
                [&raw.q_bias, &raw.k_bias, &raw.v_bias]
                    .into_iter()
                    .flatten(),
            )
        {
            t.destroy();
        }
        Ok(Layer {
            attn_norm: raw.attn_norm,
            qkv,
            qkv_bias,
            o: raw.o,
            ffn_norm: raw.ffn_norm,
            gate_up,
            down: raw.down,
        })
    }

    fn tensors(&self) -> impl Iterator<Item = &GpuTensor> {
        [
            &self.attn_norm,
            &self.qkv,
            &self.o,
            &self.ffn_norm,
            &self.gate_up,
            &self.down,
        ]
        .into_iter()
        .chain(&self.qkv_bias)
    }
}

/// The tensor names of a checkpoint: GGUF's (`blk.N.attn_q.weight`) or Hugging Face's
/// (`model.layers.N.self_attn.q_proj.weight`).
fn names(gguf: bool) -> [&'static str; 13] {
    if gguf {
        [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "blk.{}.attn_norm.weight",
            "blk.{}.attn_q.weight",
            "blk.{}.attn_k.weight",
            "blk.{}.attn_v.weight",
            "blk.{}.attn_q.bias",
            "blk.{}.attn_k.bias",
            "blk.{}.attn_v.bias",
            "blk.{}.attn_output.weight",
            "blk.{}.ffn_norm.weight",
            "blk.{}.ffn_gate.weight|blk.{}.ffn_up.weight|blk.{}.ffn_down.weight",
        ]
    } else {
        [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.{}.input_layernorm.weight",
            "model.layers.{}.self_attn.q_proj.weight",
            "model.layers.{}.self_attn.k_proj.weight",
            "model.layers.{}.self_attn.v_proj.weight",
            "model.layers.{}.self_attn.q_proj.bias",
            "model.layers.{}.self_attn.k_proj.bias",
            "model.layers.{}.self_attn.v_proj.bias",
            "model.layers.{}.self_attn.o_proj.weight",
            "model.layers.{}.post_attention_layernorm.weight",
            "model.layers.{}.mlp.gate_proj.weight|model.layers.{}.mlp.up_proj.weight|model.layers.{}.mlp.down_proj.weight",
        ]
    }
}

/// Every weight must have the shape the configuration implies; the error names the first that
/// does not (a checkpoint whose config does not match its weights would otherwise fail deep in a
/// kernel, or compute garbage).
fn check_shapes(
    c: &ModelConfig,
    embed: &GpuTensor,
    out_norm: &GpuTensor,
    output: &GpuTensor,
    layers: &[RawLayer],
) -> Result<()> {
    let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let expect = |t: &GpuTensor, shape: &[usize]| -> Result<()> {
        if t.shape() == shape {
            Ok(())
        } else {
            Err(Error::InvalidTensor {
                tensor: t.name().to_string(),
                detail: format!(
                    "has shape {:?}, but the model's configuration needs {shape:?}",
                    t.shape()
                ),
            })
        }
    };
    expect(embed, &[c.vocab, c.hidden])?;
    expect(out_norm, &[c.hidden])?;
    expect(output, &[c.vocab, c.hidden])?;
    for w in layers {
        expect(&w.attn_norm, &[c.hidden])?;
        expect(&w.q, &[q, c.hidden])?;
        expect(&w.k, &[kv, c.hidden])?;
        expect(&w.v, &[kv, c.hidden])?;
        for (bias, n) in [(&w.q_bias, q), (&w.k_bias, kv), (&w.v_bias, kv)] {
            if let Some(b) = bias {
                expect(b, &[n])?;
            }
        }
        expect(&w.o, &[c.hidden, q])?;
        expect(&w.ffn_norm, &[c.hidden])?;
        expect(&w.gate, &[c.ffn, c.hidden])?;
        expect(&w.up, &[c.ffn, c.hidden])?;
        expect(&w.down, &[c.hidden, c.ffn])?;
    }
    Ok(())
}

/// What a step reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    /// Nothing: an intermediate prefill chunk (the submit does not wait).
    Nothing,
    /// The GPU's best candidates of the last token's logits.
    Candidates,
    /// The last token's whole row of logits.
    Logits,
}

/// What a step read back (see [`Readout`]).
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutput {
    Nothing,
    /// (token, logit), best first.
    Candidates(Vec<(u32, f32)>),
    /// [vocab], indexed by token id.
    Logits(Vec<f32>),
}

/// A Llama-family model on the GPU: weights, KV cache and the prefill graph.
pub struct LlamaModel {
    pub config: ModelConfig,
    embed: GpuTensor,
    out_norm: GpuTensor,
    output: GpuTensor,
    layers: Vec<Layer>,
    kv: KvCache,
    rope: RopeTable,
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
    /// The best candidates of every token's logits, computed on the GPU so a step reads back
    /// 8·k bytes per token instead of the vocabulary.
    candidates: TopK,
}

impl Graph {
    /// Every dispatch of a step, in order: the forward pass, then the selection of candidates.
    pub fn all_dispatches(&self) -> Vec<Dispatch> {
        let mut all = self.dispatches.clone();
        all.extend(self.candidates.dispatches().iter().cloned());
        all
    }
}

impl LlamaModel {
    /// Takes the loaded tensors (GGUF or Hugging Face names) and makes a KV cache of `max_ctx`
    /// positions in `kv_dtype` (f32 for the exact path; f16 halves its memory).
    pub async fn new(
        ctx: &GpuContext,
        config: ModelConfig,
        tensors: HashMap<String, GpuTensor>,
        max_ctx: usize,
        kv_dtype: DType,
    ) -> Result<Self> {
        Self::with_rope_factors(ctx, config, tensors, max_ctx, kv_dtype, None).await
    }

    /// As [`LlamaModel::new`], with RoPE frequencies divided by `rope_factors` (GGUF's
    /// `rope_freqs.weight`: Llama 3.1+ frequency scaling stored as data).
    pub async fn with_rope_factors(
        ctx: &GpuContext,
        config: ModelConfig,
        mut tensors: HashMap<String, GpuTensor>,
        max_ctx: usize,
        kv_dtype: DType,
        rope_factors: Option<&[f32]>,
    ) -> Result<Self> {
        let gguf = tensors.contains_key("token_embd.weight");
        let n = names(gguf);
        let mut take = |pattern: &str, layer: usize, required: bool| -> Result<Option<GpuTensor>> {
            let name = pattern.replace("{}", &layer.to_string());
            match tensors.remove(&name) {
                Some(t) => Ok(Some(t)),
                None if !required => Ok(None),
                None => Err(Error::InvalidTensor {
                    tensor: name,
                    detail: "the model has no such tensor".into(),
                }),
            }
        };
        let embed = take(n[0], 0, true)?.expect("required");
        let out_norm = take(n[1], 0, true)?.expect("required");
        let output = match take(n[2], 0, !config.tied_embeddings)? {
            Some(t) => t,
            None => embed.clone(),
        };
        let mut raw = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let mlp: Vec<&str> = n[12].split('|').collect();
            let req = |t: Option<GpuTensor>| t.expect("required");
            raw.push(RawLayer {
                attn_norm: req(take(n[3], l, true)?),
                q: req(take(n[4], l, true)?),
                k: req(take(n[5], l, true)?),
                v: req(take(n[6], l, true)?),
                q_bias: take(n[7], l, config.qkv_bias)?,
                k_bias: take(n[8], l, config.qkv_bias)?,
                v_bias: take(n[9], l, config.qkv_bias)?,
                o: req(take(n[10], l, true)?),
                ffn_norm: req(take(n[11], l, true)?),
                gate: req(take(mlp[0], l, true)?),
                up: req(take(mlp[1], l, true)?),
                down: req(take(mlp[2], l, true)?),
            });
        }
        check_shapes(&config, &embed, &out_norm, &output, &raw)?;
        let mut layers = Vec::with_capacity(config.layers);
        for (l, r) in raw.into_iter().enumerate() {
            layers.push(Layer::fuse(ctx, l, r).await?);
        }
        let kv = KvCache::with_dtype(
            ctx,
            config.layers,
            max_ctx,
            config.kv_heads,
            config.head_dim,
            kv_dtype,
        )?;
        let rope = match rope_factors {
            Some(f) => RopeTable::with_freq_factors(ctx, config.rope, max_ctx, f)?,
            None => RopeTable::new(ctx, config.rope, max_ctx)?,
        };
        Ok(LlamaModel {
            config,
            embed,
            out_norm,
            output,
            layers,
            kv,
            rope,
        })
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

    /// As [`LlamaModel::graph`]; with `all_logits` false only the last token of a step gets
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
        let c = &self.config;
        let t = max_tokens;
        let step = StepState::new(ctx, t, positions)?;
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

        let mut d = vec![kernels::embed(ctx, &self.embed, &ids, &x).await?];
        let mut scratch: Option<AttentionScratch> = None;
        // Per layer: the QKV projection with the attention norm as its prologue, RoPE with the
        // cache write, attention (1 or 2 dispatches), the output projection with the residual
        // add, the gate/up projection with the MLP norm as its prologue and SwiGLU, and the down
        // projection with the residual add: 7 or 8 dispatches.
        for (l, w) in self.layers.iter().enumerate() {
            let opts = Linear {
                bias: w.qkv_bias.as_ref(),
                norm: Some((&w.attn_norm, c.rms_eps)),
                ..Default::default()
            };
            d.push(kernels::linear_split(ctx, &w.qkv, &x, &[&q, &k, &v], &opts).await?);
            d.push(
                kernels::rope_kv_write(ctx, &self.rope, &step, &q3, &k3, &v3, &self.kv, l).await?,
            );
            let opts = AttentionOptions {
                scratch: scratch.clone(),
                ..Default::default()
            };
            let att = kernels::attention(ctx, &step, &q3, &self.kv, l, &o3, &opts).await?;
            scratch = att.scratch().cloned();
            d.extend(att.dispatches().iter().cloned());
            let residual = Linear {
                accumulate: true,
                ..Default::default()
            };
            d.push(kernels::linear_with(ctx, &w.o, &o, &x, &residual).await?);
            let ffn = Linear {
                norm: Some((&w.ffn_norm, c.rms_eps)),
                ..Default::default()
            };
            d.push(kernels::linear_swiglu(ctx, &w.gate_up, &x, &a, &ffn).await?);
            d.push(kernels::linear_with(ctx, &w.down, &a, &x, &residual).await?);
        }
        // The final norm is the output projection's prologue.
        let head = Linear {
            norm: Some((&self.out_norm, c.rms_eps)),
            ..Default::default()
        };
        // Only the last token's logits: gather its row of x (an embedding lookup in an f32
        // table, at the index `last` holds), then norm and project one row.
        let last = if t > 1 && !all_logits {
            let last = ctx.zeros("last token", &[1], DType::I32)?;
            let row = f32z("last row", &[1, c.hidden])?;
            d.push(kernels::embed(ctx, &x, &last, &row).await?);
            d.push(kernels::linear_with(ctx, &self.output, &row, &logits, &head).await?);
            Some(last)
        } else {
            d.push(kernels::linear_with(ctx, &self.output, &x, &logits, &head).await?);
            None
        };
        let out = kernels::topk_output(ctx, "candidates", &logits, candidates)?;
        let candidates = kernels::topk(ctx, &logits, candidates, &out).await?;
        Ok(Graph {
            step,
            ids,
            last,
            logits,
            dispatches: d,
            candidates,
        })
    }

    /// Runs one step of `tokens` (at most the graph's step size) at positions `offset..`, and
    /// reads back what `readout` asks for, of the step's last token. One submit; with
    /// [`Readout::Nothing`] it does not wait for the GPU.
    pub async fn step(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
        readout: Readout,
    ) -> Result<StepOutput> {
        let n = tokens.len();
        let mut rec = self.record_step(ctx, graph, tokens, offset)?;
        // The row of the last token in `logits`.
        let row = if graph.logits.rows() == 1 { 0 } else { n - 1 };
        match readout {
            Readout::Nothing => {
                rec.submit()?;
                Ok(StepOutput::Nothing)
            }
            Readout::Candidates => {
                let slot = graph.candidates.record(&mut rec);
                let readback = rec.submit_and_read().await?;
                let mut rows = graph.candidates.read(&readback, slot)?;
                Ok(StepOutput::Candidates(rows.swap_remove(row)))
            }
            Readout::Logits => {
                let slot = rec.read(&graph.logits);
                let all = rec.submit_and_read().await?.f32(slot)?;
                let v = self.config.vocab;
                Ok(StepOutput::Logits(all[row * v..(row + 1) * v].to_vec()))
            }
        }
    }

    /// Checks a step's tokens, writes its uniform and token ids, and records its dispatches.
    fn record_step<'c>(
        &self,
        ctx: &'c GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Recorder<'c>> {
        let n = tokens.len();
        if n == 0 {
            return Err(Error::ShapeMismatch {
                kernel: "step",
                detail: "a step needs at least one token".into(),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(Error::InvalidTensor {
                tensor: "token ids".into(),
                detail: format!(
                    "token {bad} is outside the model's vocabulary of {}",
                    self.config.vocab
                ),
            });
        }
        graph.step.set(ctx, offset, n)?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        ctx.write_i32(&graph.ids, &ids)?;
        if let Some(last) = &graph.last {
            ctx.write_i32(last, &[n as i32 - 1])?;
        }
        let mut rec = ctx.recorder();
        rec.dispatch_all(&graph.dispatches);
        Ok(rec)
    }

    /// Every weight tensor, once (a tied output projection is the embedding table).
    fn weights(&self) -> impl Iterator<Item = &GpuTensor> {
        let output = (!self.config.tied_embeddings).then_some(&self.output);
        [&self.embed, &self.out_norm]
            .into_iter()
            .chain(output)
            .chain(self.layers.iter().flat_map(Layer::tensors))
    }

    /// The GPU memory of the weights, and of the KV cache with the RoPE table, in bytes.
    pub fn gpu_bytes(&self) -> (u64, u64) {
        let weights = self.weights().map(GpuTensor::size_bytes).sum();
        (weights, self.kv.size_bytes() + self.rope.size_bytes())
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

    /// Runs `tokens` (at most the graph's step size) at positions `offset..`, and returns the
    /// logits of every token, [tokens, vocab].
    pub async fn forward(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Vec<f32>> {
        let mut rec = self.record_step(ctx, graph, tokens, offset)?;
        let slot = rec.read(&graph.logits);
        let mut logits = rec.submit_and_read().await?.f32(slot)?;
        logits.truncate(tokens.len() * self.config.vocab);
        Ok(logits)
    }
}
