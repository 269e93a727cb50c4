//! Constrained decoding on the host (src/text/grammar.rs, src/text/tools.rs): over real
//! vocabularies (llama.cpp's byte-level and SentencePiece test vocabularies, and the default
//! model's), a walk that picks a random allowed token at every step always ends in text that
//! validates against the schema (checked by the `jsonschema` crate, not by llguidance), for many
//! schemas and seeds; grammars and regexes bound the text; each tool-call syntax's required call
//! parses into calls that follow the tools' schemas, with its markers as the vocabulary's special
//! tokens where it has them; bad schemas, grammars and regexes are `invalid_request` errors that
//! say why. The GPU side is tests/gpu_grammar.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{assert_valid, byte_tokenizer_json, gguf_tokenizer, schemas, tools};
use pocketlm::text::tools::{self, ToolSyntax};
use pocketlm::text::{GrammarVocab, ResponseFormat, Tokenizer, ToolChoice, ToolRequest};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
/// taken half the time. Returns the text (special tokens written out), or panics after 400 tokens.
fn walk(vocab: &GrammarVocab, tok: &Tokenizer, format: &ResponseFormat, seed: u64) -> String {
    walk_ids(vocab, tok, format, seed, 400).0
}

/// [`walk`], with the tokens it picked, panicking after `limit` tokens.
fn walk_ids(
    vocab: &GrammarVocab,
    tok: &Tokenizer,
    format: &ResponseFormat,
    seed: u64,
    limit: usize,
) -> (String, Vec<u32>) {
    let eos = tok.eos();
    let mut c = vocab.constraint(format).unwrap();
    let mut rng = Rng(seed);
    let mut tokens = Vec::new();
    while !c.is_done() {
        assert!(
            tokens.len() < limit,
            "{format:?} seed {seed}: no end after {limit} tokens"
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
    (tok.decode(&tokens, false).unwrap(), tokens)
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

#[test]
fn required_calls_parse_in_every_tool_syntax_with_special_or_text_markers() {
    let markers = ["[TOOL_CALLS]", "<|tool_call|>", "<|/tool_call|>"];
    let tools = tools();
    for specials in [&markers[..], &[]] {
        let tok = Tokenizer::from_json_str(&byte_tokenizer_json(specials)).unwrap();
        let vocab = GrammarVocab::new(&tok, tok.vocab_size(), &tok.eos()).unwrap();
        for syntax in [
            ToolSyntax::Hermes,
            ToolSyntax::Llama3,
            ToolSyntax::Mistral,
            ToolSyntax::Phi4,
        ] {
            for (choice, allowed) in [
                (ToolChoice::Required, vec!["get_weather", "add"]),
                (ToolChoice::Named("add".into()), vec!["add"]),
            ] {
                let request = ToolRequest {
                    tools: tools.clone(),
                    choice: choice.clone(),
                };
                let format = tools::required_format(syntax, &request, |t| tok.special_id(t))
                    .unwrap()
                    .expect("a required call has a format");
                for seed in 0..4 {
                    let what =
                        format!("{syntax:?}, specials {specials:?}, {choice:?}, seed {seed}");
                    // A list of calls goes on as long as the walk picks a comma.
                    let (text, ids) = walk_ids(&vocab, &tok, &format, seed, 2000);
                    // A marker the vocabulary has as one special token is that token.
                    if !specials.is_empty() {
                        let first = match syntax {
                            ToolSyntax::Mistral => tok.special_id("[TOOL_CALLS]"),
                            ToolSyntax::Phi4 => tok.special_id("<|tool_call|>"),
                            _ => None,
                        };
                        if let Some(id) = first {
                            assert_eq!(ids.first(), Some(&id), "{what}: {text:?}");
                        }
                    }
                    let reply = tools::parse_reply(syntax, &text);
                    assert_eq!(reply.problem, None, "{what}: {text:?}");
                    assert!(!reply.calls.is_empty(), "{what}: {text:?}");
                    for call in &reply.calls {
                        assert!(allowed.contains(&call.name.as_str()), "{what}: {text:?}");
                        let tool = tools.iter().find(|t| t.name == call.name).unwrap();
                        assert_valid(&tool.parameters, &call.arguments, &what);
                    }
                }
            }
        }
    }
}
