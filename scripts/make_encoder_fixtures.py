#!/usr/bin/env python3
"""Tiny random sentence-embedding models and their reference outputs, made with Hugging Face
transformers, for the encoder tests (tests/fixtures/models/<name>/).

Each folder is laid out as a sentence-transformers model folder: config.json and
model.safetensors (f32) of the transformer, modules.json naming the Transformer, Pooling and
Normalize modules, and 1_Pooling/config.json with the pooling mode. reference.json holds token-id
inputs of several lengths (with token type 0, no padding), and for each the pooled, L2-normalised
embedding; hidden.f32 holds transformers' last hidden states of every input one after the other
([tokens, hidden] each, little-endian f32).

- tiny-bert: BERT (post-LayerNorm with biases, exact GELU, absolute position and token-type
  embeddings), mean pooling, as all-MiniLM-L6-v2 and bge/e5 are built. 1-D weights (norms,
  biases) are randomised so that they matter.

Run in a throwaway environment (torch is large; never install it in CI):
    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers safetensors numpy
    /tmp/fx/bin/python scripts/make_encoder_fixtures.py
"""
import json
import pathlib

import numpy as np
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
LENGTHS = [1, 5, 16, 64]

MODELS = {
    "tiny-bert": (
        transformers.BertConfig,
        transformers.BertModel,
        dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            type_vocab_size=2,
            layer_norm_eps=1e-12,
            hidden_act="gelu",
        ),
        "mean",
    ),
}


def pool(hidden, mode):
    if mode == "mean":
        return hidden.mean(axis=0)
    if mode == "cls":
        return hidden[0]
    if mode == "lasttoken":
        return hidden[-1]
    raise ValueError(mode)


def main():
    for i, (name, (config_cls, model_cls, settings, mode)) in enumerate(MODELS.items()):
        torch.manual_seed(4321 + i)
        config = config_cls(**settings)
        config._attn_implementation = "eager"
        model = model_cls(config, add_pooling_layer=False).eval().to(torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(3.0)
                else:
                    p.add_(torch.randn_like(p) * 0.3)
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        (folder / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ], indent=2) + "\n")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": settings["hidden_size"],
            "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": mode == "lasttoken",
            "include_prompt": True,
        }, indent=2) + "\n")
        rng = np.random.default_rng(77 + i)
        inputs = [rng.integers(0, settings["vocab_size"], size=n).tolist() for n in LENGTHS]
        hidden_all = []
        embeddings = []
        with torch.no_grad():
            for ids in inputs:
                h = model(torch.tensor([ids])).last_hidden_state[0].to(torch.float32).numpy()
                hidden_all.append(h)
                e = pool(h.astype(np.float64), mode)
                embeddings.append((e / np.linalg.norm(e)).tolist())
        np.concatenate(hidden_all).astype("<f4").tofile(folder / "hidden.f32")
        (folder / "reference.json").write_text(json.dumps({
            "generator": f"scripts/make_encoder_fixtures.py, transformers {transformers.__version__}, torch {torch.__version__}",
            "inputs": inputs,
            "hidden": "hidden.f32",
            "pooling": mode,
            "embeddings": embeddings,
        }, indent=2) + "\n")
        print(name, sorted(p.name for p in folder.iterdir()))


if __name__ == "__main__":
    main()
