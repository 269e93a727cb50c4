//! The real default model against Hugging Face transformers, greedy, token for token, through
//! the generation engine as an application uses it: the tokenizer from the GGUF file must give
//! transformers' prompt ids, and the engine's greedy reply transformers' generated ids.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, fixture_json, greedy, real_model_engine, token_ids};
use pocketlm::engine::Flow;

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
    let reference = fixture_json("smollm2/greedy.json");
    let greedy = greedy(TOKENS);
    for case in reference["cases"].as_array().unwrap() {
        let text = case["prompt"].as_str().unwrap();
        let prompt = engine.text_prompt(text).unwrap();
        assert_eq!(
            prompt,
            token_ids(&case["input_ids"]),
            "'{text}': prompt ids"
        );
        let want = &token_ids(&case["generated_ids"])[..TOKENS];
        let start = std::time::Instant::now();
        let g =
            pollster::block_on(engine.generate(ctx(), &prompt, &greedy, &mut |_| Flow::Continue))
                .unwrap();
        let first_diff = g.tokens.iter().zip(want).position(|(a, b)| a != b);
        assert!(
            first_diff.is_none() && g.tokens.len() == want.len(),
            "'{text}': tokens differ from transformers at {first_diff:?}:\n got  {:?}\n want {want:?}",
            g.tokens
        );
        eprintln!(
            "'{text}': {TOKENS} tokens match transformers ({:.1} s, {:.2} tokens/s decoding)",
            start.elapsed().as_secs_f64(),
            g.decode_tokens_per_s()
        );
    }
}
