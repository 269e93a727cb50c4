#!/usr/bin/env python3
"""make bench-cpu: PocketLM's CPU backend natively against llama.cpp on the same GGUF file, prompt
length, generated tokens and threads, in one run: `pocketlm --backend cpu --threads N bench` (its
"all threads" row) and scripts/bench_llamacpp.py, for one thread and for every core. Prints a
table and PocketLM's prefill and decode speed as a ratio of llama.cpp's.

    scripts/bench_cpu.py POCKETLM_BIN LLAMACPP_PYTHON MODEL [--prompt-tokens 128] [--gen-tokens 32]
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROW = re.compile(r"^all threads \((\d+)\)\s+prefill ([\d.]+) tokens/s .*decode ([\d.]+) tokens/s", re.M)


def pocketlm(binary, model, threads, a):
    out = subprocess.run([binary, "--backend", "cpu", "--threads", str(threads), "bench", model,
                          "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens)],
                         check=True, capture_output=True, text=True).stdout
    m = ROW.search(out)
    if not m:
        sys.exit(f"could not read pocketlm bench's output:\n{out}")
    return float(m.group(2)), float(m.group(3))


def llamacpp(python, model, threads, a):
    out = subprocess.run([python, os.path.join(HERE, "bench_llamacpp.py"), model, "--threads", str(threads),
                          "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["prefill_tokens_per_s"], r["decode_tokens_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pocketlm")
    ap.add_argument("python")
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"model {os.path.basename(a.model)}, {a.prompt_tokens} prompt tokens, {a.gen_tokens} greedy tokens\n")
    print("threads  engine       prefill tokens/s  decode tokens/s")
    for threads in sorted({1, cores}):
        p = pocketlm(a.pocketlm, a.model, threads, a)
        l = llamacpp(a.python, a.model, threads, a)
        print(f"{threads:>7}  PocketLM     {p[0]:>16.1f}  {p[1]:>15.2f}")
        print(f"{threads:>7}  llama.cpp    {l[0]:>16.1f}  {l[1]:>15.2f}")
        print(f"{threads:>7}  ratio        {p[0] / l[0]:>15.2f}×  {p[1] / l[1]:>14.2f}×")


if __name__ == "__main__":
    main()
