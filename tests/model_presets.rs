//! SmolLM2-135M requantized by llama.cpp's quantizer into the presets people download (Q2_K,
//! Q3_K_M, Q4_K_M, Q5_K_M, Q5_1, Q6_K, Q8_0, IQ4_NL, IQ4_XS; scripts/make_smollm2_presets.py,
//! which needs llama-cpp-python and writes the files into models/smollm2-presets/): greedy
//! generation through the engine may part from llama.cpp's on the same file only at a step where
//! llama.cpp's top-2 margin was small (it quantizes activations to 8 bits). Run by
//! `make test-models`, not by `make test` (the files are made, not downloaded).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{
    assert_parts_only_where_unclear, ctx, fixture_json, greedy, numbers, real_model_engine,
    token_ids,
};
use pocketlm::engine::Flow;

/// Where llama.cpp's best logit leads the second by more than this, its token must be ours.
const CLEAR_MARGIN: f64 = 0.5;

#[test]
fn smollm2_presets_match_llama_cpp() {
    let reference = fixture_json("smollm2/presets.json");
    let presets = reference["presets"].as_object().unwrap();
    assert_eq!(presets.len(), 9);
    for (name, preset) in presets {
        let mut engine = real_model_engine(
            &format!("models/smollm2-presets/{name}.gguf"),
            "run scripts/make_smollm2_presets.py (needs llama-cpp-python)",
            64,
        );
        for case in preset["cases"].as_array().unwrap() {
            let text = case["prompt"].as_str().unwrap();
            let prompt = engine.text_prompt(text).unwrap();
            assert_eq!(
                prompt,
                token_ids(&case["input_ids"]),
                "{name} '{text}': prompt ids"
            );
            let want = token_ids(&case["llama_cpp_ids"]);
            let margins = numbers(&case["llama_cpp_margins"]);
            engine.reset();
            let g = pollster::block_on(engine.generate(
                ctx(),
                &prompt,
                &greedy(want.len()),
                &mut |_| Flow::Continue,
            ))
            .unwrap();
            let same = assert_parts_only_where_unclear(
                &format!("{name} '{text}'"),
                &g.tokens,
                &want,
                &margins,
                CLEAR_MARGIN,
            );
            eprintln!(
                "{name} '{text}': {same} of {} tokens equal llama.cpp's{}",
                want.len(),
                if same < want.len() {
                    format!(" (then parted where its margin was {})", margins[same])
                } else {
                    String::new()
                }
            );
        }
        engine.destroy();
    }
}
