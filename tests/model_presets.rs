//! SmolLM2-135M requantized by llama.cpp's quantizer into the presets people download (Q2_K,
//! Q3_K_M, Q4_K_M, Q5_K_M, Q5_1, Q6_K, Q8_0, IQ4_NL, IQ4_XS; scripts/make_smollm2_presets.py,
//! which needs llama-cpp-python and writes the files into models/smollm2-presets/): greedy
//! generation through the engine may part from llama.cpp's on the same file only at a step where
//! llama.cpp's top-2 margin was small (it quantizes activations to 8 bits). Run by
//! `make test-models`, not by `make test` (the files are made, not downloaded).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, fixture_json, numbers, token_ids};
use pocketlm::engine::{Engine, EngineOptions, Flow, GenerateOptions};
use pocketlm::gpu::DType;
use pocketlm::load::{load_native, LoadOptions};
use pocketlm::sample::SamplingParams;

/// Where llama.cpp's best logit leads the second by more than this, its token must be ours.
const CLEAR_MARGIN: f64 = 0.5;

#[test]
fn smollm2_presets_match_llama_cpp() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let reference = fixture_json("smollm2/presets.json");
    let presets = reference["presets"].as_object().unwrap();
    assert_eq!(presets.len(), 9);
    for (name, preset) in presets {
        let path = root.join(format!("models/smollm2-presets/{name}.gguf"));
        assert!(
            path.is_file(),
            "{} is missing: run scripts/make_smollm2_presets.py (needs llama-cpp-python)",
            path.display()
        );
        let loaded = pollster::block_on(load_native(
            ctx(),
            path.to_str().unwrap(),
            LoadOptions::default(),
        ))
        .unwrap();
        let options = EngineOptions {
            context: Some(64),
            kv_dtype: Some(DType::F32),
        };
        let mut engine = pollster::block_on(Engine::new(ctx(), loaded, &options)).unwrap();
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
            let greedy = GenerateOptions {
                sampling: SamplingParams::greedy(),
                max_tokens: Some(want.len()),
                stop: Vec::new(),
                ignore_eos: true,
            };
            engine.reset();
            let g = pollster::block_on(
                engine.generate(ctx(), &prompt, &greedy, &mut |_| Flow::Continue),
            )
            .unwrap();
            // The sequences may part only where llama.cpp's choice was unclear.
            let same = g
                .tokens
                .iter()
                .zip(&want)
                .take_while(|(a, b)| a == b)
                .count();
            if same < want.len() {
                assert!(
                    margins[same] <= CLEAR_MARGIN,
                    "{name} '{text}': token {same} is {} where llama.cpp chose {} with a clear \
                     margin of {}",
                    g.tokens[same],
                    want[same],
                    margins[same]
                );
            }
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
