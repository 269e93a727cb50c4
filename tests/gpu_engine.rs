//! The generation engine on the tiny random Llama of scripts/make_fixtures.py, with a small
//! word-level tokenizer and a chat template made here: greedy generation equals the argmax of a
//! full forward pass, multi-turn prefix reuse equals a fresh prefill, seeded sampling repeats,
//! and bad requests and mismatched models fail with typed errors.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{
    ctx, expect_err, profile_request, tiny_llama_engine, tiny_llama_files, tiny_tokenizer_json,
};
use pocketlm::engine::{
    Engine, EngineOptions, FinishReason, Flow, GenerateOptions, Generation, CANDIDATES,
};
use pocketlm::gpu::{DType, GpuContext};
use pocketlm::load::LoadedModelFiles;
use pocketlm::model::{Decoder, ModelConfig, Readout, StepOutput};
use pocketlm::sample::{gumbel_uniform, Sampler, SamplingParams, SamplingPlan};
use pocketlm::text::ChatMessage;

const VOCAB: usize = 128;

/// The tiny Llama with its companions; `edit` may change them before the engine is built.
fn loaded(edit: impl FnOnce(&mut LoadedModelFiles)) -> LoadedModelFiles {
    tiny_llama_files(ctx(), edit)
}

fn engine_with(context: usize) -> Engine {
    tiny_llama_engine(ctx(), context, loaded(|_| {}))
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
        pipeline: true,
        gpu_nucleus: true,
        response_format: None,
        logprobs: None,
    }
}

/// What greedy decoding must give: the argmax at each position of one full forward pass over
/// the prompt and the generated tokens (a separate model, all logits read back).
fn argmax_continuation(prompt: &[u32], generated: &[u32]) -> Vec<u32> {
    forward_rows(prompt, generated)
        .iter()
        .map(|row| {
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

/// The logits that precede each generated token, from one full forward pass over the prompt and
/// the generated tokens (a separate model, all logits read back).
fn forward_rows(prompt: &[u32], generated: &[u32]) -> Vec<Vec<f32>> {
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
        .map(|t| logits[t * VOCAB..(t + 1) * VOCAB].to_vec())
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
/// positions (the reply passes position 256): the tokens are still the argmax of one full
/// forward pass. On both kernel families: on those for CPU adapters the prompt is prefilled in
/// steps of 128, 64, 32, 16, 8 and 2; on those made for GPUs, whose GEMM computes 64-row tiles,
/// the 122 tokens after the first 128 take one step of the 128-token graph (two tiles, as the
/// steps of 64 and 32 would compute), its last 6 rows left out of attention and the KV cache.
#[test]
fn crossing_into_a_longer_attention_span_changes_nothing() {
    let prompt: Vec<u32> = (0..250).map(|i| 6 + (i * 13 + i / 7) % 120).collect();
    for gpu_family in [false, true] {
        let ctx = common::family(gpu_family);
        let mut engine = tiny_llama_engine(ctx, 600, tiny_llama_files(ctx, |_| {}));
        let steps: &[usize] = if ctx.capabilities().cpu {
            &[128, 64, 32, 16, 8, 2]
        } else {
            &[128, 122]
        };
        assert_eq!(engine.prefill_steps(250), steps);
        let g =
            pollster::block_on(engine.generate(ctx, &prompt, &greedy(12), &mut |_| Flow::Continue))
                .unwrap();
        assert_eq!(g.tokens.len(), 12);
        assert_eq!(g.tokens, argmax_continuation(&prompt, &g.tokens));
    }
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
fn seeded_sampling_repeats_in_every_plan_and_counts_full_row_reads() {
    let mut engine = engine_with(64);
    let prompt: Vec<u32> = vec![1, 9, 33, 57, 80];
    let mut sample = |sampling: SamplingParams| {
        engine.reset();
        let opts = GenerateOptions {
            sampling,
            ..greedy(10)
        };
        generate(&mut engine, &prompt, &opts)
    };
    let base = SamplingParams {
        temperature: 1.5,
        seed: Some(7),
        ..SamplingParams::default()
    };
    let plans = [
        (SamplingPlan::Gumbel, base.clone()),
        (
            SamplingPlan::Candidates,
            SamplingParams {
                top_k: 20,
                ..base.clone()
            },
        ),
        (
            SamplingPlan::Candidates,
            SamplingParams {
                top_p: 0.5,
                repetition_penalty: 1.3,
                ..base.clone()
            },
        ),
        (
            SamplingPlan::FullRow,
            SamplingParams {
                top_k: 100,
                frequency_penalty: 0.5,
                ..base.clone()
            },
        ),
    ];
    for (plan, params) in plans {
        assert_eq!(params.plan(CANDIDATES, VOCAB), plan, "{params:?}");
        let a = sample(params.clone());
        assert_eq!(a.tokens.len(), 10);
        assert_eq!(
            a.tokens,
            sample(params.clone()).tokens,
            "{plan:?}: same seed, same tokens"
        );
        let other = sample(SamplingParams {
            seed: Some(8),
            ..params.clone()
        });
        assert_ne!(
            a.tokens, other.tokens,
            "{plan:?}: another seed draws other tokens"
        );
        match plan {
            // Top-k 100 of 128: drawn from the nucleus on the GPU.
            SamplingPlan::Gumbel => assert_eq!((a.full_row_reads, a.nucleus_draws), (0, 0)),
            // Every truncated draw (top-k 20, top-p 0.5, top-k 100 of 128) is the nucleus's.
            _ => assert_eq!((a.full_row_reads, a.nucleus_draws), (0, 10), "{params:?}"),
        }
    }
    // A min-p so small, or a top-p so large, that the kept set reaches past the 64 candidates
    // of 128: drawn from the nucleus on the GPU, no row read back; the same seed gives the same
    // tokens.
    for wide in [
        SamplingParams {
            min_p: 1e-6,
            ..base.clone()
        },
        SamplingParams {
            top_p: 0.999,
            ..base.clone()
        },
    ] {
        let a = sample(wide.clone());
        assert_eq!((a.full_row_reads, a.nucleus_draws), (0, 10), "{wide:?}");
        assert_eq!(a.tokens, sample(wide.clone()).tokens, "{wide:?}");
        let other = sample(SamplingParams {
            seed: Some(8),
            ..wide.clone()
        });
        assert_ne!(a.tokens, other.tokens, "{wide:?}: another seed");
    }
    // With the GPU's nucleus off, the same settings read the row back and draw on the CPU.
    engine.reset();
    let off = GenerateOptions {
        sampling: SamplingParams {
            top_p: 0.999,
            ..base
        },
        gpu_nucleus: false,
        ..greedy(10)
    };
    let off = generate(&mut engine, &prompt, &off);
    assert_eq!((off.full_row_reads, off.nucleus_draws), (10, 0));
}

/// One step of the tiny model over `seq` with the sampler's view of the GPU (`Readout::Sample`)
/// and with the whole row read back and sampled on the CPU (penalties applied there), with two
/// samplers of one seed: the two picks must agree in every plan that the CPU sampler can
/// compute, and the Gumbel pick must be the best perturbed logit.
#[test]
fn gpu_sampling_agrees_with_the_cpu_sampler_on_the_whole_row() {
    let m = loaded(|_| {});
    let config = ModelConfig::from_hf_json(&m.companions["config.json"], "tiny-llama").unwrap();
    let model = pollster::block_on(Decoder::new(ctx(), config, m.tensors, 64, DType::F32)).unwrap();
    let seq: Vec<u32> = vec![1, 9, 33, 57, 80, 9, 9, 33];
    let mut graph = pollster::block_on(model.graph(ctx(), seq.len(), CANDIDATES)).unwrap();
    let penalties = SamplingParams {
        repetition_penalty: 1.5,
        presence_penalty: 0.7,
        frequency_penalty: 0.4,
        ..SamplingParams::default()
    };
    let cases = [
        SamplingParams::greedy(),
        SamplingParams {
            temperature: 0.0,
            ..penalties.clone()
        },
        SamplingParams {
            temperature: 0.8,
            top_k: 30,
            ..penalties.clone()
        },
        SamplingParams {
            temperature: 1.0,
            top_p: 0.3,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 1.2,
            top_p: 0.6,
            min_p: 0.05,
            ..penalties.clone()
        },
        SamplingParams {
            temperature: 0.7,
            min_p: 0.001,
            ..SamplingParams::default()
        },
        SamplingParams {
            temperature: 0.9,
            top_k: 90,
            ..penalties.clone()
        },
        SamplingParams {
            temperature: 0.6,
            ..penalties.clone()
        },
    ];
    let mut fallbacks = 0;
    for (i, params) in cases.iter().enumerate() {
        for seed in 0..6u64 {
            let params = SamplingParams {
                seed: Some(seed * 31 + i as u64),
                ..params.clone()
            };
            let plan = params.plan(CANDIDATES, VOCAB);
            let mut gpu = Sampler::new(params.clone()).unwrap();
            let mut cpu = Sampler::new(params.clone()).unwrap();
            gpu.accept(&seq);
            cpu.accept(&seq);
            let pens = gpu.penalty_list();
            let draw = gpu.gpu_draw(plan);
            let readout = Readout::Sample {
                plan,
                draw,
                penalties: &pens,
                biases: &[],
                with_candidates: false,
                nucleus: None,
            };
            let out = pollster::block_on(model.step(ctx(), &mut graph, &seq, 0, readout)).unwrap();
            // The row as the GPU penalized it, then the row as computed.
            let gpu_row = pollster::block_on(model.read_logits(ctx(), &graph, seq.len())).unwrap();
            let row =
                match pollster::block_on(model.step(ctx(), &mut graph, &seq, 0, Readout::Logits))
                    .unwrap()
                {
                    StepOutput::Logits(row) => row,
                    other => panic!("a logits readout gave {other:?}"),
                };
            let mut penalized = row.clone();
            cpu.apply_penalties(&mut penalized);
            for (e, (&g, &c)) in gpu_row.iter().zip(&penalized).enumerate() {
                // A division and a multiply-add: within a few units in the last place.
                assert!(
                    (g - c).abs() <= 4.0 * f32::EPSILON * c.abs(),
                    "token {e}: {g} vs {c}"
                );
            }
            let picked = match out {
                StepOutput::Token(t) if plan == SamplingPlan::Gumbel => {
                    // The best of x / T − ln(−ln(u)), from the hash the GPU uses, of the last
                    // token's row (this graph computes logits for every token).
                    let key = u64::from(draw.key_lo) | (u64::from(draw.key_hi) << 32);
                    let last = (seq.len() - 1) as u32;
                    let score = |e: usize| {
                        let u = f64::from(gumbel_uniform(key, last, e as u32));
                        f64::from(gpu_row[e] * draw.inv_temp) - (-u.ln()).ln()
                    };
                    let best = (0..VOCAB).map(score).fold(f64::MIN, f64::max);
                    assert!(
                        score(t as usize) >= best - 1e-5 * (1.0 + best.abs()),
                        "{params:?}: the Gumbel pick {t} scores {} < the best {best}",
                        score(t as usize)
                    );
                    continue;
                }
                StepOutput::Token(t) => gpu.accept_picked(t),
                StepOutput::Candidates { candidates, stats } => {
                    assert_eq!(plan, SamplingPlan::Candidates);
                    // The statistics are the penalized row's.
                    let max = gpu_row.iter().copied().fold(f32::MIN, f32::max);
                    assert_eq!(stats.0, max, "{params:?}");
                    let z: f64 = gpu_row.iter().map(|&x| f64::from(x - max).exp()).sum();
                    assert!(
                        (f64::from(stats.1) / z - 1.0).abs() < 1e-5,
                        "{stats:?} vs {z}"
                    );
                    match gpu
                        .sample_gpu_candidates(&candidates, stats, VOCAB)
                        .unwrap()
                    {
                        Some(t) => t,
                        None => {
                            fallbacks += 1;
                            gpu.sample_penalized_logits(&gpu_row).unwrap()
                        }
                    }
                }
                StepOutput::Logits(r) => {
                    assert_eq!(plan, SamplingPlan::FullRow);
                    assert_eq!(r, gpu_row, "the row the GPU penalized");
                    gpu.sample_penalized_logits(&r).unwrap()
                }
                StepOutput::Nothing | StepOutput::TokenAndCandidates { .. } => {
                    panic!("this readout reads a pick, candidates or the row")
                }
            };
            let want = cpu.sample_logits(&row).unwrap();
            assert_eq!(picked, want, "{params:?} ({plan:?})");
        }
    }
    // The min-p of 0.001 keeps more than the 64 candidates of this flat model.
    assert!(fallbacks >= 6, "{fallbacks} fallbacks to the whole row");
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

/// A generation with what its callback saw: (token, text) per event. `abort_after` stops it
/// from the callback after that many events.
fn streamed(
    engine: &mut Engine,
    prompt: &[u32],
    options: &GenerateOptions,
    abort_after: Option<usize>,
) -> (Generation, Vec<(u32, String)>) {
    let mut events = Vec::new();
    let g = pollster::block_on(engine.generate(ctx(), prompt, options, &mut |e| {
        events.push((e.token, e.text.to_string()));
        if abort_after == Some(events.len()) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }))
    .unwrap();
    (g, events)
}

/// The tokens of a generation's events: one per token, but for the text a full context
/// releases at the end, streamed with the last token again.
fn shown_tokens(g: &Generation, events: &[(u32, String)]) -> Vec<u32> {
    let mut shown: Vec<u32> = events.iter().map(|e| e.0).collect();
    if shown.len() == g.tokens.len() + 1
        && shown[shown.len() - 2..] == [g.tokens[g.tokens.len() - 1]; 2]
    {
        shown.pop();
    }
    shown
}

/// Overlapped decoding (each step submitted before the previous one is read back, its token
/// copied into the next step's input on the GPU) gives the tokens of the sequential path,
/// greedy and seeded Gumbel, across the move to a longer attention span at position 256 (the
/// copy then feeds another graph), and whatever ends the generation — max_tokens, a stop
/// string, an end-of-turn token, the callback, a full context — it shows nothing of the step
/// that ran ahead, and the next turn's prefix reuse is as after the sequential path.
#[test]
fn pipelined_decoding_gives_the_sequential_tokens_and_shows_nothing_past_a_stop() {
    let prompt: Vec<u32> = (0..250).map(|i| 6 + (i * 13 + i / 7) % 120).collect();
    let gumbel = SamplingParams {
        temperature: 1.5,
        seed: Some(7),
        ..SamplingParams::default()
    };
    // Top-k and top-p draw from the nucleus on the GPU, so they pipeline too.
    let nucleus = SamplingParams {
        top_k: 30,
        top_p: 0.8,
        temperature: 1.1,
        seed: Some(9),
        ..SamplingParams::default()
    };
    for sampling in [SamplingParams::greedy(), gumbel, nucleus] {
        let plan = sampling.plan(CANDIDATES, VOCAB);
        let mut engine = engine_with(300);
        let base = GenerateOptions {
            sampling: sampling.clone(),
            ..greedy(12)
        };
        let sequential = GenerateOptions {
            pipeline: false,
            ..base.clone()
        };
        // Runs both ways from the same cache state and compares everything that is seen.
        let both = |engine: &mut Engine, opts: &GenerateOptions, abort: Option<usize>| {
            engine.reset();
            let seq_opts = GenerateOptions {
                pipeline: false,
                ..opts.clone()
            };
            let (s, s_events) = streamed(engine, &prompt, &seq_opts, abort);
            let s_cached = engine.cached_tokens();
            engine.reset();
            let pip_opts = GenerateOptions {
                pipeline: true,
                ..opts.clone()
            };
            let (p, p_events) = streamed(engine, &prompt, &pip_opts, abort);
            assert_eq!(p.tokens, s.tokens, "{plan:?} {opts:?}");
            assert_eq!(p.text, s.text);
            assert_eq!(p.finish_reason, s.finish_reason);
            assert_eq!(p_events, s_events);
            // Nothing past the last token is shown or kept.
            assert_eq!(shown_tokens(&p, &p_events), p.tokens);
            let streamed_text: String = p_events.iter().map(|e| e.1.as_str()).collect();
            assert_eq!(streamed_text, p.text);
            assert_eq!(engine.cached_tokens(), s_cached);
            assert_eq!(s_cached, prompt.len() + p.tokens.len() - 1);
            p
        };
        // max_tokens, across position 256.
        let full = both(&mut engine, &base, None);
        assert_eq!(full.tokens.len(), 12);
        assert_eq!(full.finish_reason, FinishReason::Length);
        if plan == SamplingPlan::Greedy {
            assert_eq!(full.tokens, argmax_continuation(&prompt, &full.tokens));
        }
        // One token: no decode step at all; two: one.
        for n in [1, 2] {
            let g = both(&mut engine, &greedy_like(&base, n), None);
            assert_eq!(g.tokens, full.tokens[..n]);
        }
        // The callback stops after 6 tokens: the step at position 256 (the first on the longer
        // span, fed by the last one on the shorter) was submitted ahead and is dropped.
        let aborted = both(&mut engine, &base, Some(6));
        assert_eq!(aborted.finish_reason, FinishReason::Abort);
        assert_eq!(aborted.tokens, full.tokens[..6]);
        // A stop string: the word of the first ordinary token after the third.
        let tok = engine.tokenizer().clone();
        if let Some(j) = (3..full.tokens.len()).find(|&j| full.tokens[j] >= 6) {
            let word = tok.id_to_token(full.tokens[j]).unwrap();
            let opts = GenerateOptions {
                stop: vec![word.clone()],
                ..base.clone()
            };
            let s = both(&mut engine, &opts, None);
            assert_eq!(s.finish_reason, FinishReason::Stop);
            assert!(s.tokens.len() <= j + 1);
            assert!(!s.text.contains(&word));
        }
        // The next turn after a stop mid-pipeline: the cached prefix ends before the last
        // shown token, whose position the step run ahead wrote; a prompt that differs there
        // overwrites it and matches a fresh prefill.
        engine.reset();
        let opts = GenerateOptions {
            pipeline: true,
            ..base.clone()
        };
        let (first, _) = streamed(&mut engine, &prompt, &opts, Some(7));
        assert_eq!(first.tokens.len(), 7);
        let kept = prompt.len() + first.tokens.len() - 1;
        assert_eq!(engine.cached_tokens(), kept);
        let mut next: Vec<u32> = prompt.clone();
        next.extend(&first.tokens[..first.tokens.len() - 1]);
        let last = *first.tokens.last().unwrap();
        next.extend([if last == 77 { 78 } else { 77 }, 40, 41]);
        let reused = generate(&mut engine, &next, &opts);
        assert_eq!(reused.cached_tokens, kept);
        engine.reset();
        let fresh = generate(&mut engine, &next, &sequential);
        assert_eq!(fresh.cached_tokens, 0);
        assert_eq!(reused.tokens, fresh.tokens);

        // An end-of-turn token (the fifth generated, declared in generation_config.json).
        let eos = full.tokens[4];
        let files = loaded(|m| {
            m.companions.insert(
                "generation_config.json".into(),
                serde_json::json!({ "eos_token_id": eos }).to_string(),
            );
        });
        let mut with_eos = tiny_llama_engine(ctx(), 300, files);
        let opts = GenerateOptions {
            ignore_eos: false,
            ..base.clone()
        };
        let e = both(&mut with_eos, &opts, None);
        assert_eq!(e.finish_reason, FinishReason::Stop);
        assert_eq!(e.tokens.last(), Some(&eos));
        assert!(e.tokens.len() <= 5);

        // A full context: a 4-token prompt in 8 positions ends after 5 tokens, with nothing
        // submitted past the last position.
        let mut small = engine_with(8);
        let short = [1, 40, 41, 42];
        let (s, s_events) = streamed(&mut small, &short, &greedy_like(&sequential, 100), None);
        small.reset();
        let (p, p_events) = streamed(&mut small, &short, &greedy_like(&base, 100), None);
        assert_eq!(p.finish_reason, FinishReason::Length);
        assert_eq!(p.tokens.len(), 5);
        assert_eq!(shown_tokens(&p, &p_events), p.tokens);
        assert_eq!((p.tokens, p_events), (s.tokens, s_events));
    }
}

/// `options` with another `max_tokens`.
fn greedy_like(options: &GenerateOptions, max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        ..options.clone()
    }
}

/// Counted on a GPU context of its own (the other tests share theirs): an overlapped decode
/// makes its readback staging buffers in its first steps and none per token after, submits one
/// step per token like the sequential path, and only a stop that the host sees after the next
/// step was submitted costs one more step (max_tokens and a full context cost none).
#[test]
fn pipelined_decoding_reuses_staging_buffers_and_runs_at_most_one_step_ahead() {
    let gpu = pollster::block_on(GpuContext::new(profile_request())).unwrap();
    let mut engine = tiny_llama_engine(&gpu, 64, tiny_llama_files(&gpu, |_| {}));
    let prompt: Vec<u32> = vec![1, 40, 41, 42];
    let counted = |engine: &mut Engine, opts: &GenerateOptions| {
        engine.reset();
        let (s0, d0, r0) = gpu.stats.snapshot();
        let b0 = gpu.stats.bytes_read();
        let g = pollster::block_on(engine.generate(&gpu, &prompt, opts, &mut |_| Flow::Continue))
            .unwrap();
        let (s1, d1, r1) = gpu.stats.snapshot();
        (g, s1 - s0, d1 - d0, r1 - r0, gpu.stats.bytes_read() - b0)
    };
    let pipelined = greedy(20);
    let sequential = GenerateOptions {
        pipeline: false,
        ..greedy(20)
    };
    // The first pipelined decode makes the ring's buffers: one per step in flight.
    let warm = gpu.stats.staging_buffers();
    counted(&mut engine, &pipelined);
    let made = gpu.stats.staging_buffers() - warm;
    assert!(
        (1..=2).contains(&made),
        "{made} staging buffers for one decode"
    );
    let before = gpu.stats.staging_buffers();
    let (p, ps, pd, pr, pb) = counted(&mut engine, &pipelined);
    let (s, ss, sd, sr, sb) = counted(&mut engine, &sequential);
    assert_eq!(p.tokens, s.tokens);
    assert_eq!(
        (ps, pd, pr, pb),
        (ss, sd, sr, sb),
        "max_tokens: nothing run ahead"
    );
    // 20 tokens: a prefill step, then 19 decode steps, each reading back 8 bytes.
    assert_eq!(pr, 20);
    assert_eq!(pb, 20 * 8);
    // A stop string the host sees at a decoded token (not the prefill's): the next token's
    // step was already submitted.
    let tok = engine.tokenizer().clone();
    let first_seen = |word: &str| {
        (0..p.tokens.len()).find(|&j| tok.decode(&p.tokens[..=j], true).unwrap().contains(word))
    };
    let word = (1..p.tokens.len() - 2)
        .filter(|&j| p.tokens[j] >= 6)
        .map(|j| (j, tok.id_to_token(p.tokens[j]).unwrap()))
        .find(|(j, w)| first_seen(w) == Some(*j))
        .map(|(_, w)| w)
        .expect("a word first seen after the first token");
    let stop = |o: &GenerateOptions| GenerateOptions {
        stop: vec![word.clone()],
        ..o.clone()
    };
    let (p, ps, pd, pr, pb) = counted(&mut engine, &stop(&pipelined));
    let (s, ss, sd, sr, sb) = counted(&mut engine, &stop(&sequential));
    assert_eq!(p.tokens, s.tokens);
    assert_eq!(p.finish_reason, FinishReason::Stop);
    assert_eq!((ps, pr, pb), (ss + 1, sr + 1, sb + 8));
    assert!(pd > sd);
    // No staging buffer was made after the first decode, and the ring stays small.
    assert_eq!(gpu.stats.staging_buffers(), before);
    assert!((1..=4).contains(&gpu.idle_staging_buffers()));
}

/// OpenAI's `logit_bias`, added on the GPU after the penalties: +100 forces a token in every
/// plan (pipelined or not), −100 bans the greedy choice, and a token outside the vocabulary is
/// refused.
#[test]
fn logit_bias_forces_and_bans_tokens_in_every_plan() {
    let mut engine = engine_with(128);
    let prompt: Vec<u32> = vec![1, 20, 30, 40];
    let free = generate(&mut engine, &prompt, &greedy(6));
    let t = |temperature: f32| SamplingParams {
        temperature,
        seed: Some(11),
        ..SamplingParams::default()
    };
    let plans = [
        SamplingParams::greedy(),
        t(1.0),
        SamplingParams { top_k: 5, ..t(0.9) },
        SamplingParams {
            top_p: 0.8,
            ..t(1.0)
        },
        SamplingParams {
            repetition_penalty: 1.5,
            frequency_penalty: 1.0,
            ..t(0.7)
        },
    ];
    for sampling in plans {
        for pipeline in [true, false] {
            let options = GenerateOptions {
                sampling: SamplingParams {
                    logit_bias: vec![(77, 100.0)],
                    ..sampling.clone()
                },
                pipeline,
                ..greedy(6)
            };
            let g = generate(&mut engine, &prompt, &options);
            assert_eq!(g.tokens, vec![77; 6], "{sampling:?}, pipeline {pipeline}");
        }
    }
    let banned = GenerateOptions {
        sampling: SamplingParams {
            logit_bias: vec![(free.tokens[0], -100.0)],
            ..SamplingParams::greedy()
        },
        ..greedy(6)
    };
    let g = generate(&mut engine, &prompt, &banned);
    assert!(
        !g.tokens.contains(&free.tokens[0]),
        "{:?} against {:?}",
        g.tokens,
        free.tokens
    );
    let outside = GenerateOptions {
        sampling: SamplingParams {
            logit_bias: vec![(VOCAB as u32, 5.0)],
            ..SamplingParams::greedy()
        },
        ..greedy(2)
    };
    expect_err(
        pollster::block_on(engine.generate(ctx(), &prompt, &outside, &mut |_| Flow::Continue)),
        "invalid_request",
        "outside the model's vocabulary",
    );
}

/// A model's generation_config.json gives the sampling defaults a request that leaves them out
/// gets: here greedy (`do_sample: false`), so an unseeded request repeats greedy's tokens; a
/// request's own temperature wins.
#[test]
fn generation_config_defaults_apply_where_the_request_is_silent() {
    let files = loaded(|m| {
        m.companions.insert(
            "generation_config.json".into(),
            r#"{"do_sample": false, "eos_token_id": 2}"#.into(),
        );
    });
    let mut engine = tiny_llama_engine(ctx(), 128, files);
    let defaults = engine.sampling_defaults().clone();
    let parse = |mut request: serde_json::Value| {
        defaults.apply(&mut request);
        pocketlm::request::parse_request(&request).unwrap().0
    };
    let silent = parse(serde_json::json!({"prompt": "x", "max_tokens": 6}));
    assert_eq!(silent.sampling.temperature, 0.0);
    let own = parse(serde_json::json!({"prompt": "x", "temperature": 0.5}));
    assert_eq!(own.sampling.temperature, 0.5);
    let prompt = vec![1, 9, 10, 11];
    let g = generate(&mut engine, &prompt, &silent);
    let want = generate(&mut engine, &prompt, &greedy(6));
    assert_eq!(g.tokens[..], want.tokens[..g.tokens.len()]);
}

/// `logprobs`: greedy tokens' log probabilities and top alternatives equal the log-softmax of a
/// full forward pass; in every plan each token gets an entry (its own logprob, the best first
/// among the alternatives), and asking for them changes no seeded token.
#[test]
fn logprobs_match_a_full_forward_pass_and_change_no_token() {
    let mut engine = engine_with(128);
    let prompt: Vec<u32> = vec![1, 12, 13, 14, 15];
    let options = GenerateOptions {
        logprobs: Some(5),
        ..greedy(8)
    };
    let g = generate(&mut engine, &prompt, &options);
    assert_eq!(g.logprobs.len(), g.tokens.len());
    for (lp, row) in g.logprobs.iter().zip(forward_rows(&prompt, &g.tokens)) {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let lse = f64::from(max)
            + row
                .iter()
                .map(|&l| (f64::from(l) - f64::from(max)).exp())
                .sum::<f64>()
                .ln();
        let want = |t: u32| (f64::from(row[t as usize]) - lse) as f32;
        assert!((lp.logprob - want(lp.token)).abs() < 1e-4, "{lp:?}");
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, lp.token, "greedy picks the best");
        for &(t, l) in &lp.top {
            assert!((l - want(t)).abs() < 1e-4, "{t}: {l} vs {}", want(t));
        }
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
    }
    let t = |temperature: f32| SamplingParams {
        temperature,
        seed: Some(5),
        ..SamplingParams::default()
    };
    for sampling in [
        t(1.0),
        SamplingParams { top_k: 4, ..t(1.0) },
        SamplingParams {
            top_p: 0.7,
            ..t(0.8)
        },
        SamplingParams {
            repetition_penalty: 1.4,
            ..t(1.0)
        },
    ] {
        let plain = GenerateOptions {
            sampling: sampling.clone(),
            ..greedy(8)
        };
        let with = GenerateOptions {
            logprobs: Some(3),
            ..plain.clone()
        };
        let a = generate(&mut engine, &prompt, &plain);
        let b = generate(&mut engine, &prompt, &with);
        assert_eq!(a.tokens, b.tokens, "{sampling:?}");
        assert!(a.logprobs.is_empty());
        assert_eq!(b.logprobs.len(), b.tokens.len());
        for (lp, &tok) in b.logprobs.iter().zip(&b.tokens) {
            assert_eq!(lp.token, tok);
            assert!(lp.logprob <= 0.0 && lp.logprob >= lp.top.last().unwrap().1 - 60.0);
            assert!(lp.top[0].1 >= lp.logprob - 1e-6, "{lp:?}");
        }
    }
}
