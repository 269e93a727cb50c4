//! Constrained decoding (src/text/grammar.rs): replies under a JSON schema, a Lark or GBNF
//! grammar or a regex always parse.
//!
//! - On the host, over real vocabularies (llama.cpp's byte-level and SentencePiece test
//!   vocabularies, and the default model's): a walk that picks a random allowed token at every
//!   step always ends in text that validates against the schema (checked by the `jsonschema`
//!   crate, not by llguidance), for many schemas and seeds.
//! - On the GPU, the tiny random Llama with a byte-level tokenizer: whatever the logits, the
//!   mask applied on the GPU makes greedy, Gumbel, top-k, top-p and penalized replies valid,
//!   reading back what each plan reads without a mask.
//! - Bad schemas, grammars and regexes are `invalid_request` errors that say why.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{ctx, gguf_tokenizer, tiny_byte_tokenizer_json, tiny_llama_engine, tiny_llama_files};
use pocketlm::engine::{Engine, FinishReason, Flow, GenerateOptions, Generation};
use pocketlm::sample::SamplingParams;
use pocketlm::text::{GrammarVocab, ResponseFormat, Tokenizer};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Schemas whose every valid instance is short, so that any walk through them ends.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "color": {"enum": ["red", "green", "blue"]}, "ok": {"const": true}},
            "required": ["color", "ok"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5},
                "minItems": 1, "maxItems": 3}},
            "required": ["tags"], "additionalProperties": false}),
        json!({"type": "object",
            "$defs": {"point": {"type": "object", "properties": {
                "x": {"type": "integer", "minimum": -5, "maximum": 5},
                "y": {"type": "integer", "minimum": -5, "maximum": 5}},
                "required": ["x", "y"], "additionalProperties": false}},
            "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
            "required": ["a", "b"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                {"type": "null"}, {"type": "boolean"}]},
            "note": {"type": "string", "maxLength": 4}},
            "required": ["v"], "additionalProperties": false}),
        json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}),
        json!({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4}),
    ]
}

fn assert_valid(schema: &Value, text: &str, what: &str) {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {text:?} is not JSON: {e}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what}: {text} breaks the schema: {errors:?}"
    );
}

/// SplitMix64: the walks' random picks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn allowed(mask: &[u32]) -> Vec<u32> {
    (0..mask.len() as u32 * 32)
        .filter(|&t| mask[(t / 32) as usize] >> (t % 32) & 1 == 1)
        .collect()
}

/// A walk under `format`: a random allowed token at every step, an allowed end-of-turn token
/// taken half the time. Returns the text, or panics after `limit` tokens.
fn walk(vocab: &GrammarVocab, tok: &Tokenizer, format: &ResponseFormat, seed: u64) -> String {
    let eos = tok.eos();
    let mut c = vocab.constraint(format).unwrap();
    let mut rng = Rng(seed);
    let mut tokens = Vec::new();
    while !c.is_done() {
        assert!(
            tokens.len() < 400,
            "{format:?} seed {seed}: no end after 400 tokens"
        );
        let choices = allowed(&c.mask().unwrap());
        let ends: Vec<u32> = choices
            .iter()
            .copied()
            .filter(|t| eos.contains(t))
            .collect();
        let t = if !ends.is_empty() && (rng.next().is_multiple_of(2) || ends.len() == choices.len())
        {
            ends[0]
        } else {
            let text: Vec<u32> = choices
                .iter()
                .copied()
                .filter(|t| !eos.contains(t))
                .collect();
            text[(rng.next() % text.len() as u64) as usize]
        };
        c.accept(t).unwrap();
        if eos.contains(&t) {
            break;
        }
        tokens.push(t);
    }
    tok.decode(&tokens, false).unwrap()
}

#[test]
fn random_walks_over_real_vocabularies_give_valid_json() {
    let vocabs = [
        "tests/fixtures/vocab/ggml-vocab-gpt-2.gguf",
        "tests/fixtures/vocab/ggml-vocab-llama-spm.gguf",
        "tests/fixtures/vocab/ggml-vocab-qwen2.gguf",
        "tests/fixtures/vocab/ggml-vocab-phi-3.gguf",
        "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    ];
    for file in vocabs {
        let tok = gguf_tokenizer(&root().join(file));
        let mut eos = tok.eos();
        if eos.is_empty() {
            eos.push(0);
        }
        let vocab = GrammarVocab::new(&tok, tok.vocab_size(), &eos).unwrap();
        let seeds = if file.contains("SmolLM2") { 6 } else { 3 };
        for (i, schema) in schemas().iter().enumerate() {
            for seed in 0..seeds {
                let format = ResponseFormat::JsonSchema(schema.clone());
                let text = walk(&vocab, &tok, &format, seed * 31 + i as u64);
                assert_valid(schema, &text, &format!("{file}, schema {i}, seed {seed}"));
            }
        }
    }
}

#[test]
fn grammars_and_regexes_bound_the_text() {
    let tok = gguf_tokenizer(&root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let vocab = GrammarVocab::new(&tok, 49152, &tok.eos()).unwrap();
    let answers = ["yes!", "yes.", "no!", "no.", "yes", "no"];
    let formats = [
        ResponseFormat::Grammar(r#"start: ("yes" | "no") ("!" | ".")?"#.into()),
        ResponseFormat::Grammar(
            "# GBNF\nroot ::= answer [!.]?\nanswer ::= \"yes\" | \"no\"\n".into(),
        ),
        ResponseFormat::Regex("(yes|no)[!.]?".into()),
    ];
    for format in &formats {
        for seed in 0..8 {
            let text = walk(&vocab, &tok, format, seed);
            assert!(answers.contains(&text.as_str()), "{format:?}: {text:?}");
        }
    }
    // A code: two capitals, a dash, three digits.
    let code = ResponseFormat::Regex("[A-Z]{2}-[0-9]{3}".into());
    for seed in 0..8 {
        let text = walk(&vocab, &tok, &code, seed);
        let b = text.as_bytes();
        assert!(
            b.len() == 6
                && b[..2].iter().all(u8::is_ascii_uppercase)
                && b[2] == b'-'
                && b[3..].iter().all(u8::is_ascii_digit),
            "{text:?}"
        );
    }
}

#[test]
fn bad_formats_are_invalid_requests_that_say_why() {
    let tok = gguf_tokenizer(&root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let vocab = GrammarVocab::new(&tok, 49152, &tok.eos()).unwrap();
    let cases = [
        (
            ResponseFormat::JsonSchema(json!({"type": "strnig"})),
            "JSON schema",
        ),
        (
            ResponseFormat::JsonSchema(json!([1, 2])),
            "must be an object",
        ),
        (
            ResponseFormat::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
            "JSON schema",
        ),
        (
            ResponseFormat::Grammar("start: undefined_rule".into()),
            "grammar",
        ),
        (ResponseFormat::Grammar("start: (".into()), "grammar"),
        (
            ResponseFormat::Grammar("root ::= \"a".into()),
            "unterminated string",
        ),
        (
            ResponseFormat::Regex("(unclosed".into()),
            "regular expression",
        ),
    ];
    for (format, want) in cases {
        let e = vocab
            .constraint(&format)
            .and_then(|mut c| c.mask().map(|_| ()))
            .expect_err(&format!("{format:?} was accepted"));
        assert_eq!(e.code(), "invalid_request", "{format:?}: {e}");
        assert!(e.to_string().contains(want), "{format:?}: {e}");
    }
}

// ---- on the GPU ----------------------------------------------------------------------------

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
    use pocketlm::text::tools::Tool;
    use pocketlm::text::{ChatMessage, ToolChoice, ToolRequest, ToolSyntax};
    // The taught instructions are long in single-byte tokens.
    let mut engine = tiny_engine_with(1536);
    assert_eq!(engine.tool_syntax(), ToolSyntax::Taught);
    let schema = |props: Value, required: Value| {
        json!({"type": "object", "properties": props, "required": required,
            "additionalProperties": false})
    };
    let tools = vec![
        (
            "get_weather",
            schema(
                json!({"city": {"type": "string", "maxLength": 8},
                    "unit": {"enum": ["c", "f"]}}),
                json!(["city", "unit"]),
            ),
        ),
        (
            "add",
            schema(
                json!({"a": {"type": "integer", "minimum": 0, "maximum": 99},
                    "b": {"type": "integer", "minimum": 0, "maximum": 99}}),
                json!(["a", "b"]),
            ),
        ),
    ];
    let tools: Vec<Tool> = tools
        .into_iter()
        .map(|(name, parameters)| Tool {
            name: name.into(),
            parameters: parameters.clone(),
            definition: json!({"type": "function", "function": {"name": name,
                "parameters": parameters}}),
        })
        .collect();
    for (choice, allowed) in [
        (ToolChoice::Required, vec!["get_weather", "add"]),
        (ToolChoice::Named("add".into()), vec!["add"]),
    ] {
        let request = ToolRequest {
            tools: tools.clone(),
            choice: choice.clone(),
        };
        let messages = [ChatMessage::user("w10 w11")];
        let (prompt, format) = engine
            .chat_prompt_tools(&messages, &Value::Null, Some(&request))
            .unwrap();
        for (name, sampling) in plans(3) {
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
