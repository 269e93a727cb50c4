//! Constrained decoding on the GPU (src/text/grammar.rs, shaders/mask.wgsl): with the tiny
//! random Llama and a byte-level tokenizer, whatever the logits, the mask applied on the GPU makes
//! greedy, Gumbel, top-k, top-p and penalized replies valid, reading back what each plan reads
//! without a mask; required and named tool choices give calls that follow their schemas. The
//! host side (the masks over real vocabularies, bad formats) is tests/grammar.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{
    assert_valid, ctx, schemas, tiny_byte_tokenizer_json, tiny_llama_engine, tiny_llama_files,
};
use pocketlm::engine::{Engine, FinishReason, Flow, GenerateOptions, Generation};
use pocketlm::sample::SamplingParams;
use pocketlm::text::ResponseFormat;
use serde_json::{json, Value};

fn tiny_engine() -> Engine {
    tiny_engine_with(512)
}

/// The tiny Llama with the byte-level tokenizer, with `context` positions.
fn tiny_engine_with(context: usize) -> Engine {
    let files = tiny_llama_files(ctx(), |m| {
        m.companions
            .insert("tokenizer.json".into(), tiny_byte_tokenizer_json());
    });
    tiny_llama_engine(ctx(), context, files)
}

fn generate(engine: &mut Engine, prompt: &[u32], options: &GenerateOptions) -> Generation {
    pollster::block_on(engine.generate(ctx(), prompt, options, &mut |_| Flow::Continue)).unwrap()
}

/// Every sampling plan: greedy, Gumbel, top-k candidates, top-p (candidates or the whole row)
/// and penalties.
fn plans(seed: u64) -> Vec<(&'static str, SamplingParams)> {
    let t = |temperature: f32| SamplingParams {
        temperature,
        seed: Some(seed),
        ..SamplingParams::default()
    };
    vec![
        ("greedy", SamplingParams::greedy()),
        ("gumbel", t(1.0)),
        ("top-k", SamplingParams { top_k: 8, ..t(0.9) }),
        (
            "top-p",
            SamplingParams {
                top_p: 0.9,
                ..t(1.2)
            },
        ),
        (
            "penalties",
            SamplingParams {
                repetition_penalty: 1.3,
                presence_penalty: 0.5,
                ..t(0.8)
            },
        ),
    ]
}

#[test]
fn the_gpu_mask_makes_every_plan_valid_on_a_random_model() {
    let mut engine = tiny_engine();
    let prompt = engine.text_prompt("Reply in JSON:").unwrap();
    // Two plans per schema, rotating: every plan meets several schemas (the software GPUs
    // make all 35 pairs too slow for every test run).
    for (i, schema) in schemas().iter().enumerate() {
        let all = plans(i as u64 + 1);
        for (name, sampling) in [all[i % all.len()].clone(), all[(i + 2) % all.len()].clone()] {
            let options = GenerateOptions {
                sampling,
                max_tokens: Some(300),
                response_format: Some(ResponseFormat::JsonSchema(schema.clone())),
                ..GenerateOptions::default()
            };
            let g = generate(&mut engine, &prompt, &options);
            let what = format!("schema {i}, {name}");
            assert_eq!(g.finish_reason, FinishReason::Stop, "{what}: {:?}", g.text);
            assert_valid(schema, &g.text, &what);
            let masks = g.masks.expect("mask statistics");
            assert_eq!(masks.count, g.tokens.len(), "{what}: one mask per token");
        }
    }
}

#[test]
fn max_tokens_mid_object_is_length_and_the_engine_goes_on() {
    let mut engine = tiny_engine();
    let prompt = engine.text_prompt("x").unwrap();
    let schema = json!({"type": "object", "properties": {"s": {"type": "string",
        "minLength": 20, "maxLength": 30}}, "required": ["s"], "additionalProperties": false});
    let options = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(5),
        response_format: Some(ResponseFormat::JsonSchema(schema.clone())),
        ..GenerateOptions::default()
    };
    let g = generate(&mut engine, &prompt, &options);
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert!(g.text.starts_with('{'), "{:?}", g.text);
    // The same engine, unconstrained and constrained again.
    let free = generate(&mut engine, &prompt, &common::greedy(4));
    assert_eq!(free.tokens.len(), 4);
    assert!(free.masks.is_none());
    let done = generate(
        &mut engine,
        &prompt,
        &GenerateOptions {
            max_tokens: Some(100),
            ..options
        },
    );
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_valid(&schema, &done.text, "after a cut reply");
}

#[test]
fn constrained_greedy_reads_back_what_unconstrained_greedy_reads() {
    let gpu =
        pollster::block_on(pocketlm::gpu::GpuContext::new(common::profile_request())).unwrap();
    let files = tiny_llama_files(&gpu, |m| {
        m.companions
            .insert("tokenizer.json".into(), tiny_byte_tokenizer_json());
    });
    let mut engine = tiny_llama_engine(&gpu, 512, files);
    let prompt = engine.text_prompt("JSON:").unwrap();
    let mut per_token = |format: Option<ResponseFormat>| {
        engine.reset();
        let options = GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(40),
            pipeline: false,
            response_format: format,
            ..GenerateOptions::default()
        };
        let b0 = gpu.stats.bytes_read();
        let g =
            pollster::block_on(engine.generate(&gpu, &prompt, &options, &mut |_| Flow::Continue))
                .unwrap();
        (gpu.stats.bytes_read() - b0) as f64 / g.tokens.len() as f64
    };
    let free = per_token(None);
    let constrained = per_token(Some(ResponseFormat::JsonObject));
    assert!(
        constrained <= 1024.0,
        "{constrained} bytes read back per token"
    );
    assert_eq!(constrained, free, "a mask adds nothing to the readback");
}

// ---- tool calls ------------------------------------------------------------------------------

/// With `tool_choice: "required"` or a named function, the tiny random model's reply is a call
/// in its template's syntax (taught the Hermes way: the tiny template knows no tools) that
/// parses into the function's name and arguments valid under its schema, in every plan.
#[test]
fn required_and_named_tool_choices_give_calls_that_follow_the_schemas() {
    use pocketlm::text::{ChatMessage, ToolChoice, ToolRequest, ToolSyntax};
    // The taught instructions are long in single-byte tokens.
    let mut engine = tiny_engine_with(1536);
    assert_eq!(engine.tool_syntax(), ToolSyntax::Taught);
    let tools = common::tools();
    // Each plan once, between the two choices (the software GPUs make all ten too slow).
    let all = plans(3);
    for (choice, allowed, plans) in [
        (
            ToolChoice::Required,
            vec!["get_weather", "add"],
            vec![all[0].clone(), all[1].clone(), all[3].clone()],
        ),
        (
            ToolChoice::Named("add".into()),
            vec!["add"],
            vec![all[2].clone(), all[4].clone()],
        ),
    ] {
        let request = ToolRequest {
            tools: tools.clone(),
            choice: choice.clone(),
        };
        let messages = [ChatMessage::user("w10 w11")];
        let (prompt, format) = engine
            .chat_prompt_tools(&messages, &Value::Null, Some(&request))
            .unwrap();
        for (name, sampling) in plans {
            let options = GenerateOptions {
                sampling,
                max_tokens: Some(200),
                response_format: format.clone(),
                ..GenerateOptions::default()
            };
            let g = generate(&mut engine, &prompt, &options);
            let what = format!("{choice:?}, {name}: {:?}", g.text);
            assert_eq!(g.finish_reason, FinishReason::Stop, "{what}");
            let reply = engine.parse_tool_reply(&g.tokens).unwrap();
            assert_eq!(reply.problem, None, "{what}");
            assert_eq!(reply.calls.len(), 1, "{what}");
            let call = &reply.calls[0];
            assert!(allowed.contains(&call.name.as_str()), "{what}");
            let tool = tools.iter().find(|t| t.name == call.name).unwrap();
            assert_valid(&tool.parameters, &call.arguments, &what);
        }
    }
    // Auto leaves the model free: no format.
    let auto = ToolRequest {
        tools,
        choice: ToolChoice::Auto,
    };
    let (_, format) = engine
        .chat_prompt_tools(&[ChatMessage::user("w9")], &Value::Null, Some(&auto))
        .unwrap();
    assert!(format.is_none());
}
