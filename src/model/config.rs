//! The hyper-parameters of a Llama-family model, from GGUF metadata (`llama.*`, `qwen2.*`) or a
//! Hugging Face `config.json`: everything the forward pass needs to size its buffers and
//! configure its kernels.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::formats::{GgufMetadata, ModelFiles};
use crate::kernels::{Llama3Scaling, RopeConfig, RopeLayout};

/// The architectures PocketLM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3/3.x, SmolLM/SmolLM2, TinyLlama, Mistral.
    Llama,
    /// Qwen2 / Qwen2.5: Llama with biases on q, k and v.
    Qwen2,
}

/// What `Error::UnsupportedArchitecture` lists.
pub const SUPPORTED: &str =
    "llama (Llama 2/3/3.x, SmolLM, SmolLM2, TinyLlama), mistral, qwen2 (Qwen2, Qwen2.5)";

impl Architecture {
    fn from_name(name: &str, source: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" | "LlamaForCausalLM" | "MistralForCausalLM" => {
                Ok(Architecture::Llama)
            }
            "qwen2" | "Qwen2ForCausalLM" => Ok(Architecture::Qwen2),
            other => Err(Error::UnsupportedArchitecture {
                source_name: source.to_string(),
                architecture: other.to_string(),
                supported: SUPPORTED,
            }),
        }
    }
}

/// A model's hyper-parameters.
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
    pub rope: RopeConfig,
    /// The context the model was trained for.
    pub max_positions: usize,
    /// The output projection is the embedding table.
    pub tied_embeddings: bool,
    /// q, k and v projections have biases (Qwen2).
    pub qkv_bias: bool,
}

impl ModelConfig {
    /// From a GGUF file's metadata and tensor table. GGUF's llama weights are permuted for the
    /// interleaved RoPE layout; Qwen2's are not (NeoX).
    pub fn from_gguf(meta: &GgufMetadata, model: &ModelFiles) -> Result<Self> {
        let arch_name = meta.architecture()?;
        let architecture = Architecture::from_name(arch_name, meta.file())?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let u = |k: &str| -> Result<usize> { Ok(meta.u32(&key(k))? as usize) };
        let hidden = u("embedding_length")?;
        let heads = u("attention.head_count")?;
        let kv_heads = match meta.get_opt::<u32>(&key("attention.head_count_kv"))? {
            Some(n) => n as usize,
            None => heads,
        };
        let head_dim = match meta.get_opt::<u32>(&key("attention.key_length"))? {
            Some(n) => n as usize,
            None => hidden / heads.max(1),
        };
        let vocab = match meta.get_opt::<u32>(&key("vocab_size"))? {
            Some(n) => n as usize,
            None => meta.string_array("tokenizer.ggml.tokens")?.len(),
        };
        let rotary_dim = match meta.get_opt::<u32>(&key("rope.dimension_count"))? {
            Some(n) => n as usize,
            None => head_dim,
        };
        let theta = meta
            .get_opt::<f32>(&key("rope.freq_base"))?
            .unwrap_or(10_000.0);
        let layout = match architecture {
            Architecture::Llama => RopeLayout::Interleaved,
            Architecture::Qwen2 => RopeLayout::NeoX,
        };
        let config = ModelConfig {
            architecture,
            hidden,
            layers: u("block_count")?,
            heads,
            kv_heads,
            head_dim,
            ffn: u("feed_forward_length")?,
            vocab,
            rms_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope: RopeConfig {
                head_dim,
                rotary_dim,
                theta,
                layout,
                // Llama-3 scaling is baked into a `rope_freqs.weight` tensor in GGUF; not yet read.
                llama3: None,
            },
            max_positions: u("context_length")?,
            tied_embeddings: model.tensor("output.weight").is_none(),
            qkv_bias: model.tensor("blk.0.attn_q.bias").is_some(),
        };
        config.validate(meta.file())
    }

    /// From a Hugging Face `config.json` (`rope_theta` or transformers 5's `rope_parameters`).
    /// HF checkpoints keep q/k in the NeoX (half-split) RoPE layout.
    pub fn from_hf_json(json: &str, source: &str) -> Result<Self> {
        let bad = |detail: String| Error::Config {
            source_name: source.to_string(),
            detail,
        };
        let v: Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let name = v["model_type"]
            .as_str()
            .or_else(|| v["architectures"][0].as_str())
            .ok_or_else(|| bad("neither model_type nor architectures is given".into()))?;
        let architecture = Architecture::from_name(name, source)?;
        let int = |k: &str| -> Result<usize> {
            v[k].as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("'{k}' is missing or not a whole number")))
        };
        let opt_int = |k: &str| v[k].as_u64().map(|n| n as usize);
        let hidden = int("hidden_size")?;
        let heads = int("num_attention_heads")?;
        let kv_heads = opt_int("num_key_value_heads").unwrap_or(heads);
        let head_dim = opt_int("head_dim").unwrap_or(hidden / heads.max(1));
        let rope_params = &v["rope_parameters"];
        let theta = v["rope_theta"]
            .as_f64()
            .or_else(|| rope_params["rope_theta"].as_f64())
            .unwrap_or(10_000.0) as f32;
        let scaling = if v["rope_scaling"].is_object() {
            &v["rope_scaling"]
        } else {
            rope_params
        };
        let llama3 = match scaling["rope_type"]
            .as_str()
            .or_else(|| scaling["type"].as_str())
        {
            None | Some("default") => None,
            Some("llama3") => {
                let f = |k: &str| {
                    scaling[k]
                        .as_f64()
                        .ok_or_else(|| bad(format!("llama3 rope scaling lacks '{k}'")))
                };
                Some(Llama3Scaling {
                    factor: f("factor")? as f32,
                    low_freq_factor: f("low_freq_factor")? as f32,
                    high_freq_factor: f("high_freq_factor")? as f32,
                    original_max_position_embeddings: f("original_max_position_embeddings")? as u32,
                })
            }
            Some(other) => {
                return Err(bad(format!(
                    "rope scaling '{other}' is not supported (supported: llama3)"
                )))
            }
        };
        let config = ModelConfig {
            architecture,
            hidden,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            ffn: int("intermediate_size")?,
            vocab: int("vocab_size")?,
            rms_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope: RopeConfig {
                head_dim,
                rotary_dim: head_dim,
                theta,
                layout: RopeLayout::NeoX,
                llama3,
            },
            max_positions: opt_int("max_position_embeddings").unwrap_or(4096),
            tied_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            qkv_bias: v["attention_bias"]
                .as_bool()
                .unwrap_or(architecture == Architecture::Qwen2),
        };
        config.validate(source)
    }

    fn validate(self, source: &str) -> Result<Self> {
        let bad = |detail: String| {
            Err(Error::Config {
                source_name: source.to_string(),
                detail,
            })
        };
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
            return bad(format!("a size is zero: {c:?}"));
        }
        if !c.heads.is_multiple_of(c.kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key-value heads",
                c.heads, c.kv_heads
            ));
        }
        if c.rope.rotary_dim > c.head_dim || !c.rope.rotary_dim.is_multiple_of(2) {
            return bad(format!(
                "rotary dimension {} does not fit heads of {}",
                c.rope.rotary_dim, c.head_dim
            ));
        }
        if !(c.rms_eps.is_finite()
            && c.rms_eps >= 0.0
            && c.rope.theta.is_finite()
            && c.rope.theta > 0.0)
        {
            return bad(format!(
                "eps {} or rope base {} is not usable",
                c.rms_eps, c.rope.theta
            ));
        }
        Ok(self)
    }
}
