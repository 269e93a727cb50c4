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
SmolLM3's NoPE layer; Mistral's sliding window.

Run in a throwaway environment (torch is large; never install it in CI):
    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers safetensors numpy
    /tmp/fx/bin/python scripts/make_fixtures.py
"""
import json
import pathlib

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
                    dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=5,
                         num_hidden_layers=6,
                         rope_parameters={
                             "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         },
                         hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
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
}


def main():
    for i, (name, (config_cls, model_cls, extra, dtype, rand_1d)) in enumerate(MODELS.items()):
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
        ids = rng.integers(0, COMMON["vocab_size"], size=PROMPT_LEN).tolist()
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


if __name__ == "__main__":
    main()
