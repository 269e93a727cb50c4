//! `pocketlm::formats` against files written by the Python `gguf` and `safetensors` packages
//! (tests/fixtures/formats/, made by scripts/make_format_fixtures.py, which also records what it
//! wrote and what gguf-py's reader sees in expected.json), and against corrupted copies of them
//! made here. CPU only.
#![cfg(not(target_arch = "wasm32"))]

use std::path::PathBuf;

use pocketlm::formats::invariants::check_streaming_agrees;
use pocketlm::formats::{
    gguf, merge_shards, merge_splits, next_fetch_len, split_names, Format, GgufHeader, MetaArray,
    MetaValue, ModelFiles, Parsed, SafetensorsHeader, SafetensorsIndex,
};
use pocketlm::quant::DType;
use pocketlm::Error;
use serde_json::{json, Value};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn expected() -> Value {
    serde_json::from_slice(&read("expected.json")).unwrap()
}

fn fnv1a64(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The typed JSON form the fixture script records values in.
fn array_json(a: &MetaArray) -> Value {
    let value = match a {
        MetaArray::U8(v) => json!(v),
        MetaArray::I8(v) => json!(v),
        MetaArray::U16(v) => json!(v),
        MetaArray::I16(v) => json!(v),
        MetaArray::U32(v) => json!(v),
        MetaArray::I32(v) => json!(v),
        MetaArray::F32(v) => json!(v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()),
        MetaArray::Bool(v) => json!(v),
        MetaArray::String(v) => json!(v),
        MetaArray::Array(v) => Value::Array(v.iter().map(array_json).collect()),
        MetaArray::U64(v) => json!(v),
        MetaArray::I64(v) => json!(v),
        MetaArray::F64(v) => json!(v),
    };
    json!({"type": "array", "element": a.element_type(), "value": value})
}

fn value_json(v: &MetaValue) -> Value {
    let value = match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::F32(x) => json!(f64::from(*x)),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(x) => json!(x),
        MetaValue::Array(a) => return array_json(a),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F64(x) => json!(x),
    };
    json!({"type": v.type_name(), "value": value})
}

/// Checks a parsed tensor table against expected.json, hashing each tensor's bytes in the file.
fn check_tensors(model: &ModelFiles, files: &[&str]) {
    let exp = expected();
    let mut count = 0;
    for (i, name) in files.iter().enumerate() {
        let file = &exp["files"][*name];
        let bytes = read(name);
        assert_eq!(
            model.data_offsets[i],
            file["data_offset"].as_u64().unwrap(),
            "{name}"
        );
        for e in file["tensors"].as_array().unwrap() {
            let t = model
                .tensor(e["name"].as_str().unwrap())
                .unwrap_or_else(|| panic!("{name}: no tensor {}", e["name"]));
            let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
            assert_eq!(t.file, i, "{}", t.name);
            assert_eq!(t.dtype.name(), e["dtype"], "{}", t.name);
            assert_eq!(t.shape, shape, "{}", t.name);
            assert_eq!(t.offset, e["offset"].as_u64().unwrap(), "{}", t.name);
            assert_eq!(t.bytes, e["bytes"].as_u64().unwrap(), "{}", t.name);
            let data = &bytes[t.offset as usize..(t.offset + t.bytes) as usize];
            assert_eq!(fnv1a64(data), e["fnv1a64"], "{}", t.name);
            count += 1;
        }
    }
    assert_eq!(model.tensors.len(), count);
}

/// The error's code, and that its message names the file and says each of `words`.
#[track_caller]
fn expect_err<T: std::fmt::Debug>(r: Result<T, Error>, code: &str, file: &str, words: &[&str]) {
    let e = match r {
        Ok(v) => panic!("expected a {code} error, got {v:?}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert_eq!(e.code(), code, "{msg}");
    assert!(
        msg.contains(file),
        "the message does not name '{file}': {msg}"
    );
    for w in words {
        assert!(msg.contains(w), "the message lacks '{w}': {msg}");
    }
}

fn gguf_file(name: &str) -> GgufHeader {
    GgufHeader::parse_file(&read(name), name).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses a GGUF header as a loader would: a 64 KiB prefix, then more as asked.
fn parse_incrementally(bytes: &[u8]) -> (GgufHeader, usize) {
    let mut have = 64 << 10;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let prefix = &bytes[..have.min(bytes.len())];
        match GgufHeader::parse(prefix, None, "big.gguf").unwrap() {
            Parsed::Complete { header, .. } => return (header, attempts),
            Parsed::NeedMore { at_least } => {
                assert!(at_least > prefix.len(), "asked for {at_least} with {have}");
                have = next_fetch_len(prefix.len(), at_least);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF written by gguf-py

#[test]
fn gguf_every_metadata_type_reads_as_written() {
    let h = gguf_file("all_types.gguf");
    assert_eq!((h.version, h.alignment), (3, 64));
    let exp = expected();
    let meta = exp["files"]["all_types.gguf"]["metadata"]
        .as_object()
        .unwrap();
    assert_eq!(
        h.metadata.len(),
        meta.len(),
        "keys other than those written"
    );
    for (key, want) in meta {
        let got = h
            .metadata
            .value(key)
            .unwrap_or_else(|| panic!("no key {key}"));
        assert_eq!(&value_json(got), want, "{key}");
    }
    // File order is kept.
    let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(keys[0], "general.architecture");
}

#[test]
fn gguf_typed_metadata_access() {
    let h = gguf_file("all_types.gguf");
    let m = &h.metadata;
    assert_eq!(m.architecture().unwrap(), "llama");
    assert_eq!(m.u32("llama.context_length").unwrap(), 2048);
    assert_eq!(m.u64("test.u64").unwrap(), u64::MAX - 1);
    assert_eq!(m.u64("test.u8").unwrap(), 255, "integers widen losslessly");
    assert_eq!(m.f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(m.string("test.string").unwrap(), "héllo ✓ — ünïcode");
    assert_eq!(m.string_array("tokenizer.ggml.tokens").unwrap().len(), 40);
    assert_eq!(
        m.i32_array("tokenizer.ggml.token_type").unwrap()[..3],
        [2, 3, 3]
    );
    assert_eq!(m.f32_array("tokenizer.ggml.scores").unwrap()[1], -0.25);
    assert_eq!(m.get::<f64>("test.f64").unwrap(), std::f64::consts::PI);
    assert!(m.get::<bool>("test.bool").unwrap());
    assert_eq!(m.get::<i64>("test.i64").unwrap(), i64::MIN);
    assert_eq!(m.get_opt::<u32>("no.such.key").unwrap(), None);
    let f = "all_types.gguf";
    expect_err(m.u32("test.u64"), "metadata_type", f, &["test.u64", "u32"]);
    expect_err(m.u32("test.i8"), "metadata_type", f, &["i8 -128"]);
    expect_err(
        m.string("test.u8"),
        "metadata_type",
        f,
        &["a string", "u8 255"],
    );
    expect_err(
        m.f32_array("tokenizer.ggml.tokens"),
        "metadata_type",
        f,
        &["an array of 40 string"],
    );
    expect_err(
        m.u32("llama.vocab_size"),
        "missing_metadata",
        f,
        &["llama.vocab_size"],
    );
}

#[test]
fn gguf_tensors_match_gguf_py_reader() {
    let h = gguf_file("all_types.gguf");
    let cube = h.tensor("test.cube").unwrap();
    assert_eq!(cube.dims, [4, 3, 2], "raw dims are innermost first");
    assert_eq!(cube.shape, [2, 3, 4]);
    let q4k = h.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!((q4k.dtype, q4k.ggml_type), (DType::Q4_K, 12));
    assert_eq!(h.data_offset % 64, 0);
    // GGUFWriter pads the last tensor to the alignment too.
    assert_eq!(
        h.data_end().next_multiple_of(64),
        read("all_types.gguf").len() as u64
    );
    check_tensors(&h.into_model_files().unwrap(), &["all_types.gguf"]);
}

#[test]
fn gguf_summary_names_architecture_and_hyper_parameters() {
    let s = gguf_file("all_types.gguf")
        .into_model_files()
        .unwrap()
        .summary();
    assert_eq!(s.format, Format::Gguf);
    assert_eq!(s.architecture.as_deref(), Some("llama"));
    assert_eq!(s.name.as_deref(), Some("pocketlm format fixture"));
    let hp = s.hparams.clone().unwrap();
    assert_eq!(hp.context_length, Some(2048));
    assert_eq!(hp.embedding_length, Some(32));
    assert_eq!(hp.block_count, Some(1));
    assert_eq!(hp.feed_forward_length, Some(64));
    assert_eq!((hp.head_count, hp.head_count_kv), (Some(4), Some(2)));
    assert_eq!(hp.rope_freq_base, Some(10000.0));
    assert_eq!(hp.vocab_size, Some(40));
    assert_eq!(s.tensors, 8);
    assert_eq!(s.total_bytes, 1360 + 512 + 256 + 144 + 144 + 210 + 128 + 96);
    assert_eq!(s.by_dtype[0].dtype, DType::Q8_0, "largest first");
    assert_eq!(
        s.by_dtype
            .iter()
            .find(|d| d.dtype == DType::F32)
            .unwrap()
            .tensors,
        2
    );
    let text = s.to_string();
    for want in [
        "GGUF",
        "architecture: llama",
        "context length:",
        "2048",
        "vocabulary:",
        "q8_0",
        "1.3 KiB",
    ] {
        assert!(text.contains(want), "summary lacks '{want}':\n{text}");
    }
}

#[test]
fn gguf_quant_fixture_holds_the_quant_blocks() {
    // tests/fixtures/quant/blocks.gguf (GGUFWriter) names each tensor after its dtype and holds
    // the bytes of tests/fixtures/quant/<dtype>.bin.
    let quant = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant");
    let bytes = std::fs::read(quant.join("blocks.gguf")).unwrap();
    let h = GgufHeader::parse_file(&bytes, "blocks.gguf").unwrap();
    assert_eq!(h.tensors.len(), DType::WEIGHTS.len());
    for t in h.tensor_infos(0) {
        assert_eq!(t.dtype.name(), t.name);
        let bin = std::fs::read(quant.join(format!("{}.bin", t.name))).unwrap();
        assert_eq!(
            &bytes[t.offset as usize..(t.offset + t.bytes) as usize],
            &bin[..]
        );
    }
}

#[test]
fn gguf_every_prefix_needs_more_and_every_truncation_is_an_error() {
    for name in [
        "all_types.gguf",
        "split-00001-of-00003.gguf",
        "split-00002-of-00003.gguf",
    ] {
        let bytes = read(name);
        let whole = gguf_file(name);
        let mut header_end = None;
        for n in 0..bytes.len() {
            match GgufHeader::parse(&bytes[..n], None, name).unwrap() {
                Parsed::NeedMore { at_least } => {
                    assert!(at_least > n && at_least <= bytes.len(), "{name}[..{n}]");
                    assert!(
                        header_end.is_none(),
                        "{name}: NeedMore after Complete at {n}"
                    );
                }
                Parsed::Complete { header, header_len } => {
                    assert_eq!(header_len, whole.data_offset);
                    assert_eq!(header.tensors, whole.tensors);
                    header_end.get_or_insert(n);
                }
            }
            // The same prefix as a whole (truncated) file: an error, never NeedMore, unless only
            // the padding after the last tensor is missing.
            let r = GgufHeader::parse(&bytes[..n], Some(n as u64), name);
            if n as u64 >= whole.data_end() {
                assert!(r.is_ok(), "{name}[..{n}]: {r:?}");
                continue;
            }
            let e = r.expect_err("a truncated file parsed");
            assert!(
                ["file_truncated", "tensor_out_of_bounds"].contains(&e.code()),
                "{name}[..{n}]: {e}"
            );
            assert!(e.to_string().contains(name));
        }
        assert!(header_end.unwrap() <= whole.data_offset as usize);
    }
}

#[test]
fn gguf_big_vocabulary_parses_incrementally_in_few_attempts() {
    // A header like Gemma 3's: 262,144 tokens, about 4.5 MB of strings.
    const N: usize = 262_144;
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // keys
    let key = b"tokenizer.ggml.tokens";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key);
    b.extend(9u32.to_le_bytes()); // array
    b.extend(8u32.to_le_bytes()); // of strings
    b.extend((N as u64).to_le_bytes());
    for i in 0..N {
        let tok = format!("▁tok{i}");
        b.extend((tok.len() as u64).to_le_bytes());
        b.extend(tok.as_bytes());
    }
    let (h, attempts) = parse_incrementally(&b);
    let tokens = h.metadata.string_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), N);
    assert_eq!(tokens[N - 1], format!("▁tok{}", N - 1));
    // 64 KiB doubling to ~8 MiB: the total re-parsing stays under three times the header.
    assert!(attempts <= 9, "{attempts} attempts for {} bytes", b.len());
}

// ---------------------------------------------------------------------------------------------
// Corrupted GGUF

/// The position right after the first occurrence of `needle` (a length-prefixed key or name).
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
        + needle.len()
}

fn patch(bytes: &mut [u8], at: usize, with: &[u8]) {
    bytes[at..at + with.len()].copy_from_slice(with);
}

fn corrupt(f: impl FnOnce(&mut Vec<u8>)) -> Result<GgufHeader, Error> {
    let mut b = read("all_types.gguf");
    f(&mut b);
    GgufHeader::parse_file(&b, "all_types.gguf")
}

const F: &str = "all_types.gguf";

#[test]
fn gguf_wrong_magic_and_versions() {
    expect_err(
        corrupt(|b| b[0] = b'X'),
        "bad_magic",
        F,
        &["XGUF", "\"GGUF\""],
    );
    // Detected from the first byte, before the rest has arrived.
    expect_err(GgufHeader::parse(b"P", None, F), "bad_magic", F, &[]);
    let st = read("model.safetensors");
    expect_err(
        GgufHeader::parse(&st, None, F),
        "bad_magic",
        F,
        &["safetensors"],
    );
    expect_err(
        corrupt(|b| patch(b, 4, &1u32.to_le_bytes())),
        "unsupported_format_version",
        F,
        &["version 1", "v1"],
    );
    expect_err(
        corrupt(|b| patch(b, 4, &4u32.to_le_bytes())),
        "unsupported_format_version",
        F,
        &["version 4", "2 and 3"],
    );
    expect_err(
        corrupt(|b| patch(b, 4, &3u32.to_be_bytes())),
        "unsupported_format_version",
        F,
        &["big-endian"],
    );
    // v2 has the same layout as v3.
    let h = corrupt(|b| patch(b, 4, &2u32.to_le_bytes())).unwrap();
    assert_eq!(h.version, 2);
}

#[test]
fn gguf_absurd_counts_and_lengths() {
    expect_err(
        corrupt(|b| patch(b, 8, &(1u64 << 40).to_le_bytes())),
        "header_limit",
        F,
        &["tensor count", "1048576"],
    );
    expect_err(
        corrupt(|b| patch(b, 16, &u64::MAX.to_le_bytes())),
        "header_limit",
        F,
        &["metadata key count"],
    );
    // Within the count caps, but more bytes than the file has.
    expect_err(
        corrupt(|b| patch(b, 8, &1000u64.to_le_bytes())),
        "file_truncated",
        F,
        &[],
    );
    // A string 2^62 bytes long.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.string") + 4;
            patch(b, at, &(1u64 << 62).to_le_bytes())
        }),
        "header_limit",
        F,
        &["the value of 'test.string'", "536870912"],
    );
    // An array of 2^61 strings: refused from the count alone.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"tokenizer.ggml.tokens") + 8;
            patch(b, at, &(1u64 << 61).to_le_bytes())
        }),
        "header_limit",
        F,
        &["tokenizer.ggml.tokens"],
    );
    // A key longer than 65,535 bytes.
    expect_err(
        corrupt(|b| patch(b, 24, &100_000u64.to_le_bytes())),
        "header_limit",
        F,
        &["metadata key #0", "65535"],
    );
    // Five dimensions.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.cube");
            patch(b, at, &5u32.to_le_bytes())
        }),
        "header_limit",
        F,
        &["dimensions of tensor 'test.cube'"],
    );
    // A zero dimension.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.cube") + 4;
            patch(b, at, &0u64.to_le_bytes())
        }),
        "tensor_layout",
        F,
        &["test.cube", "dimension 0 is 0"],
    );
    // Dimensions whose product overflows.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.cube") + 4;
            patch(b, at, &(1u64 << 40).to_le_bytes());
            patch(b, at + 8, &(1u64 << 40).to_le_bytes())
        }),
        "header_limit",
        F,
        &["element count of tensor 'test.cube'"],
    );
}

#[test]
fn gguf_bad_values() {
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.string") + 12;
            b[at + 1] = 0xff
        }),
        "invalid_header",
        F,
        &["'test.string'", "UTF-8"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"blk.0.attn_q.weight");
            b[at - 1] = 0xc3
        }),
        "invalid_header",
        F,
        &["tensor #1", "UTF-8"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.u8");
            patch(b, at, &13u32.to_le_bytes())
        }),
        "invalid_header",
        F,
        &["'test.u8'", "value type 13"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.array.u8");
            patch(b, at + 4, &99u32.to_le_bytes())
        }),
        "invalid_header",
        F,
        &["'test.array.u8'", "value type 99"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.bool") + 4;
            b[at] = 2
        }),
        "invalid_header",
        F,
        &["'test.bool'", "not 0 or 1"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"general.alignment") + 4;
            patch(b, at, &48u32.to_le_bytes())
        }),
        "invalid_header",
        F,
        &["alignment is 48", "power of two"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"general.alignment");
            patch(b, at, &6u32.to_le_bytes()) // an f32
        }),
        "metadata_type",
        F,
        &["general.alignment"],
    );
}

#[test]
fn gguf_duplicates() {
    // Renaming a key or tensor to another of the same length.
    expect_err(
        corrupt(|b| {
            let at = after(b, b"test.i8");
            b[at - 2] = b'u'
        }),
        "duplicate_name",
        F,
        &["metadata key", "'test.u8'"],
    );
    expect_err(
        corrupt(|b| {
            let at = after(b, b"blk.0.attn_k.weight");
            b[at - 8] = b'q'
        }),
        "duplicate_name",
        F,
        &["tensor", "'blk.0.attn_q.weight'"],
    );
}

/// Where tensor `name`'s info starts its ggml type (after its 1-D or 2-D dims).
fn type_field(b: &[u8], name: &[u8]) -> usize {
    let at = after(b, name);
    let n_dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

#[test]
fn gguf_tensor_types_and_layout() {
    expect_err(
        corrupt(|b| {
            let at = type_field(b, b"output_norm.weight");
            patch(b, at, &9u32.to_le_bytes())
        }),
        "unknown_tensor_type",
        F,
        &[
            "'output_norm.weight'",
            "Q8_1 (ggml type 9)",
            "supported: F32, F16",
        ],
    );
    expect_err(
        corrupt(|b| {
            let at = type_field(b, b"output_norm.weight");
            patch(b, at, &1000u32.to_le_bytes())
        }),
        "unknown_tensor_type",
        F,
        &["ggml type 1000"],
    );
    // F32 rows of 32 as Q8_0: one block a row, fine; as Q4_K (256 a block): not whole blocks.
    expect_err(
        corrupt(|b| {
            let at = type_field(b, b"output_norm.weight");
            patch(b, at, &12u32.to_le_bytes())
        }),
        "tensor_layout",
        F,
        &["'output_norm.weight'", "whole number of q4_k blocks of 256"],
    );
    expect_err(
        corrupt(|b| {
            let at = type_field(b, b"output_norm.weight") + 4;
            let off = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            patch(b, at, &(off + 32).to_le_bytes())
        }),
        "tensor_layout",
        F,
        &["'output_norm.weight'", "not a multiple of the alignment 64"],
    );
    // output_norm moved onto ffn_gate's bytes.
    expect_err(
        corrupt(|b| {
            let gate = type_field(b, b"blk.0.ffn_gate.weight") + 4;
            let off = b[gate..gate + 8].to_vec();
            let at = type_field(b, b"output_norm.weight") + 4;
            patch(b, at, &off)
        }),
        "tensor_layout",
        F,
        &["overlaps tensor"],
    );
    // The data of the last tensor cut by one byte (6112 without the padding after it).
    expect_err(
        corrupt(|b| b.truncate(6111)),
        "tensor_out_of_bounds",
        F,
        &["'test.cube'", "6112", "6111 bytes"],
    );
    // Far past the end.
    expect_err(
        corrupt(|b| {
            let at = type_field(b, b"test.cube") + 4;
            patch(b, at, &(u64::MAX - 63).to_le_bytes())
        }),
        "tensor_layout",
        F,
        &["'test.cube'", "out of range"],
    );
}

/// A hand-made GGUF: one key, no tensors.
fn one_key(ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(ty.to_le_bytes());
    b.extend(value);
    b
}

#[test]
fn gguf_nested_and_empty_arrays() {
    // Arrays nested 8 deep are fine, 9 deep are not; an empty array keeps its element type.
    let nest = |depth: usize| {
        let mut v = Vec::new();
        for _ in 0..depth - 1 {
            v.extend(9u32.to_le_bytes());
            v.extend(1u64.to_le_bytes());
        }
        v.extend(6u32.to_le_bytes()); // empty array of f32
        v.extend(0u64.to_le_bytes());
        one_key(9, &v)
    };
    let h = GgufHeader::parse_file(&nest(8), "n.gguf").unwrap();
    let mut a = match h.metadata.value("k").unwrap() {
        MetaValue::Array(a) => a,
        v => panic!("{v:?}"),
    };
    for _ in 0..7 {
        a = match a {
            MetaArray::Array(v) => &v[0],
            a => panic!("{a:?}"),
        };
    }
    assert_eq!((a.element_type(), a.len()), ("f32", 0));
    expect_err(
        GgufHeader::parse_file(&nest(9), "n.gguf"),
        "header_limit",
        "n.gguf",
        &["nesting depth"],
    );
    // Empty key.
    let mut b = one_key(4, &7u32.to_le_bytes());
    patch(&mut b, 24, &0u64.to_le_bytes());
    b.remove(32);
    expect_err(
        GgufHeader::parse_file(&b, "e.gguf"),
        "invalid_header",
        "e.gguf",
        &["empty"],
    );
}

// ---------------------------------------------------------------------------------------------
// Split GGUF

const SPLITS: [&str; 3] = [
    "split-00001-of-00003.gguf",
    "split-00002-of-00003.gguf",
    "split-00003-of-00003.gguf",
];

#[test]
fn gguf_splits_merge_in_any_order() {
    let headers = vec![
        gguf_file(SPLITS[2]),
        gguf_file(SPLITS[0]),
        gguf_file(SPLITS[1]),
    ];
    let model = merge_splits(headers).unwrap();
    assert_eq!(model.files, SPLITS);
    check_tensors(&model, &SPLITS);
    let m = model.gguf_metadata().unwrap();
    assert_eq!(m.architecture().unwrap(), "llama");
    assert_eq!(m.u32("split.no").unwrap(), 0);
    let s = model.summary();
    assert_eq!((s.files, s.tensors), (3, 5));
    assert!(s.to_string().contains("3 files"));
    assert_eq!(split_names(SPLITS[1]).unwrap(), SPLITS);
    // One split alone is not a model.
    expect_err(
        gguf_file(SPLITS[0]).into_model_files(),
        "split_model",
        SPLITS[0],
        &["split 2, 3 of 3 missing"],
    );
}

#[test]
fn gguf_split_errors() {
    let first = SPLITS[0];
    expect_err(
        merge_splits(vec![gguf_file(SPLITS[0]), gguf_file(SPLITS[2])]),
        "split_model",
        first,
        &["split 2 of 3 missing", "split-00002-of-00003.gguf"],
    );
    expect_err(
        merge_splits(vec![
            gguf_file(SPLITS[0]),
            gguf_file(SPLITS[1]),
            gguf_file(SPLITS[1]),
        ]),
        "split_model",
        first,
        &["are both split 2 of 3"],
    );
    expect_err(merge_splits(vec![]), "split_model", "", &["no files"]);
    // A tensor in two splits.
    let mut one = gguf_file(SPLITS[0]);
    one.tensors.push(gguf_file(SPLITS[1]).tensors[1].clone());
    expect_err(
        merge_splits(vec![one, gguf_file(SPLITS[1]), gguf_file(SPLITS[2])]),
        "split_model",
        first,
        &["'blk.0.ffn_up.weight' is in both", SPLITS[0], SPLITS[1]],
    );
    // Split counts that disagree, and a wrong total.
    let patched = |name: &str, key: &[u8], value: &[u8]| {
        let mut b = read(name);
        let at = after(&b, key) + 4;
        patch(&mut b, at, value);
        GgufHeader::parse_file(&b, name).unwrap()
    };
    expect_err(
        merge_splits(vec![
            gguf_file(SPLITS[0]),
            gguf_file(SPLITS[1]),
            patched(SPLITS[2], b"split.count", &4u16.to_le_bytes()),
        ]),
        "split_model",
        first,
        &["3 splits", "says 4"],
    );
    expect_err(
        merge_splits(vec![
            patched(SPLITS[0], b"split.tensors.count", &6i32.to_le_bytes()),
            patched(SPLITS[1], b"split.tensors.count", &6i32.to_le_bytes()),
            patched(SPLITS[2], b"split.tensors.count", &6i32.to_le_bytes()),
        ]),
        "split_model",
        first,
        &["6 tensors", "hold 5"],
    );
    expect_err(
        merge_splits(vec![
            gguf_file(SPLITS[0]),
            gguf_file(SPLITS[1]),
            patched(SPLITS[2], b"split.no", &7u16.to_le_bytes()),
        ]),
        "split_model",
        first,
        &["only 3"],
    );
    expect_err(
        merge_splits(vec![gguf_file(SPLITS[0]), gguf_file("all_types.gguf")]),
        "split_model",
        first,
        &["'all_types.gguf' has no 'split.no'"],
    );
}

// ---------------------------------------------------------------------------------------------
// safetensors

fn st(name: &str) -> SafetensorsHeader {
    SafetensorsHeader::parse_file(&read(name), name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn safetensors_file_matches_the_python_package() {
    let h = st("model.safetensors");
    let exp = expected();
    let meta: std::collections::BTreeMap<String, String> =
        serde_json::from_value(exp["files"]["model.safetensors"]["metadata"].clone()).unwrap();
    assert_eq!(h.metadata, meta);
    assert_eq!(h.tensor("model.scalar").unwrap().shape, Vec::<usize>::new());
    let model = h.into_model_files().unwrap();
    check_tensors(&model, &["model.safetensors"]);
    let s = model.summary();
    assert_eq!(
        (s.format, s.tensors, s.architecture.clone()),
        (Format::Safetensors, 5, None)
    );
    assert_eq!(s.total_bytes, 192 + 64 + 4 + 512 + 320);
    assert_eq!(s.by_dtype.len(), 3);
    assert!(s.to_string().contains("safetensors"));
}

#[test]
fn safetensors_every_prefix_needs_more_and_every_truncation_is_an_error() {
    for name in [
        "model.safetensors",
        "sharded/model-00002-of-00002.safetensors",
    ] {
        let bytes = read(name);
        let whole = st(name);
        for n in 0..bytes.len() {
            match SafetensorsHeader::parse(&bytes[..n], None, name).unwrap() {
                Parsed::NeedMore { at_least } => {
                    assert!(at_least > n && at_least as u64 <= whole.header_len, "{n}")
                }
                Parsed::Complete { header, header_len } => {
                    assert_eq!(header_len, whole.header_len);
                    assert_eq!(header.tensors, whole.tensors);
                    assert!(n as u64 >= header_len);
                }
            }
            let e = SafetensorsHeader::parse(&bytes[..n], Some(n as u64), name)
                .expect_err("a truncated file parsed");
            assert!(
                ["file_truncated", "tensor_out_of_bounds"].contains(&e.code()),
                "{name}[..{n}]: {e}"
            );
            assert!(e.to_string().contains(name));
        }
    }
}

#[test]
fn safetensors_other_dtypes_are_typed_errors() {
    let f = "int64.safetensors";
    expect_err(
        SafetensorsHeader::parse_file(&read(f), f),
        "unknown_tensor_type",
        f,
        &["'position_ids'", "I64", "F32, F16, BF16"],
    );
}

/// BERT checkpoints saved by older transformers versions hold `embeddings.position_ids` (I64):
/// a buffer, not a weight, skipped; any other integer tensor is still refused.
#[test]
fn safetensors_bert_position_ids_buffer_is_skipped() {
    let json = r#"{"embeddings.position_ids": {"dtype": "I64", "shape": [1, 4], "data_offsets": [0, 32]},
        "embeddings.word_embeddings.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [32, 48]}}"#;
    let h = SafetensorsHeader::parse_file(&st_bytes(json, 48), "bert.safetensors").unwrap();
    let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["embeddings.word_embeddings.weight"]);
    let json =
        r#"{"embeddings.word_ids": {"dtype": "I64", "shape": [1, 4], "data_offsets": [0, 32]}}"#;
    expect_err(
        SafetensorsHeader::parse_file(&st_bytes(json, 32), "int.safetensors"),
        "unknown_tensor_type",
        "int.safetensors",
        &["'embeddings.word_ids'", "I64"],
    );
}

/// A safetensors file with the given JSON header and `data` bytes of zeros.
fn st_bytes(json: &str, data: usize) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend(json.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

#[test]
fn safetensors_corrupt_headers() {
    let f = "bad.safetensors";
    let parse = |b: &[u8]| SafetensorsHeader::parse_file(b, f);
    let e = |j: &str| format!(r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":{j}}}}}"#);
    expect_err(
        parse(&st_bytes(&e("[0,8]"), 9)),
        "invalid_header",
        f,
        &["1 bytes follow"],
    );
    expect_err(
        parse(&st_bytes(&e("[0,8]"), 7)),
        "tensor_out_of_bounds",
        f,
        &["'a'"],
    );
    expect_err(
        parse(&st_bytes(&e("[4,12]"), 12)),
        "tensor_layout",
        f,
        &["must begin at 0"],
    );
    expect_err(
        parse(&st_bytes(&e("[0,12]"), 12)),
        "tensor_layout",
        f,
        &["hold 12 bytes", "needs 8"],
    );
    expect_err(
        parse(&st_bytes(&e("[8,0]"), 8)),
        "tensor_layout",
        f,
        &["end before"],
    );
    expect_err(
        parse(&st_bytes(&e("[0]"), 8)),
        "tensor_layout",
        f,
        &["'a'", "not {"],
    );
    let two = |a: &str, b: &str| {
        format!(
            r#"{{"a":{{"dtype":"F16","shape":[4],"data_offsets":{a}}},"b":{{"dtype":"F16","shape":[4],"data_offsets":{b}}}}}"#
        )
    };
    expect_err(
        parse(&st_bytes(&two("[0,8]", "[4,12]"), 12)),
        "tensor_layout",
        f,
        &["'b'", "overlaps tensor 'a'"],
    );
    expect_err(
        parse(&st_bytes(&two("[0,8]", "[10,18]"), 18)),
        "tensor_layout",
        f,
        &["'b'", "gap"],
    );
    assert!(
        parse(&st_bytes(&two("[8,16]", "[0,8]"), 16)).is_ok(),
        "any key order"
    );
    expect_err(
        parse(&st_bytes(
            r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
            8,
        )),
        "header_limit",
        f,
        &["element count of tensor 'a'"],
    );
    expect_err(
        parse(&st_bytes(
            r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        )),
        "unknown_tensor_type",
        f,
        &["'a'", "Q4"],
    );
    expect_err(
        parse(&st_bytes(r#"{"a": 1}"#, 0)),
        "tensor_layout",
        f,
        &["'a'"],
    );
    expect_err(
        parse(&st_bytes(r#"{"__metadata__": {"x": 1}}"#, 0)),
        "invalid_header",
        f,
        &["__metadata__"],
    );
    expect_err(
        parse(&st_bytes(r#"{"a":"#, 0)),
        "invalid_header",
        f,
        &["JSON"],
    );
    expect_err(
        parse(&st_bytes("[1, 2]", 0)),
        "bad_magic",
        f,
        &["JSON object"],
    );
    let mut bad_utf8 = st_bytes(r#"{"__metadata__":{"x":"yy"}}"#, 0);
    let n = bad_utf8.len();
    bad_utf8[n - 4] = 0xff;
    expect_err(parse(&bad_utf8), "invalid_header", f, &["UTF-8"]);
    let mut huge = st_bytes("{}", 0);
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_err(
        parse(&huge),
        "header_limit",
        f,
        &["JSON header length", "100000000"],
    );
    expect_err(
        SafetensorsHeader::parse(&read("all_types.gguf"), None, f),
        "bad_magic",
        f,
        &["GGUF"],
    );
    expect_err(
        SafetensorsHeader::parse(b"GGUF", None, f),
        "bad_magic",
        f,
        &[],
    );
    // A header length of 0x4747 starts with "GG" too.
    assert!(matches!(
        SafetensorsHeader::parse(b"GG", None, f),
        Ok(Parsed::NeedMore { at_least: 8 })
    ));
    // Empty header object: no tensors, no data.
    assert!(parse(&st_bytes("{}", 0)).unwrap().tensors.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Sharded safetensors

const SHARDS: [&str; 2] = [
    "sharded/model-00001-of-00002.safetensors",
    "sharded/model-00002-of-00002.safetensors",
];
const INDEX: &str = "sharded/model.safetensors.index.json";

fn index_with(
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Result<SafetensorsIndex, Error> {
    let mut v: Value = serde_json::from_slice(&read(INDEX)).unwrap();
    edit(v["weight_map"].as_object_mut().unwrap());
    SafetensorsIndex::parse(v.to_string().as_bytes(), INDEX)
}

#[test]
fn safetensors_sharded_checkpoint() {
    let index = SafetensorsIndex::parse(&read(INDEX), INDEX).unwrap();
    let shards: Vec<&str> = index.shards.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        shards,
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors"
        ]
    );
    assert_eq!(index.shards[1].tensors.len(), 3);
    assert_eq!(index.shard_of("lm_head.weight"), Some(1));
    assert_eq!(index.total_size, Some(192 + 128 + 128 + 32 + 192));
    let model = merge_shards(&index, vec![st(SHARDS[0]), st(SHARDS[1])]).unwrap();
    assert_eq!(model.files, SHARDS);
    check_tensors(&model, &SHARDS);
    assert_eq!(model.summary().total_bytes, index.total_size.unwrap());
}

#[test]
fn safetensors_shard_errors() {
    let index = SafetensorsIndex::parse(&read(INDEX), INDEX).unwrap();
    expect_err(
        merge_shards(&index, vec![st(SHARDS[0])]),
        "shard_index",
        INDEX,
        &["lists 2 shards", "1 shard headers"],
    );
    expect_err(
        merge_shards(&index, vec![st(SHARDS[1]), st(SHARDS[0])]),
        "shard_index",
        INDEX,
        &["does not hold it"],
    );
    // A tensor the index lists that its shard lacks.
    let extra = index_with(|m| {
        m.insert(
            "extra.weight".into(),
            json!("model-00001-of-00002.safetensors"),
        );
    })
    .unwrap();
    expect_err(
        merge_shards(&extra, vec![st(SHARDS[0]), st(SHARDS[1])]),
        "shard_index",
        INDEX,
        &["'extra.weight'", "does not hold it"],
    );
    // A tensor in a shard that the index does not list.
    let fewer = index_with(|m| {
        m.remove("model.norm.weight");
    })
    .unwrap();
    expect_err(
        merge_shards(&fewer, vec![st(SHARDS[0]), st(SHARDS[1])]),
        "shard_index",
        INDEX,
        &["'model.norm.weight'", "does not list it"],
    );
    // A tensor in both shards.
    let mut second = st(SHARDS[1]);
    second.tensors.push(st(SHARDS[0]).tensors[0].clone());
    let both = index_with(|_| {}).unwrap();
    expect_err(
        merge_shards(&both, vec![st(SHARDS[0]), second]),
        "shard_index",
        INDEX,
        &["index places it in"],
    );
    // The index itself: a tensor under two shards, a path, no weight_map.
    let dup = r#"{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}"#;
    expect_err(
        SafetensorsIndex::parse(dup.as_bytes(), INDEX),
        "shard_index",
        INDEX,
        &["'a' is listed in both"],
    );
    let dup = r#"{"weight_map": {"a": "x.safetensors", "a": "x.safetensors"}}"#;
    expect_err(
        SafetensorsIndex::parse(dup.as_bytes(), INDEX),
        "duplicate_name",
        INDEX,
        &["'a'"],
    );
    let path = r#"{"weight_map": {"a": "../x.safetensors"}}"#;
    expect_err(
        SafetensorsIndex::parse(path.as_bytes(), INDEX),
        "shard_index",
        INDEX,
        &["plain file name"],
    );
    expect_err(
        SafetensorsIndex::parse(b"{}", INDEX),
        "shard_index",
        INDEX,
        &["weight_map"],
    );
    expect_err(
        SafetensorsIndex::parse(br#"{"weight_map": {}}"#, INDEX),
        "shard_index",
        INDEX,
        &["empty"],
    );
}

#[test]
fn limits_are_what_the_docs_say() {
    assert_eq!(gguf::MAX_HEADER_BYTES, 512 << 20);
    assert_eq!(gguf::MAX_DIMS, 4);
    assert_eq!(gguf::DEFAULT_ALIGNMENT, 32);
    assert_eq!(
        pocketlm::formats::safetensors::MAX_HEADER_BYTES,
        100_000_000
    );
    assert_eq!(next_fetch_len(1 << 20, 10), 2 << 20);
    assert_eq!(next_fetch_len(0, 8), 64 << 10);
    assert_eq!(next_fetch_len(100, 1 << 30), 1 << 30);
}

// ---------------------------------------------------------------------------------------------
// Inputs the fuzzers (fuzz/) found, with the invariants the fuzz targets check

/// The fuzz targets' invariants (see `pocketlm::formats::invariants`), then what the targets do
/// with a parsed header.
fn gguf_invariants(data: &[u8]) {
    let streamed = check_streaming_agrees(
        data,
        |p, size| GgufHeader::parse(p, size, "fuzz.gguf"),
        &["tensor_out_of_bounds"],
        |a, b| a.tensors == b.tensors && a.data_offset == b.data_offset,
    );
    if let Some(h) = streamed {
        for (k, v) in h.metadata.iter() {
            let _ = format!("{k} = {v} ({})", v.describe());
        }
        assert!(merge_splits(vec![h.clone(), h.clone()]).is_err());
        if let Ok(model) = h.into_model_files() {
            let _ = model.summary().to_string();
        }
    }
}

fn safetensors_invariants(data: &[u8]) {
    let streamed = check_streaming_agrees(
        data,
        |p, size| SafetensorsHeader::parse(p, size, "fuzz.safetensors"),
        &["tensor_out_of_bounds", "invalid_header"],
        |a, b| a.tensors == b.tensors,
    );
    if let Some(h) = streamed {
        if let Ok(model) = h.into_model_files() {
            let _ = model.summary().to_string();
        }
    }
    if let Ok(index) = SafetensorsIndex::parse(data, "fuzz.index.json") {
        assert!(merge_shards(&index, Vec::new()).is_err());
    }
}

#[test]
fn fuzz_regressions() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir().join("fuzz")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        if name.starts_with("gguf-") {
            gguf_invariants(&data);
        } else if name.starts_with("safetensors-") {
            safetensors_invariants(&data);
        } else {
            panic!("{name}: name fuzz regressions gguf-* or safetensors-*");
        }
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn fixtures_keep_the_fuzz_invariants() {
    for name in ["all_types.gguf", SPLITS[0], SPLITS[1], SPLITS[2]] {
        gguf_invariants(&read(name));
    }
    for name in [
        "model.safetensors",
        "int64.safetensors",
        SHARDS[0],
        SHARDS[1],
        INDEX,
    ] {
        safetensors_invariants(&read(name));
    }
}
