//! The Llama-family forward pass as a fixed graph of kernel dispatches: every buffer and bind
//! group is made once, for a number of tokens per step; a step writes the token ids and the
//! per-step uniform, records the graph into one command buffer and submits it once.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor};
use crate::kernels::{
    self, AttentionOptions, AttentionScratch, KvCache, Linear, RopeTable, StepState, TopK,
};
use crate::model::ModelConfig;

/// The weights of one layer.
struct Layer {
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
    pub logits: GpuTensor,
    pub dispatches: Vec<Dispatch>,
    /// The best candidates of every token's logits, computed on the GPU so a step reads back
    /// 8·k bytes per token instead of the vocabulary.
    candidates: TopK,
}

impl LlamaModel {
    /// Takes the loaded tensors (GGUF or Hugging Face names) and makes a KV cache of `max_ctx`
    /// positions in `kv_dtype` (f32 for the exact path; f16 halves its memory).
    pub fn new(
        ctx: &GpuContext,
        config: ModelConfig,
        mut tensors: HashMap<String, GpuTensor>,
        max_ctx: usize,
        kv_dtype: DType,
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
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let mlp: Vec<&str> = n[12].split('|').collect();
            let req = |t: Option<GpuTensor>| t.expect("required");
            layers.push(Layer {
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
        let kv = KvCache::with_dtype(
            ctx,
            config.layers,
            max_ctx,
            config.kv_heads,
            config.head_dim,
            kv_dtype,
        )?;
        let rope = RopeTable::new(ctx, config.rope, max_ctx)?;
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
        let c = &self.config;
        let t = max_tokens;
        let step = StepState::new(ctx, t, self.kv.max_ctx())?;
        let f32z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32);
        let ids = ctx.zeros("ids", &[t], DType::I32)?;
        let x = f32z("x", &[t, c.hidden])?;
        let h = f32z("h", &[t, c.hidden])?;
        let q = f32z("q", &[t, c.heads * c.head_dim])?;
        let k = f32z("k", &[t, c.kv_heads * c.head_dim])?;
        let v = f32z("v", &[t, c.kv_heads * c.head_dim])?;
        let o = f32z("o", &[t, c.heads * c.head_dim])?;
        let g = f32z("gate", &[t, c.ffn])?;
        let u = f32z("up", &[t, c.ffn])?;
        let a = f32z("act", &[t, c.ffn])?;
        let logits = f32z("logits", &[t, c.vocab])?;
        let q3 = q.reshape(&[t, c.heads, c.head_dim])?;
        let k3 = k.reshape(&[t, c.kv_heads, c.head_dim])?;
        let v3 = v.reshape(&[t, c.kv_heads, c.head_dim])?;
        let o3 = o.reshape(&[t, c.heads, c.head_dim])?;

        let mut d = vec![kernels::embed(ctx, &self.embed, &ids, &x).await?];
        let mut scratch: Option<AttentionScratch> = None;
        for (l, w) in self.layers.iter().enumerate() {
            d.push(kernels::rmsnorm(ctx, &x, &w.attn_norm, c.rms_eps, &h).await?);
            for (weight, bias, out) in [
                (&w.q, &w.q_bias, &q),
                (&w.k, &w.k_bias, &k),
                (&w.v, &w.v_bias, &v),
            ] {
                let opts = Linear {
                    bias: bias.as_ref(),
                    ..Default::default()
                };
                d.push(kernels::linear_with(ctx, weight, &h, out, &opts).await?);
            }
            d.push(kernels::rope_qk(ctx, &self.rope, &step, &q3, &k3).await?);
            d.push(kernels::kv_write(ctx, &step, &self.kv, l, &k3, &v3).await?);
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
            d.push(kernels::rmsnorm(ctx, &x, &w.ffn_norm, c.rms_eps, &h).await?);
            d.push(kernels::linear(ctx, &w.gate, &h, &g).await?);
            d.push(kernels::linear(ctx, &w.up, &h, &u).await?);
            d.push(kernels::swiglu(ctx, &g, &u, &a).await?);
            d.push(kernels::linear_with(ctx, &w.down, &a, &x, &residual).await?);
        }
        d.push(kernels::rmsnorm(ctx, &x, &self.out_norm, c.rms_eps, &h).await?);
        d.push(kernels::linear(ctx, &self.output, &h, &logits).await?);
        let out = kernels::topk_output(ctx, "candidates", &logits, candidates)?;
        let candidates = kernels::topk(ctx, &logits, candidates, &out).await?;
        Ok(Graph {
            step,
            ids,
            logits,
            dispatches: d,
            candidates,
        })
    }

    /// Runs `tokens` at positions `offset..` and reads back only each token's best candidates
    /// ((token, logit), best first): one submit, a few hundred bytes per token.
    pub async fn forward_candidates(
        &self,
        ctx: &GpuContext,
        graph: &mut Graph,
        tokens: &[u32],
        offset: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        graph.step.set(ctx, offset, tokens.len())?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        ctx.write_i32(&graph.ids, &ids)?;
        let mut rec = ctx.recorder();
        rec.dispatch_all(&graph.dispatches);
        let slot = graph.candidates.record(&mut rec);
        let readback = rec.submit_and_read().await?;
        let mut rows = graph.candidates.read(&readback, slot)?;
        rows.truncate(tokens.len());
        Ok(rows)
    }

    /// Greedy generation: the prompt through `prefill` (in chunks of its step size), then
    /// `max_new` tokens one at a time through `decode`, each the best candidate of the last.
    pub async fn generate_greedy(
        &self,
        ctx: &GpuContext,
        prefill: &mut Graph,
        decode: &mut Graph,
        prompt: &[u32],
        max_new: usize,
    ) -> Result<Vec<u32>> {
        let mut offset = 0;
        let mut next = None;
        for chunk in prompt.chunks(prefill.step.max_tokens()) {
            let rows = self.forward_candidates(ctx, prefill, chunk, offset).await?;
            offset += chunk.len();
            next = rows.last().and_then(|r| r.first()).map(|c| c.0);
        }
        let mut out = Vec::with_capacity(max_new);
        while let Some(token) = next {
            out.push(token);
            if out.len() >= max_new {
                break;
            }
            let rows = self
                .forward_candidates(ctx, decode, &[token], offset)
                .await?;
            offset += 1;
            next = rows.first().and_then(|r| r.first()).map(|c| c.0);
        }
        Ok(out)
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
        graph.step.set(ctx, offset, tokens.len())?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        ctx.write_i32(&graph.ids, &ids)?;
        let mut rec = ctx.recorder();
        rec.dispatch_all(&graph.dispatches);
        let slot = rec.read(&graph.logits);
        let mut logits = rec.submit_and_read().await?.f32(slot)?;
        logits.truncate(tokens.len() * self.config.vocab);
        Ok(logits)
    }
}
