//! GGUF files as llama.cpp's own quantizer writes them, against llama.cpp on the same files: a
//! small random Llama (scripts/make_gguf_fixtures.py, tests/fixtures/gguf/) quantized into the
//! presets people download (Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q5_1, Q6_K, Q8_0, IQ4_NL, IQ4_XS). The
//! quantizer mixes types inside a layer (Q4_K_M keeps some attn_v and ffn_down in Q6_K, Q2_K
//! has Q3_K/Q4_K tensors, …), so fused projections meet parts of different formats here. The
//! checks of one file, whichever backend runs it: tests/gpu_gguf_presets.rs on both GPU
//! profiles, tests/cpu_model.rs on the CPU backend natively, tests/web_cpu.rs on its wasm
//! kernels in Chromium (which includes this file, and the fixtures with `include_bytes!`).
//!
//! Two references per file (scripts/make_gguf_fixtures.py): transformers on the weights
//! dequantized to f32 by gguf-py, the exact computation PocketLM does, whose logits must agree
//! within [`EXACT_TOL`] and whose greedy continuation must be ours token for token; and llama.cpp,
//! whose CPU matmuls quantize the activations to 8 bits (its logits differ from the exact ones by
//! a few percent of their spread on this random model), so its logits must agree within
//! [`LOGIT_TOL`] of each row's spread and its top token wherever its top-2 margin is clear of
//! that.

#![allow(dead_code)]

use std::collections::HashSet;

use pocketlm::formats::ModelFiles;
use pocketlm::quant::DType;

pub const PRESETS: [&str; 9] = [
    "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q5_1", "q6_k", "q8_0", "iq4_nl", "iq4_xs",
];
/// Agreement with llama.cpp's logits, as a fraction of the row's max − min.
const LOGIT_TOL: f32 = 0.05;
/// Agreement with the exact (f32) reference, absolute.
const EXACT_TOL: f32 = 1e-3;

/// A preset's fixtures: `{preset}.json` (the prompt, the exact greedy continuation, the tensor
/// types), llama.cpp's logits (`.logits.f32`) and the exact ones (`.exact.f32`).
pub struct PresetReference {
    pub json: serde_json::Value,
    pub llama_cpp: Vec<f32>,
    pub exact: Vec<f32>,
}

impl PresetReference {
    pub fn from_bytes(json: &str, llama_cpp: &[u8], exact: &[u8]) -> Self {
        let floats = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        PresetReference {
            json: serde_json::from_str(json).unwrap(),
            llama_cpp: floats(llama_cpp),
            exact: floats(exact),
        }
    }

    /// From tests/fixtures/gguf/.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(preset: &str) -> Self {
        let file = |ext: &str| preset_dir().join(format!("{preset}{ext}"));
        PresetReference::from_bytes(
            &std::fs::read_to_string(file(".json")).unwrap(),
            &std::fs::read(file(".logits.f32")).unwrap(),
            &std::fs::read(file(".exact.f32")).unwrap(),
        )
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn preset_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
}

/// The preset's file.
#[cfg(not(target_arch = "wasm32"))]
pub fn preset_path(preset: &str) -> std::path::PathBuf {
    preset_dir().join(format!("{preset}.gguf"))
}

fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    let ids = v.as_array().unwrap().iter();
    ids.map(|t| t.as_u64().unwrap() as u32).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// One preset's file against its two references. `files` is the loaded file; `forward(tokens,
/// position)` runs tokens from a position through the model and its KV cache and returns their
/// logits ([tokens, vocab]). Returns the tensor types the file holds.
pub fn check_preset(
    preset: &str,
    reference: &PresetReference,
    files: &ModelFiles,
    vocab: usize,
    forward: &mut dyn FnMut(&[u32], usize) -> Vec<f32>,
) -> HashSet<DType> {
    let PresetReference {
        json: reference,
        llama_cpp: want,
        exact,
    } = reference;
    let prompt = token_ids(&reference["prompt"]);
    let greedy = token_ids(&reference["exact_greedy"]);

    // The file's tensor types are what llama.cpp's quantizer chose, and what we load.
    let mut types_seen = HashSet::new();
    for t in &files.tensors {
        let want = reference["tensor_types"][&t.name].as_str().unwrap();
        assert_eq!(t.dtype.name(), want.to_lowercase(), "{preset}: {}", t.name);
        types_seen.insert(t.dtype);
    }
    let got = forward(&prompt, 0);
    let exact_err = got
        .iter()
        .zip(exact)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        exact_err <= EXACT_TOL,
        "{preset}: logits differ from the exact f32 reference by {exact_err}"
    );
    let mut worst = 0f32;
    for (t, (g, w)) in got.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
        let (lo, hi) = w
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let spread = hi - lo;
        let err = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        worst = worst.max(err / spread);
        assert!(
            err <= LOGIT_TOL * spread,
            "{preset}: position {t}: logits differ from llama.cpp's by {err} (spread {spread})"
        );
        let mut sorted = w.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * LOGIT_TOL * spread {
            assert_eq!(argmax(g), argmax(w), "{preset}: top token at position {t}");
        }
    }

    // Greedy continuation through the KV cache, one decode step at a time, as the exact
    // reference continues.
    let mut next = argmax(&got[(prompt.len() - 1) * vocab..]) as u32;
    for (pos, (step, &want_tok)) in (prompt.len()..).zip(greedy.iter().enumerate()) {
        assert_eq!(next, want_tok, "{preset}: greedy token {step}");
        next = argmax(&forward(&[next], pos)) as u32;
    }
    eprintln!(
        "{preset}: logits within {exact_err:e} of the exact reference and {:.2}% of \
         llama.cpp's spread; {} greedy tokens equal",
        100.0 * worst,
        greedy.len()
    );
    types_seen
}

/// Every quantized type the quantizer used is among `types_seen`, the presets' together.
pub fn assert_every_k_quant_seen(types_seen: &HashSet<DType>) {
    eprintln!("tensor types seen: {types_seen:?}");
    for t in [
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        assert!(types_seen.contains(&t), "no preset had {t}");
    }
}
