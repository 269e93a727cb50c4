//! The architectures PocketLM runs, as data: each is one [`ArchSpec`] entry that lists the tensor
//! roles it has (required, optional, or tied to another), the Hugging Face names that differ from
//! the defaults, the RoPE layout of its GGUF files, and the fixed traits of its block (q/k norm,
//! sandwich norms, gate activation, embedding scale). Hyper-parameters that vary between models of
//! one architecture (sizes, RoPE, windows, soft-caps) are read by [`super::ModelConfig`].
//!
//! Adding an architecture is one entry in [`ARCHS`] (plus, when it has a new kind of block, the
//! few lines of `ModelConfig` that read its settings) and its fixture.

use crate::kernels::{GateActivation, RopeLayout};

/// The architectures PocketLM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// Llama 2/3/3.x, SmolLM/SmolLM2, TinyLlama, Mistral/Ministral, EuroLLM, Salamandra.
    Llama,
    /// Qwen2 / Qwen2.5: Llama with biases on q, k and v.
    Qwen2,
    /// Qwen3 (dense): RMSNorm on each head of q and k before RoPE.
    Qwen3,
    /// SmolLM3: Llama with every fourth layer without RoPE (NoPE).
    SmolLM3,
    /// Gemma 2: GeGLU, sandwich norms, √hidden embedding scale, alternating sliding-window and
    /// global layers, attention and final-logit soft-capping.
    Gemma2,
    /// Gemma 3 (text): Gemma 2's block with q/k norm, five local layers (own RoPE base) per
    /// global one, no soft-capping.
    Gemma3,
    /// Phi-3 / Phi-3.5-mini / Phi-4-mini: fused QKV and gate/up in the checkpoint, LongRoPE,
    /// partial rotary dimensions.
    Phi3,
    /// IBM Granite 3.x: Llama with multipliers on the embeddings, the attention scores, each
    /// block's residual branches and the logits.
    Granite,
    /// AI2's OLMo 2: no pre-norms, the attention and MLP outputs normalised before their
    /// residual adds, q and k normalised over their whole projections.
    Olmo2,
}

/// What a tensor is in the block, whatever a checkpoint calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbd,
    OutputNorm,
    /// The LM head, [vocab, hidden].
    Output,
    /// Llama 3.1+ frequency factors (GGUF only).
    RopeFreqs,
    /// LongRoPE frequency factors for contexts within / beyond the original (GGUF only).
    RopeFactorsShort,
    RopeFactorsLong,
    AttnNorm,
    Q,
    K,
    V,
    /// q, k and v stacked in the checkpoint (Phi-3).
    Qkv,
    QBias,
    KBias,
    VBias,
    /// RMSNorm over each head of q / k ([head_dim]).
    QNorm,
    KNorm,
    /// The attention output projection.
    O,
    /// Applied to the attention output before the residual add (Gemma's sandwich).
    PostAttnNorm,
    FfnNorm,
    Gate,
    Up,
    /// gate and up stacked in the checkpoint (Phi-3).
    GateUp,
    Down,
    PostFfnNorm,
}

impl Role {
    /// An RMSNorm weight (Gemma's Hugging Face checkpoints store these as `w - 1`).
    pub fn is_norm(self) -> bool {
        matches!(
            self,
            Role::OutputNorm
                | Role::AttnNorm
                | Role::QNorm
                | Role::KNorm
                | Role::PostAttnNorm
                | Role::FfnNorm
                | Role::PostFfnNorm
        )
    }

    /// The GGUF name (`{}` stands for the layer index), as llama.cpp's converter writes it.
    pub fn gguf(self) -> &'static str {
        match self {
            Role::TokenEmbd => "token_embd.weight",
            Role::OutputNorm => "output_norm.weight",
            Role::Output => "output.weight",
            Role::RopeFreqs => "rope_freqs.weight",
            Role::RopeFactorsShort => "rope_factors_short.weight",
            Role::RopeFactorsLong => "rope_factors_long.weight",
            Role::AttnNorm => "blk.{}.attn_norm.weight",
            Role::Q => "blk.{}.attn_q.weight",
            Role::K => "blk.{}.attn_k.weight",
            Role::V => "blk.{}.attn_v.weight",
            Role::Qkv => "blk.{}.attn_qkv.weight",
            Role::QBias => "blk.{}.attn_q.bias",
            Role::KBias => "blk.{}.attn_k.bias",
            Role::VBias => "blk.{}.attn_v.bias",
            Role::QNorm => "blk.{}.attn_q_norm.weight",
            Role::KNorm => "blk.{}.attn_k_norm.weight",
            Role::O => "blk.{}.attn_output.weight",
            Role::PostAttnNorm => "blk.{}.post_attention_norm.weight",
            Role::FfnNorm => "blk.{}.ffn_norm.weight",
            Role::Gate => "blk.{}.ffn_gate.weight",
            // Phi-3's GGUF keeps the stacked gate/up under the up projection's name.
            Role::Up | Role::GateUp => "blk.{}.ffn_up.weight",
            Role::Down => "blk.{}.ffn_down.weight",
            Role::PostFfnNorm => "blk.{}.post_ffw_norm.weight",
        }
    }

    /// The usual Hugging Face name (an architecture may override it: [`ArchSpec::hf_names`]);
    /// `None` for tensors only GGUF files have.
    pub fn hf(self) -> Option<&'static str> {
        Some(match self {
            Role::TokenEmbd => "model.embed_tokens.weight",
            Role::OutputNorm => "model.norm.weight",
            Role::Output => "lm_head.weight",
            Role::RopeFreqs | Role::RopeFactorsShort | Role::RopeFactorsLong => return None,
            Role::AttnNorm => "model.layers.{}.input_layernorm.weight",
            Role::Q => "model.layers.{}.self_attn.q_proj.weight",
            Role::K => "model.layers.{}.self_attn.k_proj.weight",
            Role::V => "model.layers.{}.self_attn.v_proj.weight",
            Role::Qkv => "model.layers.{}.self_attn.qkv_proj.weight",
            Role::QBias => "model.layers.{}.self_attn.q_proj.bias",
            Role::KBias => "model.layers.{}.self_attn.k_proj.bias",
            Role::VBias => "model.layers.{}.self_attn.v_proj.bias",
            Role::QNorm => "model.layers.{}.self_attn.q_norm.weight",
            Role::KNorm => "model.layers.{}.self_attn.k_norm.weight",
            Role::O => "model.layers.{}.self_attn.o_proj.weight",
            Role::PostAttnNorm => "model.layers.{}.post_attention_layernorm.weight",
            // Llama's pre-MLP norm is called the post-attention norm.
            Role::FfnNorm => "model.layers.{}.post_attention_layernorm.weight",
            Role::Gate => "model.layers.{}.mlp.gate_proj.weight",
            Role::Up => "model.layers.{}.mlp.up_proj.weight",
            Role::GateUp => "model.layers.{}.mlp.gate_up_proj.weight",
            Role::Down => "model.layers.{}.mlp.down_proj.weight",
            Role::PostFfnNorm => "model.layers.{}.post_feedforward_layernorm.weight",
        })
    }
}

/// Where a multimodal checkpoint (Gemma 3 4B and larger, `…ForConditionalGeneration`) keeps its
/// language model: the prefix that stands for the decoder's `model.` and the one that stands for
/// `lm_head.`. transformers before 4.52 saved `language_model.model.layers.…` and
/// `language_model.lm_head.weight` (the Gemma 3 checkpoints on the hub); later versions save
/// `model.language_model.layers.…` and `lm_head.weight`.
pub const TEXT_MODEL_PREFIXES: [(&str, &str); 2] = [
    ("language_model.model.", "language_model.lm_head."),
    ("model.language_model.", "lm_head."),
];

/// Tensors of a multimodal checkpoint that only its other modalities use (the image encoder and
/// its projection into the text model: Gemma 3's `vision_tower.` and `multi_modal_projector.`,
/// Qwen-VL's `visual.`): PocketLM runs the language model alone, so these are never loaded,
/// with or without the `model.` prefix newer transformers versions save them under.
pub fn other_modality(name: &str) -> bool {
    let name = name.strip_prefix("model.").unwrap_or(name);
    ["vision_tower.", "multi_modal_projector.", "visual."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Whether a model of the architecture must have a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
    /// Absent means "the same as this role's tensor" (tied embeddings).
    TiedTo(Role),
}

/// The fixed traits of an architecture's block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockTraits {
    /// RMSNorm on q and k after the projection: over each head, or with `qk_norm_whole` over
    /// the whole projection (all heads at once: OLMo 2).
    pub qk_norm: bool,
    pub qk_norm_whole: bool,
    /// RMSNorm before the attention and the MLP (every architecture but OLMo 2, which has only
    /// the post-norms).
    pub pre_norms: bool,
    /// Sandwich norms: the attention and MLP outputs are normalised before the residual add.
    pub post_norms: bool,
    pub activation: GateActivation,
    /// Embeddings are multiplied by √hidden.
    pub embed_scale: bool,
    /// Hugging Face checkpoints store norm weights as `w - 1` (Gemma); GGUF converters add the 1.
    pub hf_norm_offset: f32,
    /// How q/k pairs rotate in GGUF files (llama.cpp permutes Llama-shaped q/k weights for the
    /// interleaved layout; Hugging Face checkpoints are always NeoX).
    pub gguf_rope: RopeLayout,
}

const LLAMA_BLOCK: BlockTraits = BlockTraits {
    qk_norm: false,
    qk_norm_whole: false,
    pre_norms: true,
    post_norms: false,
    activation: GateActivation::Silu,
    embed_scale: false,
    hf_norm_offset: 0.0,
    gguf_rope: RopeLayout::Interleaved,
};

const GEMMA_BLOCK: BlockTraits = BlockTraits {
    qk_norm: false,
    qk_norm_whole: false,
    pre_norms: true,
    post_norms: true,
    activation: GateActivation::GeluTanh,
    embed_scale: true,
    hf_norm_offset: 1.0,
    gguf_rope: RopeLayout::NeoX,
};

/// One architecture, as data.
#[derive(Debug)]
pub struct ArchSpec {
    pub arch: Architecture,
    /// `general.architecture` values of its GGUF files.
    pub gguf: &'static [&'static str],
    /// `model_type` and `architectures` values of its `config.json`.
    pub hf: &'static [&'static str],
    pub tensors: &'static [(Role, Need)],
    /// Hugging Face names that differ from [`Role::hf`].
    pub hf_names: &'static [(Role, &'static str)],
    pub block: BlockTraits,
}

use Need::{Optional as O, Required as R};

const LLAMA_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::RopeFreqs, O),
    (Role::AttnNorm, R),
    (Role::Q, R),
    (Role::K, R),
    (Role::V, R),
    (Role::QBias, O),
    (Role::KBias, O),
    (Role::VBias, O),
    (Role::O, R),
    (Role::FfnNorm, R),
    (Role::Gate, R),
    (Role::Up, R),
    (Role::Down, R),
];

const QWEN3_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::AttnNorm, R),
    (Role::Q, R),
    (Role::K, R),
    (Role::V, R),
    (Role::QBias, O),
    (Role::KBias, O),
    (Role::VBias, O),
    (Role::QNorm, R),
    (Role::KNorm, R),
    (Role::O, R),
    (Role::FfnNorm, R),
    (Role::Gate, R),
    (Role::Up, R),
    (Role::Down, R),
];

const GEMMA2_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::AttnNorm, R),
    (Role::Q, R),
    (Role::K, R),
    (Role::V, R),
    (Role::O, R),
    (Role::PostAttnNorm, R),
    (Role::FfnNorm, R),
    (Role::Gate, R),
    (Role::Up, R),
    (Role::Down, R),
    (Role::PostFfnNorm, R),
];

const GEMMA3_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::AttnNorm, R),
    (Role::Q, R),
    (Role::K, R),
    (Role::V, R),
    (Role::QNorm, R),
    (Role::KNorm, R),
    (Role::O, R),
    (Role::PostAttnNorm, R),
    (Role::FfnNorm, R),
    (Role::Gate, R),
    (Role::Up, R),
    (Role::Down, R),
    (Role::PostFfnNorm, R),
];

const GEMMA_HF_NAMES: &[(Role, &str)] = &[(
    Role::FfnNorm,
    "model.layers.{}.pre_feedforward_layernorm.weight",
)];

const OLMO2_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::Q, R),
    (Role::K, R),
    (Role::V, R),
    (Role::QNorm, R),
    (Role::KNorm, R),
    (Role::O, R),
    (Role::PostAttnNorm, R),
    (Role::Gate, R),
    (Role::Up, R),
    (Role::Down, R),
    (Role::PostFfnNorm, R),
];

const PHI3_TENSORS: &[(Role, Need)] = &[
    (Role::TokenEmbd, R),
    (Role::OutputNorm, R),
    (Role::Output, Need::TiedTo(Role::TokenEmbd)),
    (Role::RopeFactorsShort, O),
    (Role::RopeFactorsLong, O),
    (Role::AttnNorm, R),
    (Role::Qkv, R),
    (Role::O, R),
    (Role::FfnNorm, R),
    (Role::GateUp, R),
    (Role::Down, R),
];

/// Every architecture PocketLM runs.
pub const ARCHS: &[ArchSpec] = &[
    ArchSpec {
        arch: Architecture::Llama,
        gguf: &["llama", "mistral"],
        hf: &["llama", "mistral", "LlamaForCausalLM", "MistralForCausalLM"],
        tensors: LLAMA_TENSORS,
        hf_names: &[],
        block: LLAMA_BLOCK,
    },
    ArchSpec {
        arch: Architecture::Qwen2,
        // Qwen2-VL and Qwen2.5-VL: Qwen2's text model, M-RoPE (plain RoPE on text).
        gguf: &["qwen2", "qwen2vl"],
        hf: &[
            "qwen2",
            "Qwen2ForCausalLM",
            "qwen2_vl",
            "qwen2_vl_text",
            "qwen2_5_vl",
            "qwen2_5_vl_text",
            "Qwen2VLForConditionalGeneration",
            "Qwen2_5_VLForConditionalGeneration",
        ],
        tensors: LLAMA_TENSORS,
        hf_names: &[],
        block: BlockTraits {
            gguf_rope: RopeLayout::NeoX,
            ..LLAMA_BLOCK
        },
    },
    ArchSpec {
        arch: Architecture::Qwen3,
        // Qwen3-VL's text model: Qwen3 with interleaved M-RoPE (plain RoPE on text).
        gguf: &["qwen3", "qwen3vl"],
        hf: &[
            "qwen3",
            "Qwen3ForCausalLM",
            "qwen3_vl",
            "qwen3_vl_text",
            "Qwen3VLForConditionalGeneration",
        ],
        tensors: QWEN3_TENSORS,
        hf_names: &[],
        block: BlockTraits {
            qk_norm: true,
            gguf_rope: RopeLayout::NeoX,
            ..LLAMA_BLOCK
        },
    },
    ArchSpec {
        arch: Architecture::SmolLM3,
        gguf: &["smollm3"],
        hf: &["smollm3", "SmolLM3ForCausalLM"],
        tensors: LLAMA_TENSORS,
        hf_names: &[],
        block: LLAMA_BLOCK,
    },
    ArchSpec {
        arch: Architecture::Gemma2,
        gguf: &["gemma2"],
        hf: &["gemma2", "Gemma2ForCausalLM"],
        tensors: GEMMA2_TENSORS,
        hf_names: GEMMA_HF_NAMES,
        block: GEMMA_BLOCK,
    },
    ArchSpec {
        arch: Architecture::Gemma3,
        // llama.cpp's `gemma-embedding` is EmbeddingGemma: Gemma 3 attending both ways.
        gguf: &["gemma3", "gemma-embedding"],
        hf: &["gemma3_text", "Gemma3ForCausalLM", "Gemma3TextModel"],
        tensors: GEMMA3_TENSORS,
        hf_names: GEMMA_HF_NAMES,
        block: BlockTraits {
            qk_norm: true,
            ..GEMMA_BLOCK
        },
    },
    ArchSpec {
        arch: Architecture::Phi3,
        gguf: &["phi3"],
        hf: &["phi3", "Phi3ForCausalLM"],
        tensors: PHI3_TENSORS,
        hf_names: &[],
        block: BlockTraits {
            gguf_rope: RopeLayout::NeoX,
            ..LLAMA_BLOCK
        },
    },
    ArchSpec {
        arch: Architecture::Olmo2,
        gguf: &["olmo2"],
        hf: &["olmo2", "Olmo2ForCausalLM"],
        tensors: OLMO2_TENSORS,
        hf_names: &[],
        block: BlockTraits {
            qk_norm: true,
            qk_norm_whole: true,
            pre_norms: false,
            post_norms: true,
            gguf_rope: RopeLayout::NeoX,
            ..LLAMA_BLOCK
        },
    },
    ArchSpec {
        arch: Architecture::Granite,
        gguf: &["granite"],
        hf: &["granite", "GraniteForCausalLM"],
        tensors: LLAMA_TENSORS,
        hf_names: &[],
        block: LLAMA_BLOCK,
    },
];

/// What `Error::UnsupportedArchitecture` lists.
pub const SUPPORTED: &str = "llama (Llama 2/3/3.x, SmolLM, SmolLM2, TinyLlama, EuroLLM), mistral, \
    qwen2 (Qwen2, Qwen2.5, and Qwen2-VL's and Qwen2.5-VL's text model), qwen3 (and Qwen3-VL's \
    text model), smollm3, gemma2, gemma3 (text, and the text model of its multimodal \
    checkpoints), phi3 (Phi-3, Phi-3.5-mini, Phi-4-mini), granite (Granite 3.x), olmo2 (OLMo 2)";

impl Architecture {
    /// The entry of a GGUF `general.architecture` or a `config.json` `model_type` /
    /// `architectures` value.
    pub fn spec_of(name: &str, gguf: bool) -> Option<&'static ArchSpec> {
        ARCHS.iter().find(|s| {
            if gguf {
                s.gguf.contains(&name)
            } else {
                s.hf.contains(&name)
            }
        })
    }

    pub fn spec(self) -> &'static ArchSpec {
        ARCHS
            .iter()
            .find(|s| s.arch == self)
            .expect("every architecture has an entry in ARCHS")
    }

    /// The name `pocketlm info` prints (the GGUF architecture name).
    pub fn name(self) -> &'static str {
        self.spec().gguf[0]
    }
}

impl ArchSpec {
    /// How the model needs `role`; `None` when the architecture has no such tensor.
    pub fn need(&self, role: Role) -> Option<Need> {
        self.tensors
            .iter()
            .find(|(r, _)| *r == role)
            .map(|&(_, n)| n)
    }

    /// The name of `role` (of layer `layer`) in a GGUF file or a Hugging Face checkpoint.
    pub fn tensor_name(&self, role: Role, layer: usize, gguf: bool) -> Option<String> {
        let pattern = if gguf {
            Some(role.gguf())
        } else {
            self.hf_names
                .iter()
                .find(|(r, _)| *r == role)
                .map(|&(_, n)| n)
                .or_else(|| role.hf())
        }?;
        Some(pattern.replace("{}", &layer.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_has_one_entry_and_distinct_names() {
        let mut seen = std::collections::HashSet::new();
        for s in ARCHS {
            assert!(seen.insert(s.arch), "{:?} twice", s.arch);
            assert_eq!(s.arch.spec().arch, s.arch);
            for (i, (r, _)) in s.tensors.iter().enumerate() {
                assert!(
                    s.tensors[i + 1..].iter().all(|(o, _)| o != r),
                    "{:?}: {r:?} twice",
                    s.arch
                );
            }
            // Within one checkpoint format, two roles of an architecture never share a name.
            for gguf in [true, false] {
                let names: Vec<_> = s
                    .tensors
                    .iter()
                    .filter_map(|&(r, _)| s.tensor_name(r, 3, gguf))
                    .collect();
                let unique: std::collections::HashSet<_> = names.iter().collect();
                assert_eq!(unique.len(), names.len(), "{:?} gguf={gguf}", s.arch);
            }
        }
    }

    #[test]
    fn gemma_names_its_pre_mlp_norm_differently() {
        let g = Architecture::Gemma3.spec();
        assert_eq!(
            g.tensor_name(Role::FfnNorm, 2, false).unwrap(),
            "model.layers.2.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            g.tensor_name(Role::PostAttnNorm, 2, false).unwrap(),
            "model.layers.2.post_attention_layernorm.weight"
        );
        let l = Architecture::Llama.spec();
        assert_eq!(
            l.tensor_name(Role::FfnNorm, 0, false).unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            l.tensor_name(Role::FfnNorm, 0, true).unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            Architecture::spec_of("gemma3_text", false).unwrap().arch,
            Architecture::Gemma3
        );
        assert!(Architecture::spec_of("gpt2", true).is_none());
    }
}
