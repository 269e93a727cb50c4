#!/usr/bin/env python3
"""Tiny random models of every architecture PocketLM runs, and their reference logits, made with
Hugging Face transformers, for the forward-pass tests (tests/fixtures/models/<name>/).

Each folder holds what a Hugging Face model folder holds (config.json, model.safetensors in the
dtype named in MODELS: f32, or bf16 / f16 as checkpoints ship) plus reference.json (the prompt's
token ids) and logits.f32 (transformers' logits at every position of the prompt, [tokens,
vocab], little-endian f32). For bf16 / f16 checkpoints the weights are rounded to that dtype
first and the logits computed in f32 from the rounded weights, which is what PocketLM computes.

Each model exercises what its architecture adds: Qwen3's q/k norm and explicit head_dim, Gemma's
sandwich norms, (1 + w) norm weights (1-D weights are randomised so the offset matters), GeGLU,
embedding scale, sliding windows shorter than the prompt, Gemma 2's soft-capping and Gemma 3's
local RoPE base and linear scaling; Phi-3's fused projections, partial rotary and LongRoPE;
SmolLM3's NoPE layer; Mistral's sliding window; YaRN on Qwen3; Granite's multipliers; OLMo 2's
post-norms and whole-projection q/k norms.
tiny-gemma3-mm is a multimodal Gemma 3 (`Gemma3ForConditionalGeneration`, as Gemma 3 4B and
larger ship) with a tiny image encoder, as transformers 5 saves it (`language_model.model.`
names, the full `text_config`); tiny-gemma3-mm-sparse is the same weights as transformers
4.52-4.57 saved them (`model.language_model.` names) with the `text_config` transformers 4.50
wrote for the hub's checkpoints: only what differs from `Gemma3TextConfig`'s defaults, RoPE
scaling as `rope_scaling`. gemma-3-4b-it.json is that hub checkpoint's config.json, and
gemma-3-4b-it.expected.json the text model transformers reads from it. yarn.expected.json holds
transformers' YaRN frequencies for real checkpoints' settings. tiny-qwen2.5-vl and tiny-qwen3-vl
are Qwen's vision-language models with tiny vision encoders, run on text.

Only the models named on the command line are made when any are (seeds stay per model).

Run in a throwaway environment (torch is large; never install it in CI):
    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers safetensors numpy
    /tmp/fx/bin/python scripts/make_fixtures.py [NAME ...]
"""
import json
import pathlib
import sys

import numpy as np
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
PROMPT_LEN = 16
COMMON = dict(
    hidden_size=48,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)

HALF = {"bf16": torch.bfloat16, "f16": torch.float16}


def longrope_factors(n, seed):
    g = np.random.default_rng(seed)
    return [float(x) for x in np.round(g.uniform(1.0, 4.0, n), 3)]


# The multimodal fixture's image encoder: one SigLIP layer, 2×2 patches, pooled to 4 tokens.
TINY_SIGLIP = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                   image_size=28, patch_size=14)


def gemma3_multimodal(**text):
    return transformers.Gemma3Config(text_config=text, vision_config=TINY_SIGLIP,
                                     mm_tokens_per_image=4, boi_token_index=125,
                                     eoi_token_index=126, image_token_index=127)


# Qwen's vision-language models, with tiny vision encoders; their text model is Qwen2's or
# Qwen3's, with M-RoPE, which text alone (every axis at the token's position) makes plain RoPE.
QWEN_VL_TOKENS = dict(image_token_id=127, video_token_id=126, vision_start_token_id=125,
                      vision_end_token_id=124)


def qwen25_vl(**text):
    text["rope_scaling"] = {"type": "mrope", "mrope_section": [2, 2, 2]}
    return transformers.Qwen2_5_VLConfig(
        text_config=text, **QWEN_VL_TOKENS,
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=text["hidden_size"], patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]))


def qwen3_vl(**text):
    return transformers.Qwen3VLConfig(
        text_config=text, tie_word_embeddings=text["tie_word_embeddings"], **QWEN_VL_TOKENS,
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=text["hidden_size"], patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2,
                           deepstack_visual_indexes=[0], num_position_embeddings=16))


# Where the multimodal fixtures' image (and video) tokens start: prompts stay below them.
FIRST_IMAGE_TOKEN = {
    transformers.Gemma3ForConditionalGeneration: 125,
    transformers.Qwen2_5_VLForConditionalGeneration: 124,
    transformers.Qwen3VLForConditionalGeneration: 124,
}


GEMMA3_TEXT = dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=5, num_hidden_layers=6,
                   rope_parameters={
                       "full_attention": {"rope_type": "linear", "factor": 8.0,
                                          "rope_theta": 1000000.0},
                       "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                   },
                   hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)

# The hub's google/gemma-3-4b-it config.json (written by transformers 4.50).
GEMMA3_4B_CONFIG = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "eos_token_id": [1, 106],
    "image_token_index": 262144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "model_type": "gemma3_text",
        "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}

# name: (config class, model class, config overrides, weights dtype, randomise 1-D weights)
MODELS = {
    "tiny-llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                   dict(rope_theta=10000.0, tie_word_embeddings=False), "f32", False),
    "tiny-qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                   dict(rope_theta=1000000.0, tie_word_embeddings=True), "f32", False),
    # Qwen2.5 checkpoints ship in bf16, biases included.
    "tiny-qwen2-bf16": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                        dict(rope_theta=1000000.0, tie_word_embeddings=True), "bf16", True),
    "tiny-qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
                   dict(head_dim=16, rope_theta=1000000.0, tie_word_embeddings=True), "bf16", True),
    "tiny-gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
                    # Six layers: five local, one global, the pattern llama.cpp assumes for GGUF.
                    GEMMA3_TEXT,
                    "f16", True),
    "tiny-gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
                    # query_pre_attn_scalar = head_dim, as in Gemma 2 2B/9B (llama.cpp's GGUF
                    # reader assumes it).
                    dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=6,
                         attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                         rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh",
                         tie_word_embeddings=True),
                    "f32", True),
    "tiny-phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
                  dict(partial_rotary_factor=0.5, original_max_position_embeddings=64,
                       max_position_embeddings=128, sliding_window=None,
                       rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                        "short_factor": longrope_factors(3, 1),
                                        "long_factor": longrope_factors(3, 2),
                                        "original_max_position_embeddings": 64},
                       pad_token_id=0, tie_word_embeddings=False),
                  "f32", True),
    "tiny-smollm3": (transformers.SmolLM3Config, transformers.SmolLM3ForCausalLM,
                     # Four layers: the fourth has no RoPE (transformers' and llama.cpp's default).
                     dict(rope_theta=10000.0, num_hidden_layers=4, use_sliding_window=False,
                          tie_word_embeddings=True, pad_token_id=0),
                     "f32", True),
    "tiny-mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                     dict(rope_theta=10000.0, sliding_window=5, head_dim=12,
                          tie_word_embeddings=False),
                     "f32", True),
    # YaRN as Qwen3 and Qwen2.5 document it for long contexts: a ramp from kept to divided
    # frequencies over the pairs (pair 0 kept, pair 1 half, pairs 2-7 divided by 4 at this
    # size and base) and cos/sin × (1 + 0.1 ln 4).
    "tiny-qwen3-yarn": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
                        dict(head_dim=16, max_position_embeddings=128, tie_word_embeddings=True,
                             rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0,
                                              "factor": 4.0,
                                              "original_max_position_embeddings": 32}),
                        "bf16", True),
    # Granite 3.x's multipliers (its 2B: embeddings × 12, residual branches × 0.22, logits ÷ 8,
    # attention × 1/64 for heads of 64; here an attention scale unlike 1/√head_dim, a logit
    # divisor that keeps the logits large enough to compare, and an eps large enough to be seen,
    # since PocketLM carries the residual stream ÷ 0.22 and divides eps by 0.22²).
    "tiny-granite": (transformers.GraniteConfig, transformers.GraniteForCausalLM,
                     dict(rope_theta=10000.0, embedding_multiplier=12.0, attention_multiplier=0.2,
                          residual_multiplier=0.22, logits_scaling=2.0, rms_norm_eps=0.1,
                          tie_word_embeddings=True),
                     "bf16", True),
    # OLMo 2: no pre-norms, the attention and MLP outputs normalised before their residual adds,
    # q and k normalised over their whole projections (all heads) before RoPE.
    "tiny-olmo2": (transformers.Olmo2Config, transformers.Olmo2ForCausalLM,
                   dict(rope_theta=500000.0, tie_word_embeddings=False), "f32", True),
    # Gemma 3 4B and larger ship as bf16 multimodal checkpoints.
    "tiny-gemma3-mm": (gemma3_multimodal, transformers.Gemma3ForConditionalGeneration,
                       GEMMA3_TEXT, "bf16", True),
    # Qwen2.5-VL (hub layout: `model.layers.`, `visual.`) and Qwen3-VL (`model.language_model.`,
    # `model.visual.`), bf16 as they ship.
    "tiny-qwen2.5-vl": (qwen25_vl, transformers.Qwen2_5_VLForConditionalGeneration,
                        dict(rope_theta=1000000.0, tie_word_embeddings=True), "bf16", True),
    "tiny-qwen3-vl": (qwen3_vl, transformers.Qwen3VLForConditionalGeneration,
                      dict(head_dim=16, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                            "mrope_section": [2, 3, 3],
                                            "mrope_interleaved": True}),
                      "bf16", True),
}


def sparse_layout(folder, out):
    """tiny-gemma3-mm as transformers 4.52-4.57 named its tensors, with the sparse text_config
    transformers 4.50 wrote (only settings that differ from the defaults; RoPE scaling as
    `rope_scaling`, the RoPE bases and the layer pattern being the defaults)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    renames = [("language_model.model.", "model.language_model."),
               ("language_model.lm_head.", "lm_head."),
               ("vision_tower.", "model.vision_tower."),
               ("multi_modal_projector.", "model.multi_modal_projector.")]

    def rename(k):
        for old, new in renames:
            if k.startswith(old):
                return new + k[len(old):]
        return k

    tensors = load_file(folder / "model.safetensors")
    save_file({rename(k): v for k, v in tensors.items()}, out / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    defaults = transformers.Gemma3TextConfig().to_dict()
    sparse = {k: v for k, v in text.items()
              if k == "model_type" or (k in defaults and defaults[k] != v
                                       and k not in ("rope_parameters", "layer_types"))}
    assert text["rope_parameters"]["full_attention"]["rope_theta"] == \
        defaults["rope_parameters"]["full_attention"]["rope_theta"]
    sparse["rope_scaling"] = {"factor": text["rope_parameters"]["full_attention"]["factor"],
                              "rope_type": "linear"}
    config["text_config"] = sparse
    config.pop("tie_word_embeddings", None)
    config["transformers_version"] = "4.50.0.dev0"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # The same model: transformers' view of this config must be the one it saved.
    reread = transformers.Gemma3Config(**{k: v for k, v in config.items()
                                          if k not in ("architectures", "transformers_version",
                                                       "model_type")}).text_config
    for k in ["hidden_activation", "tie_word_embeddings", "rope_parameters", "layer_types",
              "sliding_window", "head_dim", "rms_norm_eps", "vocab_size"]:
        assert getattr(reread, k) == text[k], (k, getattr(reread, k), text[k])
    for f in ["reference.json", "logits.f32"]:
        (out / f).write_bytes((folder / f).read_bytes())


def hub_config_reference():
    """The hub's Gemma 3 4B config.json and the text model transformers reads from it."""
    path = OUT / "gemma-3-4b-it.json"
    path.write_text(json.dumps(GEMMA3_4B_CONFIG, indent=2) + "\n")
    text = transformers.Gemma3Config(**{k: v for k, v in GEMMA3_4B_CONFIG.items()
                                        if k not in ("architectures", "transformers_version",
                                                     "model_type")}).text_config
    keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_activation",
            "max_position_embeddings", "rms_norm_eps", "query_pre_attn_scalar", "sliding_window",
            "layer_types", "rope_parameters", "tie_word_embeddings", "attention_bias",
            "final_logit_softcapping", "attn_logit_softcapping"]
    (OUT / "gemma-3-4b-it.expected.json").write_text(json.dumps(
        {"generator": f"scripts/make_fixtures.py, transformers {transformers.__version__}",
         **{k: getattr(text, k) for k in keys}}, indent=2) + "\n")


# YaRN as real checkpoints configure it: Qwen3's documented long-context setting (head 128,
# base 1e6), and one with every knob turned (untruncated ramp, own betas, DeepSeek's mscales).
YARN_CASES = {
    "qwen3": dict(model_type="qwen3", hidden_size=4096, num_attention_heads=32, head_dim=128,
                  max_position_embeddings=40960,
                  rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                   "original_max_position_embeddings": 32768}),
    "knobs": dict(model_type="qwen2", hidden_size=1024, num_attention_heads=16,
                  max_position_embeddings=131072,
                  rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                   "original_max_position_embeddings": 4096, "beta_fast": 16.0,
                                   "beta_slow": 2.0, "truncate": False, "mscale": 0.707,
                                   "mscale_all_dim": 1.0}),
}


def yarn_reference():
    """transformers' YaRN frequencies and cos/sin factor for YARN_CASES."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    out = {"generator": f"scripts/make_fixtures.py, transformers {transformers.__version__}"}
    for name, settings in YARN_CASES.items():
        config = transformers.AutoConfig.for_model(**settings)
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
        out[name] = {"config": settings, "inv_freq": inv_freq.tolist(),
                     "attention_factor": attention_factor}
    (OUT / "yarn.expected.json").write_text(json.dumps(out, indent=2) + "\n")


def main():
    only = sys.argv[1:]
    for i, (name, (config_cls, model_cls, extra, dtype, rand_1d)) in enumerate(MODELS.items()):
        if only and name not in only:
            continue
        torch.manual_seed(1234 + i)
        config = config_cls(**{**COMMON, **extra})
        # The reference implementation, with soft-capping and windows applied literally.
        config._attn_implementation = "eager"
        model = model_cls(config).eval().to(torch.float32)
        # Random init gives tiny weights; scale them up so logits are not all near zero. 1-D
        # weights (norms, biases) start at 0 or 1: randomise them where the fixture says so,
        # so that norm offsets and biases are seen.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
                elif rand_1d:
                    p.add_(torch.randn_like(p) * 0.3)
            if dtype in HALF:
                # Round to the checkpoint's dtype; the reference computes in f32 from that.
                for p in model.parameters():
                    p.copy_(p.to(HALF[dtype]).to(torch.float32))
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        if dtype in HALF:
            half = model_cls(config).eval()
            half.load_state_dict(model.state_dict())
            half.to(HALF[dtype]).save_pretrained(folder, safe_serialization=True)
        else:
            model.save_pretrained(folder, safe_serialization=True)
        for extra_file in ["generation_config.json"]:
            (folder / extra_file).unlink(missing_ok=True)
        rng = np.random.default_rng(99 + i)
        top = FIRST_IMAGE_TOKEN.get(model_cls, COMMON["vocab_size"])
        ids = rng.integers(0, top, size=PROMPT_LEN).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].to(torch.float32).numpy()
        logits.astype("<f4").tofile(folder / "logits.f32")
        (folder / "reference.json").write_text(json.dumps({
            "generator": f"scripts/make_fixtures.py, transformers {transformers.__version__}, torch {torch.__version__}",
            "input_ids": ids,
            "logits": "logits.f32",
            "shape": list(logits.shape),
        }, indent=2) + "\n")
        print(name, sorted(p.name for p in folder.iterdir()))
        if model_cls is transformers.Gemma3ForConditionalGeneration:
            sparse_layout(folder, OUT / f"{name}-sparse")
    if not only or "tiny-gemma3-mm" in only:
        hub_config_reference()
    if not only or "tiny-qwen3-yarn" in only:
        yarn_reference()


if __name__ == "__main__":
    main()
