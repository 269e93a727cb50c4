#!/usr/bin/env python3
"""SmolLM2-135M requantized by llama.cpp's own quantizer into the presets people download, and
llama.cpp's greedy tokens on each file, for tests/model_presets.rs (`make test-models`).

The default model (models/SmolLM2-135M-Instruct.Q4_1.gguf, scripts/fetch-model.sh) is requantized
with `llama_cpp.llama_model_quantize` (allow_requantize) into models/smollm2-presets/<preset>.gguf
(60-140 MB each, not committed), and llama.cpp (llama-cpp-python, CPU) generates greedily on
each: tests/fixtures/smollm2/presets.json holds the prompt ids, the tokens and each step's top-2
logit margin (llama.cpp quantizes activations to 8 bits, so the tests compare while the margin
is clear).

    python3 -m venv /tmp/fx && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \\
        -DGGML_F16C=ON" /tmp/fx/bin/pip install numpy llama-cpp-python==0.3.36 \\
        --no-binary llama-cpp-python
    scripts/fetch-model.sh && /tmp/fx/bin/python scripts/make_smollm2_presets.py
"""
import ctypes
import json
import pathlib

import numpy as np
import llama_cpp

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "models" / "smollm2-presets"
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
TOKENS = 16
PRESETS = {
    "q2_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    "q3_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q5_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_1,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
    "iq4_xs": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_XS,
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, ftype in PRESETS.items():
        path = OUT / f"{name}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(str(SOURCE).encode(), str(path).encode(),
                                            ctypes.byref(params))
        assert rc == 0, (name, rc)
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, n_threads=2,
                              verbose=False)
        cases = []
        for p in PROMPTS:
            llm.reset()
            ids = llm.tokenize(p.encode(), add_bos=True, special=False)
            llm.eval(ids)
            toks, margins = [], []
            for _ in range(TOKENS):
                row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
                top = np.argsort(row)[::-1][:2]
                toks.append(int(top[0]))
                margins.append(round(float(row[top[0]] - row[top[1]]), 4))
                llm.eval([int(top[0])])
            cases.append({"prompt": p, "input_ids": ids, "llama_cpp_ids": toks,
                          "llama_cpp_margins": margins})
        results[name] = {"bytes": path.stat().st_size, "cases": cases}
        print(name, path.stat().st_size, [c["llama_cpp_ids"][:6] for c in cases])
        del llm
    (ROOT / "tests" / "fixtures" / "smollm2" / "presets.json").write_text(json.dumps({
        "generator": f"scripts/make_smollm2_presets.py, llama-cpp-python {llama_cpp.__version__}",
        "source": SOURCE.name,
        "presets": results,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
