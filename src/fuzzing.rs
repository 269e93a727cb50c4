//! The fuzz targets' entry points (fuzz/fuzz_targets/*.rs), shared with the regression tests
//! that replay every input the fuzzers found (tests/fuzz_regressions.rs), so a committed crash
//! runs through exactly the code the fuzzer ran. Each entry takes arbitrary bytes and may return
//! any typed error, but must not panic, hang or allocate without bound; what it asserts are the
//! invariants of a successful result.

use crate::formats::gguf::{MetaArray, MetaValue};

/// A GGUF v3 file with `metadata` and no tensors: for building hostile metadata in tests and
/// fuzz targets.
pub fn gguf_bytes(metadata: &[(&str, MetaValue)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_str(&mut out, key);
        out.extend_from_slice(&value_type(value).to_le_bytes());
        write_value(&mut out, value);
    }
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => write_str(out, s),
        MetaValue::Array(a) => write_array(out, a),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&array_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: fn(T) -> [u8; N]) {
        for &x in v {
            out.extend_from_slice(&f(x));
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| write_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
    }
}

use crate::formats::GgufHeader;
use crate::text::chat::{ChatMessage, ChatTemplate, MAX_TEMPLATE_OUTPUT_BYTES};
use crate::text::Tokenizer;
use tokenizers::Model;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name, for the regression tests to dispatch on.
pub const TARGETS: &[(&str, Target)] = &[
    ("tokenizer_json", tokenizer_json),
    ("gguf_vocab", gguf_vocab),
    ("chat_template", chat_template),
    ("openai_request", openai_request),
];

/// Text from the fuzzer's bytes for a tokenizer to encode.
fn sample_text(data: &[u8]) -> String {
    String::from_utf8_lossy(&data[..data.len().min(512)]).into_owned()
}

/// What a built tokenizer must do with any text: what `encode` gives, `decode` and the
/// streaming decoder take back.
fn exercise_tokenizer(tok: &Tokenizer, text: &str) {
    for ids in [tok.encode(text, true), tok.encode_plain(text, false)] {
        let Ok(ids) = ids else { continue };
        if let Err(e) = tok.decode(&ids, false) {
            panic!("encode gave {ids:?}, which decode refuses: {e}");
        }
        let mut stream = tok.decode_stream(true);
        for &id in &ids {
            stream.push(id).expect("an id encode gave streams");
        }
        let _ = stream.flush();
    }
}

/// `tokenizer.json` bytes into [`Tokenizer::from_json`].
pub fn tokenizer_json(data: &[u8]) {
    if let Ok(tok) = Tokenizer::from_json(data) {
        let text = sample_text(data);
        exercise_tokenizer(&tok, &text);
        let _ = tok.to_json();
        if let Some(ours) = tok.own_bpe() {
            // The file's BPE as our BPE runs it and as the `tokenizers` crate reads it: the same
            // pieces.
            let theirs = tokenizers::Tokenizer::from_bytes(data)
                .expect("a tokenizer.json our BPE reads, the crate reads");
            assert_eq!(
                ours.tokenize(&text).ok(),
                theirs.get_model().tokenize(&text).ok(),
                "{text:?}"
            );
        }
    }
}

/// A GGUF vocabulary made from the fuzzer's bytes (through a real GGUF file and its parser)
/// into [`Tokenizer::from_gguf`]. Byte 0 picks the model (`gpt2` / `llama` / `bert`), byte 1 the
/// pre-tokenizer, byte 2 the special-token ids; the rest, split at 0xFF, are the tokens, each
/// token's first byte its type and score; `gpt2` merges pair neighbouring tokens.
pub fn gguf_vocab(data: &[u8]) {
    const PRES: &[&str] = &[
        "default",
        "llama-bpe",
        "gpt-2",
        "smollm",
        "qwen2",
        "qwen35",
        "dbrx",
        "bogus",
    ];
    if data.len() < 3 {
        return;
    }
    let (head, rest) = data.split_at(3);
    let model = ["gpt2", "llama", "bert"][usize::from(head[0]) % 3];
    let pre = PRES[head[1] as usize % PRES.len()];
    let pieces: Vec<&[u8]> = rest.split(|&b| b == 0xFF).take(2048).collect();
    let tokens: Vec<String> = pieces
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let types: Vec<i32> = pieces
        .iter()
        .map(|p| p.first().map_or(1, |&b| i32::from(b % 7)))
        .collect();
    let scores: Vec<f32> = pieces
        .iter()
        .map(|p| p.first().map_or(0.0, |&b| -f32::from(b)))
        .collect();
    let merges: Vec<String> = tokens
        .windows(2)
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect();
    let id = |shift: u8| MetaValue::I64(i64::from(head[2] >> shift & 0x0F) - 1);
    let mut meta = vec![
        ("tokenizer.ggml.model", MetaValue::String(model.into())),
        ("tokenizer.ggml.pre", MetaValue::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        ),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(scores)),
        ),
        (
            "tokenizer.ggml.merges",
            MetaValue::Array(MetaArray::String(merges)),
        ),
        ("tokenizer.ggml.bos_token_id", id(0)),
        ("tokenizer.ggml.eos_token_id", id(4)),
    ];
    if head[1] & 0x80 != 0 {
        meta.push(("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false)));
    }
    let bytes = gguf_bytes(&meta);
    let header = GgufHeader::parse_file(&bytes, "fuzz.gguf").expect("a GGUF file we wrote parses");
    if let Ok(tok) = Tokenizer::from_gguf(&header.metadata) {
        let text = sample_text(rest);
        exercise_tokenizer(&tok, &text);
        if let Some(ours) = tok.own_bpe() {
            // PocketLM's BPE gives the pieces of the `tokenizers` crate's BPE (with the merges
            // derived from the scores for SentencePiece), which is what `to_json` writes: on the
            // text as it is and as SentencePiece's normalizer hands it over.
            let bpe = ours
                .to_bpe()
                .expect("a GGUF vocabulary's merges build a BPE");
            let normalized = format!("\u{2581}{}", text.replace(' ', "\u{2581}"));
            for t in [&text, &normalized] {
                assert_eq!(ours.tokenize(t).ok(), bpe.tokenize(t).ok(), "{t:?}");
            }
        }
    }
}

/// The templates of tests/fixtures/templates, which the fuzzer renders with arbitrary messages.
const TEMPLATES: &[&str] = &[
    include_str!("../tests/fixtures/templates/gemma3.jinja"),
    include_str!("../tests/fixtures/templates/llama3.jinja"),
    include_str!("../tests/fixtures/templates/mistral.jinja"),
    include_str!("../tests/fixtures/templates/phi3.jinja"),
    include_str!("../tests/fixtures/templates/phi4-mini.jinja"),
    include_str!("../tests/fixtures/templates/python-compat.jinja"),
    include_str!("../tests/fixtures/templates/qwen2.5.jinja"),
    include_str!("../tests/fixtures/templates/qwen3.jinja"),
    include_str!("../tests/fixtures/templates/smollm2.jinja"),
    include_str!("../tests/fixtures/templates/smollm3.jinja"),
];

/// A chat template rendered with messages from the fuzzer's bytes. Byte 0 picks one of
/// [`TEMPLATES`], or (past them) takes the template's source from the bytes up to the first
/// 0x00. The rest, split at 0x01, are messages (each one's first byte picks its role); a part
/// that is a JSON object is taken as the extra template variables instead.
pub fn chat_template(data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let source: String = match TEMPLATES.get(pick as usize % 16) {
        Some(t) => (*t).to_string(),
        None => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (src, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            String::from_utf8_lossy(src).into_owned()
        }
    };
    let Ok(template) = ChatTemplate::new("fuzz", &source, "<s>", "</s>") else {
        return;
    };
    const ROLES: &[&str] = &["system", "user", "assistant", "tool", "user", "assistant"];
    let mut messages = Vec::new();
    let mut extra = serde_json::Value::Null;
    for part in rest.split(|&b| b == 1).take(64) {
        let text = String::from_utf8_lossy(part);
        if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&text) {
            extra = v;
            continue;
        }
        let (role, content) = match part.split_first() {
            Some((&r, c)) if (r as usize) < ROLES.len() => {
                (ROLES[r as usize].to_string(), String::from_utf8_lossy(c))
            }
            Some((_, c)) => ("custom".to_string(), String::from_utf8_lossy(c)),
            None => ("user".to_string(), text),
        };
        messages.push(ChatMessage::new(role, content));
    }
    for add_generation_prompt in [false, true] {
        match template.render_with_at(&messages, add_generation_prompt, &extra, 1_721_952_000) {
            Ok(text) => assert!(text.len() <= MAX_TEMPLATE_OUTPUT_BYTES),
            Err(e) => assert!(
                matches!(
                    e.code(),
                    "chat_template" | "chat_template_rejected" | "invalid_request"
                ),
                "untyped template failure: {e}"
            ),
        }
    }
}

/// A chat-completion request as JSON text into [`crate::request::parse_request_json`]: a
/// request it accepts is one the engine can run.
pub fn openai_request(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    match crate::request::parse_request_json(json) {
        Ok((options, prompt)) => {
            assert!(options.max_tokens.is_none_or(|n| n >= 1));
            options
                .sampling
                .validate()
                .expect("accepted sampling is valid");
            if let crate::request::Prompt::Chat(messages, kwargs, _) = prompt {
                assert!(!messages.is_empty() && messages.iter().all(|m| !m.role.is_empty()));
                assert!(kwargs.is_null() || kwargs.is_object());
            }
        }
        Err(e) => assert!(
            matches!(e.code(), "invalid_request" | "invalid_sampling_params"),
            "untyped request failure: {e}"
        ),
    }
}
