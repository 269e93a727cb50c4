//! The generation engine on the tiny random Llama of scripts/make_fixtures.py, with a small
//! word-level tokenizer and a chat template made here: greedy generation equals the argmax of a
//! full forward pass, multi-turn prefix reuse equals a fresh prefill, seeded sampling repeats,
//! and bad requests and mismatched models fail with typed errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, expect_err, tiny_template, tiny_tokenizer_json};
use pocketlm::engine::{Engine, EngineOptions, FinishReason, Flow, GenerateOptions, Generation};
use pocketlm::gpu::DType;
use pocketlm::load::{load_directory, LoadOptions, LoadedModelFiles};
use pocketlm::model::{Decoder, ModelConfig};
use pocketlm::sample::SamplingParams;
use pocketlm::text::ChatMessage;

const VOCAB: usize = 128;

/// The tiny Llama with its companions; `edit` may change them before the engine is built.
fn loaded(edit: impl FnOnce(&mut LoadedModelFiles)) -> LoadedModelFiles {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let mut m = pollster::block_on(load_directory(ctx(), &dir, 2, LoadOptions::default())).unwrap();
    m.companions
        .insert("tokenizer.json".into(), tiny_tokenizer_json(0));
    m.companions.insert(
        "tokenizer_config.json".into(),
        serde_json::json!({"chat_template": tiny_template(), "bos_token": "<s>", "eos_token": "</s>"})
            .to_string(),
    );
    edit(&mut m);
    m
}

fn engine_with(context: usize) -> Engine {
    let options = EngineOptions {
        context: Some(context),
        kv_dtype: Some(DType::F32),
    };
    pollster::block_on(Engine::new(ctx(), loaded(|_| {}), &options)).unwrap()
}

fn generate(engine: &mut Engine, prompt: &[u32], options: &GenerateOptions) -> Generation {
    pollster::block_on(engine.generate(ctx(), prompt, options, &mut |_| Flow::Continue)).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        ignore_eos: true,
    }
}

/// What greedy decoding must give: the argmax at each position of one full forward pass over
/// the prompt and the generated tokens (a separate model, all logits read back).
fn argmax_continuation(prompt: &[u32], generated: &[u32]) -> Vec<u32> {
    let m = loaded(|_| {});
    let config = ModelConfig::from_hf_json(&m.companions["config.json"], "tiny-llama").unwrap();
    let seq: Vec<u32> = prompt.iter().chain(generated).copied().collect();
    let model = pollster::block_on(Decoder::new(
        ctx(),
        config,
        m.tensors,
        seq.len().max(64),
        DType::F32,
    ))
    .unwrap();
    let mut graph = pollster::block_on(model.graph(ctx(), seq.len(), 4)).unwrap();
    let logits = pollster::block_on(model.forward(ctx(), &mut graph, &seq, 0)).unwrap();
    (prompt.len() - 1..seq.len() - 1)
        .map(|t| {
            let row = &logits[t * VOCAB..(t + 1) * VOCAB];
            let mut best = 0;
            for (i, &l) in row.iter().enumerate() {
                if l > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

#[test]
fn greedy_generation_is_the_argmax_of_a_full_forward_pass() {
    let mut engine = engine_with(64);
    // 20 tokens: a step of 16, then one of 4.
    let prompt: Vec<u32> = (0..20).map(|i| 6 + (i * 7) % 120).collect();
    let g = generate(&mut engine, &prompt, &greedy(12));
    assert_eq!(g.tokens.len(), 12);
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.prompt_tokens, 20);
    assert_eq!(g.tokens, argmax_continuation(&prompt, &g.tokens));
    // The text is the tokens' words (special tokens skipped), as it was streamed.
    let words = engine.tokenizer().decode(&g.tokens, true).unwrap();
    assert_eq!(
        g.text.split_whitespace().collect::<Vec<_>>(),
        words.split_whitespace().collect::<Vec<_>>()
    );
}

/// A sequence that grows past 256 positions moves to step graphs whose attention covers more
/// positions (the prompt is prefilled in steps of 128, 64, 32, 16, 8 and 2, the reply passes
/// position 256): the tokens are still the argmax of one full forward pass.
#[test]
fn crossing_into_a_longer_attention_span_changes_nothing() {
    let mut engine = engine_with(600);
    let prompt: Vec<u32> = (0..250).map(|i| 6 + (i * 13 + i / 7) % 120).collect();
    let g = generate(&mut engine, &prompt, &greedy(12));
    assert_eq!(g.tokens.len(), 12);
    assert_eq!(g.tokens, argmax_continuation(&prompt, &g.tokens));
}

#[test]
fn a_second_turn_reuses_the_cached_prefix_and_matches_a_fresh_prefill() {
    let mut engine = engine_with(64);
    let mut history = vec![
        ChatMessage::system("w10 w11"),
        ChatMessage::user("w12 w13 w14"),
    ];
    let first = engine.chat_prompt(&history).unwrap();
    let g1 = generate(&mut engine, &first, &greedy(5));
    assert_eq!(g1.cached_tokens, 0);
    history.push(ChatMessage::assistant(g1.text.clone()));
    history.push(ChatMessage::user("w20 w21"));
    let second = engine.chat_prompt(&history).unwrap();
    assert!(second.starts_with(&first));
    let g2 = generate(&mut engine, &second, &greedy(6));
    assert!(
        g2.cached_tokens >= first.len(),
        "the first turn's {} prompt tokens should be reused, {} were",
        first.len(),
        g2.cached_tokens
    );
    engine.reset();
    let fresh = generate(&mut engine, &second, &greedy(6));
    assert_eq!(fresh.cached_tokens, 0);
    assert_eq!(g2.tokens, fresh.tokens);
    // The same prompt again reuses all but its last token.
    let again = generate(&mut engine, &second, &greedy(6));
    assert_eq!(again.cached_tokens, second.len() - 1);
    assert_eq!(again.tokens, fresh.tokens);
}

#[test]
fn seeded_sampling_repeats_and_candidates_agree_with_the_full_row() {
    let mut engine = engine_with(64);
    let prompt: Vec<u32> = vec![1, 9, 33, 57, 80];
    let sample = |engine: &mut Engine, sampling: SamplingParams| {
        engine.reset();
        let opts = GenerateOptions {
            sampling,
            ..greedy(10)
        };
        generate(engine, &prompt, &opts).tokens
    };
    let top_k = SamplingParams {
        temperature: 1.5,
        top_k: 20,
        seed: Some(7),
        ..SamplingParams::default()
    };
    let a = sample(&mut engine, top_k.clone());
    assert_eq!(
        a,
        sample(&mut engine, top_k.clone()),
        "same seed, same tokens"
    );
    let other_seed = sample(
        &mut engine,
        SamplingParams {
            seed: Some(8),
            ..top_k.clone()
        },
    );
    assert_ne!(a, other_seed, "another seed draws other tokens");
    // Top-k of 20 is decided by the GPU's 64 candidates; top-p of 1 (with top-k) by the whole
    // row: the same distribution either way, so the same draws.
    assert!(pocketlm::engine::reads_candidates(&top_k));
    let full = SamplingParams {
        top_k: 0,
        ..top_k.clone()
    };
    assert!(!pocketlm::engine::reads_candidates(&full));
    // A tiny penalty no token can feel forces the whole-row path with top-k 20 kept.
    let via_row = SamplingParams {
        presence_penalty: 1e-30,
        ..top_k
    };
    assert!(!pocketlm::engine::reads_candidates(&via_row));
    assert_eq!(a, sample(&mut engine, via_row));
}

#[test]
fn stop_strings_eos_max_tokens_and_the_callback_end_a_generation() {
    let mut engine = engine_with(64);
    let prompt: Vec<u32> = vec![1, 40, 41, 42];
    let g = generate(&mut engine, &prompt, &greedy(8));
    assert_eq!(g.finish_reason, FinishReason::Length);
    // Stop at the third token's word: generation ends at the first token whose text completes
    // it, and the text ends just before it.
    let tok = engine.tokenizer().clone();
    let stop_word = tok.id_to_token(g.tokens[2]).unwrap();
    let upto = (0..g.tokens.len())
        .find(|&j| {
            tok.decode(&g.tokens[..=j], true)
                .unwrap()
                .contains(&stop_word)
        })
        .unwrap();
    let opts = GenerateOptions {
        stop: vec![stop_word.clone()],
        ..greedy(8)
    };
    let s = generate(&mut engine, &prompt, &opts);
    assert_eq!(s.finish_reason, FinishReason::Stop);
    assert_eq!(s.tokens, g.tokens[..=upto]);
    assert_eq!(s.text, g.text[..g.text.find(&stop_word).unwrap()]);

    // The callback stops after the second token.
    let mut seen = 0;
    let a = pollster::block_on(engine.generate(ctx(), &prompt, &greedy(8), &mut |_| {
        seen += 1;
        if seen == 2 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }))
    .unwrap();
    assert_eq!(a.finish_reason, FinishReason::Abort);
    assert_eq!(a.tokens, g.tokens[..2]);
    // ... and the engine goes on working.
    assert_eq!(generate(&mut engine, &prompt, &greedy(8)).tokens, g.tokens);

    // A context of 8 positions ends a 4-token prompt's reply after 5 tokens (the last sampled
    // token needs no position).
    let mut small = engine_with(8);
    let full = generate(&mut small, &prompt, &greedy(100));
    assert_eq!(full.finish_reason, FinishReason::Length);
    assert_eq!(full.tokens, g.tokens[..5]);
}

#[test]
fn a_prompt_longer_than_the_context_says_both_numbers() {
    let mut engine = engine_with(16);
    let prompt: Vec<u32> = (0..16).map(|i| 6 + i).collect();
    let r =
        pollster::block_on(engine.generate(ctx(), &prompt, &greedy(4), &mut |_| Flow::Continue));
    expect_err(r, "context_overflow", "16 tokens, but the context holds 16");
    let r = pollster::block_on(engine.generate(ctx(), &[], &greedy(4), &mut |_| Flow::Continue));
    expect_err(r, "invalid_request", "empty");
    let r =
        pollster::block_on(engine.generate(ctx(), &[1, 500], &greedy(4), &mut |_| Flow::Continue));
    expect_err(r, "invalid_tensor", "token 500");
    // Still usable after the refusals.
    assert_eq!(
        generate(&mut engine, &[1, 7, 8], &greedy(3)).tokens.len(),
        3
    );
}

#[test]
fn mismatched_tokenizers_and_misshaped_tensors_are_named() {
    let options = EngineOptions::default();
    let too_big = loaded(|m| {
        m.companions
            .insert("tokenizer.json".into(), tiny_tokenizer_json(10));
    });
    expect_err(
        pollster::block_on(Engine::new(ctx(), too_big, &options)),
        "vocab_mismatch",
        "138 tokens but the model's vocabulary has 128",
    );
    let misshaped = loaded(|m| {
        let config = m.companions["config.json"]
            .replace("\"intermediate_size\": 96", "\"intermediate_size\": 80");
        m.companions.insert("config.json".into(), config);
    });
    expect_err(
        pollster::block_on(Engine::new(ctx(), misshaped, &options)),
        "invalid_tensor",
        "model.layers.0.mlp.gate_proj.weight",
    );
    let missing = loaded(|m| {
        m.tensors.remove("model.layers.1.self_attn.o_proj.weight");
    });
    expect_err(
        pollster::block_on(Engine::new(ctx(), missing, &options)),
        "invalid_tensor",
        "model.layers.1.self_attn.o_proj.weight",
    );
    let bad_template = loaded(|m| {
        m.companions.insert(
            "tokenizer_config.json".into(),
            serde_json::json!({"chat_template": "line one\n{% for m in messages %}{{ m.content }"})
                .to_string(),
        );
    });
    expect_err(
        pollster::block_on(Engine::new(ctx(), bad_template, &options)),
        "chat_template",
        "line 2",
    );
}
