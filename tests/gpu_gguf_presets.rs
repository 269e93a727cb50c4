//! GGUF files as llama.cpp's own quantizer writes them against llama.cpp and against the exact
//! computation on the same files, on the GPU (tests/common/gguf_presets.rs says what is checked;
//! tests/cpu_model.rs runs the same checks on the CPU backend).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::ctx;
use common::gguf_presets::{
    assert_every_k_quant_seen, check_preset, preset_path, PresetReference, PRESETS,
};
use pocketlm::gpu::DType;
use pocketlm::load::{load_native, LoadOptions};
use pocketlm::model::{Decoder, ModelConfig};
use std::collections::HashSet;

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
                let seen = run_preset(preset);
                types_seen.lock().unwrap().extend(seen);
            });
        }
    });
    assert_every_k_quant_seen(&types_seen.into_inner().unwrap());
}

/// One preset on the GPU: the prompt through a graph of its length, then decode steps through
/// a one-token graph.
fn run_preset(preset: &str) -> HashSet<DType> {
    let path = preset_path(preset);
    let loaded = pollster::block_on(load_native(
        ctx(),
        path.to_str().unwrap(),
        LoadOptions::default(),
    ))
    .unwrap();
    let files = loaded.files;
    let config = ModelConfig::from_gguf(files.gguf_metadata().unwrap(), &files).unwrap();
    let vocab = config.vocab;
    let model =
        pollster::block_on(Decoder::new(ctx(), config, loaded.tensors, 64, DType::F32)).unwrap();
    let mut graphs = Vec::new();
    let reference = PresetReference::read(preset);
    let seen = check_preset(preset, &reference, &files, vocab, &mut |tokens, at| {
        let i = match graphs.iter().position(|(n, _)| *n == tokens.len()) {
            Some(i) => i,
            None => {
                let graph = pollster::block_on(model.graph(ctx(), tokens.len(), 8)).unwrap();
                graphs.push((tokens.len(), graph));
                graphs.len() - 1
            }
        };
        pollster::block_on(model.forward(ctx(), &mut graphs[i].1, tokens, at)).unwrap()
    });
    model.destroy();
    seen
}
