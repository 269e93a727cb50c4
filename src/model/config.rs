//! A model's block description: hyper-parameters and per-layer settings from GGUF metadata or a
//! Hugging Face `config.json`, for any architecture of [`super::arch::ARCHS`]. The generic decoder
//! ([`super::Decoder`]) is built from it; nothing downstream looks at the architecture's name.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::formats::{GgufMetadata, ModelFiles};
use crate::kernels::{GateActivation, Llama3Scaling, RopeConfig, RopeLayout};
use crate::model::arch::{ArchSpec, Architecture, Role, SUPPORTED};

/// Which rotary embedding a layer applies to q and k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRope {
    /// The model's RoPE ([`ModelConfig::rope`], with its scaling).
    Global,
    /// The local layers' own RoPE ([`ModelConfig::rope_local`]: Gemma 3).
    Local,
    /// No positional embedding in this layer (SmolLM3's NoPE layers).
    None,
}

/// What differs between the layers of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// Sliding-window attention over this many positions (the query's own included); with
    /// [`ModelConfig::bidirectional`], over the keys less than this many positions away.
    pub window: Option<usize>,
    pub rope: LayerRope,
}

/// Frequency scaling of the global RoPE besides Llama 3's (which is part of [`RopeConfig`]).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by the factor (frequencies divided by it): Gemma 3 4B+.
    Linear(f32),
    /// Phi-3's LongRoPE: per-frequency factors for contexts within (`short`) and beyond (`long`)
    /// the original context, and a factor on cos/sin. In GGUF files the factors are tensors
    /// (`rope_factors_short/long.weight`) and these lists are empty.
    LongRope {
        short: Vec<f32>,
        long: Vec<f32>,
        original: usize,
        attention_factor: f32,
    },
    /// YaRN (Qwen2.5 and Qwen3 beyond 32k positions): see [`Yarn`].
    Yarn(Yarn),
}

/// YaRN's settings: frequencies that turn fewer than `beta_slow` times over the `original`
/// context are divided by `factor` (interpolated), those that turn more than `beta_fast` times
/// are kept (extrapolated), with a linear ramp between (its ends rounded outwards when
/// `truncate`); `ext_factor` weighs the kept part (llama.cpp's, 1 in transformers), and cos/sin
/// are multiplied by `attention_factor`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    pub factor: f32,
    pub original: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub ext_factor: f32,
    pub truncate: bool,
    pub attention_factor: f32,
}

impl Yarn {
    /// Each rotary pair's frequency divisor (the frequencies transformers'
    /// `_compute_yarn_parameters` and llama.cpp's `rope_yarn` rotate with, as factors on the
    /// plain ones): `1 / ((1 - e) / factor + e)`, `e` the pair's extrapolated share.
    pub fn frequency_factors(&self, rotary_dim: usize, theta: f32) -> Vec<f32> {
        let dim = rotary_dim as f64;
        let base = f64::from(theta);
        let correction = |rotations: f32| {
            let turns = self.original as f64 / (f64::from(rotations) * std::f64::consts::TAU);
            dim * turns.ln() / (2.0 * base.ln())
        };
        let (mut low, mut high) = (correction(self.beta_fast), correction(self.beta_slow));
        if self.truncate {
            (low, high) = (low.floor(), high.ceil());
        }
        let (low, high) = (low.max(0.0) as f32, high.min(dim - 1.0) as f32);
        let span = if high == low { 0.001 } else { high - low };
        (0..rotary_dim / 2)
            .map(|i| {
                let ramp = ((i as f32 - low) / span).clamp(0.0, 1.0);
                let kept = (1.0 - ramp) * self.ext_factor;
                1.0 / ((1.0 - kept) / self.factor + kept)
            })
            .collect()
    }
}

/// YaRN's default cos/sin factor for a scaling `factor` (transformers' and llama.cpp's
/// `get_mscale`).
fn yarn_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}

/// A model's block description.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    /// The RoPE of global layers (every layer but Gemma 3's local ones).
    pub rope: RopeConfig,
    pub rope_scaling: RopeScaling,
    /// Gemma 3's local layers rotate with their own base and no scaling.
    pub rope_local: Option<RopeConfig>,
    /// One per layer.
    pub layer_specs: Vec<LayerSpec>,
    /// The context the model was trained for.
    pub max_positions: usize,
    /// The output projection is the embedding table.
    pub tied_embeddings: bool,
    /// q, k and v projections have biases (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over each head of q and k (Qwen3, Gemma 3), or with `qk_norm_whole` over their
    /// whole projections (OLMo 2).
    pub qk_norm: bool,
    pub qk_norm_whole: bool,
    /// RMSNorm before the attention and the MLP (all but OLMo 2).
    pub pre_norms: bool,
    /// Sandwich norms on the attention and MLP outputs (Gemma 2/3).
    pub post_norms: bool,
    pub activation: GateActivation,
    /// Embeddings are multiplied by this (Gemma: √hidden).
    pub embed_scale: Option<f32>,
    /// Multiplies q·k (default 1/√head_dim; Gemma: 1/√query_pre_attn_scalar).
    pub attn_scale: f32,
    /// Attention-logit and final-logit soft-capping (Gemma 2).
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Added to every norm weight on load (1 for Gemma's Hugging Face checkpoints, which store
    /// `w - 1`).
    pub norm_offset: f32,
    /// Granite: each block's attention and MLP outputs are multiplied by this before their
    /// residual add. The backends carry the residual stream divided by it instead, which is the
    /// same model: `embed_scale` and `rms_eps` already hold the embedding multiplier ÷ this and
    /// the file's eps ÷ this² (RMSNorm of a stream scaled by `1/r` with eps ÷ r² is RMSNorm of
    /// the stream with eps). Only architectures without q/k norms have it.
    pub residual_scale: Option<f32>,
    /// Granite: logits are divided by this (folded into the final norm's weight on load).
    pub logit_scale: Option<f32>,
    /// Tensor names are GGUF's (else Hugging Face's).
    pub gguf_names: bool,
    /// Every token attends to the whole input, not only to earlier positions (an embedder made
    /// from a decoder: EmbeddingGemma's `use_bidirectional_attention`, llama.cpp's
    /// `gemma-embedding`). Sliding windows become symmetric.
    pub bidirectional: bool,
}

/// Granite's multipliers as its files give them (`None`: absent).
#[derive(Default)]
struct Multipliers {
    embedding: Option<f32>,
    attention: Option<f32>,
    residual: Option<f32>,
    logits: Option<f32>,
}

/// The window of a bidirectional model's local layers as [`LayerSpec::window`] counts it (keys
/// less than that many positions away) from the `sliding_window` its files give: transformers
/// lets a token see `sliding_window / 2` positions on either side (its config sets
/// `sliding_window // 2 + 1` as an exclusive bound), llama.cpp's symmetric window the same
/// (`|q - k| <= n_swa / 2`).
fn symmetric_window(sliding_window: usize) -> usize {
    sliding_window / 2 + 1
}

/// The largest sizes a configuration may declare. They are far above every model there is
/// (Llama 3.1 405B: 126 layers, hidden 16384, 128 heads, ffn 53248; Gemma 3: vocab 262144,
/// head_dim 256; contexts of 10M positions), and are checked, with the numbers in the error,
/// before anything is sized from them: a corrupt or hostile `config.json` with a billion
/// layers is refused instead of allocating per-layer tables.
pub const MAX_LAYERS: u64 = 1024;
pub const MAX_HIDDEN: u64 = 1 << 17;
pub const MAX_HEADS: u64 = 1024;
pub const MAX_HEAD_DIM: u64 = 4096;
/// The width of q (heads × head_dim).
pub const MAX_ATTENTION_WIDTH: u64 = 1 << 18;
pub const MAX_FFN: u64 = 1 << 20;
pub const MAX_VOCAB: u64 = 1 << 22;
pub const MAX_CONTEXT: u64 = 1 << 24;

/// Checks the main sizes, each under its name in the file (`num_hidden_layers`,
/// `llama.block_count`), against the limits above.
pub(crate) struct Sizes<'a> {
    source: &'a str,
}

impl<'a> Sizes<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        Sizes { source }
    }

    /// `value` of `name`, at most `limit`; a value that does not fit a `usize` (wasm32) is over
    /// every limit.
    pub(crate) fn check(&self, name: &str, value: u64, limit: u64) -> Result<usize> {
        if value > limit {
            return Err(config_error(
                self.source,
                format!(
                    "{name} is {value}, over the limit of {limit}: no model PocketLM can run is                      that large, so the configuration is corrupt"
                ),
            ));
        }
        usize::try_from(value).map_err(|_| {
            config_error(
                self.source,
                format!("{name} is {value}, more than this platform can address"),
            )
        })
    }

    /// The whole number `name` of a `config.json`, required, at most `limit`.
    pub(crate) fn required(&self, v: &Value, name: &str, limit: u64) -> Result<usize> {
        let value = v[name].as_u64().ok_or_else(|| {
            config_error(
                self.source,
                format!("'{name}' is missing or not a whole number"),
            )
        })?;
        self.check(name, value, limit)
    }

    /// `heads × head_dim` against [`MAX_ATTENTION_WIDTH`].
    pub(crate) fn check_width(&self, heads: usize, head_dim: usize) -> Result<()> {
        let width = (heads as u64).saturating_mul(head_dim as u64);
        if width > MAX_ATTENTION_WIDTH {
            return Err(config_error(
                self.source,
                format!(
                    "{heads} heads of {head_dim} make q {width} wide, over the limit of \
                     {MAX_ATTENTION_WIDTH}: the configuration is corrupt"
                ),
            ));
        }
        Ok(())
    }
}

/// A JSON number as a `u64` that saturates instead of wrapping on wasm32's 32-bit `usize`.
fn saturating_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub(crate) fn config_error(source: &str, detail: String) -> Error {
    Error::Config {
        source_name: source.to_string(),
        detail,
    }
}

fn unsupported(source: &str, name: &str) -> Error {
    Error::UnsupportedArchitecture {
        source_name: source.to_string(),
        architecture: name.to_string(),
        supported: SUPPORTED,
    }
}

/// Gemma-style window patterns: layer `i` is local unless `(i + 1) % pattern == 0`
/// (Gemma 2: 2, even layers local; Gemma 3: 6, five local then one global).
fn local_by_pattern(i: usize, pattern: usize) -> bool {
    pattern > 0 && !(i + 1).is_multiple_of(pattern)
}

/// The language model's settings from a `config.json`: a multimodal checkpoint's `text_config`
/// (Gemma 3 4B and larger: `Gemma3ForConditionalGeneration`, whose `text_config` says
/// `gemma3_text`; its image encoder is not run), with transformers' defaults for what the file
/// leaves out (see [`transformers_defaults`]).
fn text_model_settings(mut v: Value) -> Value {
    if v["text_config"].is_object() {
        let tied = v["tie_word_embeddings"].as_bool();
        v = v["text_config"].take();
        // Where the wrapper alone says whether the output is tied to the embeddings.
        if let (None, Some(tied)) = (v.get("tie_word_embeddings"), tied) {
            v["tie_word_embeddings"] = tied.into();
        }
    }
    let Some(defaults) = v["model_type"].as_str().and_then(transformers_defaults) else {
        return v;
    };
    let has_rope = v.get("rope_parameters").is_some();
    if let (Value::Object(settings), Value::Object(defaults)) = (&mut v, defaults) {
        for (k, d) in defaults {
            // transformers 5's `rope_parameters` hold the RoPE bases when present.
            let rope_base = k == "rope_theta" || k == "rope_local_base_freq";
            if !(rope_base && has_rope) {
                settings.entry(k).or_insert(d);
            }
        }
    }
    v
}

/// transformers' defaults for the settings a `config.json` of `model_type` may leave out: it
/// writes only what differs from them where a model's configuration is nested in another's,
/// and Gemma 3 4B's `text_config` on the hub gives its sizes, window and RoPE scaling alone
/// (`Gemma3TextConfig`'s defaults, the same in transformers 4.50 and 5; its default layer
/// pattern is `sliding_window_pattern` 6).
fn transformers_defaults(model_type: &str) -> Option<Value> {
    match model_type {
        "gemma3_text" => Some(serde_json::json!({
            "vocab_size": 262_208,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 131_072,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "attention_bias": false,
            "query_pre_attn_scalar": 256,
            "sliding_window": 4096,
            "tie_word_embeddings": true,
        })),
        _ => None,
    }
}

impl ModelConfig {
    /// From a GGUF file's metadata and tensor table.
    pub fn from_gguf(meta: &GgufMetadata, model: &ModelFiles) -> Result<Self> {
        Self::from_gguf_with(meta, &|name| model.tensor(name).is_some())
    }

    /// What [`ModelConfig::from_gguf`] would refuse in the model whose only file has this
    /// header: an unsupported architecture, a missing or absurd setting. Checked as soon as a
    /// load has the header, before the weights stream in (a download of gigabytes for a model
    /// that cannot run). An embedding model's GGUF is described elsewhere and passes.
    pub fn check_gguf_header(header: &crate::formats::GgufHeader) -> Result<()> {
        if crate::model::encoder::is_encoder_gguf(&header.metadata) {
            return Ok(());
        }
        let has = |name: &str| header.tensors.iter().any(|t| t.name == name);
        Self::from_gguf_with(&header.metadata, &has).map(|_| ())
    }

    /// [`ModelConfig::from_gguf`], asking `has_tensor` which tensors the model has.
    fn from_gguf_with(meta: &GgufMetadata, has_tensor: &dyn Fn(&str) -> bool) -> Result<Self> {
        let arch_name = meta.architecture()?;
        let spec = Architecture::spec_of(arch_name, true)
            .ok_or_else(|| unsupported(meta.file(), arch_name))?;
        let arch = spec.arch;
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| -> Result<usize> { Ok(meta.u32(&key(k))? as usize) };
        let opt_u = |k: &str| -> Result<Option<usize>> {
            Ok(meta.get_opt::<u32>(&key(k))?.map(|n| n as usize))
        };
        let opt_f = |k: &str| meta.get_opt::<f32>(&key(k));
        let sizes = Sizes::new(meta.file());
        let sized = |k: &str, n: usize, limit: u64| sizes.check(&key(k), n as u64, limit);
        let hidden = sized("embedding_length", u("embedding_length")?, MAX_HIDDEN)?;
        let heads = sized(
            "attention.head_count",
            u("attention.head_count")?,
            MAX_HEADS,
        )?;
        let kv_heads = opt_u("attention.head_count_kv")?.unwrap_or(heads);
        let kv_heads = sized("attention.head_count_kv", kv_heads, MAX_HEADS)?;
        let head_dim = opt_u("attention.key_length")?.unwrap_or(hidden / heads.max(1));
        let head_dim = sized("attention.key_length", head_dim, MAX_HEAD_DIM)?;
        let vocab = match opt_u("vocab_size")? {
            Some(n) => n,
            None => meta.string_array("tokenizer.ggml.tokens")?.len(),
        };
        let vocab = sized("vocab_size", vocab, MAX_VOCAB)?;
        let layers = sized("block_count", u("block_count")?, MAX_LAYERS)?;
        let ffn = sized("feed_forward_length", u("feed_forward_length")?, MAX_FFN)?;
        let max_positions = sized("context_length", u("context_length")?, MAX_CONTEXT)?;
        sizes.check_width(heads, head_dim)?;
        let rotary_dim = opt_u("rope.dimension_count")?.unwrap_or(head_dim);
        let theta = opt_f("rope.freq_base")?.unwrap_or(10_000.0);
        let rope = RopeConfig {
            head_dim,
            rotary_dim,
            theta,
            layout: spec.block.gguf_rope,
            // Llama-3 scaling is baked into a `rope_freqs.weight` tensor in GGUF.
            llama3: None,
        };
        let scaling_type = meta.get_opt::<&str>(&key("rope.scaling.type"))?;
        let mut rope_scaling = match scaling_type {
            None | Some("none") => RopeScaling::None,
            Some("linear") => match opt_f("rope.scaling.factor")? {
                Some(f) if f != 1.0 => RopeScaling::Linear(f),
                _ => RopeScaling::None,
            },
            // llama.cpp's reading: the scaling factor, `original_context_length`, the betas
            // (default 32 and 1), `yarn_ext_factor` (default 1); with it non-zero cos/sin are
            // scaled by `attn_factor` × get_mscale(factor) (÷ get_mscale(factor,
            // yarn_log_multiplier) where that is given), else by `attn_factor` ×
            // `yarn_attn_factor`.
            Some("yarn") => {
                let factor = opt_f("rope.scaling.factor")?
                    .filter(|&f| f != 0.0)
                    .unwrap_or(1.0);
                let ext_factor = opt_f("rope.scaling.yarn_ext_factor")?.unwrap_or(1.0);
                let attn = opt_f("rope.scaling.attn_factor")?.unwrap_or(1.0);
                let log_mul = opt_f("rope.scaling.yarn_log_multiplier")?.unwrap_or(0.0);
                let scale = if ext_factor == 0.0 {
                    f64::from(opt_f("rope.scaling.yarn_attn_factor")?.unwrap_or(1.0))
                } else if log_mul != 0.0 {
                    yarn_mscale(factor.into(), 1.0) / yarn_mscale(factor.into(), log_mul.into())
                } else {
                    yarn_mscale(factor.into(), 1.0)
                };
                RopeScaling::Yarn(Yarn {
                    factor,
                    original: opt_u("rope.scaling.original_context_length")?
                        .unwrap_or(max_positions),
                    beta_fast: opt_f("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                    beta_slow: opt_f("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                    ext_factor,
                    truncate: true,
                    attention_factor: (scale * f64::from(attn)) as f32,
                })
            }
            Some(other) => {
                return Err(config_error(
                    meta.file(),
                    format!(
                        "rope scaling '{other}' is not supported (supported: linear, llama3, \
                         longrope, yarn)"
                    ),
                ))
            }
        };
        if arch == Architecture::Phi3 && has_tensor(Role::RopeFactorsShort.gguf()) {
            rope_scaling = RopeScaling::LongRope {
                short: Vec::new(),
                long: Vec::new(),
                original: opt_u("rope.scaling.original_context_length")?.unwrap_or(max_positions),
                attention_factor: opt_f("rope.scaling.attn_factor")?.unwrap_or(1.0),
            };
        }
        // llama.cpp's `gemma-embedding` (EmbeddingGemma) attends both ways, and so does a file
        // that says it is not causal.
        let bidirectional = arch_name == "gemma-embedding"
            || meta.get_opt::<bool>(&key("attention.causal"))? == Some(false);
        let window = opt_u("attention.sliding_window")?
            .filter(|&w| w > 0)
            .map(|w| {
                if bidirectional {
                    symmetric_window(w)
                } else {
                    w
                }
            });
        let layer_specs: Vec<LayerSpec> = (0..layers)
            .map(|i| {
                let (local, rope) = match arch {
                    Architecture::Gemma2 => (local_by_pattern(i, 2), LayerRope::Global),
                    Architecture::Gemma3 => {
                        let local = local_by_pattern(i, 6);
                        (
                            local,
                            if local {
                                LayerRope::Local
                            } else {
                                LayerRope::Global
                            },
                        )
                    }
                    Architecture::Phi3 => (true, LayerRope::Global),
                    // llama.cpp's SmolLM3: every fourth layer has no RoPE.
                    Architecture::SmolLM3 => (
                        false,
                        if (i + 1).is_multiple_of(4) {
                            LayerRope::None
                        } else {
                            LayerRope::Global
                        },
                    ),
                    _ => (false, LayerRope::Global),
                };
                LayerSpec {
                    window: window.filter(|_| local),
                    rope,
                }
            })
            .collect();
        // Gemma 3's local layers: `rope.freq_base_swa` where the converter wrote it, else
        // llama.cpp's default of 10,000.
        let rope_local = match arch {
            Architecture::Gemma3 => Some(RopeConfig {
                theta: opt_f("rope.freq_base_swa")?.unwrap_or(10_000.0),
                ..rope
            }),
            _ => None,
        };
        let cap = |k: &str| -> Result<Option<f32>> { Ok(opt_f(k)?.filter(|&c| c > 0.0)) };
        let config = ModelConfig {
            architecture: arch,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn,
            vocab,
            rms_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope,
            rope_scaling,
            rope_local,
            layer_specs,
            max_positions,
            tied_embeddings: !has_tensor(Role::Output.gguf()),
            qkv_bias: has_tensor("blk.0.attn_q.bias"),
            qk_norm: spec.block.qk_norm,
            qk_norm_whole: spec.block.qk_norm_whole,
            pre_norms: spec.block.pre_norms,
            post_norms: spec.block.post_norms,
            activation: spec.block.activation,
            embed_scale: spec.block.embed_scale.then(|| (hidden as f32).sqrt()),
            attn_scale: (1.0 / (head_dim as f64).sqrt()) as f32,
            attn_softcap: cap("attn_logit_softcapping")?,
            final_softcap: cap("final_logit_softcapping")?,
            // llama.cpp's converter already added Gemma's 1 to the norm weights.
            norm_offset: 0.0,
            residual_scale: None,
            logit_scale: None,
            gguf_names: true,
            bidirectional,
        };
        // Granite's multipliers; llama.cpp reads 0 as absent.
        let multipliers = if arch == Architecture::Granite {
            let nonzero = |k: &str| -> Result<Option<f32>> { Ok(opt_f(k)?.filter(|&x| x != 0.0)) };
            Multipliers {
                embedding: nonzero("embedding_scale")?,
                attention: nonzero("attention.scale")?,
                residual: nonzero("residual_scale")?,
                logits: nonzero("logit_scale")?,
            }
        } else {
            Multipliers::default()
        };
        config.with_multipliers(multipliers).validate(meta.file())
    }

    /// From a Hugging Face `config.json` (`rope_theta` or transformers 5's `rope_parameters`).
    /// HF checkpoints keep q/k in the NeoX (half-split) RoPE layout.
    pub fn from_hf_json(json: &str, source: &str) -> Result<Self> {
        let bad = |detail: String| config_error(source, detail);
        let v: Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let v = text_model_settings(v);
        let names: Vec<&str> = v["model_type"]
            .as_str()
            .into_iter()
            .chain(
                v["architectures"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            )
            .collect();
        let Some(first) = names.first() else {
            return Err(bad("neither model_type nor architectures is given".into()));
        };
        let spec: &ArchSpec = names
            .iter()
            .find_map(|n| Architecture::spec_of(n, false))
            .ok_or_else(|| unsupported(source, first))?;
        let arch = spec.arch;
        let opt_int = |k: &str| v[k].as_u64().map(saturating_usize);
        let opt_f = |k: &str| v[k].as_f64();
        // The sizes, bounded before anything is sized from them.
        let sizes = Sizes::new(source);
        let hidden = sizes.required(&v, "hidden_size", MAX_HIDDEN)?;
        let heads = sizes.required(&v, "num_attention_heads", MAX_HEADS)?;
        let layers = sizes.required(&v, "num_hidden_layers", MAX_LAYERS)?;
        let kv_heads = v["num_key_value_heads"].as_u64().unwrap_or(heads as u64);
        let kv_heads = sizes.check("num_key_value_heads", kv_heads, MAX_HEADS)?;
        let head_dim = v["head_dim"]
            .as_u64()
            .unwrap_or((hidden / heads.max(1)) as u64);
        let head_dim = sizes.check("head_dim", head_dim, MAX_HEAD_DIM)?;
        let max_positions = v["max_position_embeddings"].as_u64().unwrap_or(4096);
        let max_positions = sizes.check("max_position_embeddings", max_positions, MAX_CONTEXT)?;
        let ffn = sizes.required(&v, "intermediate_size", MAX_FFN)?;
        let vocab = sizes.required(&v, "vocab_size", MAX_VOCAB)?;
        sizes.check_width(heads, head_dim)?;
        // transformers 5 nests RoPE settings in `rope_parameters`, per layer type for Gemma 3.
        let params = &v["rope_parameters"];
        let (global_params, local_params) = if params["full_attention"].is_object() {
            (&params["full_attention"], &params["sliding_attention"])
        } else {
            (params, &Value::Null)
        };
        let theta = opt_f("rope_theta")
            .or_else(|| global_params["rope_theta"].as_f64())
            .unwrap_or(10_000.0) as f32;
        let scaling = if v["rope_scaling"].is_object() {
            &v["rope_scaling"]
        } else {
            global_params
        };
        let partial = opt_f("partial_rotary_factor").unwrap_or(1.0);
        let rotary_dim = ((head_dim as f64 * partial) as usize) & !1;
        let mut llama3 = None;
        let mut rope_scaling = RopeScaling::None;
        let f = |k: &str| {
            scaling[k]
                .as_f64()
                .ok_or_else(|| bad(format!("rope scaling lacks '{k}'")))
        };
        // LongRoPE's and YaRN's original context: a top-level setting (Phi-3's) before the
        // scaling's own, as transformers' `standardize_rope_params` has it.
        let original_context = || {
            opt_int("original_max_position_embeddings")
                .or_else(|| {
                    scaling["original_max_position_embeddings"]
                        .as_u64()
                        .map(saturating_usize)
                })
                .unwrap_or(max_positions)
        };
        match scaling["rope_type"]
            .as_str()
            .or_else(|| scaling["type"].as_str())
        {
            // Qwen-VL's M-RoPE rotates each frequency by the position on one of three axes
            // (time, height, width); text puts every axis at the token's position, which makes
            // it the plain RoPE.
            None | Some("default" | "mrope") => {}
            Some("llama3") => {
                llama3 = Some(Llama3Scaling {
                    factor: f("factor")? as f32,
                    low_freq_factor: f("low_freq_factor")? as f32,
                    high_freq_factor: f("high_freq_factor")? as f32,
                    original_max_position_embeddings: f("original_max_position_embeddings")? as u32,
                })
            }
            Some("linear") => rope_scaling = RopeScaling::Linear(f("factor")? as f32),
            Some("longrope") => {
                let list = |k: &str| -> Result<Vec<f32>> {
                    scaling[k]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_f64)
                                .map(|x| x as f32)
                                .collect()
                        })
                        .filter(|l: &Vec<f32>| l.len() == rotary_dim / 2)
                        .ok_or_else(|| {
                            bad(format!(
                                "longrope scaling needs '{k}' with {} numbers",
                                rotary_dim / 2
                            ))
                        })
                };
                let original = original_context();
                // transformers' `_compute_longrope_parameters`.
                let factor = if v["original_max_position_embeddings"].is_u64() {
                    max_positions as f64 / original as f64
                } else {
                    scaling["factor"].as_f64().unwrap_or(1.0)
                };
                let attention_factor = match scaling["attention_factor"].as_f64() {
                    Some(a) => a,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
                };
                rope_scaling = RopeScaling::LongRope {
                    short: list("short_factor")?,
                    long: list("long_factor")?,
                    original,
                    attention_factor: attention_factor as f32,
                };
            }
            // transformers' `_compute_yarn_parameters`.
            Some("yarn") => {
                let original = original_context();
                let factor = scaling["factor"]
                    .as_f64()
                    .unwrap_or(max_positions as f64 / original.max(1) as f64);
                let attention_factor = match scaling["attention_factor"].as_f64() {
                    Some(a) => a,
                    None => match (
                        scaling["mscale"].as_f64(),
                        scaling["mscale_all_dim"].as_f64(),
                    ) {
                        (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                            yarn_mscale(factor, m) / yarn_mscale(factor, all)
                        }
                        _ => yarn_mscale(factor, 1.0),
                    },
                };
                // `or 32` / `or 1`: a zero or null beta takes the default too.
                let beta = |k: &str, default: f64| {
                    scaling[k].as_f64().filter(|&b| b != 0.0).unwrap_or(default) as f32
                };
                rope_scaling = RopeScaling::Yarn(Yarn {
                    factor: factor as f32,
                    original,
                    beta_fast: beta("beta_fast", 32.0),
                    beta_slow: beta("beta_slow", 1.0),
                    ext_factor: 1.0,
                    truncate: scaling["truncate"].as_bool().unwrap_or(true),
                    attention_factor: attention_factor as f32,
                });
            }
            Some(other) => {
                return Err(bad(format!(
                    "rope scaling '{other}' is not supported (supported: linear, llama3, \
                     longrope, yarn)"
                )))
            }
        }
        let rope = RopeConfig {
            head_dim,
            rotary_dim,
            theta,
            layout: RopeLayout::NeoX,
            llama3,
        };
        let rope_local = (arch == Architecture::Gemma3).then(|| RopeConfig {
            theta: opt_f("rope_local_base_freq")
                .or_else(|| local_params["rope_theta"].as_f64())
                .unwrap_or(10_000.0) as f32,
            llama3: None,
            ..rope
        });

        // Which layers attend through a sliding window (symmetric for an embedder that attends
        // both ways).
        let bidirectional = v["use_bidirectional_attention"].as_bool() == Some(true);
        let window = opt_int("sliding_window").filter(|&w| w > 0).map(|w| {
            if bidirectional {
                symmetric_window(w)
            } else {
                w
            }
        });
        let layer_types: Option<Vec<&str>> = v["layer_types"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap_or("")).collect());
        if let Some(t) = &layer_types {
            if t.len() != layers {
                return Err(bad(format!(
                    "'layer_types' lists {} layers, the model has {layers}",
                    t.len()
                )));
            }
        }
        let use_sliding = v["use_sliding_window"].as_bool();
        let max_window_layers = opt_int("max_window_layers").unwrap_or(0);
        let no_rope: Option<Vec<u64>> = v["no_rope_layers"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(1)).collect());
        let nope_interval = opt_int("no_rope_layer_interval").unwrap_or(4);
        let pattern = opt_int("sliding_window_pattern");
        let layer_specs: Vec<LayerSpec> = (0..layers)
            .map(|i| {
                let local = match (&layer_types, arch) {
                    (Some(t), _) => t[i] == "sliding_attention",
                    (None, Architecture::Gemma2) => local_by_pattern(i, pattern.unwrap_or(2)),
                    (None, Architecture::Gemma3) => local_by_pattern(i, pattern.unwrap_or(6)),
                    // Qwen: `use_sliding_window` from layer `max_window_layers` on.
                    (None, Architecture::Qwen2 | Architecture::Qwen3 | Architecture::SmolLM3) => {
                        use_sliding == Some(true) && i >= max_window_layers
                    }
                    // Mistral, Phi-3: every layer when a window is given.
                    (None, _) => use_sliding != Some(false),
                };
                let rope = match arch {
                    Architecture::Gemma3 if local => LayerRope::Local,
                    Architecture::SmolLM3 => {
                        let uses = match &no_rope {
                            Some(l) => l.get(i).copied().unwrap_or(1) != 0,
                            None => !(i + 1).is_multiple_of(nope_interval.max(1)),
                        };
                        if uses {
                            LayerRope::Global
                        } else {
                            LayerRope::None
                        }
                    }
                    _ => LayerRope::Global,
                };
                LayerSpec {
                    window: window.filter(|_| local),
                    rope,
                }
            })
            .collect();

        let activation = match v["hidden_activation"]
            .as_str()
            .or_else(|| v["hidden_act"].as_str())
        {
            None => spec.block.activation,
            Some("silu" | "swish") => GateActivation::Silu,
            Some("gelu_pytorch_tanh" | "gelu_tanh") => GateActivation::GeluTanh,
            Some(other) => {
                return Err(bad(format!(
                    "activation '{other}' is not supported (supported: silu, gelu_pytorch_tanh)"
                )))
            }
        };
        let gemma = spec.block.post_norms;
        let cap = |k: &str| opt_f(k).filter(|&c| c > 0.0).map(|c| c as f32);
        let attn_scale = match opt_f("query_pre_attn_scalar") {
            Some(s) if s > 0.0 => 1.0 / s.sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        } as f32;
        let config = ModelConfig {
            architecture: arch,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn,
            vocab,
            rms_eps: opt_f("rms_norm_eps").unwrap_or(1e-6) as f32,
            rope,
            rope_scaling,
            rope_local,
            layer_specs,
            max_positions,
            // Gemma ties its embeddings unless told otherwise; transformers' other configs do not.
            tied_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(gemma),
            qkv_bias: v["attention_bias"]
                .as_bool()
                .unwrap_or(arch == Architecture::Qwen2),
            qk_norm: spec.block.qk_norm,
            qk_norm_whole: spec.block.qk_norm_whole,
            pre_norms: spec.block.pre_norms,
            post_norms: spec.block.post_norms,
            activation,
            embed_scale: spec.block.embed_scale.then(|| (hidden as f32).sqrt()),
            attn_scale,
            attn_softcap: cap("attn_logit_softcapping"),
            final_softcap: cap("final_logit_softcapping"),
            norm_offset: spec.block.hf_norm_offset,
            residual_scale: None,
            logit_scale: None,
            gguf_names: false,
            bidirectional,
        };
        let multipliers = if arch == Architecture::Granite {
            let f = |k: &str| opt_f(k).map(|x| x as f32);
            Multipliers {
                embedding: f("embedding_multiplier"),
                attention: f("attention_multiplier"),
                residual: f("residual_multiplier"),
                logits: f("logits_scaling"),
            }
        } else {
            Multipliers::default()
        };
        config.with_multipliers(multipliers).validate(source)
    }

    /// Granite's multipliers, with the residual one moved into the embeddings and the norms'
    /// eps (see [`Self::residual_scale`]).
    fn with_multipliers(mut self, m: Multipliers) -> Self {
        if let Some(a) = m.attention {
            self.attn_scale = a;
        }
        let residual = m.residual.filter(|&r| r != 1.0);
        let embedding = m.embedding.or(self.embed_scale);
        self.embed_scale = match residual {
            Some(r) => Some((f64::from(embedding.unwrap_or(1.0)) / f64::from(r)) as f32),
            None => embedding,
        };
        if let Some(r) = residual {
            self.rms_eps = (f64::from(self.rms_eps) / (f64::from(r) * f64::from(r))) as f32;
        }
        self.residual_scale = residual;
        self.logit_scale = m.logits.filter(|&l| l != 1.0);
        self
    }

    /// What the final norm's weight is multiplied by on load: 1 ÷ Granite's logit divisor.
    pub fn out_norm_scale(&self) -> f32 {
        self.logit_scale.map_or(1.0, |l| 1.0 / l)
    }

    /// The architecture's entry (tensor roles and names).
    pub fn spec(&self) -> &'static ArchSpec {
        self.architecture.spec()
    }

    fn validate(self, source: &str) -> Result<Self> {
        let bad = |detail: String| Err(config_error(source, detail));
        let c = &self;
        if [
            c.hidden,
            c.layers,
            c.heads,
            c.kv_heads,
            c.head_dim,
            c.ffn,
            c.vocab,
            c.max_positions,
        ]
        .contains(&0)
        {
            return bad(format!(
                "a size is zero: hidden {}, layers {}, heads {}, kv heads {}, head_dim {}, ffn {}, \
                 vocab {}, context {}",
                c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab, c.max_positions
            ));
        }
        if !c.heads.is_multiple_of(c.kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key-value heads",
                c.heads, c.kv_heads
            ));
        }
        let uses_rope = c.layer_specs.iter().any(|l| l.rope != LayerRope::None);
        if uses_rope
            && (c.rope.rotary_dim < 2
                || c.rope.rotary_dim > c.head_dim
                || !c.rope.rotary_dim.is_multiple_of(2))
        {
            return bad(format!(
                "rotary dimension {} does not fit heads of {}",
                c.rope.rotary_dim, c.head_dim
            ));
        }
        let finite = |x: Option<f32>| x.is_none_or(|x| x.is_finite() && x > 0.0);
        if !(finite(c.residual_scale)
            && finite(c.logit_scale)
            && c.embed_scale.is_none_or(f32::is_finite))
        {
            return bad(format!(
                "residual multiplier {:?}, logit divisor {:?} or embedding scale {:?} are not \
                 usable",
                c.residual_scale, c.logit_scale, c.embed_scale
            ));
        }
        if !(c.rms_eps.is_finite()
            && c.rms_eps >= 0.0
            && c.rope.theta.is_finite()
            && c.rope.theta > 0.0
            && c.attn_scale.is_finite()
            && finite(c.attn_softcap)
            && finite(c.final_softcap)
            && finite(c.rope_local.map(|r| r.theta)))
        {
            return bad(format!(
                "eps {}, rope base {}, attention scale {} or soft-caps {:?}/{:?} are not usable",
                c.rms_eps, c.rope.theta, c.attn_scale, c.attn_softcap, c.final_softcap
            ));
        }
        match &c.rope_scaling {
            RopeScaling::Linear(f) if !(f.is_finite() && *f > 0.0) => {
                return bad(format!("linear rope scaling factor {f} is not usable"))
            }
            RopeScaling::LongRope {
                short,
                long,
                attention_factor,
                ..
            } if !short
                .iter()
                .chain(long)
                .chain([attention_factor])
                .all(|x| x.is_finite() && *x > 0.0) =>
            {
                return bad("longrope factors must be finite and positive".into())
            }
            RopeScaling::Yarn(y)
                if !([y.factor, y.attention_factor]
                    .iter()
                    .all(|x| x.is_finite() && *x > 0.0)
                    && y.beta_fast.is_finite()
                    && y.beta_slow.is_finite()
                    && y.ext_factor.is_finite()
                    && y.original > 0) =>
            {
                return bad(format!(
                    "yarn scaling ×{} over {} positions (betas {}/{}, attention factor {}) is \
                     not usable",
                    y.factor, y.original, y.beta_fast, y.beta_slow, y.attention_factor
                ))
            }
            _ => {}
        }
        Ok(self)
    }

    /// Decode dispatches per layer the decoder records for this block, and why: see
    /// [`super::Decoder`].
    pub fn describe(&self) -> String {
        let windows: Vec<String> = self
            .layer_specs
            .iter()
            .map(|l| {
                let r = match l.rope {
                    LayerRope::Global => "",
                    LayerRope::Local => "local-rope ",
                    LayerRope::None => "no-rope ",
                };
                match l.window {
                    Some(w) if self.bidirectional => format!("{r}window ±{}", w - 1),
                    Some(w) => format!("{r}window {w}"),
                    None => format!("{r}global"),
                }
            })
            .collect();
        // Runs of equal layers, "global ×24".
        let mut runs: Vec<(String, usize)> = Vec::new();
        for w in windows {
            match runs.last_mut() {
                Some((last, n)) if *last == w => *n += 1,
                _ => runs.push((w, 1)),
            }
        }
        let layers: Vec<String> = runs
            .iter()
            .map(|(w, n)| {
                if *n == 1 {
                    w.clone()
                } else {
                    format!("{w} ×{n}")
                }
            })
            .collect();
        let mut s = format!(
            "architecture {}: {} layers, hidden {}, {} heads / {} kv heads of {}, ffn {}, vocab {}\n\
             block: {} RMSNorm (eps {}){}{}{}, {} gate, attention scale {}{}{}{}\n\
             rope: theta {} ({:?}, {} of {} dims rotate){}{}\n\
             layers: {}",
            if self.bidirectional {
                format!("{} (bidirectional)", self.architecture.name())
            } else {
                self.architecture.name().to_string()
            },
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.ffn,
            self.vocab,
            if self.pre_norms {
                "pre-norm"
            } else {
                "post-norm"
            },
            match self.residual_scale {
                // The file's eps, and what the norms use on the scaled stream.
                Some(r) => format!(
                    "{:e}, {:e} on the stream ÷ {r}",
                    (f64::from(self.rms_eps) * f64::from(r) * f64::from(r)) as f32,
                    self.rms_eps
                ),
                None => format!("{:e}", self.rms_eps),
            },
            if self.post_norms && self.pre_norms { " + sandwich post-norms" } else { "" },
            match (self.qk_norm, self.qk_norm_whole) {
                (false, _) => "",
                (true, false) => ", q/k RMSNorm per head",
                (true, true) => ", q/k RMSNorm over all heads",
            },
            if self.qkv_bias { ", q/k/v biases" } else { "" },
            self.activation.name(),
            self.attn_scale,
            self.embed_scale
                .map_or(String::new(), |s| format!(", embeddings × {s}")),
            self.attn_softcap
                .map_or(String::new(), |c| format!(", attention soft-cap {c}")),
            self.final_softcap
                .map_or(String::new(), |c| format!(", final soft-cap {c}"))
                + &self.residual_scale.map_or(String::new(), |r| format!(
                    ", residual branches × {r} (the stream carried ÷ {r})"
                ))
                + &self
                    .logit_scale
                    .map_or(String::new(), |l| format!(", logits ÷ {l}")),
            self.rope.theta,
            self.rope.layout,
            self.rope.rotary_dim,
            self.head_dim,
            match &self.rope_scaling {
                RopeScaling::None => match self.rope.llama3 {
                    Some(s) => format!(", llama3 scaling ×{}", s.factor),
                    None => String::new(),
                },
                RopeScaling::Linear(f) => format!(", linear scaling ×{f}"),
                RopeScaling::LongRope { original, .. } => {
                    format!(", longrope (original context {original})")
                }
                RopeScaling::Yarn(y) => format!(
                    ", yarn ×{} (original context {}, cos/sin × {})",
                    y.factor, y.original, y.attention_factor
                ),
            },
            self.rope_local
                .map_or(String::new(), |r| format!("; local layers theta {}", r.theta)),
            layers.join(", ")
        );
        if self.tied_embeddings {
            s.push_str("\noutput: tied to the embeddings");
        }
        s
    }
}
