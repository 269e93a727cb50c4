#!/usr/bin/env python3
"""Reference greedy generations of the default model (SmolLM2-135M-Instruct, GGUF Q4_1/Q8_0) by
Hugging Face transformers on the same weights dequantized to f32, for tests/gpu_model.rs:
tests/fixtures/smollm2/greedy.json. Generation ignores EOS so every case has 40 tokens.

    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers gguf accelerate numpy
    scripts/fetch-model.sh && /tmp/fx/bin/python scripts/make_smollm2_reference.py
"""
import json
import pathlib

import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = str(ROOT / "models")
tok = transformers.AutoTokenizer.from_pretrained(MODELS, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
model = transformers.AutoModelForCausalLM.from_pretrained(MODELS, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval()
prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
out = []
for p in prompts:
    ids = tok(p, return_tensors="pt").input_ids
    with torch.no_grad():
        g = model.generate(ids, max_new_tokens=40, min_new_tokens=40, do_sample=False, top_p=None, temperature=None, top_k=None, eos_token_id=None, pad_token_id=0)
    new = g[0, ids.shape[1]:].tolist()
    out.append({"prompt": p, "input_ids": ids[0].tolist(), "generated_ids": new, "text": tok.decode(new)})
    print(p, "->", repr(tok.decode(new)))
json.dump({"generator": f"transformers {transformers.__version__} on the GGUF dequantized to f32", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "cases": out}, open(ROOT / "tests" / "fixtures" / "smollm2" / "greedy.json", "w"), indent=1)
