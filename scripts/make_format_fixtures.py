#!/usr/bin/env python3
"""Regenerate tests/fixtures/formats/: small model files written by the Python `gguf` package
(llama.cpp's gguf-py) and the `safetensors` package, which `tests/formats.rs` parses with
`pocketlm::formats` and checks against what this script wrote and what gguf-py's own reader sees.

Run it from the repository root in a throwaway virtual environment (no torch needed):

    python3 -m venv /tmp/fmt && /tmp/fmt/bin/pip install gguf numpy safetensors
    /tmp/fmt/bin/python scripts/make_format_fixtures.py

The output is deterministic for given gguf/safetensors/numpy versions (fixed seed). It writes:

    all_types.gguf        GGUF v3: every metadata value type, arrays of every element type,
                          nested arrays, a string vocabulary, llama hyper-parameters,
                          `general.alignment` = 64, and tensors of F32, F16, BF16, Q8_0, Q4_0,
                          Q4_K and Q6_K (one 3-D)
    split-0000N-of-00003.gguf   one model split in three by GGUFWriter(split_max_tensors=2)
    model.safetensors     F32, F16 and BF16 tensors with __metadata__
    int64.safetensors     an I64 tensor (a dtype PocketLM does not load)
    sharded/model-0000N-of-00002.safetensors, sharded/model.safetensors.index.json
    expected.json         for every file: each tensor's name, dtype (as `DType::name()`),
                          row-major shape, absolute offset, byte count and the FNV-1a 64 hash of
                          its bytes (GGUF: as gguf.GGUFReader reads them; safetensors: as
                          safetensors.deserialize returns them), the data section offset, and for
                          all_types.gguf every metadata value as written, typed.
"""

from __future__ import annotations

import json
import struct
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

import gguf
import safetensors
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf.quants import quantize

OUT = Path("tests/fixtures/formats")
SEED = 20240611

DTYPE_NAMES = {
    Q.F32: "f32",
    Q.F16: "f16",
    Q.BF16: "bf16",
    Q.Q4_0: "q4_0",
    Q.Q4_1: "q4_1",
    Q.Q5_0: "q5_0",
    Q.Q8_0: "q8_0",
    Q.Q4_K: "q4_k",
    Q.Q6_K: "q6_k",
}
ST_DTYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
TYPE_NAMES = {
    V.UINT8: "u8",
    V.INT8: "i8",
    V.UINT16: "u16",
    V.INT16: "i16",
    V.UINT32: "u32",
    V.INT32: "i32",
    V.FLOAT32: "f32",
    V.BOOL: "bool",
    V.STRING: "string",
    V.ARRAY: "array",
    V.UINT64: "u64",
    V.INT64: "i64",
    V.FLOAT64: "f64",
}


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def f32(x: float) -> float:
    """The f32 nearest x, as the exact double (so JSON round-trips it bit for bit)."""
    return float(np.float32(x))


def typed(vtype: V, value, sub: V | None = None) -> dict:
    """The JSON form tests/formats.rs converts a parsed value to."""
    if vtype == V.ARRAY:
        if sub == V.ARRAY:
            return {"type": "array", "element": "array", "value": value}
        return {"type": "array", "element": TYPE_NAMES[sub], "value": value}
    return {"type": TYPE_NAMES[vtype], "value": value}


def gguf_tensors(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    tensors = []
    data_offset = min((t.data_offset for t in reader.tensors), default=None)
    for t in reader.tensors:
        tensors.append(
            {
                "name": t.name,
                "dtype": DTYPE_NAMES[t.tensor_type],
                # gguf-py lists dims innermost first, like the file.
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "offset": int(t.data_offset),
                "bytes": int(t.n_bytes),
                "fnv1a64": fnv1a64(t.data.tobytes()),
            }
        )
    return {"data_offset": data_offset, "tensors": tensors}


def write_all_types(rng: np.random.Generator) -> dict:
    path = OUT / "all_types.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_name("pocketlm format fixture")
    meta: dict[str, dict] = {
        "general.architecture": typed(V.STRING, "llama"),
        "general.alignment": typed(V.UINT32, 64),
        "general.name": typed(V.STRING, "pocketlm format fixture"),
    }

    def kv(key: str, vtype: V, value, sub: V | None = None, expected=None) -> None:
        w.add_key_value(key, value, vtype, sub_type=sub)
        meta[key] = typed(vtype, value if expected is None else expected, sub)

    # Every scalar type, at or near its extremes.
    kv("test.u8", V.UINT8, 255)
    kv("test.i8", V.INT8, -128)
    kv("test.u16", V.UINT16, 65535)
    kv("test.i16", V.INT16, -32768)
    kv("test.u32", V.UINT32, 4_000_000_000)
    kv("test.i32", V.INT32, -2_000_000_000)
    kv("test.f32", V.FLOAT32, 1.25e-3, expected=f32(1.25e-3))
    kv("test.bool", V.BOOL, True)
    kv("test.string", V.STRING, "héllo ✓ — ünïcode")
    kv("test.u64", V.UINT64, 2**64 - 2)
    kv("test.i64", V.INT64, -(2**63))
    kv("test.f64", V.FLOAT64, 3.141592653589793)
    # An array of every element type.
    kv("test.array.u8", V.ARRAY, [0, 1, 255], V.UINT8)
    kv("test.array.i8", V.ARRAY, [-128, 0, 127], V.INT8)
    kv("test.array.u16", V.ARRAY, [0, 65535], V.UINT16)
    kv("test.array.i16", V.ARRAY, [-32768, 32767], V.INT16)
    kv("test.array.u32", V.ARRAY, [7, 4_294_967_295], V.UINT32)
    kv("test.array.i32", V.ARRAY, [-1, 2, -3], V.INT32)
    floats = [0.5, -2.0, 1e-7]
    kv("test.array.f32", V.ARRAY, floats, V.FLOAT32, expected=[f32(x) for x in floats])
    kv("test.array.bool", V.ARRAY, [True, False, True], V.BOOL)
    kv("test.array.string", V.ARRAY, ["a", "", "ß✓"], V.STRING)
    kv("test.array.u64", V.ARRAY, [2**64 - 1, 0], V.UINT64)
    kv("test.array.i64", V.ARRAY, [-(2**63), 2**63 - 1], V.INT64)
    kv("test.array.f64", V.ARRAY, [1e300, -0.0], V.FLOAT64)
    # Nested arrays: each inner array has its own element type (gguf-py infers i32 and string).
    w.add_array("test.nested", [[1, 2, 3], [4]])
    meta["test.nested"] = typed(
        V.ARRAY, [typed(V.ARRAY, [1, 2, 3], V.INT32), typed(V.ARRAY, [4], V.INT32)], V.ARRAY
    )
    w.add_array("test.nested3", [[["x", "y"], ["z"]], [["w"]]])
    meta["test.nested3"] = typed(
        V.ARRAY,
        [
            typed(V.ARRAY, [typed(V.ARRAY, ["x", "y"], V.STRING), typed(V.ARRAY, ["z"], V.STRING)], V.ARRAY),
            typed(V.ARRAY, [typed(V.ARRAY, ["w"], V.STRING)], V.ARRAY),
        ],
        V.ARRAY,
    )

    # Llama hyper-parameters and a small vocabulary, as a converter writes them.
    kv("llama.context_length", V.UINT32, 2048)
    kv("llama.embedding_length", V.UINT32, 32)
    kv("llama.block_count", V.UINT32, 1)
    kv("llama.feed_forward_length", V.UINT32, 64)
    kv("llama.attention.head_count", V.UINT32, 4)
    kv("llama.attention.head_count_kv", V.UINT32, 2)
    kv("llama.rope.freq_base", V.FLOAT32, 10000.0)
    tokens = ["<unk>", "<s>", "</s>"] + [f"tok{i}" for i in range(34)] + ["▁héllo", "✓", "\n"]
    kv("tokenizer.ggml.model", V.STRING, "llama")
    kv("tokenizer.ggml.tokens", V.ARRAY, tokens, V.STRING)
    scores = [f32(-i / 4) for i in range(len(tokens))]
    kv("tokenizer.ggml.scores", V.ARRAY, scores, V.FLOAT32)
    kv("tokenizer.ggml.token_type", V.ARRAY, [2, 3, 3] + [1] * (len(tokens) - 3), V.INT32)

    def floats_(*shape: int) -> np.ndarray:
        return rng.uniform(-1, 1, size=shape).astype(np.float32)

    w.add_tensor("token_embd.weight", quantize(floats_(len(tokens), 32), Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", floats_(8, 32).astype(np.float16))
    w.add_tensor("blk.0.attn_k.weight", quantize(floats_(4, 32), Q.BF16), raw_dtype=Q.BF16)
    w.add_tensor("blk.0.ffn_up.weight", quantize(floats_(4, 64), Q.Q4_0), raw_dtype=Q.Q4_0)
    # gguf-py cannot quantize K-quants: random blocks with finite f16 scales.
    q4k = rng.integers(0, 256, size=(1, 144), dtype=np.uint8)
    q4k[:, 0:4] = np.frombuffer(np.array([0.01, 0.002], dtype="<f2").tobytes(), dtype=np.uint8)
    w.add_tensor("blk.0.ffn_down.weight", q4k, raw_dtype=Q.Q4_K)
    q6k = rng.integers(0, 256, size=(1, 210), dtype=np.uint8)
    q6k[:, 208:210] = np.frombuffer(np.array([0.003], dtype="<f2").tobytes(), dtype=np.uint8)
    w.add_tensor("blk.0.ffn_gate.weight", q6k, raw_dtype=Q.Q6_K)
    w.add_tensor("output_norm.weight", floats_(32))
    w.add_tensor("test.cube", floats_(2, 3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"version": 3, "alignment": 64, "metadata": meta, **gguf_tensors(path)}


def write_split(rng: np.random.Generator) -> dict:
    w = gguf.GGUFWriter(OUT / "split.gguf", "llama", split_max_tensors=2)
    w.add_uint32("llama.block_count", 1)
    w.add_tensor("token_embd.weight", rng.uniform(-1, 1, size=(6, 32)).astype(np.float16))
    w.add_tensor("blk.0.attn_q.weight", rng.uniform(-1, 1, size=(4, 32)).astype(np.float32))
    w.add_tensor("blk.0.attn_k.weight", quantize(rng.uniform(-1, 1, size=(2, 64)).astype(np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("blk.0.ffn_up.weight", rng.uniform(-1, 1, size=(2, 32)).astype(np.float16))
    w.add_tensor("output.weight", rng.uniform(-1, 1, size=(3, 32)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = {}
    for i in range(1, 4):
        name = f"split-{i:05d}-of-00003.gguf"
        out[name] = gguf_tensors(OUT / name)
    return out


def st_tensors(path: Path) -> dict:
    """Offsets from the header; names, dtypes, shapes and bytes as the safetensors package sees them."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    views = dict(safetensors.deserialize(data))
    tensors = []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"] if kv[0] != "__metadata__" else [-1]):
        if name == "__metadata__":
            continue
        view = views[name]
        tensors.append(
            {
                "name": name,
                "dtype": ST_DTYPES.get(view["dtype"], view["dtype"]),
                "shape": list(view["shape"]),
                "offset": 8 + n + info["data_offsets"][0],
                "bytes": len(view["data"]),
                "fnv1a64": fnv1a64(bytes(view["data"])),
            }
        )
    return {"data_offset": 8 + n, "tensors": tensors, "metadata": header.get("__metadata__", {})}


def serialize(tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None) -> bytes:
    """safetensors.serialize from raw buffers, so BF16 (stored as uint16 bits) works without torch."""
    specs = {
        name: safetensors.TensorSpec(dtype=dtype, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, (dtype, a) in tensors.items()
    }
    return bytes(safetensors.serialize(specs, metadata))


def bf16_bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16))


def write_safetensors(rng: np.random.Generator) -> dict:
    out = {}
    u = lambda *s: rng.uniform(-1, 1, size=s).astype(np.float32)  # noqa: E731
    (OUT / "model.safetensors").write_bytes(
        serialize(
            {
                "model.embed_tokens.weight": ("float16", u(10, 16).astype(np.float16)),
                "model.layers.0.self_attn.q_proj.weight": ("bfloat16", bf16_bits(u(16, 16))),
                "model.norm.weight": ("float32", u(16)),
                "model.scalar": ("float32", np.array(0.5, dtype=np.float32)),
                "model.layers.0.mlp.up_proj.weight": ("float32", u(2, 3, 8)),
            },
            {"format": "pt", "note": "pocketlm fixture"},
        )
    )
    out["model.safetensors"] = st_tensors(OUT / "model.safetensors")
    (OUT / "int64.safetensors").write_bytes(
        serialize(
            {
                "weight": ("float32", u(4)),
                "position_ids": ("int64", np.arange(8, dtype=np.int64).reshape(1, 8)),
            },
            None,
        )
    )

    sharded = OUT / "sharded"
    sharded.mkdir(parents=True, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": ("bfloat16", bf16_bits(u(12, 8))),
            "model.layers.0.self_attn.q_proj.weight": ("float16", u(8, 8).astype(np.float16)),
        },
        "model-00002-of-00002.safetensors": {
            "model.layers.0.mlp.down_proj.weight": ("float32", u(8, 4)),
            "model.norm.weight": ("float32", u(8)),
            "lm_head.weight": ("float16", u(12, 8).astype(np.float16)),
        },
    }
    weight_map = {}
    total = 0
    for shard, tensors in shards.items():
        (sharded / shard).write_bytes(serialize(tensors, {"format": "pt"}))
        out[f"sharded/{shard}"] = st_tensors(sharded / shard)
        for name, (_, a) in tensors.items():
            weight_map[name] = shard
            total += a.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    expected = {
        "generator": f"scripts/make_format_fixtures.py with gguf {version('gguf')}, "
        f"safetensors {version('safetensors')}, numpy {version('numpy')}",
        "files": {"all_types.gguf": write_all_types(rng), **write_split(rng), **write_safetensors(rng)},
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
