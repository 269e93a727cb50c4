//! `pocketlm::quant::dequantize` against the Python `gguf` package, bit for bit (the fixtures are
//! described in tests/common/quant_fixtures.rs). CPU only; tests/gpu_quant.rs holds the GPU's side.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::quant_fixtures::{first_bit_difference, load, read, Nan};
use pocketlm::quant::{dequantize, DType};

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for f in load() {
        let mut got = vec![f32::NAN; f.rows * f.cols];
        dequantize(f.dtype, &f.bytes, &mut got).unwrap_or_else(|e| panic!("{}: {e}", f.dtype));
        if let Some(diff) = first_bit_difference(f.dtype, f.cols, &got, &f.expected, Nan::SameBits)
        {
            panic!("CPU vs gguf-py: {diff}");
        }
    }
}

#[test]
fn every_supported_format_has_a_fixture() {
    let covered: Vec<DType> = load().into_iter().map(|f| f.dtype).collect();
    for dtype in DType::WEIGHTS {
        assert!(
            covered.contains(&dtype),
            "no fixture for {dtype}: add it to scripts/make_quant_fixtures.py"
        );
    }
}

#[test]
fn the_gguf_file_holds_the_same_blocks() {
    // blocks.gguf (written by gguf.GGUFWriter) carries the same tensors; a GGUF reader test can
    // load it. Its data section must contain each .bin verbatim.
    let gguf = read("blocks.gguf");
    assert_eq!(&gguf[..4], b"GGUF");
    for f in load() {
        assert!(
            gguf.windows(f.bytes.len()).any(|w| w == f.bytes.as_slice()),
            "blocks.gguf lacks the bytes of {}.bin",
            f.dtype.name()
        );
    }
}
