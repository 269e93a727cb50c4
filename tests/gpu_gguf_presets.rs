//! GGUF files as llama.cpp's own quantizer writes them, against llama.cpp on the same files: a
//! small random Llama (scripts/make_gguf_fixtures.py, tests/fixtures/gguf/) quantized into the
//! presets people download (Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q5_1, Q6_K, Q8_0, IQ4_NL, IQ4_XS). The
//! quantizer mixes types inside a layer (Q4_K_M keeps some attn_v and ffn_down in Q6_K, Q2_K
//! has Q3_K/Q4_K tensors, …), so fused projections meet parts of different formats here.
//!
//! Two references per file (scripts/make_gguf_fixtures.py): transformers on the weights
//! dequantized to f32 by gguf-py, the exact computation PocketLM does, whose logits must agree
//! within [`EXACT_TOL`] and whose greedy continuation must be ours token for token; and llama.cpp,
//! whose CPU matmuls quantize the activations to 8 bits (its logits differ from the exact ones by
//! a few percent of their spread on this random model), so its logits must agree within
//! [`LOGIT_TOL`] of each row's spread and its top token wherever its top-2 margin is clear of
//! that.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, fixture_json, read_f32_file, token_ids};
use pocketlm::gpu::DType;
use pocketlm::load::{load_native, LoadOptions};
use pocketlm::model::{Decoder, ModelConfig};
use std::collections::HashSet;

const PRESETS: [&str; 9] = [
    "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q5_1", "q6_k", "q8_0", "iq4_nl", "iq4_xs",
];
/// Agreement with llama.cpp's logits, as a fraction of the row's max − min.
const LOGIT_TOL: f32 = 0.05;
/// Agreement with the exact (f32) reference, absolute.
const EXACT_TOL: f32 = 1e-3;

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

#[test]
fn presets_match_llama_cpp() {
    // Two presets at a time: on CPU drivers most of the time is compiling each format mix's
    // pipelines, one thread per compile.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let types_seen = std::sync::Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(preset) = PRESETS.get(i) else { break };
                let seen = check_preset(preset);
                types_seen.lock().unwrap().extend(seen);
            });
        }
    });
    let types_seen = types_seen.into_inner().unwrap();
    // The presets cover every quantized type the quantizer used.
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

/// One preset's file against its two references; the tensor types it holds.
fn check_preset(preset: &str) -> HashSet<DType> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf");
    let mut types_seen = HashSet::new();
    let path = dir.join(format!("{preset}.gguf"));
    let reference = fixture_json(&format!("gguf/{preset}.json"));
    let prompt = token_ids(&reference["prompt"]);
    let greedy = token_ids(&reference["exact_greedy"]);
    let want = read_f32_file(&dir.join(format!("{preset}.logits.f32")));
    let exact = read_f32_file(&dir.join(format!("{preset}.exact.f32")));

    let loaded = pollster::block_on(load_native(
        ctx(),
        path.to_str().unwrap(),
        LoadOptions::default(),
    ))
    .unwrap();
    let meta = loaded.files.gguf_metadata().unwrap();
    let config = ModelConfig::from_gguf(meta, &loaded.files).unwrap();
    // The file's tensor types are what llama.cpp's quantizer chose, and what we load.
    for t in &loaded.files.tensors {
        let want = reference["tensor_types"][&t.name].as_str().unwrap();
        assert_eq!(t.dtype.name(), want.to_lowercase(), "{preset}: {}", t.name);
        types_seen.insert(t.dtype);
    }
    let vocab = config.vocab;
    let model =
        pollster::block_on(Decoder::new(ctx(), config, loaded.tensors, 64, DType::F32)).unwrap();
    let mut graph = pollster::block_on(model.graph(ctx(), prompt.len(), 8)).unwrap();
    let got = pollster::block_on(model.forward(ctx(), &mut graph, &prompt, 0)).unwrap();
    let exact_err = got
        .iter()
        .zip(&exact)
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
    let mut decode = pollster::block_on(model.graph(ctx(), 1, 8)).unwrap();
    let mut next = argmax(&got[(prompt.len() - 1) * vocab..]) as u32;
    for (pos, (step, &want_tok)) in (prompt.len()..).zip(greedy.iter().enumerate()) {
        assert_eq!(next, want_tok, "{preset}: greedy token {step}");
        let row = pollster::block_on(model.forward(ctx(), &mut decode, &[next], pos)).unwrap();
        next = argmax(&row) as u32;
    }
    eprintln!(
        "{preset}: logits within {exact_err:e} of the exact reference and {:.2}% of \
         llama.cpp's spread; {} greedy tokens equal",
        100.0 * worst,
        greedy.len()
    );
    model.destroy();
    types_seen
}
