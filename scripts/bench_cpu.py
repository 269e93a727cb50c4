#!/usr/bin/env python3
"""make bench-cpu: PocketLM's CPU backend natively against llama.cpp on the same GGUF file, prompt
length, generated tokens and threads, in one run: `pocketlm --backend cpu --threads N bench` (its
"all threads" row) and scripts/bench_llamacpp.py, for one thread and for every core. Prints a
table and PocketLM's prefill and decode speed as a ratio of llama.cpp's.

The two engines alternate for --rounds rounds (default 3) and the ratio is the median of the
rounds' ratios: on shared VMs the machine's speed drifts by 2× within minutes, and a ratio of
two runs taken minutes apart measured that drift more than the engines.

    scripts/bench_cpu.py POCKETLM_BIN LLAMACPP_PYTHON MODEL [--prompt-tokens 128] [--gen-tokens 32]
        [--rounds 3]
"""
import argparse
import json
import os
import re
import statistics
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
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"model {os.path.basename(a.model)}, {a.prompt_tokens} prompt tokens, {a.gen_tokens} greedy tokens, "
          f"{a.rounds} alternating rounds\n")
    print("threads  round  engine       prefill tokens/s  decode tokens/s")
    summary = []
    for threads in sorted({1, cores}):
        ratios = []
        for r in range(1, a.rounds + 1):
            p = pocketlm(a.pocketlm, a.model, threads, a)
            l = llamacpp(a.python, a.model, threads, a)
            print(f"{threads:>7}  {r:>5}  PocketLM     {p[0]:>16.1f}  {p[1]:>15.2f}")
            print(f"{threads:>7}  {r:>5}  llama.cpp    {l[0]:>16.1f}  {l[1]:>15.2f}")
            ratios.append((p[0] / l[0], p[1] / l[1]))
        pre = sorted(x[0] for x in ratios)
        dec = sorted(x[1] for x in ratios)
        summary.append((threads, statistics.median(pre), pre, statistics.median(dec), dec))
    print()
    for threads, mp, pre, md, dec in summary:
        span = lambda v: f"{v[0]:.2f}–{v[-1]:.2f}"
        print(f"{threads} thread(s): PocketLM / llama.cpp, median of {a.rounds} rounds: prefill {mp:.2f}× "
              f"(rounds {span(pre)}), decode {md:.2f}× (rounds {span(dec)})")


if __name__ == "__main__":
    main()
