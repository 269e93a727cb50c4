#!/usr/bin/env python3
"""llama.cpp's CPU speed on a GGUF file, measured the way `pocketlm --backend cpu bench` measures
PocketLM's CPU backend, for `make bench-cpu`: the same prompt text repeated to exactly
--prompt-tokens tokens, prefilled in one batch, then --gen-tokens greedy tokens decoded one at a
time (past end-of-turn tokens), on --threads threads. Prints one JSON line:
{"threads", "prompt_tokens", "prefill_tokens_per_s", "decode_tokens_per_s"} (best of --runs).

llama-cpp-python is built from its sdist (make bench-cpu does it, into target/llamacpp-venv):

    python3 -m venv target/llamacpp-venv && CMAKE_ARGS="-DGGML_NATIVE=ON …" \\
        target/llamacpp-venv/bin/pip install --no-cache-dir numpy llama-cpp-python==0.3.36 \\
        --no-binary llama-cpp-python

(the Makefile's LLAMACPP_CMAKE_ARGS says which flags, and why AMX is left out; --no-cache-dir,
because pip would otherwise reuse a wheel it built earlier with other flags).
"""
import argparse
import json
import time

import llama_cpp
import numpy as np

# src/bin/pocketlm.rs bench_prompt's text.
TEXT = ("The quick brown fox jumps over the lazy dog while the farmer counts his sheep, one by "
        "one, under a sky the colour of ripe apricots. ")


def last_argmax(llm):
    """The greedy token after the last eval. Without logits_all, llama-cpp-python (0.3.x) no longer
    copies the logits into llm.scores, so they are read from the context."""
    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).argmax())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    a = ap.parse_args()

    n_ctx = a.prompt_tokens + a.gen_tokens + 8
    llm = llama_cpp.Llama(a.model, n_ctx=n_ctx, n_batch=max(512, a.prompt_tokens), n_threads=a.threads,
                          n_threads_batch=a.threads, n_gpu_layers=0, verbose=False, logits_all=False)
    piece = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    prompt = (piece * (a.prompt_tokens // len(piece) + 1))[: a.prompt_tokens]

    best_prefill = best_decode = 0.0
    for _ in range(a.runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        token = last_argmax(llm)
        for _ in range(a.gen_tokens - 1):
            llm.eval([token])
            token = last_argmax(llm)
        t2 = time.perf_counter()
        best_prefill = max(best_prefill, a.prompt_tokens / (t1 - t0))
        best_decode = max(best_decode, (a.gen_tokens - 1) / (t2 - t1))
    print(json.dumps({"threads": a.threads, "prompt_tokens": a.prompt_tokens,
                      "prefill_tokens_per_s": best_prefill, "decode_tokens_per_s": best_decode}))


if __name__ == "__main__":
    main()
