#!/usr/bin/env python3
"""Tiny random Llama and Qwen2 models and their reference logits, made with Hugging Face
transformers, for the forward-pass tests (tests/fixtures/models/<name>/).

Each folder holds what a Hugging Face model folder holds (config.json, model.safetensors in f32)
plus reference.json (the prompt's token ids) and logits.f32 (transformers' logits at every
position of the prompt, [tokens, vocab], little-endian f32).

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

MODELS = {
    "tiny-llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
                   dict(rope_theta=10000.0, tie_word_embeddings=False)),
    "tiny-qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                   dict(rope_theta=1000000.0, tie_word_embeddings=True)),
}


def main():
    for i, (name, (config_cls, model_cls, extra)) in enumerate(MODELS.items()):
        torch.manual_seed(1234 + i)
        config = config_cls(**COMMON, **extra)
        model = model_cls(config).eval().to(torch.float32)
        # Random init gives tiny weights; scale them up so logits are not all near zero.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
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
