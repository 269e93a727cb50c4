#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 (models/all-MiniLM-L6-v2, scripts/fetch-minilm.sh)
from sentence-transformers, for tests/model_minilm.rs: tests/fixtures/minilm/reference.json holds
the sentences, their token ids as the model's tokenizer gives them (truncated to the model's
max_seq_length, 256) and their embeddings (mean pooled, normalised).

The sentences cover what the tokenizer normalises (case, accents, CJK characters split one by one,
an emoji that is [UNK], punctuation), an empty string, and a text longer than 256 tokens.

Run in a throwaway environment (torch is large; never install it in CI):
    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers safetensors numpy
    /tmp/fx/bin/pip install scipy scikit-learn && /tmp/fx/bin/pip install --no-deps sentence-transformers
    /tmp/fx/bin/python scripts/make_minilm_reference.py
"""
import json
import pathlib

import sentence_transformers
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
OUT = ROOT / "tests" / "fixtures" / "minilm" / "reference.json"

SENTENCES = [
    "The capital of France is Paris.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Crème brûlée is a DESSERT, naïve café-goers say!",
    "東京は日本の首都です。",
    "I love this 🤖 so much",
    "",
    " ".join(f"word{i} and some padding text" for i in range(80)),
]


def main():
    model = sentence_transformers.SentenceTransformer(str(MODEL), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    embeddings = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False,
                              batch_size=len(SENTENCES))
    tokens = [model.tokenize([s])["input_ids"][0].tolist() for s in SENTENCES]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "generator": f"scripts/make_minilm_reference.py, sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}",
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "input_ids": tokens,
        "embeddings": [[round(float(x), 8) for x in e] for e in embeddings],
    }, ensure_ascii=False) + "\n")
    print(OUT, [len(t) for t in tokens])


if __name__ == "__main__":
    main()
