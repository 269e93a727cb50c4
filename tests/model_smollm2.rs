//! The real default model against Hugging Face transformers, greedy, token for token, through
//! the generation engine as an application uses it: the tokenizer from the GGUF file must give
//! transformers' prompt ids, and the engine's greedy reply transformers' generated ids.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{assert_gemm_prefill_cases, assert_greedy_cases, ctx, real_model_engine};

/// Tokens compared per prompt (the fixture has 40).
const TOKENS: usize = 32;

/// The GGUF (Q4_1 weights, Q8_0 embeddings) generates greedily exactly what transformers
/// generates on the same weights dequantized to f32 (scripts/make_smollm2_reference.py), on
/// three prompts: prefill, then decode through the KV cache (f32, as transformers keeps it).
#[test]
fn smollm2_greedy_generation_matches_transformers() {
    let mut engine = real_model_engine(
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "run scripts/fetch-model.sh",
        256,
    );
    assert_greedy_cases(
        &mut engine,
        ctx().into(),
        "smollm2/greedy.json",
        3,
        Some(TOKENS),
        None,
    );
}

/// Prompt steps of more than 16 tokens run the tiled GEMM of the kernels made for GPUs (what a
/// hardware adapter runs; the CPU drivers here run the other family unless asked), which the
/// prompts above never reach: see [`common::assert_gemm_prefill_cases`]. With f16 tiles where
/// the device has shader-f16 (the full profile), with f32 tiles elsewhere (the baseline
/// profile), so `make test` checks both. Prompts of 32 tokens (the 32-token graph) and of 40
/// (one step of the 64-token graph).
#[test]
fn smollm2_long_prompts_through_the_gemm_match_transformers() {
    assert_gemm_prefill_cases(
        (
            "models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "run scripts/fetch-model.sh",
            256,
        ),
        "smollm2/greedy.json",
        3,
        &[32, 40],
    );
}
