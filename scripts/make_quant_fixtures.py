#!/usr/bin/env python3
"""Regenerate tests/fixtures/quant/: GGML block bytes and their dequantized values, both made by
the Python `gguf` package (llama.cpp's gguf-py), the oracle `tests/quant_fixtures.rs` checks
`pocketlm::quant::dequantize` against bit for bit.

Run it from the repository root in a throwaway virtual environment (no torch needed):

    python3 -m venv /tmp/qfx && /tmp/qfx/bin/pip install gguf numpy
    /tmp/qfx/bin/python scripts/make_quant_fixtures.py

The output is deterministic for a given gguf/numpy version (fixed seed). It writes, per type
(named as `DType::name()`):

    <type>.bin     the tensor's bytes exactly as stored in a GGUF file (ggml block layout)
    <type>.f32     gguf.quants.dequantize(...) of those bytes: little-endian f32, row-major
    manifest.json  one line per tensor: type, shape [rows, cols], where its bytes came from and
                   the gguf version (kept one entry per line so the Rust test needs no JSON crate)
    blocks.gguf    the same tensors in one small GGUF file written by gguf.GGUFWriter

Where gguf-py can quantize a type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) the bytes are its
`gguf.quants.quantize` of floats that include edge cases (zeros, a constant block, large
magnitudes, values tiny enough that the f16 scale is subnormal). Where it can only dequantize
(Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) the blocks are random bytes with finite f16 scales
of moderate magnitude, plus blocks that set every bit of the packed scales, use negative and
subnormal scales, the int8 or 6-bit scale extremes, and every code book entry.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

SEED = 20250607
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"


def f16_bytes(x: float) -> np.ndarray:
    return np.array([x], dtype="<f2").view(np.uint8)


def small_block_values(rng: np.random.Generator, cols: int) -> np.ndarray:
    """Eight 32-element blocks (4 rows x 2 blocks) of floats with the edge cases listed above."""
    blocks = [
        rng.standard_normal(32),  # ordinary weights
        rng.uniform(-3.0, 3.0, 32),  # mixed signs, with a positive outlier below
        np.zeros(32),  # all zero: d = 0
        np.full(32, 0.7),  # constant: Q4_1 d = 0, m = 0.7
        rng.uniform(-60000.0, 60000.0, 32),  # near the f16 range (scales stay finite)
        rng.uniform(-1e-6, 1e-6, 32),  # tiny: f16 scales are subnormal
        -np.abs(rng.standard_normal(32)) * 10.0,  # all negative, largest magnitude negative
        rng.standard_normal(32) * 1e-2,
    ]
    blocks[1][5] = 9.5
    blocks[4][0], blocks[4][1] = 60000.0, -60000.0
    values = np.concatenate(blocks).astype(np.float32)
    return values.reshape(-1, cols)


def float_values(rng: np.random.Generator, dtype: Q) -> np.ndarray:
    """Rows of 7 floats for the plain formats: ordinary values, then edge values of that format
    (given as numbers, then as f32 bit patterns: NaN payloads, rounding ties)."""
    inf, nan = np.inf, np.nan
    if dtype == Q.F16:
        edges = [0.0, -0.0, 65504.0, -65504.0, 6e-8, 1e-5, inf,
                 -inf, nan, 1 / 3, 70000.0, 2.5e-8, 0.1, -1e4]
        # signalling NaNs (numpy keeps them signalling: f16 0x7c01, 0xfd00), a negative quiet
        # NaN, 65520 (rounds to inf), 65519 (to 65504), 2^-25 (tie: to 0), 3 * 2^-25 (tie: up)
        bits = [0x7F802000, 0xFFA00000, 0xFFC00000, 0x477FF000, 0x477FEF00, 0x33000000, 0x33C00000]
    elif dtype == Q.BF16:
        edges = [0.0, -0.0, 3.3e38, -3.3e38, 1e-40, 1.2e-38, inf,
                 -inf, nan, 1 / 3, 3.4e38, 1e-45, 0.1, -1e4]
        # NaNs with payloads (gguf-py quiets them), f32 max (rounds to inf), ties to even
        # (down, up, negative), the smallest f32 subnormal
        bits = [0x7F802000, 0xFFA00001, 0x7F7FFFFF, 0x3F808000, 0x3F818000, 0xBF818000, 0x00000001]
    else:
        edges = [0.0, -0.0, 3.4e38, -1e-45, 1.2e-38, inf, -inf]
        bits = []
    rows = [rng.standard_normal(7).astype(np.float32), np.array(edges, dtype=np.float32),
            np.array(bits, dtype=np.uint32).view(np.float32)]
    return np.concatenate(rows).reshape(-1, 7)


def q4_k_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_q4_K {half d, dmin; u8 scales[12]; u8 qs[128]} (2 rows x 2 blocks)."""
    scales_dmins = [
        (rng.uniform(0.001, 0.05), rng.uniform(0.001, 0.05)),
        (0.03125, 0.0205),  # with scales all 0xFF: every 6-bit scale and min is 63
        (-rng.uniform(0.001, 0.05), -rng.uniform(0.001, 0.05)),
        (np.float16(np.ldexp(3.0, -24)), 2.0),  # subnormal d, large dmin
    ]
    out = []
    for i, (d, dmin) in enumerate(scales_dmins):
        scales = np.full(12, 0xFF, np.uint8) if i == 1 else rng.integers(0, 256, 12, dtype=np.uint8)
        qs = rng.integers(0, 256, 128, dtype=np.uint8)
        out.append(np.concatenate([f16_bytes(d), f16_bytes(dmin), scales, qs]))
    return np.stack(out).reshape(2, -1)


def q6_k_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d} (2 rows x 2 blocks)."""
    ds = [rng.uniform(0.0005, 0.01), rng.uniform(0.0005, 0.01), -rng.uniform(0.0005, 0.01),
          np.float16(np.ldexp(5.0, -24))]
    out = []
    for i, d in enumerate(ds):
        ql = rng.integers(0, 256, 128, dtype=np.uint8)
        qh = rng.integers(0, 256, 64, dtype=np.uint8)
        scales = rng.integers(-128, 128, 16, dtype=np.int8)
        if i == 1:  # the int8 extremes, and all 6-bit quants at both ends
            scales[:8], scales[8:] = -128, 127
            ql[:8], qh[:8] = 0x00, 0x00
            ql[8:16], qh[8:16] = 0xFF, 0xFF
        out.append(np.concatenate([ql, qh, scales.view(np.uint8), f16_bytes(d)]))
    return np.stack(out).reshape(2, -1)


def q2_k_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_q2_K {u8 scales[16]; u8 qs[64]; half d, dmin} (2 rows x 2 blocks)."""
    ds = [(rng.uniform(0.001, 0.05), rng.uniform(0.001, 0.05)),
          (0.03125, 0.0205),  # with scales all 0xFF: every 4-bit scale and min is 15
          (-rng.uniform(0.001, 0.05), -rng.uniform(0.001, 0.05)),
          (np.float16(np.ldexp(3.0, -24)), 2.0)]  # subnormal d, large dmin
    out = []
    for i, (d, dmin) in enumerate(ds):
        scales = np.full(16, 0xFF, np.uint8) if i == 1 else rng.integers(0, 256, 16, dtype=np.uint8)
        qs = rng.integers(0, 256, 64, dtype=np.uint8)
        if i == 1:  # all quants at both ends
            qs[:8], qs[8:16] = 0x00, 0xFF
        out.append(np.concatenate([scales, qs, f16_bytes(d), f16_bytes(dmin)]))
    return np.stack(out).reshape(2, -1)


def q3_k_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d} (2 rows x 2 blocks)."""
    ds = [rng.uniform(0.0005, 0.01), rng.uniform(0.0005, 0.01), -rng.uniform(0.0005, 0.01),
          np.float16(np.ldexp(5.0, -24))]
    out = []
    for i, d in enumerate(ds):
        hmask = rng.integers(0, 256, 32, dtype=np.uint8)
        qs = rng.integers(0, 256, 64, dtype=np.uint8)
        scales = rng.integers(0, 256, 12, dtype=np.uint8)
        if i == 1:  # 6-bit scales 63 (+31) and 0 (-32); quants at both ends, high bit set and clear
            scales[:4], scales[4:8], scales[8:] = 0xFF, 0x00, 0x33
            hmask[:8], hmask[8:16] = 0x00, 0xFF
            qs[:8], qs[8:16] = 0x00, 0xFF
        out.append(np.concatenate([hmask, qs, scales, f16_bytes(d)]))
    return np.stack(out).reshape(2, -1)


def q5_k_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_q5_K {half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (2 rows x 2 blocks)."""
    ds = [(rng.uniform(0.0005, 0.02), rng.uniform(0.001, 0.05)),
          (0.015625, 0.0205),  # with scales all 0xFF: every 6-bit scale and min is 63
          (-rng.uniform(0.0005, 0.02), -rng.uniform(0.001, 0.05)),
          (np.float16(np.ldexp(3.0, -24)), 2.0)]  # subnormal d, large dmin
    out = []
    for i, (d, dmin) in enumerate(ds):
        scales = np.full(12, 0xFF, np.uint8) if i == 1 else rng.integers(0, 256, 12, dtype=np.uint8)
        qh = rng.integers(0, 256, 32, dtype=np.uint8)
        qs = rng.integers(0, 256, 128, dtype=np.uint8)
        if i == 1:  # all 5-bit quants at both ends
            qh[:8], qs[:8] = 0x00, 0x00
            qh[8:16], qs[8:16] = 0xFF, 0xFF
        out.append(np.concatenate([f16_bytes(d), f16_bytes(dmin), scales, qh, qs]))
    return np.stack(out).reshape(2, -1)


def iq4_nl_blocks(rng: np.random.Generator) -> np.ndarray:
    """Eight block_iq4_nl {half d; u8 qs[16]} (4 rows x 2 blocks)."""
    ds = [rng.uniform(0.001, 0.05), -rng.uniform(0.001, 0.05), 0.0, np.float16(np.ldexp(3.0, -24)),
          400.0, rng.uniform(0.001, 0.05), -rng.uniform(0.001, 0.05), 1.0]
    out = []
    for i, d in enumerate(ds):
        qs = rng.integers(0, 256, 16, dtype=np.uint8)
        if i == 7:  # every code book entry, low and high nibbles
            qs = (np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)).astype(np.uint8)
        out.append(np.concatenate([f16_bytes(d), qs]))
    return np.stack(out).reshape(4, -1)


def iq4_xs_blocks(rng: np.random.Generator) -> np.ndarray:
    """Four block_iq4_xs {half d; u16 scales_h; u8 scales_l[4]; u8 qs[128]} (2 rows x 2 blocks)."""
    ds = [rng.uniform(0.0001, 0.002), 0.001, -rng.uniform(0.0001, 0.002), np.float16(np.ldexp(5.0, -24))]
    out = []
    for i, d in enumerate(ds):
        scales_h = rng.integers(0, 256, 2, dtype=np.uint8)
        scales_l = rng.integers(0, 256, 4, dtype=np.uint8)
        qs = rng.integers(0, 256, 128, dtype=np.uint8)
        if i == 1:  # 6-bit scales 63 (+31) for sub-blocks 0..4, 0 (-32) for 4..8; every level
            scales_h[:] = (0xFF, 0x00)
            scales_l[:] = (0xFF, 0xFF, 0x00, 0x00)
            qs[:16] = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
        out.append(np.concatenate([f16_bytes(d), scales_h, scales_l, qs]))
    return np.stack(out).reshape(2, -1)


RANDOM_BLOCKS = {
    Q.Q2_K: q2_k_blocks,
    Q.Q3_K: q3_k_blocks,
    Q.Q4_K: q4_k_blocks,
    Q.Q5_K: q5_k_blocks,
    Q.Q6_K: q6_k_blocks,
    Q.IQ4_NL: iq4_nl_blocks,
    Q.IQ4_XS: iq4_xs_blocks,
}


def main() -> int:
    rng = np.random.default_rng(SEED)
    gguf_version = version("gguf")
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in OUT.glob("*"):
        stale.unlink()

    # (pocketlm name, ggml type, bytes source)
    plan = [
        ("f32", Q.F32, "quantize"),
        ("f16", Q.F16, "quantize"),
        ("bf16", Q.BF16, "quantize"),
        ("q4_0", Q.Q4_0, "quantize"),
        ("q4_1", Q.Q4_1, "quantize"),
        ("q5_0", Q.Q5_0, "quantize"),
        ("q8_0", Q.Q8_0, "quantize"),
        ("q4_k", Q.Q4_K, "random"),
        ("q6_k", Q.Q6_K, "random"),
        # Added later; after the others so that their bytes (one random stream) stay the same.
        ("q5_1", Q.Q5_1, "quantize"),
        ("q2_k", Q.Q2_K, "random"),
        ("q3_k", Q.Q3_K, "random"),
        ("q5_k", Q.Q5_K, "random"),
        ("iq4_nl", Q.IQ4_NL, "random"),
        ("iq4_xs", Q.IQ4_XS, "random"),
    ]
    writer = gguf.GGUFWriter(OUT / "blocks.gguf", "pocketlm-quant-fixtures")
    writer.add_description(f"GGML block fixtures made by scripts/make_quant_fixtures.py, gguf {gguf_version}")
    entries = []
    for name, qtype, source in plan:
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if source == "quantize":
            values = small_block_values(rng, 64) if block_size == 32 else float_values(rng, qtype)
            with np.errstate(over="ignore"):  # 70000 to f16 is meant to overflow to inf
                raw = np.ascontiguousarray(quantize(values, qtype)).view(np.uint8)
            rows, cols = values.shape
        else:
            raw = RANDOM_BLOCKS[qtype](rng)
            rows, cols = raw.shape[0], raw.shape[1] // type_size * block_size
            try:  # say so when a newer gguf learns to quantize this type
                quantize(np.zeros((1, block_size), np.float32), qtype)
                source = "random (gguf can quantize this type now: consider using it)"
            except NotImplementedError:
                pass
        raw = raw.reshape(rows, cols // block_size * type_size)
        expected = np.asarray(dequantize(raw, qtype), dtype=np.float32)
        assert expected.shape == (rows, cols), (name, expected.shape)
        assert raw.dtype == np.uint8 and raw.size == rows * cols // block_size * type_size
        (OUT / f"{name}.bin").write_bytes(raw.tobytes())
        (OUT / f"{name}.f32").write_bytes(expected.astype("<f4").tobytes())
        writer.add_tensor(name, raw, raw_dtype=qtype)
        entries.append({"type": name, "shape": [rows, cols], "bytes": source, "gguf": gguf_version})

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    # Read the GGUF back: every tensor holds exactly the .bin bytes.
    reader = gguf.GGUFReader(OUT / "blocks.gguf")
    for t in reader.tensors:
        assert bytes(t.data.view(np.uint8).ravel()) == (OUT / f"{t.name}.bin").read_bytes(), t.name

    lines = [
        "{",
        '  "generator": "scripts/make_quant_fixtures.py",',
        f'  "gguf_version": "{gguf_version}",',
        f'  "numpy_version": "{np.__version__}",',
        f'  "seed": {SEED},',
        '  "tensors": [',
    ]
    lines += [f"    {json.dumps(e)}{',' if i + 1 < len(entries) else ''}" for i, e in enumerate(entries)]
    lines += ["  ]", "}"]
    (OUT / "manifest.json").write_text("\n".join(lines) + "\n")
    json.loads((OUT / "manifest.json").read_text())  # stays valid JSON

    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(entries)} tensors to {OUT} ({total} bytes) with gguf {gguf_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
