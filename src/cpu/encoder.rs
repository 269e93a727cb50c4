//! Sentence-embedding encoders on the CPU: the same description and weights as the GPU's
//! (`EncoderWeights`, `src/model/encoder.rs`), the same pass: embeddings summed and
//! LayerNormed, then per layer q, k and v with biases, bidirectional attention over the whole
//! input, the output projection added to the residual stream and LayerNormed (post-LN), and the
//! MLP (exact or tanh GELU) likewise. Weights stay in their stored format; activations are f32.

use std::collections::HashMap;

use crate::cpu::kernels::{self, AttentionShape};
use crate::cpu::{CpuContext, HostTensor};
use crate::error::Result;
use crate::kernels::GateActivation;
use crate::model::encoder::{EncoderConfig, EncoderWeights};

/// A (weight, bias) pair with the bias (or norm weight) in f32.
struct Affine {
    w: HostTensor,
    b: Vec<f32>,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    q: Affine,
    k: Affine,
    v: Affine,
    o: Affine,
    attn_norm: Norm,
    up: Affine,
    down: Affine,
    ffn_norm: Norm,
}

/// An encoder in host memory.
pub struct CpuEncoder {
    config: EncoderConfig,
    word: HostTensor,
    position: HostTensor,
    token_type: HostTensor,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

impl CpuEncoder {
    /// Takes the loaded tensors and checks each against the configuration.
    pub fn new(config: EncoderConfig, tensors: &mut HashMap<String, HostTensor>) -> Result<Self> {
        let w = EncoderWeights::take(&config, tensors)?;
        let affine = |(w, b): (HostTensor, HostTensor)| -> Result<Affine> {
            Ok(Affine { b: b.to_f32()?, w })
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
                    q: affine(l.q)?,
                    k: affine(l.k)?,
                    v: affine(l.v)?,
                    o: affine(l.o)?,
                    attn_norm: norm(l.attn_norm)?,
                    up: affine(l.up)?,
                    down: affine(l.down)?,
                    ffn_norm: norm(l.ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuEncoder {
            embed_norm: norm(w.embed_norm)?,
            word: w.word,
            position: w.position,
            token_type: w.token_type,
            layers,
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
        let a = |a: &Affine| t(&a.w) + v(&a.b);
        let n = |n: &Norm| v(&n.w) + v(&n.b);
        t(&self.word)
            + t(&self.position)
            + t(&self.token_type)
            + n(&self.embed_norm)
            + self
                .layers
                .iter()
                .map(|l| {
                    a(&l.q)
                        + a(&l.k)
                        + a(&l.v)
                        + a(&l.o)
                        + a(&l.up)
                        + a(&l.down)
                        + n(&l.attn_norm)
                        + n(&l.ffn_norm)
                })
                .sum::<u64>()
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
            for (table, r) in [(&self.position, position), (&self.token_type, 0)] {
                kernels::table_row(table, r, 1.0, &mut part)?;
                row.iter_mut().zip(&part).for_each(|(x, p)| *x += p);
            }
        }
        kernels::layernorm_in_place(&mut h, &self.embed_norm.w, &self.embed_norm.b, c.eps);
        let width = c.heads * c.head_dim;
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: None,
            softcap: None,
            bidirectional: true,
        };
        let linear = |a: &Affine, x: &[f32], y: &mut [f32], accumulate: bool| -> Result<()> {
            kernels::matmul(pool, &a.w, x, n, y, accumulate)?;
            kernels::add_bias(y, &a.b);
            Ok(())
        };
        let (mut q, mut k, mut v, mut o) = (
            vec![0f32; n * width],
            vec![0f32; n * width],
            vec![0f32; n * width],
            vec![0f32; n * width],
        );
        let mut inter = vec![0f32; n * c.ffn];
        let act = match c.activation {
            GateActivation::GeluTanh => kernels::gelu_tanh,
            _ => kernels::gelu_erf,
        };
        for l in &self.layers {
            linear(&l.q, &h, &mut q, false)?;
            linear(&l.k, &h, &mut k, false)?;
            linear(&l.v, &h, &mut v, false)?;
            kernels::attention_packed(pool, &shape, &q, &k, &v, &starts, &mut o);
            // h += o·Woᵀ + bo, then LayerNorm.
            linear(&l.o, &o, &mut h, true)?;
            kernels::layernorm_in_place(&mut h, &l.attn_norm.w, &l.attn_norm.b, c.eps);
            // h += act(h·Wupᵀ + bup)·Wdownᵀ + bdown, then LayerNorm.
            linear(&l.up, &h, &mut inter, false)?;
            inter.iter_mut().for_each(|x| *x = act(*x));
            linear(&l.down, &inter, &mut h, true)?;
            kernels::layernorm_in_place(&mut h, &l.ffn_norm.w, &l.ffn_norm.b, c.eps);
        }
        Ok(h)
    }
}
