//! Sentence-embedding encoders on the GPU: the BERT family (all-MiniLM, bge, e5), described by a
//! sentence-transformers folder: `config.json` (the transformer), `modules.json` (which modules
//! follow it: pooling, normalisation) and `1_Pooling/config.json` (the pooling mode).
//!
//! The forward pass runs every token of the input at once: word, position and token-type
//! embeddings summed and LayerNormed, then per layer q, k and v projections (with biases),
//! bidirectional attention over the whole input (the KV cache holds the step's keys and values,
//! nothing is kept between inputs), the output projection added to the residual stream and
//! LayerNormed (post-LN), and the MLP (exact GELU) likewise. Pooling and normalisation of the
//! last hidden states run on the host, in f64.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::cpu::{CpuEncoder, HostTensor};
use crate::engine::Device;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor};
use crate::kernels::{self, AttentionOptions, AttentionScratch, KvCache, Linear, StepState};
use crate::load::LoadedModelFiles;
use crate::load::StoredTensor;
use crate::model::config::{
    config_error, Sizes, MAX_CONTEXT, MAX_FFN, MAX_HEADS, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB,
};
use crate::model::decoder::{stack, vectors_to_f32, Proj};
use crate::model::weights::expect;
use crate::text::Tokenizer;

/// How the token vectors become one embedding (sentence-transformers' Pooling module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the input's tokens.
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The last token's vector (decoder-based embedders).
    LastToken,
}

/// An encoder's description.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Inputs longer than this have no position embedding.
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub activation: kernels::GateActivation,
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (a `Normalize` module follows the pooling).
    pub normalize: bool,
    /// Inputs are cut to this many tokens, special tokens included (sentence-transformers'
    /// `max_seq_length`, at most `max_positions`).
    pub max_tokens: usize,
}

const MAX_TYPE_VOCAB: u64 = 1 << 10;

impl EncoderConfig {
    /// An input the encoder can run: 1 to `max_tokens` ids, each inside the vocabulary.
    pub fn check_input(&self, ids: &[u32]) -> Result<()> {
        let n = ids.len();
        if n == 0 || n > self.max_tokens {
            return Err(Error::ContextOverflow {
                prompt_tokens: n,
                context: self.max_tokens,
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the encoder's vocabulary of {}",
                self.vocab
            )));
        }
        Ok(())
    }

    /// From a sentence-transformers folder's companion files (`config.json`, and `modules.json`
    /// and `1_Pooling/config.json` when present: without them, mean pooling and no
    /// normalisation, as sentence-transformers assumes for a bare transformer). `source` names
    /// the model in errors.
    pub fn from_companions(companions: &BTreeMap<String, String>, source: &str) -> Result<Self> {
        let bad = |file: &str, detail: String| config_error(&format!("{source}/{file}"), detail);
        let json = |file: &str| -> Result<Option<Value>> {
            companions
                .get(file)
                .map(|text| {
                    serde_json::from_str(text)
                        .map_err(|e| bad(file, format!("not valid JSON: {e}")))
                })
                .transpose()
        };
        let v = json("config.json")?.ok_or_else(|| {
            bad(
                "config.json",
                "an encoder needs its config.json beside the weights, and there is none".into(),
            )
        })?;
        let model_type = v["model_type"].as_str().unwrap_or("");
        if model_type != "bert" {
            return Err(Error::UnsupportedArchitecture {
                source_name: source.to_string(),
                architecture: format!("{model_type} (as an encoder)"),
                supported: "bert",
            });
        }
        let cfg = format!("{source}/config.json");
        let sizes = Sizes::new(&cfg);
        let hidden = sizes.required(&v, "hidden_size", MAX_HIDDEN)?;
        let heads = sizes.required(&v, "num_attention_heads", MAX_HEADS)?;
        let layers = sizes.required(&v, "num_hidden_layers", MAX_LAYERS)?;
        let ffn = sizes.required(&v, "intermediate_size", MAX_FFN)?;
        let vocab = sizes.required(&v, "vocab_size", MAX_VOCAB)?;
        let max_positions = sizes.required(&v, "max_position_embeddings", MAX_CONTEXT)?;
        let type_vocab = sizes.check(
            "type_vocab_size",
            v["type_vocab_size"].as_u64().unwrap_or(2),
            MAX_TYPE_VOCAB,
        )?;
        if heads == 0 || hidden % heads != 0 || layers == 0 || type_vocab == 0 {
            return Err(bad(
                "config.json",
                format!(
                    "{hidden} hidden, {heads} heads, {layers} layers and {type_vocab} token \
                     types do not make an encoder (the heads must divide the hidden size)"
                ),
            ));
        }
        let head_dim = hidden / heads;
        sizes.check_width(heads, head_dim)?;
        let eps = v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
        let activation = match v["hidden_act"].as_str().unwrap_or("gelu") {
            "gelu" => kernels::GateActivation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => kernels::GateActivation::GeluTanh,
            other => {
                return Err(bad(
                    "config.json",
                    format!("activation '{other}' is not supported (supported: gelu, gelu_new)"),
                ))
            }
        };
        if v["position_embedding_type"]
            .as_str()
            .is_some_and(|t| t != "absolute")
        {
            return Err(bad(
                "config.json",
                format!(
                    "position_embedding_type '{}' is not supported (supported: absolute)",
                    v["position_embedding_type"]
                ),
            ));
        }

        let modules = json("modules.json")?;
        let types: Vec<&str> = modules
            .as_ref()
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|x| x["type"].as_str()).collect())
            .unwrap_or_default();
        let normalize = types.iter().any(|t| t.ends_with(".Normalize"));
        let pooling = match json("1_Pooling/config.json")? {
            None => Pooling::Mean,
            Some(p) => {
                let on = |k: &str| p[k].as_bool() == Some(true);
                let modes: Vec<Pooling> = [
                    ("pooling_mode_mean_tokens", Pooling::Mean),
                    ("pooling_mode_cls_token", Pooling::Cls),
                    ("pooling_mode_lasttoken", Pooling::LastToken),
                ]
                .into_iter()
                .filter(|(k, _)| on(k))
                .map(|(_, m)| m)
                .collect();
                let other = [
                    "pooling_mode_max_tokens",
                    "pooling_mode_mean_sqrt_len_tokens",
                    "pooling_mode_weightedmean_tokens",
                ]
                .into_iter()
                .find(|k| on(k));
                match (modes.as_slice(), other) {
                    ([mode], None) => *mode,
                    _ => {
                        return Err(bad(
                            "1_Pooling/config.json",
                            "exactly one pooling mode must be on, one of mean, cls and \
                             lasttoken (max, sqrt-length and weighted means are not supported)"
                                .into(),
                        ))
                    }
                }
            }
        };
        let max_tokens = match json("sentence_bert_config.json")? {
            Some(st) => match st["max_seq_length"].as_u64() {
                Some(m) if m > 0 => usize::try_from(m).unwrap_or(usize::MAX).min(max_positions),
                _ => {
                    return Err(bad(
                        "sentence_bert_config.json",
                        "max_seq_length must be a positive whole number".into(),
                    ))
                }
            },
            None => max_positions,
        };
        Ok(EncoderConfig {
            max_tokens,
            hidden,
            layers,
            heads,
            head_dim,
            ffn,
            vocab,
            max_positions,
            type_vocab,
            eps,
            activation,
            pooling,
            normalize,
        })
    }
}

/// An encoder's weights by role, wherever they live (GPU or host tensors), each checked against
/// the configuration: Hugging Face BERT names, with or without a `bert.` prefix.
pub struct EncoderWeights<T> {
    pub word: T,
    pub position: T,
    pub token_type: T,
    /// The embedding LayerNorm's weight and bias.
    pub embed_norm: (T, T),
    pub layers: Vec<EncoderLayerWeights<T>>,
}

/// One encoder layer's weights: (weight, bias) pairs.
pub struct EncoderLayerWeights<T> {
    pub q: (T, T),
    pub k: (T, T),
    pub v: (T, T),
    pub o: (T, T),
    pub attn_norm: (T, T),
    pub up: (T, T),
    pub down: (T, T),
    pub ffn_norm: (T, T),
}

impl<T: StoredTensor> EncoderWeights<T> {
    pub fn take(c: &EncoderConfig, tensors: &mut HashMap<String, T>) -> Result<Self> {
        let mut take = |name: &str, shape: &[usize]| -> Result<T> {
            let t = tensors
                .remove(name)
                .or_else(|| tensors.remove(&format!("bert.{name}")))
                .ok_or_else(|| Error::InvalidTensor {
                    tensor: name.to_string(),
                    detail: "is missing: the encoder needs it".into(),
                })?;
            expect(&t, shape)?;
            Ok(t)
        };
        let word = take("embeddings.word_embeddings.weight", &[c.vocab, c.hidden])?;
        let position = take(
            "embeddings.position_embeddings.weight",
            &[c.max_positions, c.hidden],
        )?;
        let token_type = take(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab, c.hidden],
        )?;
        let embed_norm = (
            take("embeddings.LayerNorm.weight", &[c.hidden])?,
            take("embeddings.LayerNorm.bias", &[c.hidden])?,
        );
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let mut pair = |name: &str, rows: usize, cols: Option<usize>| -> Result<(T, T)> {
                let p = |s: &str| format!("encoder.layer.{l}.{name}.{s}");
                let w = match cols {
                    Some(cols) => take(&p("weight"), &[rows, cols])?,
                    None => take(&p("weight"), &[rows])?,
                };
                Ok((w, take(&p("bias"), &[rows])?))
            };
            let (h, f) = (c.hidden, c.ffn);
            layers.push(EncoderLayerWeights {
                q: pair("attention.self.query", h, Some(h))?,
                k: pair("attention.self.key", h, Some(h))?,
                v: pair("attention.self.value", h, Some(h))?,
                o: pair("attention.output.dense", h, Some(h))?,
                attn_norm: pair("attention.output.LayerNorm", h, None)?,
                up: pair("intermediate.dense", f, Some(h))?,
                down: pair("output.dense", h, Some(f))?,
                ffn_norm: pair("output.LayerNorm", h, None)?,
            });
        }
        Ok(EncoderWeights {
            word,
            position,
            token_type,
            embed_norm,
            layers,
        })
    }
}

/// A linear layer's weight and bias.
struct Affine {
    w: GpuTensor,
    b: GpuTensor,
}

/// The options of `a`'s layer: its bias, added to the output's content when `accumulate` (the
/// residual stream).
fn biased(a: &Affine, accumulate: bool) -> Linear<'_> {
    Linear {
        bias: Some(&a.b),
        accumulate,
        ..Default::default()
    }
}

/// A LayerNorm's weight and bias.
struct Norm {
    w: GpuTensor,
    b: GpuTensor,
}

struct EncoderLayer {
    /// q, k and v stacked (when they share a format).
    qkv: Proj,
    o: Affine,
    attn_norm: Norm,
    up: Affine,
    down: Affine,
    ffn_norm: Norm,
}

/// An encoder in GPU memory.
pub struct Encoder {
    config: EncoderConfig,
    word: GpuTensor,
    position: GpuTensor,
    token_type: GpuTensor,
    embed_norm: Norm,
    layers: Vec<EncoderLayer>,
    /// Keys and values of the layer being run, for up to [`BATCH_TOKENS`] tokens (or one input
    /// of `max_tokens`): the layers run one after another, so one layer's cache serves all. f32:
    /// the exact path.
    kv: KvCache,
}

impl Encoder {
    /// Takes the loaded tensors (Hugging Face BERT names, with or without a `bert.` prefix)
    /// and checks each against the configuration.
    pub async fn new(
        ctx: &GpuContext,
        config: EncoderConfig,
        tensors: &mut HashMap<String, GpuTensor>,
    ) -> Result<Encoder> {
        let c = &config;
        let w = EncoderWeights::take(c, tensors)?;
        // The 1-D parameters go through one f32 conversion, in this order: the embedding norm,
        // then per layer q, k, v, o, up and down biases, attention norm, output norm.
        let mut vectors = vec![w.embed_norm.0, w.embed_norm.1];
        let mut mats = Vec::new();
        for l in w.layers {
            for (m, b) in [l.q, l.k, l.v, l.o, l.up, l.down] {
                mats.push(m);
                vectors.push(b);
            }
            for (nw, nb) in [l.attn_norm, l.ffn_norm] {
                vectors.push(nw);
                vectors.push(nb);
            }
        }
        let (word, position, token_type) = (w.word, w.position, w.token_type);
        let vectors = vectors_to_f32(ctx, vectors.into_iter().map(|t| (t, 0.0)).collect()).await?;
        let mut vectors = vectors.into_iter();
        let mut next = || vectors.next().expect("one vector per parameter taken");
        let embed_norm = Norm {
            w: next(),
            b: next(),
        };
        let mut mats = mats.into_iter();
        let mut layers = Vec::with_capacity(c.layers);
        for _ in 0..c.layers {
            let mut affine = || Affine {
                w: mats.next().expect("six matrices per layer"),
                b: next(),
            };
            let (q, k, v, o, up, down) =
                (affine(), affine(), affine(), affine(), affine(), affine());
            let attn_norm = Norm {
                w: next(),
                b: next(),
            };
            let ffn_norm = Norm {
                w: next(),
                b: next(),
            };
            let name = format!("encoder.layer.{}.attention.qkv", layers.len());
            let qkv = stack(
                ctx,
                &name,
                vec![q.w, k.w, v.w],
                vec![Some(q.b), Some(k.b), Some(v.b)],
            )
            .await?;
            layers.push(EncoderLayer {
                qkv,
                o,
                attn_norm,
                up,
                down,
                ffn_norm,
            });
        }
        let positions = BATCH_TOKENS.max(c.max_tokens);
        let kv = KvCache::with_dtype(ctx, 1, positions, c.heads, c.head_dim, DType::F32)?;
        Ok(Encoder {
            config,
            word,
            position,
            token_type,
            embed_norm,
            layers,
            kv,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The last hidden states of one input of token ids (token type 0), `[tokens, hidden]`
    /// row-major. The input must hold 1 to `max_tokens` tokens.
    pub async fn hidden_states(&self, ctx: &GpuContext, ids: &[u32]) -> Result<Vec<f32>> {
        self.hidden_states_packed(ctx, &[ids]).await
    }

    /// The last hidden states of several inputs in one pass: their tokens packed one after
    /// another (at most [`BATCH_TOKENS`] in all, or one input), so each matrix product runs once
    /// over all of them, and each token attending to its own input only. `[total tokens,
    /// hidden]` row-major, inputs in order; each input must hold 1 to `max_tokens` tokens.
    pub async fn hidden_states_packed(
        &self,
        ctx: &GpuContext,
        inputs: &[&[u32]],
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (mut ids, mut positions, mut segments) = (Vec::new(), Vec::new(), Vec::new());
        for input in inputs {
            c.check_input(input)?;
            let (first, end) = (ids.len() as i32, (ids.len() + input.len()) as i32);
            ids.extend(input.iter().map(|&x| x as i32));
            positions.extend(0..input.len() as i32);
            segments.extend(input.iter().flat_map(|_| [first, end]));
        }
        let n = ids.len();
        if inputs.len() > 1 && n > BATCH_TOKENS {
            return Err(Error::InvalidRequest(format!(
                "{} inputs of {n} tokens in all are more than the {BATCH_TOKENS} one pass packs",
                inputs.len()
            )));
        }
        if n == 0 {
            return Err(Error::InvalidRequest("there is no input to encode".into()));
        }
        let f32z = |name: &str, shape: &[usize]| ctx.zeros(name, shape, DType::F32);
        let ids_t = ctx.upload_i32("ids", &[n], &ids)?;
        let pos_t = ctx.upload_i32("positions", &[n], &positions)?;
        let types_t = ctx.upload_i32("token types", &[n], &vec![0; n])?;
        let segments = ctx.upload_i32("segments", &[n, 2], &segments)?;
        let mut step = StepState::new(ctx, n, n)?;
        step.set(ctx, 0, n)?;
        let x = f32z("x", &[n, c.hidden])?;
        let part = f32z("embedding part", &[n, c.hidden])?;
        let h = f32z("h", &[n, c.hidden])?;
        let h2 = f32z("h2", &[n, c.hidden])?;
        let width = c.heads * c.head_dim;
        let (q, k, v, o) = (
            f32z("q", &[n, width])?,
            f32z("k", &[n, width])?,
            f32z("v", &[n, width])?,
            f32z("o", &[n, width])?,
        );
        let heads = |t: &GpuTensor| t.reshape(&[n, c.heads, c.head_dim]);
        let (q3, k3, v3, o3) = (heads(&q)?, heads(&k)?, heads(&v)?, heads(&o)?);
        let inter = f32z("intermediate", &[n, c.ffn])?;
        let act = f32z("activation", &[n, c.ffn])?;

        let mut d: Vec<Dispatch> = vec![
            kernels::embed(ctx, &self.word, &ids_t, &x).await?,
            kernels::embed(ctx, &self.position, &pos_t, &part).await?,
            kernels::add_in_place(ctx, &x, &part).await?,
            kernels::embed(ctx, &self.token_type, &types_t, &part).await?,
            kernels::add_in_place(ctx, &x, &part).await?,
            kernels::layernorm(
                ctx,
                &x,
                &self.embed_norm.w,
                Some(&self.embed_norm.b),
                c.eps,
                &h,
            )
            .await?,
        ];
        let mut scratch: Option<AttentionScratch> = None;
        for w in &self.layers {
            let plain = Linear::default();
            d.extend(w.qkv.record(ctx, &h, &[&q, &k, &v], &plain).await?);
            d.push(kernels::kv_write(ctx, &step, &self.kv, 0, &k3, &v3).await?);
            let opts = AttentionOptions {
                scratch: scratch.clone(),
                bidirectional: true,
                segments: Some(segments.clone()),
                ..Default::default()
            };
            let att = kernels::attention(ctx, &step, &q3, &self.kv, 0, &o3, &opts).await?;
            scratch = att.scratch().cloned();
            d.extend(att.dispatches().iter().cloned());
            // h += o·Woᵀ + bo, then h2 = LayerNorm(h).
            d.push(kernels::linear_with(ctx, &w.o.w, &o, &h, &biased(&w.o, true)).await?);
            d.push(
                kernels::layernorm(ctx, &h, &w.attn_norm.w, Some(&w.attn_norm.b), c.eps, &h2)
                    .await?,
            );
            // h2 += act(h2·Wupᵀ + bup)·Wdownᵀ + bdown, then h = LayerNorm(h2).
            d.push(kernels::linear_with(ctx, &w.up.w, &h2, &inter, &biased(&w.up, false)).await?);
            d.push(match c.activation {
                kernels::GateActivation::GeluTanh => kernels::gelu(ctx, &inter, &act).await?,
                _ => kernels::gelu_erf(ctx, &inter, &act).await?,
            });
            d.push(kernels::linear_with(ctx, &w.down.w, &act, &h2, &biased(&w.down, true)).await?);
            d.push(
                kernels::layernorm(ctx, &h2, &w.ffn_norm.w, Some(&w.ffn_norm.b), c.eps, &h).await?,
            );
        }
        let mut rec = ctx.recorder();
        rec.dispatch_all(&d);
        let slot = rec.read(&h);
        let back = rec.submit_and_read().await?;
        // The step's buffers are freed when they drop here.
        back.f32(slot)
    }

    /// Frees the GPU memory.
    pub fn destroy(&self) {
        for t in [&self.word, &self.position, &self.token_type] {
            t.destroy();
        }
        let norms = std::iter::once(&self.embed_norm)
            .chain(self.layers.iter().flat_map(|l| [&l.attn_norm, &l.ffn_norm]));
        for n in norms {
            n.w.destroy();
            n.b.destroy();
        }
        for l in &self.layers {
            l.qkv.tensors().into_iter().for_each(GpuTensor::destroy);
            for a in [&l.o, &l.up, &l.down] {
                a.w.destroy();
                a.b.destroy();
            }
        }
        self.kv.destroy();
    }
}

/// The most tokens an encoder pass on the GPU packs together (and the positions of its K/V
/// cache): enough that the matrix products reuse each weight across many rows, small enough
/// that the activations of a base-size model stay within tens of MB.
pub const BATCH_TOKENS: usize = 2048;

/// The CPU packs fewer: its matrix products already reuse weights well at a few dozen rows, and
/// larger packs measured slower natively (activations out of cache): 0.77× the tokens/s of
/// one input at a time for 64 inputs of 32 tokens packed into 2048, parity at 256.
pub const CPU_BATCH_TOKENS: usize = 256;

/// An encoder on either backend (one per model: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyEncoder {
    Gpu(Encoder),
    Cpu(CpuEncoder),
}

impl AnyEncoder {
    pub fn config(&self) -> &EncoderConfig {
        match self {
            AnyEncoder::Gpu(e) => e.config(),
            AnyEncoder::Cpu(e) => e.config(),
        }
    }

    /// One input's embedding, on the device the encoder lives on.
    pub async fn embed(&self, dev: impl Into<Device<'_>>, ids: &[u32]) -> Result<Vec<f32>> {
        let mut one = self.embed_batch(dev, &[ids.to_vec()]).await?;
        Ok(one.pop().expect("one embedding per input"))
    }

    /// Several inputs' embeddings, in order: packed together, as many as fit in
    /// [`BATCH_TOKENS`] tokens per pass on the GPU and [`CPU_BATCH_TOKENS`] on the CPU (an
    /// input longer than that runs alone).
    pub async fn embed_batch(
        &self,
        dev: impl Into<Device<'_>>,
        inputs: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let dev = dev.into();
        let c = self.config();
        let mut out = Vec::with_capacity(inputs.len());
        let budget = match self {
            AnyEncoder::Gpu(_) => BATCH_TOKENS,
            AnyEncoder::Cpu(_) => CPU_BATCH_TOKENS,
        };
        let mut rest = inputs;
        while !rest.is_empty() {
            let mut total = 0;
            let take = rest
                .iter()
                .take_while(|ids| {
                    total += ids.len();
                    total <= budget
                })
                .count()
                .max(1);
            let (batch, after) = rest.split_at(take);
            let refs: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
            let hidden = match (self, dev) {
                (AnyEncoder::Gpu(e), Device::Gpu(ctx)) => {
                    e.hidden_states_packed(ctx, &refs).await?
                }
                (AnyEncoder::Cpu(e), Device::Cpu(cpu)) => e.hidden_states_packed(cpu, &refs)?,
                _ => {
                    return Err(Error::InvalidRequest(
                        "this embedding model was loaded on the other backend".into(),
                    ))
                }
            };
            let mut rows = hidden.as_slice();
            for ids in batch {
                let (mine, next) = rows.split_at(ids.len() * c.hidden);
                out.push(pool(mine, c.hidden, c.pooling, c.normalize));
                rows = next;
            }
            rest = after;
        }
        Ok(out)
    }

    pub fn destroy(&self) {
        if let AnyEncoder::Gpu(e) = self {
            e.destroy();
        }
    }
}

/// An encoder with its tokenizer: texts in, embeddings out.
pub struct Embedder {
    pub encoder: AnyEncoder,
    pub tokenizer: Tokenizer,
    /// The model's name, for errors and reports.
    pub name: String,
}

/// One input of [`Embedder::embed_inputs`]: a text (borrowed or owned), or token ids of the
/// model's vocabulary.
#[derive(Clone, Debug, PartialEq)]
pub enum EmbedInput<'a> {
    Text(std::borrow::Cow<'a, str>),
    Ids(Vec<u32>),
}

/// Whether a model's companion files describe a sentence-embedding encoder (a BERT
/// `config.json`) rather than a decoder.
pub fn is_encoder(companions: &BTreeMap<String, String>) -> bool {
    companions
        .get("config.json")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .is_some_and(|v| v["model_type"] == "bert")
}

/// One text's embedding and how many tokens it was.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub tokens: usize,
    /// The text was longer than the model's input and was cut.
    pub truncated: bool,
}

impl Embedder {
    /// From a loaded sentence-transformers folder: its tensors (taken) and companion files
    /// (`tokenizer.json` is required).
    pub async fn from_loaded(
        ctx: &GpuContext,
        model: &mut LoadedModelFiles,
        name: &str,
    ) -> Result<Embedder> {
        let (config, tokenizer) = Self::describe(&model.companions, name)?;
        let encoder = Encoder::new(ctx, config, &mut model.tensors).await?;
        Ok(Embedder {
            encoder: AnyEncoder::Gpu(encoder),
            tokenizer,
            name: name.to_string(),
        })
    }

    /// The same, for the CPU backend: the weights stay in host memory as loaded.
    pub fn from_loaded_cpu(
        model: &mut LoadedModelFiles<HostTensor>,
        name: &str,
    ) -> Result<Embedder> {
        let (config, tokenizer) = Self::describe(&model.companions, name)?;
        let encoder = CpuEncoder::new(config, &mut model.tensors)?;
        Ok(Embedder {
            encoder: AnyEncoder::Cpu(encoder),
            tokenizer,
            name: name.to_string(),
        })
    }

    /// The encoder's description and tokenizer from a folder's companion files.
    fn describe(
        companions: &BTreeMap<String, String>,
        name: &str,
    ) -> Result<(EncoderConfig, Tokenizer)> {
        let config = EncoderConfig::from_companions(companions, name)?;
        let tokenizer = match companions.get("tokenizer.json") {
            Some(json) => Tokenizer::from_json_str(json)?,
            None => {
                return Err(Error::Config {
                    source_name: format!("{name}/tokenizer.json"),
                    detail: "an embedding model needs its tokenizer.json beside the weights, \
                             and there is none"
                        .into(),
                })
            }
        };
        if tokenizer.vocab_size() > config.vocab {
            return Err(Error::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: config.vocab,
            });
        }
        Ok((config, tokenizer))
    }

    /// `text`'s token ids with the model's special tokens (BERT: `[CLS] … [SEP]`), cut to the
    /// model's input length when `truncate` (keeping the closing special token), else refused
    /// past it with `context_overflow`. Returns the ids and whether they were cut.
    pub fn tokenize(&self, text: &str, truncate: bool) -> Result<(Vec<u32>, bool)> {
        let mut ids = self.tokenizer.encode(text, true)?;
        let max = self.encoder.config().max_tokens;
        if ids.len() <= max {
            return Ok((ids, false));
        }
        if !truncate {
            return Err(Error::ContextOverflow {
                prompt_tokens: ids.len(),
                context: max,
            });
        }
        let last = *ids.last().expect("longer than max_tokens ≥ 1");
        ids.truncate(max);
        if let Some(end) = ids.last_mut() {
            *end = last;
        }
        Ok((ids, true))
    }

    /// Embeds the texts, batched as [`Embedder::embed_inputs`] does.
    pub async fn embed_texts(
        &self,
        dev: impl Into<Device<'_>>,
        texts: &[&str],
        truncate: bool,
    ) -> Result<Vec<Embedding>> {
        let inputs: Vec<EmbedInput<'_>> =
            texts.iter().map(|&t| EmbedInput::Text(t.into())).collect();
        self.embed_inputs(dev, &inputs, truncate).await
    }

    /// `input`'s token ids, checked: text is tokenized with the model's special tokens (see
    /// [`Embedder::tokenize`]); token ids are taken as they are, each below the vocabulary size,
    /// and cut to the model's input length when `truncate`. Empty inputs are refused.
    pub fn input_ids(
        &self,
        index: usize,
        input: &EmbedInput<'_>,
        truncate: bool,
    ) -> Result<(Vec<u32>, bool)> {
        let max = self.encoder.config().max_tokens;
        match input {
            EmbedInput::Text(text) if text.is_empty() => Err(Error::InvalidRequest(format!(
                "input {index} is an empty string: there is nothing to embed"
            ))),
            EmbedInput::Text(text) => self.tokenize(text, truncate),
            EmbedInput::Ids(ids) if ids.is_empty() => Err(Error::InvalidRequest(format!(
                "input {index} is an empty list of token ids"
            ))),
            EmbedInput::Ids(ids) => {
                let vocab = self.encoder.config().vocab;
                if let Some((i, &t)) = ids.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
                    return Err(Error::InvalidRequest(format!(
                        "input {index}: token id {t} (position {i}) is outside the vocabulary \
                         of {vocab} tokens"
                    )));
                }
                if ids.len() <= max {
                    Ok((ids.to_vec(), false))
                } else if truncate {
                    Ok((ids[..max].to_vec(), true))
                } else {
                    Err(Error::ContextOverflow {
                        prompt_tokens: ids.len(),
                        context: max,
                    })
                }
            }
        }
    }

    /// Embeds the inputs, batched as [`AnyEncoder::embed_batch`] does; every input is checked
    /// before any runs.
    pub async fn embed_inputs(
        &self,
        dev: impl Into<Device<'_>>,
        inputs: &[EmbedInput<'_>],
        truncate: bool,
    ) -> Result<Vec<Embedding>> {
        let (ids, truncated): (Vec<Vec<u32>>, Vec<bool>) = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| self.input_ids(i, input, truncate))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let vectors = self.encoder.embed_batch(dev, &ids).await?;
        Ok(vectors
            .into_iter()
            .zip(ids.iter().zip(truncated))
            .map(|(vector, (ids, truncated))| Embedding {
                vector,
                tokens: ids.len(),
                truncated,
            })
            .collect())
    }

    pub fn destroy(&self) {
        self.encoder.destroy();
    }
}

/// Pools `[tokens, hidden]` states into one vector (in f64, rounded once), L2-normalised when
/// `normalize` (a zero vector stays zero).
pub fn pool(hidden: &[f32], width: usize, pooling: Pooling, normalize: bool) -> Vec<f32> {
    let n = hidden.len() / width;
    let row = |t: usize| &hidden[t * width..(t + 1) * width];
    let mut v: Vec<f64> = match pooling {
        Pooling::Mean => {
            let mut sum = vec![0.0f64; width];
            for t in 0..n {
                for (s, &x) in sum.iter_mut().zip(row(t)) {
                    *s += f64::from(x);
                }
            }
            sum.iter().map(|s| s / n as f64).collect()
        }
        Pooling::Cls => row(0).iter().map(|&x| f64::from(x)).collect(),
        Pooling::LastToken => row(n - 1).iter().map(|&x| f64::from(x)).collect(),
    };
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    v.into_iter().map(|x| x as f32).collect()
}

/// The first `dimensions` values of an embedding (Matryoshka truncation), L2-normalised again
/// when `normalize` (as OpenAI's `dimensions` does for normalised models). `None` when
/// `dimensions` is 0 or more than the embedding has.
pub fn shorten(vector: &[f32], dimensions: usize, normalize: bool) -> Option<Vec<f32>> {
    if dimensions == 0 || dimensions > vector.len() {
        return None;
    }
    let mut v: Vec<f64> = vector[..dimensions].iter().map(|&x| f64::from(x)).collect();
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Some(v.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn companions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BERT: &str = r#"{"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4,
        "num_hidden_layers": 2, "intermediate_size": 64, "vocab_size": 128,
        "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu"}"#;

    #[test]
    fn a_sentence_transformers_folder_describes_the_encoder() {
        let modules = r#"[{"type": "sentence_transformers.models.Transformer"},
            {"type": "sentence_transformers.models.Pooling"},
            {"type": "sentence_transformers.models.Normalize"}]"#;
        let cls = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#;
        let c = EncoderConfig::from_companions(
            &companions(&[
                ("config.json", BERT),
                ("modules.json", modules),
                ("1_Pooling/config.json", cls),
                ("sentence_bert_config.json", r#"{"max_seq_length": 48}"#),
            ]),
            "m",
        )
        .unwrap();
        assert_eq!((c.max_positions, c.max_tokens), (64, 48));
        assert_eq!((c.hidden, c.heads, c.head_dim, c.layers), (32, 4, 8, 2));
        assert_eq!(c.pooling, Pooling::Cls);
        assert!(c.normalize);
        assert_eq!(c.activation, kernels::GateActivation::GeluErf);
        // A bare transformer: mean pooling, no normalisation.
        let bare =
            EncoderConfig::from_companions(&companions(&[("config.json", BERT)]), "m").unwrap();
        assert_eq!((bare.pooling, bare.normalize), (Pooling::Mean, false));
        assert_eq!(bare.max_tokens, 64);
    }

    #[test]
    fn bad_encoder_configurations_say_why() {
        let cases = [
            (BERT.replace("\"bert\"", "\"llama\""), "llama"),
            (BERT.replace("\"gelu\"", "\"relu\""), "activation 'relu'"),
            (
                BERT.replace(
                    "\"num_hidden_layers\": 2",
                    "\"num_hidden_layers\": 99999999",
                ),
                "over the limit",
            ),
            (
                BERT.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
                "heads must divide",
            ),
        ];
        for (json, want) in cases {
            let e = EncoderConfig::from_companions(&companions(&[("config.json", &json)]), "m")
                .unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        let two = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#;
        let e = EncoderConfig::from_companions(
            &companions(&[("config.json", BERT), ("1_Pooling/config.json", two)]),
            "m",
        )
        .unwrap_err();
        assert!(e.to_string().contains("exactly one pooling mode"), "{e}");
        let e = EncoderConfig::from_companions(&companions(&[]), "m").unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn pooling_by_hand() {
        let h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(pool(&h, 2, Pooling::Mean, false), vec![3.0, 4.0]);
        assert_eq!(pool(&h, 2, Pooling::Cls, false), vec![1.0, 2.0]);
        assert_eq!(pool(&h, 2, Pooling::LastToken, false), vec![5.0, 6.0]);
        assert_eq!(pool(&[3.0, 4.0], 2, Pooling::Cls, true), vec![0.6, 0.8]);
        assert_eq!(pool(&[0.0, 0.0], 2, Pooling::Cls, true), vec![0.0, 0.0]);
        assert_eq!(shorten(&[3.0, 4.0, 5.0], 2, true), Some(vec![0.6, 0.8]));
        assert_eq!(shorten(&[3.0, 4.0, 5.0], 2, false), Some(vec![3.0, 4.0]));
        assert_eq!(shorten(&[3.0], 2, true), None);
        assert_eq!(shorten(&[3.0], 0, true), None);
    }
}
