//! Sentence-embedding encoders on the CPU: the same description and weights as the GPU's
//! (`EncoderWeights`, `src/model/encoder.rs`), the same pass: embeddings summed and
//! LayerNormed, then per layer q, k and v (with biases, or RoPE), bidirectional attention over
//! the whole input, the output projection added to the residual stream and LayerNormed
//! (post-LN), and the MLP (GELU, or gated SiLU) likewise. Weights stay in their stored format;
//! activations are f32.

use std::collections::HashMap;

use crate::cpu::kernels::{self, AttentionShape};
use crate::cpu::{CpuContext, HostTensor};
use crate::error::Result;
use crate::kernels::{RopeConfig, RopeLayout};
use crate::model::encoder::{EncoderConfig, EncoderNames, EncoderWeights, QkvWeights};

/// A (weight, bias) pair with the bias (or norm weight) in f32.
struct Affine {
    w: HostTensor,
    b: Option<Vec<f32>>,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

/// q, k and v as the checkpoint has them (one per layer: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum Qkv {
    Apart([Affine; 3]),
    /// q, k and v rows stacked in one matrix, no biases.
    Stacked(HostTensor),
}

struct Layer {
    qkv: Qkv,
    o: Affine,
    attn_norm: Norm,
    up: Affine,
    gate: Option<HostTensor>,
    down: Affine,
    ffn_norm: Norm,
}

/// An encoder in host memory.
pub struct CpuEncoder {
    config: EncoderConfig,
    word: HostTensor,
    position: Option<HostTensor>,
    token_type: HostTensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
    /// RoPE's cos/sin table (`max_tokens` positions) when the model rotates q and k.
    rope: Option<Vec<f32>>,
}

impl CpuEncoder {
    /// Takes the loaded tensors (named as `names` says) and checks each against the
    /// configuration.
    pub fn new(
        config: EncoderConfig,
        names: EncoderNames,
        tensors: &mut HashMap<String, HostTensor>,
    ) -> Result<Self> {
        let w = EncoderWeights::take(&config, names, tensors)?;
        let affine = |(w, b): (HostTensor, Option<HostTensor>)| -> Result<Affine> {
            Ok(Affine {
                b: b.map(|b| b.to_f32()).transpose()?,
                w,
            })
        };
        let norm = |(w, b): (HostTensor, HostTensor)| -> Result<Norm> {
            Ok(Norm {
                w: w.to_f32()?,
                b: b.to_f32()?,
            })
        };
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(Layer {
                    qkv: match l.qkv {
                        QkvWeights::Apart { q, k, v } => {
                            Qkv::Apart([affine(q)?, affine(k)?, affine(v)?])
                        }
                        QkvWeights::Stacked(m) => Qkv::Stacked(m),
                    },
                    o: affine(l.o)?,
                    attn_norm: norm(l.attn_norm)?,
                    up: affine(l.up)?,
                    gate: l.gate,
                    down: affine(l.down)?,
                    ffn_norm: norm(l.ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rope = match config.rope_theta {
            Some(theta) => Some(crate::kernels::rope_table_data(
                &RopeConfig::new(config.head_dim, theta, RopeLayout::NeoX),
                config.max_tokens,
                None,
                1.0,
            )?),
            None => None,
        };
        Ok(CpuEncoder {
            embed_norm: norm(w.embed_norm)?,
            word: w.word,
            position: w.position,
            token_type: w.token_type,
            layers,
            rope,
            config,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Bytes of host memory the weights take.
    pub fn host_bytes(&self) -> u64 {
        let t = |t: &HostTensor| t.bytes().len() as u64;
        let v = |v: &[f32]| 4 * v.len() as u64;
        let a = |a: &Affine| t(&a.w) + a.b.as_deref().map_or(0, v);
        let n = |n: &Norm| v(&n.w) + v(&n.b);
        let layer = |l: &Layer| {
            let qkv = match &l.qkv {
                Qkv::Apart(parts) => parts.iter().map(a).sum(),
                Qkv::Stacked(m) => t(m),
            };
            qkv + a(&l.o)
                + a(&l.up)
                + l.gate.as_ref().map_or(0, t)
                + a(&l.down)
                + n(&l.attn_norm)
                + n(&l.ffn_norm)
        };
        t(&self.word)
            + self.position.as_ref().map_or(0, t)
            + t(&self.token_type)
            + n(&self.embed_norm)
            + self.rope.as_deref().map_or(0, v)
            + self.layers.iter().map(layer).sum::<u64>()
    }

    /// The last hidden states of one input of token ids (token type 0), `[tokens, hidden]`
    /// row-major. The input must hold 1 to `max_tokens` tokens.
    pub fn hidden_states(&self, cpu: &CpuContext, ids: &[u32]) -> Result<Vec<f32>> {
        self.hidden_states_packed(cpu, &[ids])
    }

    /// The last hidden states of several inputs in one pass: their tokens packed one after
    /// another, so each matrix product runs once over all of them, and each token attending
    /// to its own input only. `[total tokens, hidden]` row-major, inputs in order; each input
    /// must hold 1 to `max_tokens` tokens.
    pub fn hidden_states_packed(&self, cpu: &CpuContext, inputs: &[&[u32]]) -> Result<Vec<f32>> {
        let c = &self.config;
        let hidden = c.hidden;
        let mut starts = Vec::with_capacity(inputs.len() + 1);
        starts.push(0);
        for ids in inputs {
            c.check_input(ids)?;
            starts.push(starts.last().copied().unwrap_or(0) + ids.len());
        }
        let n = starts.last().copied().unwrap_or(0);
        let pool = cpu.pool();
        let mut h = vec![0f32; n * hidden];
        let mut part = vec![0f32; hidden];
        let tokens = inputs
            .iter()
            .flat_map(|ids| ids.iter().enumerate().map(|(position, &id)| (position, id)));
        for ((position, id), row) in tokens.zip(h.chunks_exact_mut(hidden)) {
            kernels::table_row(&self.word, id as usize, 1.0, row)?;
            let tables = [
                self.position.as_ref().map(|t| (t, position)),
                Some((&self.token_type, 0)),
            ];
            for (table, r) in tables.into_iter().flatten() {
                kernels::table_row(table, r, 1.0, &mut part)?;
                row.iter_mut().zip(&part).for_each(|(x, p)| *x += p);
            }
        }
        kernels::layernorm_in_place(pool, &mut h, &self.embed_norm.w, &self.embed_norm.b, c.eps);
        let width = c.heads * c.head_dim;
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: None,
            softcap: None,
            bidirectional: true,
            ring: None,
        };
        let linear = |w: &HostTensor, b: Option<&[f32]>, x: &[f32], y: &mut [f32], acc: bool| {
            kernels::matmul(pool, w, x, n, y, acc)?;
            if let Some(b) = b {
                kernels::add_bias(y, b);
            }
            Result::Ok(())
        };
        let affine = |a: &Affine, x: &[f32], y: &mut [f32], acc: bool| {
            linear(&a.w, a.b.as_deref(), x, y, acc)
        };
        let (mut q, mut k, mut v, mut o) = (
            vec![0f32; n * width],
            vec![0f32; n * width],
            vec![0f32; n * width],
            vec![0f32; n * width],
        );
        let mut qkv = match self.layers.first().map(|l| &l.qkv) {
            Some(Qkv::Stacked(_)) => vec![0f32; n * 3 * width],
            _ => Vec::new(),
        };
        let mut inter = vec![0f32; n * c.ffn];
        let mut up = match c.gated {
            true => vec![0f32; n * c.ffn],
            false => Vec::new(),
        };
        for l in &self.layers {
            match &l.qkv {
                Qkv::Apart([wq, wk, wv]) => {
                    affine(wq, &h, &mut q, false)?;
                    affine(wk, &h, &mut k, false)?;
                    affine(wv, &h, &mut v, false)?;
                }
                Qkv::Stacked(m) => {
                    linear(m, None, &h, &mut qkv, false)?;
                    for (t, row) in qkv.chunks_exact(3 * width).enumerate() {
                        let at = t * width..(t + 1) * width;
                        q[at.clone()].copy_from_slice(&row[..width]);
                        k[at.clone()].copy_from_slice(&row[width..2 * width]);
                        v[at].copy_from_slice(&row[2 * width..]);
                    }
                }
            }
            if let Some(table) = &self.rope {
                // Each input's tokens at positions 0, 1, …
                for pair in starts.windows(2) {
                    let rows = pair[0] * width..pair[1] * width;
                    for x in [&mut q[rows.clone()], &mut k[rows]] {
                        kernels::rope(x, c.heads, c.head_dim, c.head_dim, true, table, 0);
                    }
                }
            }
            let cache = kernels::KvRows::F32 {
                keys: &k,
                values: &v,
            };
            kernels::attention_packed(pool, &shape, &q, cache, &starts, &mut o);
            // h += o·Woᵀ (+ bo), then LayerNorm.
            affine(&l.o, &o, &mut h, true)?;
            kernels::layernorm_in_place(pool, &mut h, &l.attn_norm.w, &l.attn_norm.b, c.eps);
            // h += MLP(h), then LayerNorm: act(h·Wupᵀ + bup)·Wdownᵀ + bdown, or gated
            // (act(h·Wgateᵀ) · h·Wupᵀ)·Wdownᵀ.
            match &l.gate {
                Some(gate) => {
                    affine(&l.up, &h, &mut up, false)?;
                    linear(gate, None, &h, &mut inter, false)?;
                    kernels::gated(pool, &mut inter, &up, c.activation);
                }
                None => {
                    affine(&l.up, &h, &mut inter, false)?;
                    kernels::activate(pool, &mut inter, c.activation);
                }
            }
            affine(&l.down, &inter, &mut h, true)?;
            kernels::layernorm_in_place(pool, &mut h, &l.ffn_norm.w, &l.ffn_norm.b, c.eps);
        }
        Ok(h)
    }
}
