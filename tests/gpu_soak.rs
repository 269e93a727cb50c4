//! Long use stays flat natively: the GPU buffers PocketLM holds (its own count, over every
//! device) do not change across many generations once the graphs exist, and return to where they
//! were when an engine is destroyed and dropped, load after load, and after loads that fail
//! (a truncated file, an integrity mismatch). One test in its own binary:
//! the count is process-wide, so nothing else may allocate while it runs. The browser version,
//! which also bounds wasm memory and the JS heap, is www/test/soak.test.mjs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, tiny_llama_engine, tiny_llama_files};
use pocketlm::engine::{Engine, Flow, GenerateOptions};
use pocketlm::gpu::held_buffers;
use pocketlm::load::{load_model, load_model_file, LoadOptions, MemorySource, ModelFile};
use pocketlm::sample::SamplingParams;

fn engine() -> Engine {
    tiny_llama_engine(ctx(), 128, tiny_llama_files(ctx(), |_| {}))
}

/// Generation `i` of a mix: turns that extend the previous sequence (KV reuse), fresh prompts,
/// aborts after a token, stop strings, greedy and seeded sampling with penalties.
fn generate(engine: &mut Engine, seq: &mut Vec<u32>, i: usize) {
    if i.is_multiple_of(9) || seq.len() > 100 {
        *seq = vec![1, (6 + i % 100) as u32, 40];
    }
    let sampling = match i % 3 {
        0 => SamplingParams::greedy(),
        1 => SamplingParams {
            temperature: 0.9,
            top_p: 0.8,
            seed: Some(i as u64),
            ..SamplingParams::default()
        },
        _ => SamplingParams {
            temperature: 1.1,
            repetition_penalty: 1.2,
            seed: Some(i as u64),
            ..SamplingParams::default()
        },
    };
    let options = GenerateOptions {
        sampling,
        max_tokens: Some(2 + i % 4),
        stop: if i % 7 == 3 {
            vec!["e".into(), " ".into()]
        } else {
            Vec::new()
        },
        ignore_eos: i.is_multiple_of(2),
        // Both decode loops: overlapped (greedy and plain sampling) and step by step.
        pipeline: !i.is_multiple_of(4),
        gpu_nucleus: true,
        response_format: None,
        logprobs: None,
    };
    let abort = i % 5 == 2;
    let g = pollster::block_on(engine.generate(ctx(), seq, &options, &mut |_| {
        if abort {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }))
    .unwrap();
    seq.extend(&g.tokens);
    seq.push((6 + i % 50) as u32);
}

#[test]
fn gpu_buffers_stay_flat_over_generations_and_return_after_unloads_and_failed_loads() {
    let start = held_buffers();
    for cycle in 0..3 {
        let mut engine = engine();
        let mut seq = Vec::new();
        // The warm-up builds every step graph the mix needs.
        for i in 0..40 {
            generate(&mut engine, &mut seq, i);
        }
        let warm = held_buffers();
        assert!(warm.count > start.count, "the engine holds buffers");
        for i in 40..240 {
            generate(&mut engine, &mut seq, i);
            assert_eq!(held_buffers(), warm, "cycle {cycle}, generation {i}");
        }
        engine.destroy();
        drop(engine);
        assert_eq!(held_buffers(), start, "after unloading, cycle {cycle}");
    }

    // A failed load leaves no GPU memory behind: a file cut short part-way through its tensors,
    // and a whole file whose sha256 is not the one expected.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/tiny-llama.gguf");
    let bytes = std::fs::read(path).unwrap();
    let mut cut = MemorySource::new("tiny-llama.gguf", bytes[..bytes.len() * 7 / 10].to_vec());
    let err = pollster::block_on(load_model_file(
        ctx(),
        &mut cut,
        &mut LoadOptions::default(),
    ))
    .err()
    .expect("a truncated file fails to load");
    assert_eq!(held_buffers(), start, "after a truncated load ({err})");
    let files = vec![ModelFile {
        source: MemorySource::new("tiny-llama.gguf", bytes),
        sha256: Some("0".repeat(64)),
    }];
    let err = pollster::block_on(load_model(ctx(), files, None, 1, LoadOptions::default()))
        .err()
        .expect("a sha256 mismatch fails the load");
    assert_eq!(err.code(), "integrity", "{err}");
    assert_eq!(
        held_buffers(),
        start,
        "after a failed integrity check ({err})"
    );
}
