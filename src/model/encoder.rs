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
use crate::formats::GgufMetadata;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor};
use crate::kernels::{
    self, AttentionOptions, AttentionScratch, KvCache, Linear, RopeConfig, RopeLayout, RopeTable,
    StepState,
};
use crate::load::LoadedModelFiles;
use crate::load::StoredTensor;
use crate::model::config::{
    config_error, Sizes, MAX_CONTEXT, MAX_FFN, MAX_HEADS, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB,
};
use crate::model::decoder::{stack, vectors_to_f32, Proj};
use crate::model::decoder_embedder::{
    CpuDecoderEmbedder, GpuDecoderEmbedder, MAX_DECODER_EMBED_TOKENS,
};
use crate::model::dense::{self, Dense};
use crate::model::weights::expect;
use crate::model::{Architecture, ModelConfig};
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

/// The encoder families: one pass, described by these settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderArch {
    /// BERT (all-MiniLM, bge, e5): absolute position embeddings, biases everywhere, GELU MLP.
    Bert,
    /// nomic-embed-text (`nomic_bert`): RoPE instead of position embeddings, no biases, SwiGLU.
    NomicBert,
    /// A decoder of one of the chat architectures, its causal attention kept (Qwen3-Embedding):
    /// `src/model/decoder_embedder.rs`.
    Decoder(Architecture),
}

impl EncoderArch {
    fn from_model_type(t: &str) -> Option<Self> {
        match t {
            "bert" => Some(EncoderArch::Bert),
            "nomic_bert" => Some(EncoderArch::NomicBert),
            _ => None,
        }
    }

    /// From a GGUF file's `general.architecture`.
    fn from_gguf_name(t: &str) -> Option<Self> {
        match t {
            "bert" => Some(EncoderArch::Bert),
            "nomic-bert" => Some(EncoderArch::NomicBert),
            _ => None,
        }
    }
}

/// The encoder architectures, as error messages list them.
const SUPPORTED: &str = "bert, nomic_bert (GGUF: bert, nomic-bert)";

/// An encoder's description.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderConfig {
    pub arch: EncoderArch,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// Rows of the position-embedding table (BERT); with RoPE, the longest input the model was
    /// trained on.
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    /// The MLP's activation: of its one projection, or of the gate (`gated`).
    pub activation: kernels::GateActivation,
    /// RoPE (NeoX layout, every dimension) of this base on q and k, in place of position
    /// embeddings.
    pub rope_theta: Option<f32>,
    /// q, k, v, the output projection and both MLP projections have biases.
    pub biases: bool,
    /// The MLP is `down(act(gate(x)) · up(x))` rather than `down(act(up(x)))`.
    pub gated: bool,
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (a `Normalize` module follows the pooling).
    pub normalize: bool,
    /// Inputs are cut to this many tokens, special tokens included (sentence-transformers'
    /// `max_seq_length`, at most `max_positions`).
    pub max_tokens: usize,
    /// Projections of the pooled vector before normalisation (sentence-transformers' `Dense`
    /// modules: EmbeddingGemma's), in order.
    pub dense: Vec<Dense>,
}

const MAX_TYPE_VOCAB: u64 = 1 << 10;

/// The sizes every encoder has, checked against the limits and each other.
struct Shape {
    hidden: usize,
    heads: usize,
    layers: usize,
    ffn: usize,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
}

impl Shape {
    fn check(self, sizes: &Sizes<'_>, source: &str) -> Result<(Self, usize)> {
        let Shape {
            hidden,
            heads,
            layers,
            type_vocab,
            ..
        } = self;
        if heads == 0 || hidden % heads != 0 || layers == 0 || type_vocab == 0 {
            return Err(config_error(
                source,
                format!(
                    "{hidden} hidden, {heads} heads, {layers} layers and {type_vocab} token \
                     types do not make an encoder (the heads must divide the hidden size)"
                ),
            ));
        }
        let head_dim = hidden / heads;
        sizes.check_width(heads, head_dim)?;
        Ok((self, head_dim))
    }
}

impl EncoderConfig {
    /// The length of the model's embeddings: the last `Dense` module's outputs, else the
    /// hidden size.
    pub fn dimensions(&self) -> usize {
        self.dense.last().map_or(self.hidden, |d| d.out_features)
    }

    /// One input's embedding from its hidden states (`[tokens, hidden]`): pooled, projected by
    /// the `Dense` modules, and L2-normalised when the model says so.
    pub fn embedding(&self, hidden: &[f32]) -> Vec<f32> {
        let mut v = pool(hidden, self.hidden, self.pooling);
        for d in &self.dense {
            v = d.apply(&v);
        }
        if self.normalize {
            l2_normalize(&mut v);
        }
        v.into_iter().map(|x| x as f32).collect()
    }

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

    /// One line for `pocketlm info`.
    pub fn describe(&self) -> String {
        let mlp = match (self.gated, self.activation) {
            (true, kernels::GateActivation::Silu) => "SwiGLU".to_string(),
            (true, a) => format!("gated {a:?}"),
            (false, a) => format!("{a:?}"),
        };
        let positions = match self.rope_theta {
            Some(theta) => format!("RoPE base {theta}"),
            None => "absolute positions".to_string(),
        };
        format!(
            "encoder: {:?}, {} layers, hidden {}, {} heads of {}, MLP {} ({mlp}{}), vocabulary \
             {}, {positions}, inputs up to {} tokens, {:?} pooling{}{}",
            self.arch,
            self.layers,
            self.hidden,
            self.heads,
            self.head_dim,
            self.ffn,
            if self.biases {
                ", biases"
            } else {
                ", no biases"
            },
            self.vocab,
            self.max_tokens,
            self.pooling,
            self.dense
                .iter()
                .map(|d| format!(", dense {}→{}", d.in_features, d.out_features))
                .collect::<String>(),
            if self.normalize { ", normalised" } else { "" },
        )
    }

    /// The description from its parts, shared by both sources.
    #[allow(clippy::too_many_arguments)]
    fn build(
        arch: EncoderArch,
        (shape, head_dim): (Shape, usize),
        eps: f32,
        activation: kernels::GateActivation,
        rope_theta: Option<f32>,
        pooling: Pooling,
        normalize: bool,
        max_tokens: usize,
    ) -> Self {
        let nomic = arch == EncoderArch::NomicBert;
        EncoderConfig {
            arch,
            hidden: shape.hidden,
            layers: shape.layers,
            heads: shape.heads,
            head_dim,
            ffn: shape.ffn,
            vocab: shape.vocab,
            max_positions: shape.max_positions,
            type_vocab: shape.type_vocab,
            eps,
            activation,
            rope_theta,
            biases: !nomic,
            gated: nomic,
            pooling,
            normalize,
            max_tokens: max_tokens.min(shape.max_positions),
            dense: Vec::new(),
        }
    }

    /// From a sentence-transformers folder's companion files (`config.json`, and `modules.json`
    /// and `1_Pooling/config.json` when present: without them, mean pooling and no
    /// normalisation, as sentence-transformers assumes for a bare transformer). `source` names
    /// the model in errors. `config.json` is a BERT's, or nomic-embed-text's as the Hub has it
    /// (its remote code's `n_embd`, `n_layer`, … names).
    pub fn from_companions(companions: &BTreeMap<String, String>, source: &str) -> Result<Self> {
        let v = companion_json(companions, source, "config.json")?.ok_or_else(|| {
            companion_error(
                source,
                "config.json",
                "an encoder needs its config.json beside the weights, and there is none".into(),
            )
        })?;
        let model_type = v["model_type"].as_str().unwrap_or("");
        let arch = EncoderArch::from_model_type(model_type).ok_or_else(|| {
            Error::UnsupportedArchitecture {
                source_name: source.to_string(),
                architecture: format!("{model_type} (as an encoder)"),
                supported: SUPPORTED,
            }
        })?;
        let cfg = format!("{source}/config.json");
        let sizes = Sizes::new(&cfg);
        let (shape, eps, activation, rope_theta) = match arch {
            EncoderArch::Bert => bert_settings(&v, &sizes, &cfg)?,
            EncoderArch::NomicBert | EncoderArch::Decoder(_) => nomic_settings(&v, &sizes, &cfg)?,
        };
        let shape = shape.check(&sizes, &cfg)?;

        let (pooling, normalize, max_tokens) = sentence_transformers_modules(companions, source)?;
        Ok(Self::build(
            arch, shape, eps, activation, rope_theta, pooling, normalize, max_tokens,
        ))
    }

    /// A sentence-transformers folder's description from its companion files and its `Dense`
    /// modules' weights ([`crate::model::dense::from_folder`]): an encoder's
    /// ([`EncoderConfig::from_companions`]), or a decoder's that pools
    /// ([`EncoderConfig::for_decoder`], with the decoder's).
    pub fn from_folder(
        companions: &BTreeMap<String, String>,
        module_weights: &BTreeMap<String, Vec<u8>>,
        source: &str,
    ) -> Result<(Self, Option<ModelConfig>)> {
        let (mut config, decoder) = match companions.get("config.json") {
            Some(json) if config_encoder_arch(companions).is_none() && pools(companions) => {
                let m = ModelConfig::from_hf_json(json, &format!("{source}/config.json"))?;
                (Self::for_decoder(&m, companions, source)?, Some(m))
            }
            _ => (Self::from_companions(companions, source)?, None),
        };
        config.dense = dense::from_folder(companions, module_weights, config.hidden, source)?;
        Ok((config, decoder))
    }

    /// A GGUF embedding model's description: an encoder's ([`EncoderConfig::from_gguf`]), or
    /// a decoder's with a pooling type ([`EncoderConfig::for_decoder_gguf`], with the
    /// decoder's).
    pub fn from_any_gguf(
        meta: &GgufMetadata,
        files: &crate::formats::ModelFiles,
    ) -> Result<(Self, Option<ModelConfig>)> {
        if EncoderArch::from_gguf_name(meta.architecture()?).is_some() {
            return Ok((Self::from_gguf(meta)?, None));
        }
        let m = ModelConfig::from_gguf(meta, files)?;
        Ok((Self::for_decoder_gguf(&m, meta)?, Some(m)))
    }

    /// A decoder-based embedder's description: the decoder's `model` (read from `config.json`
    /// like a chat model's) with the folder's sentence-transformers modules. Inputs are cut at
    /// `max_seq_length`, at most the model's positions and [`MAX_DECODER_EMBED_TOKENS`] (the
    /// KV cache is sized for them).
    pub fn for_decoder(
        model: &ModelConfig,
        companions: &BTreeMap<String, String>,
        source: &str,
    ) -> Result<Self> {
        let (pooling, normalize, max_tokens) = sentence_transformers_modules(companions, source)?;
        Ok(Self::of_decoder(model, pooling, normalize, max_tokens))
    }

    /// The same from a GGUF file of a decoder with a `pooling_type` (llama.cpp's converter
    /// writes it for a folder whose modules pool): normalised, as llama.cpp's embeddings are
    /// by default.
    pub fn for_decoder_gguf(model: &ModelConfig, meta: &GgufMetadata) -> Result<Self> {
        let pooling = gguf_pooling(meta)?;
        Ok(Self::of_decoder(model, pooling, true, usize::MAX))
    }

    fn of_decoder(
        model: &ModelConfig,
        pooling: Pooling,
        normalize: bool,
        max_tokens: usize,
    ) -> Self {
        EncoderConfig {
            arch: EncoderArch::Decoder(model.architecture),
            hidden: model.hidden,
            layers: model.layers,
            heads: model.heads,
            head_dim: model.head_dim,
            ffn: model.ffn,
            vocab: model.vocab,
            max_positions: model.max_positions,
            type_vocab: 0,
            eps: model.rms_eps,
            activation: model.activation,
            rope_theta: Some(model.rope.theta),
            biases: model.qkv_bias,
            gated: true,
            pooling,
            normalize,
            max_tokens: max_tokens
                .min(model.max_positions)
                .min(MAX_DECODER_EMBED_TOKENS),
            dense: Vec::new(),
        }
    }

    /// From a GGUF file of llama.cpp's `bert` or `nomic-bert` conversion: sizes, RoPE base and
    /// pooling (`pooling_type`) from its metadata. The file does not say whether the vectors
    /// are normalised: they are, as llama.cpp's embeddings are by default (and as the
    /// sentence-transformers models these files come from do). BERT's GELU is the exact one of
    /// the original models (llama.cpp computes the tanh approximation).
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self> {
        let arch_name = meta.architecture()?;
        let arch = EncoderArch::from_gguf_name(arch_name).ok_or_else(|| {
            Error::UnsupportedArchitecture {
                source_name: meta.file().to_string(),
                architecture: format!("{arch_name} (as an encoder)"),
                supported: SUPPORTED,
            }
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let sizes = Sizes::new(meta.file());
        let sized = |k: &str, limit: u64| -> Result<usize> {
            sizes.check(&key(k), u64::from(meta.u32(&key(k))?), limit)
        };
        let vocab = meta.string_array("tokenizer.ggml.tokens")?.len();
        let type_vocab = meta
            .get_opt::<u32>("tokenizer.ggml.token_type_count")?
            .unwrap_or(2);
        let shape = Shape {
            hidden: sized("embedding_length", MAX_HIDDEN)?,
            heads: sized("attention.head_count", MAX_HEADS)?,
            layers: sized("block_count", MAX_LAYERS)?,
            ffn: sized("feed_forward_length", MAX_FFN)?,
            vocab: sizes.check("tokenizer.ggml.tokens", vocab as u64, MAX_VOCAB)?,
            max_positions: sized("context_length", MAX_CONTEXT)?,
            type_vocab: sizes.check(
                "tokenizer.ggml.token_type_count",
                u64::from(type_vocab),
                MAX_TYPE_VOCAB,
            )?,
        }
        .check(&sizes, meta.file())?;
        if meta.get_opt::<bool>(&key("attention.causal"))? == Some(true) {
            return Err(config_error(
                meta.file(),
                format!("{arch_name}.attention.causal is true: an encoder attends both ways"),
            ));
        }
        let eps = meta
            .get_opt::<f32>(&key("attention.layer_norm_epsilon"))?
            .unwrap_or(1e-12);
        let (activation, rope_theta) = match arch {
            EncoderArch::Bert => (kernels::GateActivation::GeluErf, None),
            EncoderArch::NomicBert | EncoderArch::Decoder(_) => (
                kernels::GateActivation::Silu,
                Some(
                    meta.get_opt::<f32>(&key("rope.freq_base"))?
                        .unwrap_or(1000.0),
                ),
            ),
        };
        let pooling = gguf_pooling(meta)?;
        Ok(Self::build(
            arch,
            shape,
            eps,
            activation,
            rope_theta,
            pooling,
            true,
            usize::MAX,
        ))
    }
}

/// A GGUF file's `{arch}.pooling_type` (llama.cpp's enum llama_pooling_type; mean without it).
fn gguf_pooling(meta: &GgufMetadata) -> Result<Pooling> {
    let arch = meta.architecture()?;
    Ok(
        match meta.get_opt::<u32>(&format!("{arch}.pooling_type"))? {
            None | Some(1) => Pooling::Mean,
            Some(2) => Pooling::Cls,
            Some(3) => Pooling::LastToken,
            Some(other) => {
                return Err(config_error(
                    meta.file(),
                    format!(
                        "{arch}.pooling_type {other} is not supported (supported: 1 mean, 2 cls, \
                     3 last)"
                    ),
                ))
            }
        },
    )
}

/// A configuration error in the companion file `file` of the model `source`.
fn companion_error(source: &str, file: &str, detail: String) -> Error {
    config_error(&format!("{source}/{file}"), detail)
}

/// The companion file `file` parsed as JSON (`None` when the folder has no such file).
fn companion_json(
    companions: &BTreeMap<String, String>,
    source: &str,
    file: &str,
) -> Result<Option<Value>> {
    companions
        .get(file)
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| companion_error(source, file, format!("not valid JSON: {e}")))
        })
        .transpose()
}

/// What a sentence-transformers folder's modules say: the pooling (`1_Pooling/config.json`; mean
/// without it), whether a `Normalize` module follows (`modules.json`), and the longest input
/// (`sentence_bert_config.json`'s `max_seq_length`; unbounded without it).
fn sentence_transformers_modules(
    companions: &BTreeMap<String, String>,
    source: &str,
) -> Result<(Pooling, bool, usize)> {
    let bad = |file: &str, detail: String| companion_error(source, file, detail);
    let json = |file: &str| companion_json(companions, source, file);
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
            Some(m) if m > 0 => usize::try_from(m).unwrap_or(usize::MAX),
            _ => {
                return Err(bad(
                    "sentence_bert_config.json",
                    "max_seq_length must be a positive whole number".into(),
                ))
            }
        },
        None => usize::MAX,
    };
    Ok((pooling, normalize, max_tokens))
}

/// A BERT `config.json`'s sizes, norm epsilon, activation (and no RoPE).
fn bert_settings(
    v: &Value,
    sizes: &Sizes<'_>,
    cfg: &str,
) -> Result<(Shape, f32, kernels::GateActivation, Option<f32>)> {
    let shape = Shape {
        hidden: sizes.required(v, "hidden_size", MAX_HIDDEN)?,
        heads: sizes.required(v, "num_attention_heads", MAX_HEADS)?,
        layers: sizes.required(v, "num_hidden_layers", MAX_LAYERS)?,
        ffn: sizes.required(v, "intermediate_size", MAX_FFN)?,
        vocab: sizes.required(v, "vocab_size", MAX_VOCAB)?,
        max_positions: sizes.required(v, "max_position_embeddings", MAX_CONTEXT)?,
        type_vocab: sizes.check(
            "type_vocab_size",
            v["type_vocab_size"].as_u64().unwrap_or(2),
            MAX_TYPE_VOCAB,
        )?,
    };
    let eps = v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;
    let activation = match v["hidden_act"].as_str().unwrap_or("gelu") {
        "gelu" => kernels::GateActivation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => kernels::GateActivation::GeluTanh,
        other => {
            return Err(config_error(
                cfg,
                format!("activation '{other}' is not supported (supported: gelu, gelu_new)"),
            ))
        }
    };
    if v["position_embedding_type"]
        .as_str()
        .is_some_and(|t| t != "absolute")
    {
        return Err(config_error(
            cfg,
            format!(
                "position_embedding_type '{}' is not supported (supported: absolute)",
                v["position_embedding_type"]
            ),
        ));
    }
    Ok((shape, eps, activation, None))
}

/// nomic-embed-text's `config.json` as the Hub has it (its remote code's GPT-2-style names):
/// sizes, norm epsilon, SwiGLU and the RoPE base. The variants it can describe that the model
/// does not use (pre-norm, biases, partial or interleaved or scaled rotation, RMSNorm, parallel
/// blocks) are refused by name.
fn nomic_settings(
    v: &Value,
    sizes: &Sizes<'_>,
    cfg: &str,
) -> Result<(Shape, f32, kernels::GateActivation, Option<f32>)> {
    if v.get("n_embd").is_none() {
        return Err(config_error(
            cfg,
            "a nomic_bert config.json is read as the Hub's nomic-embed-text checkpoints have it \
             (n_embd, n_head, n_layer, n_inner, …), and this one has no 'n_embd'"
                .into(),
        ));
    }
    let flag = |k: &str, want: bool| -> Result<()> {
        match v[k].as_bool() {
            None if !want => Ok(()),
            Some(b) if b == want => Ok(()),
            _ => Err(config_error(
                cfg,
                format!("'{k}' must be {want}: other nomic_bert variants are not supported"),
            )),
        }
    };
    for k in [
        "qkv_proj_bias",
        "mlp_fc1_bias",
        "mlp_fc2_bias",
        "prenorm",
        "causal",
        "rotary_emb_interleaved",
        "use_rms_norm",
        "parallel_block",
    ] {
        flag(k, false)?;
    }
    if let Some(f) = v["rotary_emb_fraction"].as_f64().filter(|&f| f != 1.0) {
        return Err(config_error(
            cfg,
            format!("rotary_emb_fraction {f} is not supported (every dimension rotates: 1.0)"),
        ));
    }
    for k in ["rotary_emb_scale_base", "rotary_scaling_factor"] {
        if !v[k].is_null() {
            return Err(config_error(
                cfg,
                format!("'{k}' ({}) is not supported: no RoPE scaling", v[k]),
            ));
        }
    }
    if v.get("moe_every_n_layers").is_some_and(|m| !m.is_null()) {
        return Err(config_error(
            cfg,
            "mixture-of-experts nomic_bert models (nomic-embed-text-v2-moe) are not supported"
                .into(),
        ));
    }
    match v["activation_function"].as_str().unwrap_or("swiglu") {
        "swiglu" => {}
        other => {
            return Err(config_error(
                cfg,
                format!("activation_function '{other}' is not supported (supported: swiglu)"),
            ))
        }
    }
    // The embedding table is padded to a multiple of pad_vocab_size_multiple rows.
    let vocab = sizes.required(v, "vocab_size", MAX_VOCAB)?;
    let multiple = sizes.check(
        "pad_vocab_size_multiple",
        v["pad_vocab_size_multiple"].as_u64().unwrap_or(1).max(1),
        MAX_VOCAB,
    )?;
    // Trained on this many tokens (2048 for v1 and v1.5; n_positions says 8192, reached only
    // with a RoPE scaling they do not configure): llama.cpp's converter makes the same choice.
    let positions_key = if v["max_trained_positions"].is_u64() {
        "max_trained_positions"
    } else {
        "n_positions"
    };
    let shape = Shape {
        hidden: sizes.required(v, "n_embd", MAX_HIDDEN)?,
        heads: sizes.required(v, "n_head", MAX_HEADS)?,
        layers: sizes.required(v, "n_layer", MAX_LAYERS)?,
        ffn: sizes.required(v, "n_inner", MAX_FFN)?,
        vocab: vocab.div_ceil(multiple) * multiple,
        max_positions: sizes.required(v, positions_key, MAX_CONTEXT)?,
        type_vocab: sizes.check(
            "type_vocab_size",
            v["type_vocab_size"].as_u64().unwrap_or(2),
            MAX_TYPE_VOCAB,
        )?,
    };
    let eps = v["layer_norm_epsilon"].as_f64().unwrap_or(1e-12) as f32;
    let theta = v["rotary_emb_base"].as_f64().unwrap_or(1000.0) as f32;
    if !(theta.is_finite() && theta > 0.0) {
        return Err(config_error(
            cfg,
            format!("rotary_emb_base {theta} must be finite and positive"),
        ));
    }
    Ok((shape, eps, kernels::GateActivation::Silu, Some(theta)))
}

/// How a checkpoint names an encoder's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderNames {
    /// Hugging Face: BERT's or nomic-embed-text's (by the configuration's architecture).
    HuggingFace,
    /// llama.cpp's GGUF names.
    Gguf,
}

/// q, k and v: apart, or stacked in one matrix (nomic-embed-text's `Wqkv`, GGUF `attn_qkv`).
pub enum QkvWeights<T> {
    Apart {
        q: (T, Option<T>),
        k: (T, Option<T>),
        v: (T, Option<T>),
    },
    Stacked(T),
}

/// An encoder's weights by role, wherever they live (GPU or host tensors), each checked against
/// the configuration.
pub struct EncoderWeights<T> {
    pub word: T,
    /// Absolute position embeddings (not with RoPE).
    pub position: Option<T>,
    pub token_type: T,
    /// The embedding LayerNorm's weight and bias.
    pub embed_norm: (T, T),
    pub layers: Vec<EncoderLayerWeights<T>>,
}

/// One encoder layer's weights: (weight, bias) pairs, the biases when the model has them.
pub struct EncoderLayerWeights<T> {
    pub qkv: QkvWeights<T>,
    pub o: (T, Option<T>),
    pub attn_norm: (T, T),
    pub up: (T, Option<T>),
    /// The gate of a gated MLP.
    pub gate: Option<T>,
    pub down: (T, Option<T>),
    pub ffn_norm: (T, T),
}

/// The names of one model's tensors: embeddings and per-layer roles (`{}`: the layer).
struct NameTable {
    word: &'static str,
    position: &'static str,
    token_type: &'static str,
    embed_norm: &'static str,
    q: &'static str,
    k: &'static str,
    v: &'static str,
    qkv: &'static str,
    o: &'static str,
    attn_norm: &'static str,
    up: &'static str,
    gate: &'static str,
    down: &'static str,
    ffn_norm: &'static str,
}

const BERT_NAMES: NameTable = NameTable {
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: "embeddings.token_type_embeddings",
    embed_norm: "embeddings.LayerNorm",
    q: "encoder.layer.{}.attention.self.query",
    k: "encoder.layer.{}.attention.self.key",
    v: "encoder.layer.{}.attention.self.value",
    qkv: "",
    o: "encoder.layer.{}.attention.output.dense",
    attn_norm: "encoder.layer.{}.attention.output.LayerNorm",
    up: "encoder.layer.{}.intermediate.dense",
    gate: "",
    down: "encoder.layer.{}.output.dense",
    ffn_norm: "encoder.layer.{}.output.LayerNorm",
};

/// nomic-embed-text on the Hub (its remote code's names): `fc11` is the up projection, `fc12`
/// the gate.
const NOMIC_NAMES: NameTable = NameTable {
    word: "embeddings.word_embeddings",
    position: "",
    token_type: "embeddings.token_type_embeddings",
    embed_norm: "emb_ln",
    q: "",
    k: "",
    v: "",
    qkv: "encoder.layers.{}.attn.Wqkv",
    o: "encoder.layers.{}.attn.out_proj",
    attn_norm: "encoder.layers.{}.norm1",
    up: "encoder.layers.{}.mlp.fc11",
    gate: "encoder.layers.{}.mlp.fc12",
    down: "encoder.layers.{}.mlp.fc2",
    ffn_norm: "encoder.layers.{}.norm2",
};

/// llama.cpp's converter's names for both architectures.
const GGUF_NAMES: NameTable = NameTable {
    word: "token_embd",
    position: "position_embd",
    token_type: "token_types",
    embed_norm: "token_embd_norm",
    q: "blk.{}.attn_q",
    k: "blk.{}.attn_k",
    v: "blk.{}.attn_v",
    qkv: "blk.{}.attn_qkv",
    o: "blk.{}.attn_output",
    attn_norm: "blk.{}.attn_output_norm",
    up: "blk.{}.ffn_up",
    gate: "blk.{}.ffn_gate",
    down: "blk.{}.ffn_down",
    ffn_norm: "blk.{}.layer_output_norm",
};

impl<T: StoredTensor> EncoderWeights<T> {
    /// Takes the tensors the description needs out of `tensors`, named as `names` says (Hugging
    /// Face names with or without a `bert.` prefix), each checked against the configuration.
    pub fn take(
        c: &EncoderConfig,
        names: EncoderNames,
        tensors: &mut HashMap<String, T>,
    ) -> Result<Self> {
        let table = match (names, c.arch) {
            (EncoderNames::Gguf, _) => &GGUF_NAMES,
            (EncoderNames::HuggingFace, EncoderArch::Bert) => &BERT_NAMES,
            (EncoderNames::HuggingFace, EncoderArch::NomicBert) => &NOMIC_NAMES,
            (_, EncoderArch::Decoder(a)) => {
                return Err(Error::InvalidRequest(format!(
                    "a {a:?} decoder-based embedder's weights are the decoder's, not an encoder's"
                )))
            }
        };
        let mut take = |base: &str, layer: usize, suffix: &str, shape: &[usize]| -> Result<T> {
            let name = format!("{}.{suffix}", base.replace("{}", &layer.to_string()));
            let t = tensors
                .remove(&name)
                .or_else(|| tensors.remove(&format!("bert.{name}")))
                .ok_or_else(|| Error::InvalidTensor {
                    tensor: name.clone(),
                    detail: "is missing: the encoder needs it".into(),
                })?;
            expect(&t, shape)?;
            Ok(t)
        };
        let (h, f, w) = (c.hidden, c.ffn, c.heads * c.head_dim);
        let word = take(table.word, 0, "weight", &[c.vocab, h])?;
        let position = match c.rope_theta {
            None => Some(take(table.position, 0, "weight", &[c.max_positions, h])?),
            Some(_) => None,
        };
        let token_type = take(table.token_type, 0, "weight", &[c.type_vocab, h])?;
        let embed_norm = (
            take(table.embed_norm, 0, "weight", &[h])?,
            take(table.embed_norm, 0, "bias", &[h])?,
        );
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let mut affine = |base: &str, rows: usize, cols: usize| -> Result<(T, Option<T>)> {
                let weight = take(base, l, "weight", &[rows, cols])?;
                let bias = match c.biases {
                    true => Some(take(base, l, "bias", &[rows])?),
                    false => None,
                };
                Ok((weight, bias))
            };
            let qkv = if c.arch == EncoderArch::NomicBert {
                QkvWeights::Stacked(affine(table.qkv, 3 * w, h)?.0)
            } else {
                QkvWeights::Apart {
                    q: affine(table.q, w, h)?,
                    k: affine(table.k, w, h)?,
                    v: affine(table.v, w, h)?,
                }
            };
            let o = affine(table.o, h, w)?;
            let up = affine(table.up, f, h)?;
            let gate = match c.gated {
                true => Some(affine(table.gate, f, h)?.0),
                false => None,
            };
            let down = affine(table.down, h, f)?;
            let mut norm = |base: &str| -> Result<(T, T)> {
                Ok((take(base, l, "weight", &[h])?, take(base, l, "bias", &[h])?))
            };
            layers.push(EncoderLayerWeights {
                qkv,
                o,
                attn_norm: norm(table.attn_norm)?,
                up,
                gate,
                down,
                ffn_norm: norm(table.ffn_norm)?,
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

/// A linear layer's weight and bias (when the model has biases).
struct Affine {
    w: GpuTensor,
    b: Option<GpuTensor>,
}

/// The options of `a`'s layer: its bias, added to the output's content when `accumulate` (the
/// residual stream).
fn biased(a: &Affine, accumulate: bool) -> Linear<'_> {
    Linear {
        bias: a.b.as_ref(),
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
    /// q, k and v stacked (when they share a format, or as the checkpoint stacks them).
    qkv: Proj,
    o: Affine,
    attn_norm: Norm,
    up: Affine,
    gate: Option<GpuTensor>,
    down: Affine,
    ffn_norm: Norm,
}

/// A layer's tensors while its 1-D parameters are converted to f32: those by their index in
/// the conversion's list.
struct PendingLayer {
    qkv: Vec<(GpuTensor, Option<usize>)>,
    o: (GpuTensor, Option<usize>),
    up: (GpuTensor, Option<usize>),
    gate: Option<GpuTensor>,
    down: (GpuTensor, Option<usize>),
    attn_norm: (usize, usize),
    ffn_norm: (usize, usize),
}

/// Adds `t` to the list of vectors to convert; its index there.
fn enlist(vectors: &mut Vec<GpuTensor>, t: GpuTensor) -> usize {
    vectors.push(t);
    vectors.len() - 1
}

/// An encoder in GPU memory.
pub struct Encoder {
    config: EncoderConfig,
    word: GpuTensor,
    position: Option<GpuTensor>,
    token_type: GpuTensor,
    embed_norm: Norm,
    layers: Vec<EncoderLayer>,
    /// The cos/sin table of a RoPE encoder, for [`BATCH_TOKENS`] (or `max_tokens`) positions.
    rope: Option<RopeTable>,
    /// Keys and values of the layer being run, for up to [`BATCH_TOKENS`] tokens (or one input
    /// of `max_tokens`): the layers run one after another, so one layer's cache serves all. f32:
    /// the exact path.
    kv: KvCache,
}

impl Encoder {
    /// Takes the loaded tensors (named as `names` says) and checks each against the
    /// configuration.
    pub async fn new(
        ctx: &GpuContext,
        config: EncoderConfig,
        names: EncoderNames,
        tensors: &mut HashMap<String, GpuTensor>,
    ) -> Result<Encoder> {
        let c = &config;
        let w = EncoderWeights::take(c, names, tensors)?;
        // The 1-D parameters (norms, biases) go through one f32 conversion.
        let mut vectors = Vec::new();
        let embed_norm = (
            enlist(&mut vectors, w.embed_norm.0),
            enlist(&mut vectors, w.embed_norm.1),
        );
        let affine = |v: &mut Vec<GpuTensor>, (m, b): (GpuTensor, Option<GpuTensor>)| {
            (m, b.map(|b| enlist(v, b)))
        };
        let mut pending = Vec::with_capacity(c.layers);
        for l in w.layers {
            let qkv = match l.qkv {
                QkvWeights::Apart { q, k, v } => [q, k, v]
                    .into_iter()
                    .map(|p| affine(&mut vectors, p))
                    .collect(),
                QkvWeights::Stacked(m) => vec![(m, None)],
            };
            let o = affine(&mut vectors, l.o);
            let up = affine(&mut vectors, l.up);
            let down = affine(&mut vectors, l.down);
            let attn_norm = (
                enlist(&mut vectors, l.attn_norm.0),
                enlist(&mut vectors, l.attn_norm.1),
            );
            let ffn_norm = (
                enlist(&mut vectors, l.ffn_norm.0),
                enlist(&mut vectors, l.ffn_norm.1),
            );
            pending.push(PendingLayer {
                qkv,
                o,
                up,
                gate: l.gate,
                down,
                attn_norm,
                ffn_norm,
            });
        }
        let converted =
            vectors_to_f32(ctx, vectors.into_iter().map(|t| (t, 0.0, 1.0)).collect()).await?;
        let mut converted: Vec<Option<GpuTensor>> = converted.into_iter().map(Some).collect();
        let mut get = |i: usize| converted[i].take().expect("each vector is taken once");
        let embed_norm = Norm {
            w: get(embed_norm.0),
            b: get(embed_norm.1),
        };
        let mut layers = Vec::with_capacity(c.layers);
        for p in pending {
            let mut affine = |(w, b): (GpuTensor, Option<usize>)| Affine {
                w,
                b: b.map(&mut get),
            };
            let qkv = p.qkv.into_iter().map(&mut affine).collect::<Vec<_>>();
            let (o, up, down) = (affine(p.o), affine(p.up), affine(p.down));
            let attn_norm = Norm {
                w: get(p.attn_norm.0),
                b: get(p.attn_norm.1),
            };
            let ffn_norm = Norm {
                w: get(p.ffn_norm.0),
                b: get(p.ffn_norm.1),
            };
            let qkv = match <[Affine; 1]>::try_from(qkv) {
                Ok([one]) => Proj::Fused {
                    w: one.w,
                    bias: one.b,
                },
                Err(parts) => {
                    let name = format!("encoder.layer.{}.attention.qkv", layers.len());
                    let (ws, bs) = parts.into_iter().map(|a| (a.w, a.b)).unzip();
                    stack(ctx, &name, ws, bs).await?
                }
            };
            layers.push(EncoderLayer {
                qkv,
                o,
                attn_norm,
                up,
                gate: p.gate,
                down,
                ffn_norm,
            });
        }
        let positions = BATCH_TOKENS.max(c.max_tokens);
        let rope = match c.rope_theta {
            Some(theta) => Some(RopeTable::new(
                ctx,
                RopeConfig::new(c.head_dim, theta, RopeLayout::NeoX),
                positions,
            )?),
            None => None,
        };
        let kv = KvCache::with_dtype(ctx, 1, positions, c.heads, c.head_dim, DType::F32)?;
        Ok(Encoder {
            config,
            word: w.word,
            position: w.position,
            token_type: w.token_type,
            embed_norm,
            layers,
            rope,
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
        let up_rows = match c.gated {
            true => Some(f32z("up", &[n, c.ffn])?),
            false => None,
        };

        let mut d: Vec<Dispatch> = vec![kernels::embed(ctx, &self.word, &ids_t, &x).await?];
        // Token types (all 0) and, without RoPE, absolute positions are added.
        let tables = [
            (self.position.as_ref(), &pos_t),
            (Some(&self.token_type), &types_t),
        ];
        for (table, rows) in tables {
            if let Some(table) = table {
                d.push(kernels::embed(ctx, table, rows, &part).await?);
                d.push(kernels::add_in_place(ctx, &x, &part).await?);
            }
        }
        d.push(
            kernels::layernorm(
                ctx,
                &x,
                &self.embed_norm.w,
                Some(&self.embed_norm.b),
                c.eps,
                &h,
            )
            .await?,
        );
        let mut scratch: Option<AttentionScratch> = None;
        for w in &self.layers {
            let plain = Linear::default();
            d.extend(w.qkv.record(ctx, &h, &[&q, &k, &v], &plain).await?);
            // RoPE rotates by the step's positions, which run on across the packed inputs
            // (0..n) rather than restart at each: the scores depend only on the distance between
            // a query's and a key's positions, which is the same within an input, and no token
            // sees another input's. The cos/sin table is exact to f32 at every position.
            d.push(match &self.rope {
                Some(table) => {
                    kernels::rope_kv_write(ctx, table, &step, &q3, &k3, &v3, &self.kv, 0).await?
                }
                None => kernels::kv_write(ctx, &step, &self.kv, 0, &k3, &v3).await?,
            });
            let opts = AttentionOptions {
                scratch: scratch.clone(),
                bidirectional: true,
                segments: Some(segments.clone()),
                ..Default::default()
            };
            let att = kernels::attention(ctx, &step, &q3, &self.kv, 0, &o3, &opts).await?;
            scratch = att.scratch().cloned();
            d.extend(att.dispatches().iter().cloned());
            // h += o·Woᵀ (+ bo), then h2 = LayerNorm(h).
            d.push(kernels::linear_with(ctx, &w.o.w, &o, &h, &biased(&w.o, true)).await?);
            d.push(
                kernels::layernorm(ctx, &h, &w.attn_norm.w, Some(&w.attn_norm.b), c.eps, &h2)
                    .await?,
            );
            // h2 += MLP(h2), then h = LayerNorm(h2). The MLP is act(h2·Wupᵀ + bup)·Wdownᵀ +
            // bdown, or gated: (act(h2·Wgateᵀ) · h2·Wupᵀ)·Wdownᵀ.
            let up_out = up_rows.as_ref().unwrap_or(&inter);
            d.push(kernels::linear_with(ctx, &w.up.w, &h2, up_out, &biased(&w.up, false)).await?);
            let activation = match (&w.gate, up_rows.as_ref()) {
                (Some(gate), Some(up)) => {
                    d.push(kernels::linear_with(ctx, gate, &h2, &inter, &plain).await?);
                    kernels::gated(ctx, &inter, up, &act, c.activation).await?
                }
                _ => match c.activation {
                    kernels::GateActivation::GeluTanh => kernels::gelu(ctx, &inter, &act).await?,
                    kernels::GateActivation::GeluErf => {
                        kernels::gelu_erf(ctx, &inter, &act).await?
                    }
                    kernels::GateActivation::Silu => {
                        return Err(Error::InvalidRequest(
                            "an ungated SiLU MLP is not an encoder PocketLM runs".into(),
                        ))
                    }
                },
            };
            d.push(activation);
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
        let tables = [
            Some(&self.word),
            self.position.as_ref(),
            Some(&self.token_type),
        ];
        tables.into_iter().flatten().for_each(GpuTensor::destroy);
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
                a.b.iter().for_each(GpuTensor::destroy);
            }
            l.gate.iter().for_each(GpuTensor::destroy);
        }
        if let Some(r) = &self.rope {
            r.table().destroy();
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
    /// Decoder-based embedders.
    GpuDecoder(GpuDecoderEmbedder),
    CpuDecoder(CpuDecoderEmbedder),
}

impl AnyEncoder {
    pub fn config(&self) -> &EncoderConfig {
        match self {
            AnyEncoder::Gpu(e) => e.config(),
            AnyEncoder::Cpu(e) => e.config(),
            AnyEncoder::GpuDecoder(e) => e.config(),
            AnyEncoder::CpuDecoder(e) => e.config(),
        }
    }

    /// One input's embedding, on the device the encoder lives on.
    pub async fn embed(&self, dev: impl Into<Device<'_>>, ids: &[u32]) -> Result<Vec<f32>> {
        let mut one = self.embed_batch(dev, &[ids.to_vec()]).await?;
        Ok(one.pop().expect("one embedding per input"))
    }

    /// The last hidden states of several inputs, `[total tokens, hidden]` row-major, inputs in
    /// order: an encoder's in one packed pass (at most [`BATCH_TOKENS`] tokens in all, or one
    /// input), a decoder-based embedder's after the final norm, in as many packed passes as its
    /// [`AnyEncoder::pass_budget`] needs.
    pub async fn hidden_states(
        &self,
        dev: impl Into<Device<'_>>,
        inputs: &[&[u32]],
    ) -> Result<Vec<f32>> {
        match (self, dev.into()) {
            (AnyEncoder::Gpu(e), Device::Gpu(ctx)) => e.hidden_states_packed(ctx, inputs).await,
            (AnyEncoder::Cpu(e), Device::Cpu(cpu)) => e.hidden_states_packed(cpu, inputs),
            (AnyEncoder::GpuDecoder(e), Device::Gpu(ctx)) => {
                let mut rows = Vec::new();
                for pass in passes(inputs, self.pass_budget()) {
                    rows.extend(e.hidden_states_packed(ctx, pass).await?);
                }
                Ok(rows)
            }
            (AnyEncoder::CpuDecoder(e), Device::Cpu(cpu)) => {
                let mut rows = Vec::new();
                for pass in passes(inputs, self.pass_budget()) {
                    rows.extend(e.hidden_states_packed(cpu, pass)?);
                }
                Ok(rows)
            }
            _ => Err(other_backend()),
        }
    }

    /// The most tokens one pass packs: [`BATCH_TOKENS`] on the GPU and [`CPU_BATCH_TOKENS`] on
    /// the CPU, and for a decoder-based embedder at most its `max_tokens` (its KV cache's
    /// positions). An input longer than that runs alone.
    pub fn pass_budget(&self) -> usize {
        let max = self.config().max_tokens;
        match self {
            AnyEncoder::Gpu(_) => BATCH_TOKENS,
            AnyEncoder::Cpu(_) => CPU_BATCH_TOKENS,
            AnyEncoder::GpuDecoder(_) => max,
            AnyEncoder::CpuDecoder(_) => CPU_BATCH_TOKENS.min(max),
        }
    }

    /// Several inputs' embeddings, in order: packed together, as many as fit in
    /// [`AnyEncoder::pass_budget`] tokens per pass. Every input is checked before any runs.
    pub async fn embed_batch(
        &self,
        dev: impl Into<Device<'_>>,
        inputs: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let dev = dev.into();
        let c = self.config();
        for ids in inputs {
            c.check_input(ids)?;
        }
        let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut out = Vec::with_capacity(inputs.len());
        for batch in passes(&refs, self.pass_budget()) {
            let hidden = self.hidden_states(dev, batch).await?;
            let mut rows = hidden.as_slice();
            for ids in batch {
                let (mine, next) = rows.split_at(ids.len() * c.hidden);
                out.push(c.embedding(mine));
                rows = next;
            }
        }
        Ok(out)
    }

    /// Bytes of host memory the model takes (0 on the GPU).
    pub fn host_bytes(&self) -> u64 {
        match self {
            AnyEncoder::Cpu(e) => e.host_bytes(),
            AnyEncoder::CpuDecoder(e) => e.host_bytes(),
            AnyEncoder::Gpu(_) | AnyEncoder::GpuDecoder(_) => 0,
        }
    }

    pub fn destroy(&self) {
        match self {
            AnyEncoder::Gpu(e) => e.destroy(),
            AnyEncoder::GpuDecoder(e) => e.destroy(),
            AnyEncoder::Cpu(_) | AnyEncoder::CpuDecoder(_) => {}
        }
    }
}

/// `inputs` cut into runs of consecutive inputs of at most `budget` tokens each (an input
/// longer than that alone).
fn passes<'a, 'b>(inputs: &'a [&'b [u32]], budget: usize) -> Vec<&'a [&'b [u32]]> {
    let mut out = Vec::new();
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
        let (pass, after) = rest.split_at(take);
        out.push(pass);
        rest = after;
    }
    out
}

fn other_backend() -> Error {
    Error::InvalidRequest("this embedding model was loaded on the other backend".into())
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

/// Whether a model's companion files describe a sentence-embedding model rather than a chat
/// model: a BERT or nomic-embed-text `config.json`, or any other (a decoder's) with a
/// sentence-transformers `modules.json` that pools (Qwen3-Embedding).
pub fn is_encoder(companions: &BTreeMap<String, String>) -> bool {
    config_encoder_arch(companions).is_some() || pools(companions)
}

/// The encoder family `config.json`'s `model_type` names (none for a decoder's, or without a
/// readable `config.json`).
fn config_encoder_arch(companions: &BTreeMap<String, String>) -> Option<EncoderArch> {
    let v: Value = serde_json::from_str(companions.get("config.json")?).ok()?;
    v["model_type"]
        .as_str()
        .and_then(EncoderArch::from_model_type)
}

/// Whether `modules.json` has a sentence-transformers Pooling module.
fn pools(companions: &BTreeMap<String, String>) -> bool {
    companions
        .get("modules.json")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .and_then(|v| {
            v.as_array().map(|m| {
                m.iter()
                    .any(|x| x["type"].as_str().is_some_and(|t| t.ends_with(".Pooling")))
            })
        })
        .unwrap_or(false)
}

/// Whether loaded model files are a sentence-embedding encoder: a GGUF file of an encoder
/// architecture, or a folder whose `config.json` describes one.
pub fn is_encoder_model<T>(model: &LoadedModelFiles<T>) -> bool {
    match model.files.gguf_metadata() {
        Some(meta) => is_encoder_gguf(meta),
        None => is_encoder(&model.companions),
    }
}

/// Whether a GGUF file is an embedding model: an encoder architecture, or a decoder with a
/// pooling type (llama.cpp's converter writes one for a folder whose modules pool).
pub fn is_encoder_gguf(meta: &GgufMetadata) -> bool {
    let Ok(arch) = meta.architecture() else {
        return false;
    };
    EncoderArch::from_gguf_name(arch).is_some()
        || meta
            .get_opt::<u32>(&format!("{arch}.pooling_type"))
            .is_ok_and(|p| p.is_some())
}

/// What an embedding model is: an encoder and how its tensors are named, or a decoder (one per
/// load: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum Described {
    Encoder(EncoderConfig, EncoderNames),
    Decoder(EncoderConfig, ModelConfig),
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
    /// From a loaded sentence-transformers folder (its companion files: `tokenizer.json` is
    /// required) or GGUF file: its tensors are taken.
    pub async fn from_loaded(
        ctx: &GpuContext,
        model: &mut LoadedModelFiles,
        name: &str,
    ) -> Result<Embedder> {
        let (described, tokenizer) = Self::describe(model, name)?;
        let encoder = match described {
            Described::Encoder(config, names) => {
                AnyEncoder::Gpu(Encoder::new(ctx, config, names, &mut model.tensors).await?)
            }
            Described::Decoder(mut config, m) => {
                if model.files.gguf_metadata().is_some() {
                    config.dense =
                        dense::from_gguf_gpu(ctx, &mut model.tensors, config.hidden, name).await?;
                }
                let tensors = std::mem::take(&mut model.tensors);
                AnyEncoder::GpuDecoder(GpuDecoderEmbedder::new(ctx, config, m, tensors).await?)
            }
        };
        Ok(Embedder {
            encoder,
            tokenizer,
            name: name.to_string(),
        })
    }

    /// The same, for the CPU backend: the weights stay in host memory as loaded.
    pub fn from_loaded_cpu(
        model: &mut LoadedModelFiles<HostTensor>,
        name: &str,
    ) -> Result<Embedder> {
        let (described, tokenizer) = Self::describe(model, name)?;
        let encoder = match described {
            Described::Encoder(config, names) => {
                AnyEncoder::Cpu(CpuEncoder::new(config, names, &mut model.tensors)?)
            }
            Described::Decoder(mut config, m) => {
                if model.files.gguf_metadata().is_some() {
                    config.dense = dense::from_gguf_host(&mut model.tensors, config.hidden, name)?;
                }
                let tensors = std::mem::take(&mut model.tensors);
                AnyEncoder::CpuDecoder(CpuDecoderEmbedder::new(config, m, tensors)?)
            }
        };
        Ok(Embedder {
            encoder,
            tokenizer,
            name: name.to_string(),
        })
    }

    /// The model's description and tokenizer: from a GGUF file's metadata, or a folder's
    /// companion files (a BERT-like encoder's `config.json`, or a decoder's with a
    /// sentence-transformers Pooling module).
    fn describe<T>(model: &LoadedModelFiles<T>, name: &str) -> Result<(Described, Tokenizer)> {
        let (described, tokenizer) = match model.files.gguf_metadata() {
            Some(meta) => {
                let described = match EncoderConfig::from_any_gguf(meta, &model.files)? {
                    (config, Some(m)) => Described::Decoder(config, m),
                    (config, None) => Described::Encoder(config, EncoderNames::Gguf),
                };
                (described, Tokenizer::from_gguf(meta)?)
            }
            None => {
                let companions = &model.companions;
                let described =
                    match EncoderConfig::from_folder(companions, &model.module_weights, name)? {
                        (config, Some(m)) => Described::Decoder(config, m),
                        (config, None) => Described::Encoder(config, EncoderNames::HuggingFace),
                    };
                let tokenizer = match companions.get("tokenizer.json") {
                    Some(json) => Tokenizer::from_json_str(json)?,
                    None => {
                        return Err(Error::Config {
                            source_name: format!("{name}/tokenizer.json"),
                            detail: "an embedding model needs its tokenizer.json beside the \
                                     weights, and there is none"
                                .into(),
                        })
                    }
                };
                (described, tokenizer)
            }
        };
        let config = match &described {
            Described::Encoder(c, _) | Described::Decoder(c, _) => c,
        };
        if tokenizer.vocab_size() > config.vocab {
            return Err(Error::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: config.vocab,
            });
        }
        Ok((described, tokenizer))
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

/// Pools `[tokens, hidden]` states into one vector, in f64.
pub fn pool(hidden: &[f32], width: usize, pooling: Pooling) -> Vec<f64> {
    let n = hidden.len() / width;
    let row = |t: usize| &hidden[t * width..(t + 1) * width];
    match pooling {
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
    }
}

/// Divides `v` by its L2 norm (a zero vector stays as it is).
fn l2_normalize(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
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
        l2_normalize(&mut v);
    }
    Some(v.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "harness")]
    use crate::formats::gguf::MetaValue;

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

    /// nomic-embed-text-v1.5's config.json as the Hub has it (sizes of the real model).
    const NOMIC: &str = r#"{"model_type": "nomic_bert", "activation_function": "swiglu",
        "causal": false, "n_embd": 768, "n_head": 12, "n_inner": 3072, "n_layer": 12,
        "n_positions": 8192, "max_trained_positions": 2048, "layer_norm_epsilon": 1e-12,
        "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": false,
        "rotary_emb_scale_base": null, "rotary_scaling_factor": null, "qkv_proj_bias": false,
        "mlp_fc1_bias": false, "mlp_fc2_bias": false, "prenorm": false, "use_rms_norm": false,
        "type_vocab_size": 2, "vocab_size": 30528, "pad_vocab_size_multiple": 64}"#;

    #[test]
    fn nomic_embed_text_is_described_from_the_hub_config() {
        let sbert = r#"{"max_seq_length": 8192, "do_lower_case": false}"#;
        let c = EncoderConfig::from_companions(
            &companions(&[("config.json", NOMIC), ("sentence_bert_config.json", sbert)]),
            "nomic",
        )
        .unwrap();
        assert_eq!(c.arch, EncoderArch::NomicBert);
        assert_eq!(
            (c.hidden, c.heads, c.head_dim, c.layers, c.ffn),
            (768, 12, 64, 12, 3072)
        );
        assert_eq!(
            (c.vocab, c.max_positions, c.max_tokens),
            (30528, 2048, 2048)
        );
        assert_eq!(c.rope_theta, Some(1000.0));
        assert!(c.gated && !c.biases);
        assert_eq!(c.activation, kernels::GateActivation::Silu);
        assert!(c.describe().contains("SwiGLU"), "{}", c.describe());
        // The table is padded to a multiple of pad_vocab_size_multiple.
        let odd = NOMIC.replace("30528", "30522");
        let c = EncoderConfig::from_companions(&companions(&[("config.json", &odd)]), "n");
        assert_eq!(c.unwrap().vocab, 30528);
    }

    #[test]
    fn nomic_variants_it_cannot_run_are_refused_by_name() {
        for (from, to, want) in [
            (
                "\"prenorm\": false",
                "\"prenorm\": true",
                "'prenorm' must be false",
            ),
            (
                "\"qkv_proj_bias\": false",
                "\"qkv_proj_bias\": true",
                "qkv_proj_bias",
            ),
            (
                "\"rotary_emb_fraction\": 1.0",
                "\"rotary_emb_fraction\": 0.5",
                "rotary_emb_fraction",
            ),
            (
                "\"rotary_scaling_factor\": null",
                "\"rotary_scaling_factor\": 2.0",
                "rotary_scaling",
            ),
            ("\"swiglu\"", "\"gelu\"", "activation_function 'gelu'"),
            ("\"n_embd\": 768", "\"hidden_size\": 768", "no 'n_embd'"),
            ("\"n_head\": 12", "\"n_head\": 7", "heads must divide"),
            (
                "\"rotary_emb_base\": 1000",
                "\"rotary_emb_base\": -1",
                "finite and positive",
            ),
        ] {
            let json = NOMIC.replace(from, to);
            assert_ne!(json, NOMIC, "{from}");
            let e = EncoderConfig::from_companions(&companions(&[("config.json", &json)]), "n")
                .unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    /// A GGUF file's metadata as llama.cpp's converter writes it for a BERT, with `changes`.
    #[cfg(feature = "harness")]
    fn gguf_meta(changes: &[(&str, Option<MetaValue>)]) -> crate::formats::GgufHeader {
        use crate::formats::gguf::MetaArray;
        let tokens: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let mut meta: Vec<(&str, MetaValue)> = vec![
            ("general.architecture", MetaValue::String("bert".into())),
            ("bert.block_count", MetaValue::U32(2)),
            ("bert.context_length", MetaValue::U32(512)),
            ("bert.embedding_length", MetaValue::U32(32)),
            ("bert.feed_forward_length", MetaValue::U32(64)),
            ("bert.attention.head_count", MetaValue::U32(4)),
            ("bert.attention.layer_norm_epsilon", MetaValue::F32(1e-12)),
            ("bert.attention.causal", MetaValue::Bool(false)),
            ("bert.pooling_type", MetaValue::U32(2)),
            ("tokenizer.ggml.token_type_count", MetaValue::U32(2)),
            (
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(tokens)),
            ),
        ];
        for (key, value) in changes {
            meta.retain(|(k, _)| k != key);
            if let Some(v) = value {
                meta.push((key, v.clone()));
            }
        }
        let bytes = crate::fuzzing::gguf_bytes(&meta);
        crate::formats::GgufHeader::parse_file(&bytes, "m.gguf").unwrap()
    }

    #[cfg(feature = "harness")]
    #[test]
    fn gguf_encoder_metadata_is_read_and_bad_values_are_refused() {
        let c = EncoderConfig::from_gguf(&gguf_meta(&[]).metadata).unwrap();
        assert_eq!(
            (c.arch, c.hidden, c.heads, c.layers, c.ffn),
            (EncoderArch::Bert, 32, 4, 2, 64)
        );
        assert_eq!((c.vocab, c.max_positions, c.max_tokens), (100, 512, 512));
        assert_eq!(
            (c.pooling, c.normalize, c.rope_theta),
            (Pooling::Cls, true, None)
        );
        let u = |v: u32| Some(MetaValue::U32(v));
        for (changes, want) in [
            (vec![("bert.pooling_type", u(4))], "pooling_type 4"),
            (
                vec![("bert.attention.causal", Some(MetaValue::Bool(true)))],
                "causal is true",
            ),
            (vec![("bert.block_count", u(1 << 30))], "over the limit"),
            (
                vec![("bert.attention.head_count", u(5))],
                "heads must divide",
            ),
            (
                vec![("bert.embedding_length", None)],
                "bert.embedding_length",
            ),
            (
                vec![("general.architecture", Some(MetaValue::String("t5".into())))],
                "t5 (as an encoder)",
            ),
        ] {
            let e = EncoderConfig::from_gguf(&gguf_meta(&changes).metadata).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn a_folder_is_an_embedding_model_by_its_encoder_config_or_its_pooling_module() {
        let qwen3 = r#"{"model_type": "qwen3"}"#;
        let pooling = r#"[{"type": "sentence_transformers.models.Transformer"},
            {"type": "sentence_transformers.models.Pooling"}]"#;
        let no_pooling = r#"[{"type": "sentence_transformers.models.Transformer"}]"#;
        assert!(is_encoder(&companions(&[("config.json", BERT)])));
        assert!(is_encoder(&companions(&[("config.json", NOMIC)])));
        assert!(!is_encoder(&companions(&[("config.json", qwen3)])));
        assert!(is_encoder(&companions(&[
            ("config.json", qwen3),
            ("modules.json", pooling)
        ])));
        assert!(!is_encoder(&companions(&[
            ("config.json", qwen3),
            ("modules.json", no_pooling)
        ])));
        assert!(!is_encoder(&companions(&[("modules.json", "not json")])));
    }

    #[test]
    fn pooling_by_hand() {
        let h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(pool(&h, 2, Pooling::Mean), vec![3.0, 4.0]);
        assert_eq!(pool(&h, 2, Pooling::Cls), vec![1.0, 2.0]);
        assert_eq!(pool(&h, 2, Pooling::LastToken), vec![5.0, 6.0]);
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
        assert_eq!(shorten(&[3.0, 4.0, 5.0], 2, true), Some(vec![0.6, 0.8]));
        assert_eq!(shorten(&[3.0, 4.0, 5.0], 2, false), Some(vec![3.0, 4.0]));
        assert_eq!(shorten(&[3.0], 2, true), None);
        assert_eq!(shorten(&[3.0], 0, true), None);
    }
}
