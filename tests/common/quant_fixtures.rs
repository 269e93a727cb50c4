//! The dequantization fixtures of `tests/fixtures/quant/`, made by
//! `scripts/make_quant_fixtures.py` with the Python `gguf` package: per format, `<type>.bin` holds
//! GGUF block bytes written by gguf-py and `<type>.f32` gguf-py's dequantization of them.
//! `manifest.json` has one tensor per line, so it is read without a JSON parser. Shared by the
//! native tests and, through `#[path]`, the browser tests.
#![allow(dead_code)]

use pocketlm::quant::DType;

#[cfg(not(target_arch = "wasm32"))]
pub fn read(name: &str) -> Vec<u8> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/quant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (regenerate with scripts/make_quant_fixtures.py)",
            path.display()
        )
    })
}

/// In the browser there is no file system: the fixtures are compiled into the test.
#[cfg(target_arch = "wasm32")]
pub fn read(name: &str) -> Vec<u8> {
    macro_rules! fixtures {
        ($($file:literal),* $(,)?) => {
            match name {
                $($file => include_bytes!(concat!("../fixtures/quant/", $file)).to_vec(),)*
                _ => panic!("fixture {name} is not compiled in: add it to quant_fixtures::read"),
            }
        };
    }
    fixtures!(
        "manifest.json",
        "f32.bin",
        "f32.f32",
        "f16.bin",
        "f16.f32",
        "bf16.bin",
        "bf16.f32",
        "q4_0.bin",
        "q4_0.f32",
        "q4_1.bin",
        "q4_1.f32",
        "q5_0.bin",
        "q5_0.f32",
        "q8_0.bin",
        "q8_0.f32",
        "q4_k.bin",
        "q4_k.f32",
        "q6_k.bin",
        "q6_k.f32",
        "q5_1.bin",
        "q5_1.f32",
        "q2_k.bin",
        "q2_k.f32",
        "q3_k.bin",
        "q3_k.f32",
        "q5_k.bin",
        "q5_k.f32",
        "iq4_nl.bin",
        "iq4_nl.f32",
        "iq4_xs.bin",
        "iq4_xs.f32",
    )
}

/// One tensor of the manifest, with its bytes and gguf-py's values.
pub struct Fixture {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
    pub expected: Vec<f32>,
}

/// The string value of `"key": "value"` in `line`.
fn string_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\": \""))? + key.len() + 5;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// The integers of `"key": [a, b, …]` in `line`.
fn list_field(line: &str, key: &str) -> Option<Vec<usize>> {
    let start = line.find(&format!("\"{key}\": ["))? + key.len() + 5;
    let len = line[start..].find(']')?;
    line[start..start + len]
        .split(',')
        .map(|v| v.trim().parse().ok())
        .collect()
}

/// Every fixture of the manifest, checked for consistent sizes.
pub fn load() -> Vec<Fixture> {
    let text = String::from_utf8(read("manifest.json")).expect("manifest.json is UTF-8");
    let fixtures: Vec<Fixture> = text
        .lines()
        .filter(|line| line.contains("\"type\":"))
        .map(|line| {
            let name = string_field(line, "type").unwrap_or_else(|| panic!("no type in {line}"));
            let dtype = DType::ALL
                .into_iter()
                .find(|d| d.name() == name)
                .unwrap_or_else(|| panic!("manifest names unknown dtype '{name}'"));
            let shape = list_field(line, "shape").unwrap_or_else(|| panic!("no shape in {line}"));
            assert_eq!(shape.len(), 2, "{name}: shape is [rows, cols]");
            let (rows, cols) = (shape[0], shape[1]);
            let bytes = read(&format!("{name}.bin"));
            let expected: Vec<f32> = read(&format!("{name}.f32"))
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(
                Some(bytes.len()),
                dtype.bytes_for(rows * cols),
                "{name}.bin: size does not match shape [{rows}, {cols}]"
            );
            assert_eq!(
                expected.len(),
                rows * cols,
                "{name}.f32: size does not match shape [{rows}, {cols}]"
            );
            Fixture {
                dtype,
                rows,
                cols,
                bytes,
                expected,
            }
        })
        .collect();
    assert!(!fixtures.is_empty(), "manifest.json lists no tensors");
    fixtures
}

/// How NaNs compare: the CPU keeps their payloads bit for bit, while GPUs may quiet a signalling
/// NaN when they widen an f16 (WGSL leaves NaN results to the implementation), so on the GPU any
/// NaN matches any NaN.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nan {
    SameBits,
    AnyNan,
}

/// The first index where `got` and `want` differ in their bits, with a description.
pub fn first_bit_difference(
    dtype: DType,
    cols: usize,
    got: &[f32],
    want: &[f32],
    nan: Nan,
) -> Option<String> {
    let n = want.len();
    if got.len() != n {
        return Some(format!("{} values, expected {n}", got.len()));
    }
    let differ = |i: &usize| {
        let (g, w) = (got[*i], want[*i]);
        !(g.to_bits() == w.to_bits() || (nan == Nan::AnyNan && g.is_nan() && w.is_nan()))
    };
    let i = (0..n).find(differ)?;
    let block = i / dtype.block_size();
    Some(format!(
        "{dtype}: value {i} (row {}, column {}, block {block}) is {:e} (bits {:#010x}), expected \
         {:e} (bits {:#010x}); {} of {n} values differ",
        i / cols,
        i % cols,
        got[i],
        got[i].to_bits(),
        want[i],
        want[i].to_bits(),
        (0..n).filter(differ).count()
    ))
}
