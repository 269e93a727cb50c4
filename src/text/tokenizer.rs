//! The tokenizer: the `tokenizers` crate's pipeline, built from a `tokenizer.json` or from a GGUF
//! file's `tokenizer.ggml.*` metadata, with BPE of our own (`src/text/bpe.rs`) where the model is
//! BPE, plus the streaming detokenizer.
//!
//! From GGUF, three vocabulary kinds are rebuilt the way llama.cpp reads them:
//! - `gpt2`: byte-level BPE (`tokens` + `merges`, `src/text/bpe.rs`); the pre-tokenizer
//!   regexes are llama.cpp's for the `tokenizer.ggml.pre` value, applied one after the other,
//!   each splitting the pieces the previous one left.
//! - `llama`: SentencePiece BPE (`src/text/bpe.rs`: the adjacent pair that forms the token of the
//!   highest score merges first, as SentencePiece does), characters outside the vocabulary fall
//!   back to `<0xXX>` byte tokens, spaces become `▁`, and a `▁` is prepended as
//!   `tokenizer.ggml.add_space_prefix` says.
//! - `bert`: llama.cpp's WPM tokenizer (BERT WordPiece). llama.cpp's converter stores the
//!   vocabulary in "phantom space" form (a word-initial piece `x` as `▁x`, a continuation `##x`
//!   as `x`, control tokens as they are); it is turned back into a WordPiece vocabulary, and the
//!   normalizer and pre-tokenizer are llama.cpp's preprocessing rebuilt from HF primitives (see
//!   `wpm_pipeline`). `add_special` gives `CLS … SEP`, as llama.cpp's `tokenize` does. Words
//!   longer than [`MAX_WORDPIECE_CHARS`] are the unknown token (llama.cpp splits them).
//!
//! Tokens of type CONTROL (3) and the bos/eos/unknown/padding tokens are special tokens; tokens of
//! type USER_DEFINED (4) are added tokens (except in `bert`, where llama.cpp's WordPiece matching
//! takes them as pieces). Both are matched whole in the input text, never split.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip as StripDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Prepend, Replace, Sequence as NormalizerSequence, NFD};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, NormalizerWrapper, PostProcessorWrapper, SplitDelimiterBehavior, TokenizerImpl,
};

use super::bpe::Bpe;
use crate::formats::GgufMetadata;
use crate::{Error, Result};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// Texts of tokens that end a generation, as llama.cpp recognises them among control tokens.
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
];

/// llama.cpp's `"'s|'t|…"` GPT-2 word regex, shared by several pre-tokenizers.
const GPT2_WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_WORDS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_WORDS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_WORDS: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes llama.cpp applies for a `tokenizer.ggml.pre` value, and whether BPE takes a word
/// that is itself a token whole (llama.cpp's `ignore_merges`). `None` for values not supported.
fn pre_tokenizer_regexes(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match pre {
        "" | "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_WORDS,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => (vec![LLAMA3_WORDS], true),
        "dbrx" | "smaug-bpe" => (vec![LLAMA3_WORDS], false),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais" | "trillion"
        | "granite-docling" | "exaone4" | "roberta-bpe" | "jina-v1-en" | "jina-v2-code" => {
            (vec![GPT2_WORDS], false)
        }
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            (vec![r"\p{N}", GPT2_WORDS], false)
        }
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" | "solar-open" => {
            (vec![QWEN2_WORDS], false)
        }
        "qwen35" => (vec![QWEN35_WORDS], false),
        _ => return None,
    })
}

/// Limits on a tokenizer, from a `tokenizer.json` or GGUF metadata, checked before it is built.
/// Real ones are far inside them: Gemma 3's tokenizer.json is 33 MB with 262,144 tokens; Llama
/// 3 has 280,147 merges; the longest tokens (GPT-2, Llama 3, Qwen2) are 256 bytes.
pub const MAX_TOKENIZER_JSON_BYTES: usize = 64 << 20;
pub const MAX_VOCAB_TOKENS: usize = 1 << 22;
/// The text of all tokens together (Gemma 3: 2.3 MB).
pub const MAX_VOCAB_BYTES: usize = 64 << 20;
pub const MAX_TOKEN_BYTES: usize = 1024;
pub const MAX_MERGES: usize = 1 << 22;
pub const MAX_ADDED_TOKENS: usize = 1 << 20;
/// Serializing a SentencePiece vocabulary ([`Tokenizer::to_json`]) derives its merges by trying
/// every split of every token, which costs the sum of the squared token lengths (Gemma 3: 26.5
/// million byte steps); a vocabulary over the limit is refused when it is read.
pub const MAX_SPM_MERGE_WORK: u64 = 1 << 30;
/// The longest word, in characters, that WordPiece splits into pieces; a longer one is the
/// unknown token, as in Hugging Face's and Google's BERT tokenizers (their default, 100).
/// llama.cpp has no such limit, but Hugging Face's WordPiece costs the cube of a word's length
/// (it tries every end of every piece, each a new string): 100 KB of 100-character words take
/// 0.7 s to encode natively, of 500-character words 9 s. Real words are far shorter; a longer
/// run of letters or digits is one unknown token here where llama.cpp gives pieces.
pub const MAX_WORDPIECE_CHARS: usize = 100;

/// `what` is `value`, over `limit`: the tokenizer error that names both.
fn over_limit(source: &str, what: &str, value: u64, limit: u64) -> Error {
    tok_err(format!(
        "'{source}': {what} is {value}, over the limit of {limit}; the tokenizer is corrupt"
    ))
}

/// A GGUF file's tokenizer kind (`tokenizer.ggml.model`) and its tokens, the vocabulary's size
/// limits checked.
fn gguf_vocabulary(meta: &GgufMetadata) -> Result<(&str, &[String])> {
    let model: &str = meta.string("tokenizer.ggml.model")?;
    let tokens = meta.string_array("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if n == 0 {
        return Err(tok_err(format!(
            "'{}': tokenizer.ggml.tokens is empty",
            meta.file()
        )));
    }
    let merges_len = meta
        .get_opt::<&[String]>("tokenizer.ggml.merges")?
        .map_or(0, <[String]>::len);
    let added = meta
        .get_opt::<&[i32]>("tokenizer.ggml.token_type")?
        .map_or(0, |t| t.iter().filter(|&&t| t == TYPE_USER_DEFINED).count());
    check_vocab_limits(
        meta.file(),
        n,
        tokens.iter().map(String::len).max().unwrap_or(0),
        tokens.iter().map(String::len).sum(),
        merges_len,
        added,
    )?;
    Ok((model, tokens))
}

/// Whether a GGUF tokenizer kind is SentencePiece (`llama`) or WordPiece (`bert`); `gpt2` is
/// neither (byte-level BPE).
fn gguf_kind(meta: &GgufMetadata, model: &str) -> Result<(bool, bool)> {
    match model {
        "gpt2" => Ok((false, false)),
        "llama" => Ok((true, false)),
        "bert" => Ok((false, true)),
        other => Err(tok_err(format!(
            "'{}': tokenizer.ggml.model '{other}' is not supported (supported: gpt2, llama, \
             bert)",
            meta.file()
        ))),
    }
}

/// A byte-level BPE vocabulary's pre-tokenizer regexes (`tokenizer.ggml.pre`, default
/// "default") and whether it ignores merges.
fn gguf_pre_tokenizer(meta: &GgufMetadata) -> Result<(Vec<&'static str>, bool)> {
    let pre: &str = meta
        .get_opt::<&str>("tokenizer.ggml.pre")?
        .unwrap_or("default");
    pre_tokenizer_regexes(pre).ok_or_else(|| {
        tok_err(format!(
            "'{}': pre-tokenizer '{pre}' (tokenizer.ggml.pre) is not supported",
            meta.file()
        ))
    })
}

/// Checks the counts of a vocabulary against the limits above.
fn check_vocab_limits(
    source: &str,
    tokens: usize,
    longest: usize,
    total_bytes: usize,
    merges: usize,
    added: usize,
) -> Result<()> {
    for (what, value, limit) in [
        ("the vocabulary size", tokens, MAX_VOCAB_TOKENS),
        ("the longest token, in bytes,", longest, MAX_TOKEN_BYTES),
        (
            "the text of all tokens, in bytes,",
            total_bytes,
            MAX_VOCAB_BYTES,
        ),
        ("the number of merges", merges, MAX_MERGES),
        ("the number of added tokens", added, MAX_ADDED_TOKENS),
    ] {
        if value > limit {
            return Err(over_limit(source, what, value as u64, limit as u64));
        }
    }
    Ok(())
}

fn tok_err(detail: impl Into<String>) -> Error {
    Error::Tokenizer {
        detail: detail.into(),
    }
}

fn hf_err(what: &str, e: tokenizers::Error) -> Error {
    tok_err(format!("{what}: {e}"))
}

/// A BPE tokenizer (GGUF vocabularies, `tokenizer.json` BPE): the `tokenizers` pipeline around
/// [`Bpe`].
type BpeTokenizer = TokenizerImpl<
    Bpe,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// The `tokenizers` pipeline: one of the crate's models, or BPE of our own.
// One per tokenizer, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Inner {
    Hf(tokenizers::Tokenizer),
    Bpe(BpeTokenizer),
}

/// `$body` with `$t` bound to the pipeline, whichever model it has.
macro_rules! with_inner {
    ($inner:expr, $t:ident => $body:expr) => {
        match $inner {
            Inner::Hf($t) => $body,
            Inner::Bpe($t) => $body,
        }
    };
}

/// A text tokenizer. Cloning is cheap (the vocabulary is shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
    /// The same tokenizer with special-token matching off, built on first use.
    plain: Arc<OnceLock<Arc<Inner>>>,
    /// Every token's bytes ([`Tokenizer::token_bytes`]), computed on first use.
    bytes: Arc<OnceLock<Result<Vec<Vec<u8>>>>>,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// The separator added after the text (BERT's `[SEP]`), when `add_sep`.
    sep: Option<u32>,
    /// Built from GGUF: BOS/EOS/SEP are added here; from JSON: by the file's post-processor.
    add_bos: bool,
    add_eos: bool,
    add_sep: bool,
    manual_specials: bool,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// From the bytes of a `tokenizer.json`. BOS/EOS are found by their usual names
    /// (`<s>`, `<|begin_of_text|>`, `<bos>`, …); BOS/EOS insertion is the file's post-processor.
    ///
    /// The file is bounded before it is parsed: at most [`MAX_TOKENIZER_JSON_BYTES`], and a
    /// first pass that allocates nothing counts its vocabulary, merges and added tokens against
    /// [`MAX_VOCAB_TOKENS`], [`MAX_MERGES`], [`MAX_ADDED_TOKENS`], [`MAX_TOKEN_BYTES`] and
    /// [`MAX_VOCAB_BYTES`].
    pub fn from_json(bytes: &[u8]) -> Result<Tokenizer> {
        const SOURCE: &str = "tokenizer.json";
        if bytes.len() > MAX_TOKENIZER_JSON_BYTES {
            return Err(over_limit(
                SOURCE,
                "the file size in bytes",
                bytes.len() as u64,
                MAX_TOKENIZER_JSON_BYTES as u64,
            ));
        }
        let shape: json_shape::Shape = serde_json::from_slice(bytes)
            .map_err(|e| tok_err(format!("tokenizer.json could not be read: {e}")))?;
        let vocab = shape.model.as_ref().map(|m| m.vocab).unwrap_or_default();
        let bpe = shape.model.as_ref().and_then(|m| m.kind.as_deref()) == Some("BPE");
        let added = shape.added_tokens.unwrap_or_default();
        check_vocab_limits(
            SOURCE,
            vocab.count,
            vocab.longest.max(added.longest),
            vocab.bytes.saturating_add(added.bytes),
            shape.model.map_or(0, |m| m.merges.count),
            added.count,
        )?;
        // A BPE model runs as our BPE where it can ([`Bpe`]'s `Deserialize`): no per-merge
        // strings and tables of the crate's builder. Any other, and any file our BPE refuses,
        // is the crate's.
        let ours = bpe.then(|| serde_json::from_slice::<BpeTokenizer>(bytes).ok());
        let mut inner = match ours.flatten() {
            Some(t) => Inner::Bpe(t),
            None => Inner::Hf(
                tokenizers::Tokenizer::from_bytes(bytes)
                    .map_err(|e| hf_err("tokenizer.json could not be read", e))?,
            ),
        };
        // Some tokenizer.json files keep the padding and truncation of a training run (all-MiniLM:
        // pad to 128 and cut at 128): encoding must give a text's tokens, all of them and nothing
        // else. The caller decides what is too long.
        with_inner!(&mut inner, t => {
            t.with_padding(None);
            t.with_truncation(None).map(|_| ())
        })
        .map_err(|e| hf_err("tokenizer.json could not be read", e))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner_token_to_id(&inner, n));
        let bos = find(&["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"]);
        let mut eos: Vec<u32> = ["</s>", "<eos>"]
            .iter()
            .chain(END_OF_GENERATION)
            .filter_map(|n| inner_token_to_id(&inner, n))
            .collect();
        dedup(&mut eos);
        // The ids run up to the largest, which an added token may put past the count of tokens
        // (ids with gaps): encode can give it, so decode must take it.
        let largest = with_inner!(&inner, t => t.get_vocab(true))
            .into_values()
            .max()
            .map_or(0, |id| id as u64 + 1);
        if largest > MAX_VOCAB_TOKENS as u64 {
            return Err(over_limit(
                SOURCE,
                "the largest token id plus one",
                largest,
                MAX_VOCAB_TOKENS as u64,
            ));
        }
        let vocab_size = with_inner!(&inner, t => t.get_vocab_size(true)).max(largest as usize);
        Ok(Tokenizer {
            inner: Arc::new(inner),
            plain: Arc::new(OnceLock::new()),
            bytes: Arc::new(OnceLock::new()),
            bos,
            eos,
            sep: None,
            add_bos: false,
            add_eos: false,
            add_sep: false,
            manual_specials: false,
            vocab_size,
        })
    }

    /// From the text of a `tokenizer.json`.
    pub fn from_json_str(json: &str) -> Result<Tokenizer> {
        Tokenizer::from_json(json.as_bytes())
    }

    /// What [`Tokenizer::from_gguf`] refuses before it builds anything: a tokenizer kind or a
    /// pre-tokenizer PocketLM does not have, an empty or oversized vocabulary. Cheap: a load
    /// checks it from the header, before the weights.
    pub fn check_gguf(meta: &GgufMetadata) -> Result<()> {
        let (model, _) = gguf_vocabulary(meta)?;
        let (spm, wpm) = gguf_kind(meta, model)?;
        if !(spm || wpm) {
            gguf_pre_tokenizer(meta)?;
        }
        Ok(())
    }

    /// From a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Tokenizer> {
        let (model, tokens) = gguf_vocabulary(meta)?;
        let n = tokens.len();
        let types: Vec<i32> = match meta.get_opt::<&[i32]>("tokenizer.ggml.token_type")? {
            Some(t) if t.len() == n => t.to_vec(),
            Some(t) => {
                return Err(tok_err(format!(
                    "'{}': tokenizer.ggml.token_type has {} entries for {n} tokens",
                    meta.file(),
                    t.len()
                )))
            }
            None => vec![TYPE_NORMAL; n],
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match meta.get_opt::<i64>(key)? {
                None => Ok(None),
                // Some converters write -1 (or u32::MAX) for "none".
                Some(v) if v < 0 || v == u32::MAX as i64 => Ok(None),
                Some(v) if (v as u64) < n as u64 => Ok(Some(v as u32)),
                Some(v) => Err(tok_err(format!(
                    "'{}': {key} is {v}, but the vocabulary has {n} tokens",
                    meta.file()
                ))),
            }
        };
        let (spm, wpm) = gguf_kind(meta, model)?;
        let (mut bos, mut eos, mut unk, mut pad) = (
            id("tokenizer.ggml.bos_token_id")?,
            id("tokenizer.ggml.eos_token_id")?,
            id("tokenizer.ggml.unknown_token_id")?,
            id("tokenizer.ggml.padding_token_id")?,
        );
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let eom = id("tokenizer.ggml.eom_token_id")?;

        // llama.cpp's defaults, then the file's flags.
        let (mut add_bos, mut add_space_prefix) = (spm || wpm, spm);
        let in_range = |i: u32| Some(i).filter(|&i| i < n as u32);
        if spm {
            // SentencePiece defaults of llama.cpp.
            bos = bos.or(in_range(1));
            eos = eos.or(in_range(2));
            unk = unk.or(in_range(0));
        }
        // BERT: llama.cpp's defaults (CLS 101, UNK 100, SEP 102, PAD 0, MASK 103) where the file
        // names none. The converter writes CLS as `cls_token_id` (newer ones as `bos_token_id`
        // too), which llama.cpp does not read: it takes the default 101, which is CLS in every
        // BERT vocabulary; here `cls_token_id` comes before the default.
        let (mut sep, mut bert_specials) = (None, Vec::new());
        if wpm {
            bos = bos.or(id("tokenizer.ggml.cls_token_id")?).or(in_range(101));
            unk = unk.or(in_range(100));
            pad = pad.or(in_range(0));
            sep = id("tokenizer.ggml.seperator_token_id")?.or(in_range(102));
            let mask = id("tokenizer.ggml.mask_token_id")?.or(in_range(103));
            bert_specials.extend([sep, mask].into_iter().flatten());
            for (what, key, id) in [
                ("CLS", "cls_token_id", bos),
                ("SEP", "seperator_token_id", sep),
                ("unknown", "unknown_token_id", unk),
            ] {
                if id.is_none() {
                    return Err(tok_err(format!(
                        "'{}': this BERT (WordPiece) vocabulary has no {what} token: no \
                         tokenizer.ggml.{key}, and llama.cpp's default id is outside its {n} \
                         tokens",
                        meta.file()
                    )));
                }
            }
        }
        let mut ignore_merges = false;
        let regexes = if spm || wpm {
            Vec::new()
        } else {
            let (r, ignore) = gguf_pre_tokenizer(meta)?;
            ignore_merges = ignore;
            if ignore {
                // llama.cpp turns BOS on for the llama3 family.
                add_bos = true;
            }
            add_space_prefix = false;
            r
        };
        // llama.cpp's WPM `tokenize` adds CLS and SEP for `add_special` whatever the flags say.
        let (add_eos, add_sep) = if wpm {
            (false, true)
        } else {
            if let Some(v) = meta.get_opt::<bool>("tokenizer.ggml.add_bos_token")? {
                add_bos = v;
            }
            let add_eos = meta
                .get_opt::<bool>("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false);
            (add_eos, false)
        };
        if spm {
            if let Some(v) = meta.get_opt::<bool>("tokenizer.ggml.add_space_prefix")? {
                add_space_prefix = v;
            }
        }

        // The texts the model knows the tokens by: the file's, or for BERT the WordPiece forms.
        let texts: Vec<String>;
        let texts: &[String] = if wpm {
            texts = wordpiece_texts(tokens, &types);
            &texts
        } else {
            tokens
        };
        // Where two ids share a text, the first keeps it: in WordPiece's vocabulary here, and in
        // our BPE's (`Bpe`).
        let mut inner = if wpm {
            let mut vocab = Vocab::with_capacity(n);
            for (i, t) in texts.iter().enumerate() {
                vocab.entry(t.clone()).or_insert(i as u32);
            }
            // Checked above: BERT always has an unknown token.
            let u = unk.unwrap_or(0);
            let unk_text = &texts[u as usize];
            if vocab.get(unk_text.as_str()) != Some(&u) {
                return Err(tok_err(format!(
                    "'{}': the unknown token {u} ('{unk_text}') has the text of an earlier token",
                    meta.file()
                )));
            }
            let lowercase = meta
                .get_opt::<bool>("tokenizer.ggml.normalizer.lowercase")?
                .unwrap_or(true);
            let strip_accents = meta
                .get_opt::<bool>("tokenizer.ggml.normalizer.strip_accents")?
                .unwrap_or(lowercase);
            let model = WordPiece::builder()
                .vocab(vocab)
                .unk_token(unk_text.clone())
                .continuing_subword_prefix("##".into())
                .max_input_chars_per_word(MAX_WORDPIECE_CHARS)
                .build()
                .map_err(|e| hf_err("building the WordPiece model failed", e))?;
            let mut tk = tokenizers::Tokenizer::new(model);
            wpm_pipeline(&mut tk, lowercase, strip_accents)?;
            Inner::Hf(tk)
        } else if spm {
            let scores = meta.f32_array("tokenizer.ggml.scores")?;
            if scores.len() != n {
                return Err(tok_err(format!(
                    "'{}': tokenizer.ggml.scores has {} entries for {n} tokens",
                    meta.file(),
                    scores.len()
                )));
            }
            // Serializing derives every merge (`to_json`): bounded here.
            let work: u64 = tokens.iter().map(|t| (t.len() as u64).pow(2)).sum();
            if work > MAX_SPM_MERGE_WORK {
                return Err(over_limit(
                    meta.file(),
                    "the work of deriving SentencePiece merges (the sum of squared token \
                     lengths)",
                    work,
                    MAX_SPM_MERGE_WORK,
                ));
            }
            let mergeable = |id: u32| {
                matches!(
                    types[id as usize],
                    TYPE_NORMAL | TYPE_USER_DEFINED | TYPE_UNUSED
                )
            };
            let mut tk = BpeTokenizer::new(Bpe::sentencepiece(tokens, scores, mergeable, unk));
            spm_pipeline(&mut tk, add_space_prefix)?;
            Inner::Bpe(tk)
        } else {
            let merges = meta.string_array("tokenizer.ggml.merges")?;
            let bpe = Bpe::with_merges(tokens, merges, ignore_merges).map_err(|m| {
                tok_err(format!(
                    "'{}': merge '{m}' is not two tokens separated by a space",
                    meta.file()
                ))
            })?;
            let mut tk = BpeTokenizer::new(bpe);
            let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
            for r in &regexes {
                let split = Split::new(
                    SplitPattern::Regex((*r).to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| hf_err("pre-tokenizer regex", e))?;
                pres.push(split.into());
            }
            pres.push(ByteLevel::new(false, false, false).into());
            tk.with_pre_tokenizer(Some(PreTokenizerSequence::new(pres)));
            tk.with_decoder(Some(ByteLevel::new(false, false, false)));
            Inner::Bpe(tk)
        };

        // Special and added tokens, matched whole.
        let mut special_ids: Vec<u32> = [bos, eos, unk, pad, eot, eom]
            .into_iter()
            .flatten()
            .chain(bert_specials)
            .collect();
        let mut specials = Vec::new();
        let mut added = Vec::new();
        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        // The id a text maps to (no added tokens yet): the first with that text.
        let first = |t: &str| inner_token_to_id(&inner, t);
        for (i, t) in texts.iter().enumerate() {
            let i = i as u32;
            if t.is_empty() || first(t) != Some(i) {
                continue;
            }
            match types[i as usize] {
                TYPE_CONTROL | TYPE_UNKNOWN => special_ids.push(i),
                // In a BERT vocabulary llama.cpp's WordPiece matching takes them like any other
                // token (their text in the file has the `▁` of a word start, which text never
                // holds): they stay in the WordPiece vocabulary.
                TYPE_USER_DEFINED if !wpm => {
                    added.push(AddedToken::from(t.clone(), false).normalized(false))
                }
                _ => {}
            }
            if types[i as usize] == TYPE_CONTROL && END_OF_GENERATION.contains(&t.as_str()) {
                eog.push(i);
            }
        }
        dedup(&mut special_ids);
        dedup(&mut eog);
        for &i in &special_ids {
            let t = &texts[i as usize];
            if !t.is_empty() && first(t) == Some(i) {
                specials.push(AddedToken::from(t.clone(), true).normalized(false));
            }
        }
        with_inner!(&mut inner, tk => {
            tk.add_special_tokens(&specials);
            tk.add_tokens(&added);
        });

        Ok(Tokenizer {
            inner: Arc::new(inner),
            plain: Arc::new(OnceLock::new()),
            bytes: Arc::new(OnceLock::new()),
            bos,
            eos: eog,
            sep,
            add_bos,
            add_eos,
            add_sep,
            manual_specials: true,
            vocab_size: n,
        })
    }

    /// The tokenizer as `tokenizer.json` text (for a GGUF-built one: without the BOS/EOS
    /// insertion, which [`encode`](Self::encode) does itself).
    pub fn to_json(&self) -> Result<String> {
        with_inner!(&*self.inner, t => t.to_string(false))
            .map_err(|e| hf_err("serializing the tokenizer failed", e))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`, `<s>` …) become
    /// their ids. `add_special` adds BOS/EOS as the tokenizer's configuration says.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.encode_with(&self.inner, text, add_special)
    }

    /// Like [`encode`](Self::encode), but the text of special (control) tokens is tokenized as
    /// ordinary text: for untrusted input, and what llama.cpp does with `parse_special = false`.
    /// Added (user-defined) tokens are still matched whole.
    pub fn encode_plain(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let plain = self.plain.get_or_init(|| {
            let mut t = (*self.inner).clone();
            with_inner!(&mut t, t => t.set_encode_special_tokens(true));
            Arc::new(t)
        });
        self.encode_with(plain, text, add_special)
    }

    fn encode_with(&self, tk: &Inner, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let hf_special = add_special && !self.manual_specials;
        let enc = with_inner!(tk, t => t.encode_fast(text, hf_special))
            .map_err(|e| hf_err("encoding failed", e))?;
        let body = enc.get_ids();
        if !(add_special && self.manual_specials) {
            return Ok(body.to_vec());
        }
        let mut ids = Vec::with_capacity(body.len() + 2);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(body);
        if self.add_eos {
            ids.extend(self.eos.first());
        }
        if self.add_sep {
            ids.extend(self.sep);
        }
        Ok(ids)
    }

    /// The text of `ids`. `skip_special` leaves special tokens out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        with_inner!(&*self.inner, t => t.decode(ids, skip_special))
            .map_err(|e| hf_err("decoding failed", e))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&i| i as usize >= self.vocab_size) {
            Some(bad) => Err(tok_err(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// A streaming detokenizer for generated ids.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream {
        DecodeStream {
            tokenizer: self.clone(),
            skip_special,
            ids: Vec::new(),
            emitted: 0,
            prefix: String::new(),
        }
    }

    /// The number of token ids (including added and special tokens).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Every id that ends a generation: EOS, and end-of-turn / end-of-message tokens.
    pub fn eos(&self) -> Vec<u32> {
        self.eos.clone()
    }

    /// Whether `add_special` adds a BOS token.
    pub fn adds_bos(&self) -> bool {
        self.manual_specials && self.add_bos && self.bos.is_some()
    }

    /// Our BPE model (a GGUF `llama` or `gpt2` vocabulary, a `tokenizer.json` BPE), for the
    /// fuzz targets' checks.
    #[cfg(feature = "harness")]
    pub(crate) fn own_bpe(&self) -> Option<&Bpe> {
        match &*self.inner {
            Inner::Bpe(t) => Some(t.get_model()),
            Inner::Hf(_) => None,
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        inner_token_to_id(&self.inner, token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        with_inner!(&*self.inner, t => t.id_to_token(id))
    }

    /// Every token's bytes, by id (what constrained decoding matches grammars against): a
    /// special token's text after the byte 0xFF, so that no grammar matches it as text; an
    /// unused id, nothing. Byte-level BPE (GPT-2, Llama 3, Qwen) and SentencePiece-style
    /// vocabularies (`▁` for a space, `<0xNN>` byte tokens) are understood; other decoders
    /// (WordPiece) are an [`Error::Tokenizer`].
    pub fn token_bytes(&self) -> Result<Vec<Vec<u8>>> {
        match self.bytes.get_or_init(|| self.compute_token_bytes()) {
            Ok(all) => Ok(all.clone()),
            Err(e) => Err(tok_err(e.to_string().trim_start_matches("tokenizer: "))),
        }
    }

    /// The id of `text` when it is one special (control) token of this vocabulary, such as
    /// `<|im_end|>` or `[TOOL_CALLS]`; `None` for ordinary text or an unknown vocabulary.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        let id = self.token_to_id(text)?;
        let all = self
            .bytes
            .get_or_init(|| self.compute_token_bytes())
            .as_ref()
            .ok()?;
        let bytes = all.get(id as usize)?;
        (bytes.first() == Some(&0xFF) && &bytes[1..] == text.as_bytes()).then_some(id)
    }

    /// One token's bytes as text shows them (a special token's text without the 0xFF marker of
    /// [`Tokenizer::token_bytes`]); nothing for an id outside the vocabulary.
    pub fn bytes_of(&self, id: u32) -> Vec<u8> {
        match self.bytes.get_or_init(|| self.compute_token_bytes()) {
            Ok(all) => {
                let b = all.get(id as usize).map_or(&[][..], Vec::as_slice);
                b.strip_prefix(&[0xFF]).unwrap_or(b).to_vec()
            }
            Err(_) => with_inner!(&*self.inner, t => t.decode(&[id], false))
                .unwrap_or_default()
                .into_bytes(),
        }
    }

    fn compute_token_bytes(&self) -> Result<Vec<Vec<u8>>> {
        let decoder = with_inner!(&*self.inner, t => t.get_decoder())
            .map(|d| serde_json::to_value(d).unwrap_or_default())
            .unwrap_or_default();
        let kinds: Vec<&str> = match decoder.get("decoders").and_then(|d| d.as_array()) {
            Some(list) => list.iter().filter_map(|d| d["type"].as_str()).collect(),
            None => decoder["type"].as_str().into_iter().collect(),
        };
        let byte_level = kinds.contains(&"ByteLevel");
        let spm = kinds
            .iter()
            .any(|k| matches!(*k, "ByteFallback" | "Metaspace" | "Replace"));
        if !byte_level && !spm {
            return Err(tok_err(format!(
                "constrained decoding needs a byte-level or SentencePiece vocabulary, and this \
                 tokenizer's decoder is {}",
                if kinds.is_empty() {
                    "missing".to_string()
                } else {
                    kinds.join(" + ")
                }
            )));
        }
        let added = with_inner!(&*self.inner, t => t.get_added_tokens_decoder());
        let unicode_to_byte: HashMap<char, u8> = gpt2_byte_chars()
            .into_iter()
            .enumerate()
            .map(|(b, c)| (c, b as u8))
            .collect();
        let mut out = vec![Vec::new(); self.vocab_size];
        for (id, bytes) in out.iter_mut().enumerate() {
            let id = id as u32;
            if let Some(t) = added.get(&id) {
                if t.special {
                    bytes.push(0xFF);
                }
                bytes.extend_from_slice(t.content.as_bytes());
                continue;
            }
            let Some(token) = self.id_to_token(id) else {
                continue;
            };
            if byte_level {
                // Every character stands for one byte; a token that is not all such characters
                // cannot come out of this vocabulary's text: never allowed.
                let mapped: Option<Vec<u8>> = token
                    .chars()
                    .map(|c| unicode_to_byte.get(&c).copied())
                    .collect();
                *bytes = mapped.unwrap_or_default();
            } else if let Some(b) = byte_token(&token) {
                *bytes = vec![b];
            } else {
                *bytes = token.replace('\u{2581}', " ").into_bytes();
            }
        }
        Ok(out)
    }
}

/// A SentencePiece byte token `<0xNN>`'s byte.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte-level alphabet: the character that stands for each byte (printable Latin-1
/// bytes for themselves, the others from U+0100 on).
fn gpt2_byte_chars() -> Vec<char> {
    let printable = |b: u32| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

/// A first pass over a `tokenizer.json` that counts without allocating: the vocabulary (a map of
/// token to id, or Unigram's list of `[token, score]`), the merges and the added tokens, with
/// the longest token and the bytes of all tokens. Everything else is skipped.
mod json_shape {
    use std::fmt;

    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Shape {
        #[serde(default)]
        pub model: Option<Model>,
        #[serde(default)]
        pub added_tokens: Option<Tokens>,
    }

    #[derive(Deserialize)]
    pub struct Model {
        #[serde(default, rename = "type")]
        pub kind: Option<String>,
        #[serde(default)]
        pub vocab: Tokens,
        #[serde(default)]
        pub merges: Tokens,
    }

    /// How many tokens, the longest in bytes and the bytes of all.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Tokens {
        pub count: usize,
        pub longest: usize,
        pub bytes: usize,
    }

    impl Tokens {
        fn add(&mut self, len: usize) {
            self.count += 1;
            self.longest = self.longest.max(len);
            self.bytes = self.bytes.saturating_add(len);
        }
    }

    /// The byte length of a string, or 0 for anything else.
    struct Len(usize);

    impl<'de> Deserialize<'de> for Len {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Len, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Len;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a token")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Len, E> {
                    Ok(Len(s.len()))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Len, E> {
                    Ok(Len(0))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Len, E> {
                    Ok(Len(0))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Len, E> {
                    Ok(Len(0))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Len, E> {
                    Ok(Len(0))
                }
                fn visit_unit<E: de::Error>(self) -> Result<Len, E> {
                    Ok(Len(0))
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Len, A::Error> {
                    // Unigram's [token, score]: the token is the first item.
                    let first = seq.next_element::<Len>()?.map_or(0, |l| l.0);
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Len(first))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Len, A::Error> {
                    // An added token: {"content": …, …}.
                    let mut len = 0;
                    while let Some(key) = map.next_key::<KeyIs>()? {
                        if key.0 {
                            len = map.next_value::<Len>()?.0;
                        } else {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    Ok(Len(len))
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Whether a map key is "content".
    struct KeyIs(bool);

    impl<'de> Deserialize<'de> for KeyIs {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyIs, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = KeyIs;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyIs, E> {
                    Ok(KeyIs(s == "content"))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for Tokens {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tokens, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Tokens;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a vocabulary, a list of merges or a list of added tokens")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tokens, A::Error> {
                    let mut t = Tokens::default();
                    while let Some(Len(len)) = map.next_key::<Len>()? {
                        map.next_value::<IgnoredAny>()?;
                        t.add(len);
                    }
                    Ok(t)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tokens, A::Error> {
                    let mut t = Tokens::default();
                    while let Some(Len(len)) = seq.next_element::<Len>()? {
                        t.add(len);
                    }
                    Ok(t)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Tokens, E> {
                    Ok(Tokens::default())
                }
            }
            d.deserialize_any(V)
        }
    }
}

fn dedup(v: &mut Vec<u32>) {
    let mut seen = HashSet::new();
    v.retain(|x| seen.insert(*x));
}

/// A BERT vocabulary's WordPiece texts from llama.cpp's "phantom space" form: `▁x` (a piece that
/// starts a word) is `x`, a control token is itself, and any other token `x` (a piece inside a
/// word) is `##x`. llama.cpp looks up `▁` + the start of a word, then the rest as it is; WordPiece
/// looks up the start as it is, then `##` + the rest: the same matches, except after a `▁`
/// (U+2581) inside a word, where llama.cpp can match a word-start piece and WordPiece cannot.
fn wordpiece_texts(tokens: &[String], types: &[i32]) -> Vec<String> {
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| {
            if ty == TYPE_CONTROL {
                t.clone()
            } else if let Some(word) = t.strip_prefix('\u{2581}') {
                word.to_string()
            } else {
                format!("##{t}")
            }
        })
        .collect()
}

/// The characters llama.cpp's WPM tokenizer splits words at (its `unicode_set_whitespace`, the
/// White_Space property).
const WPM_WHITESPACE: &str = r"[\x{09}-\x{0D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]";
/// The characters it drops: NUL, U+FFFD and the Cc/Cf/Co categories (and Cs, surrogates, which
/// a Rust string cannot hold), after whitespace.
const WPM_DROPPED: &str = r"[\x{00}\x{FFFD}\p{Cc}\p{Cf}\p{Co}]";
/// The characters that are words of their own: punctuation (\p{P}), ASCII symbols, and the CJK
/// ideograph blocks of its `is_chinese_char` (which are Hugging Face's BertNormalizer's).
const WPM_ISOLATED: &str = r"[\p{P}\x{21}-\x{2F}\x{3A}-\x{40}\x{5B}-\x{60}\x{7B}-\x{7E}\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]";

/// llama.cpp's WPM preprocessing (`llm_tokenizer_wpm_session::preprocess`) as a Hugging Face
/// normalizer and pre-tokenizer, with the WordPiece decoder. llama.cpp, character by character:
/// with `strip_accents`, the first character of the character's NFD; whitespace ends a word;
/// NUL, U+FFFD and control/format/private-use characters are dropped; with `strip_accents`,
/// marks (\p{M}) are dropped; with `lowercase`, the character's simple lowercase mapping;
/// punctuation, ASCII symbols and CJK ideographs are words of one character.
///
/// Hugging Face's BertNormalizer is close but not the same (it drops only Mn marks, and judges
/// control and punctuation characters by Unicode 9 tables, so it drops emoji newer than 2016
/// that llama.cpp keeps as unknown words), so the steps are built from primitives. "The first
/// character of the NFD" equals the full NFD without marks for every character except the
/// Hangul syllables, whose NFD is two or three jamo, all letters: each syllable is first
/// replaced by its leading jamo (the syllables of one leading jamo are one range of 588).
fn wpm_pipeline(
    tk: &mut tokenizers::Tokenizer,
    lowercase: bool,
    strip_accents: bool,
) -> Result<()> {
    let replace = |pattern: &str, with: &str| -> Result<NormalizerWrapper> {
        Ok(
            Replace::new(ReplacePattern::Regex(pattern.to_string()), with)
                .map_err(|e| hf_err("normalizer", e))?
                .into(),
        )
    };
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if strip_accents {
        for lead in 0..19u32 {
            let first = 0xAC00 + lead * 588;
            let jamo = char::from_u32(0x1100 + lead).unwrap_or('\u{1100}');
            norms.push(replace(
                &format!(r"[\x{{{first:X}}}-\x{{{:X}}}]", first + 587),
                &jamo.to_string(),
            )?);
        }
        norms.push(NFD.into());
    }
    norms.push(replace(WPM_WHITESPACE, " ")?);
    norms.push(replace(WPM_DROPPED, "")?);
    if strip_accents {
        norms.push(replace(r"\p{M}", "")?);
    }
    if lowercase {
        if !strip_accents {
            // The one character whose full lowercase (Rust's) is not its simple one (llama.cpp's).
            norms.push(replace("\u{130}", "i")?);
        }
        norms.push(Lowercase.into());
    }
    tk.with_normalizer(Some(NormalizerSequence::new(norms)));
    let split = |pattern: SplitPattern, behavior| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(pattern, behavior, false)
            .map_err(|e| hf_err("pre-tokenizer", e))?
            .into())
    };
    tk.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
        split(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::Removed,
        )?,
        split(
            SplitPattern::Regex(WPM_ISOLATED.into()),
            SplitDelimiterBehavior::Isolated,
        )?,
    ])));
    tk.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    Ok(())
}

fn inner_token_to_id(inner: &Inner, token: &str) -> Option<u32> {
    with_inner!(inner, t => t.token_to_id(token))
}

/// SentencePiece's normalizer (spaces as `▁`, one prepended where the vocabulary says) and the
/// decoder that undoes it.
fn spm_pipeline(tk: &mut BpeTokenizer, add_space_prefix: bool) -> Result<()> {
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(
        Replace::new(" ", "▁")
            .map_err(|e| hf_err("normalizer", e))?
            .into(),
    );
    tk.with_normalizer(Some(NormalizerSequence::new(norms)));
    let mut decs: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| hf_err("decoder", e))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decs.push(StripDecoder::new(' ', 1, 0).into());
    }
    tk.with_decoder(Some(DecoderSequence::new(decs)));
    Ok(())
}

/// Turns generated ids into text as they come: [`push`](Self::push) returns only text that is
/// complete UTF-8 (a character split over byte tokens waits for its last byte), and
/// [`flush`](Self::flush) returns what is left at the end.
#[derive(Debug)]
pub struct DecodeStream {
    tokenizer: Tokenizer,
    skip_special: bool,
    /// The last emitted token(s) as context, then the pending ones.
    ids: Vec<u32>,
    /// How many of `ids` are context (already emitted).
    emitted: usize,
    /// The text of the context ids alone.
    prefix: String,
}

/// After this many pending ids an incomplete sequence is given up on and emitted as U+FFFD.
const MAX_PENDING: usize = 8;

impl DecodeStream {
    /// Feeds one id; returns the text it completes (often empty while a character is pending).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, self.skip_special)?;
        let pending = self.ids.len() - self.emitted;
        if text.len() > self.prefix.len() && (!text.ends_with('\u{FFFD}') || pending >= MAX_PENDING)
        {
            let out = self.new_part(&text)?;
            // The emitted tokens become the context of the next ones.
            self.ids.drain(..self.emitted);
            self.emitted = self.ids.len();
            self.prefix = self.tokenizer.decode(&self.ids, self.skip_special)?;
            Ok(out)
        } else {
            Ok(String::new())
        }
    }

    /// Returns whatever is still pending (incomplete bytes as U+FFFD) and resets the stream.
    pub fn flush(&mut self) -> Result<String> {
        let out = if self.ids.len() > self.emitted {
            let text = self.tokenizer.decode(&self.ids, self.skip_special)?;
            self.new_part(&text)?
        } else {
            String::new()
        };
        self.ids.clear();
        self.emitted = 0;
        self.prefix.clear();
        Ok(out)
    }

    fn new_part(&self, text: &str) -> Result<String> {
        match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) => Ok(rest.to_string()),
            None => Err(tok_err(format!(
                "streaming decode: '{text}' does not continue '{}'",
                self.prefix
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_pre_tokenizer_compiles() {
        for pre in [
            "default",
            "llama-bpe",
            "dbrx",
            "gpt-2",
            "smollm",
            "qwen2",
            "qwen35",
        ] {
            let (regexes, _) = pre_tokenizer_regexes(pre).unwrap();
            for r in regexes {
                Split::new(
                    SplitPattern::Regex(r.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap_or_else(|e| panic!("{pre}: {r}: {e}"));
            }
        }
        assert!(pre_tokenizer_regexes("no-such-pre").is_none());
    }

    /// A GGUF vocabulary in llama.cpp's BERT form, with `changes` to its metadata.
    #[cfg(feature = "harness")]
    fn bert_vocab(
        changes: &[(&str, Option<crate::formats::gguf::MetaValue>)],
    ) -> Result<Tokenizer> {
        use crate::formats::gguf::{MetaArray, MetaValue};
        let tokens: Vec<(&str, i32)> = vec![
            ("[PAD]", TYPE_CONTROL),
            ("[UNK]", TYPE_CONTROL),
            ("[CLS]", TYPE_CONTROL),
            ("[SEP]", TYPE_CONTROL),
            ("[MASK]", TYPE_CONTROL),
            ("\u{2581}hello", TYPE_NORMAL),
            ("\u{2581}world", TYPE_NORMAL),
            ("\u{2581}hel", TYPE_NORMAL),
            ("lo", TYPE_NORMAL),
            ("\u{2581},", TYPE_NORMAL),
            // The same text twice: the first id keeps it.
            ("\u{2581}hello", TYPE_NORMAL),
            ("\u{2581}x", TYPE_NORMAL),
        ];
        let mut meta: Vec<(&str, MetaValue)> = vec![
            ("tokenizer.ggml.model", MetaValue::String("bert".into())),
            (
                "tokenizer.ggml.tokens",
                MetaValue::Array(MetaArray::String(
                    tokens.iter().map(|t| t.0.to_string()).collect(),
                )),
            ),
            (
                "tokenizer.ggml.token_type",
                MetaValue::Array(MetaArray::I32(tokens.iter().map(|t| t.1).collect())),
            ),
            ("tokenizer.ggml.cls_token_id", MetaValue::U32(2)),
            ("tokenizer.ggml.seperator_token_id", MetaValue::U32(3)),
            ("tokenizer.ggml.unknown_token_id", MetaValue::U32(1)),
            ("tokenizer.ggml.padding_token_id", MetaValue::U32(0)),
            ("tokenizer.ggml.mask_token_id", MetaValue::U32(4)),
        ];
        for (key, value) in changes {
            meta.retain(|(k, _)| k != key);
            if let Some(v) = value {
                meta.push((key, v.clone()));
            }
        }
        let bytes = crate::fuzzing::gguf_bytes(&meta);
        let header = crate::formats::GgufHeader::parse_file(&bytes, "bert.gguf")?;
        Tokenizer::from_gguf(&header.metadata)
    }

    #[cfg(feature = "harness")]
    #[test]
    fn bert_vocabulary_from_gguf() {
        use crate::formats::gguf::MetaValue;
        let tok = bert_vocab(&[]).unwrap();
        assert_eq!(tok.vocab_size(), 12);
        assert_eq!(tok.bos(), Some(2));
        // Lowercased, accents stripped, punctuation split off, longest pieces first, a word
        // that cannot be covered is UNK, and `add_special` gives CLS … SEP.
        assert_eq!(
            tok.encode("Hello, WORLD héllo hellolo hel xyz", true)
                .unwrap(),
            [2, 5, 9, 6, 5, 5, 8, 7, 1, 3]
        );
        assert_eq!(tok.encode("hello", false).unwrap(), [5]);
        assert_eq!(tok.encode("[MASK] [SEP]", false).unwrap(), [4, 3]);
        assert_eq!(tok.encode_plain("[MASK]", false).unwrap(), [1, 1, 1]);
        assert_eq!(tok.token_to_id("##lo"), Some(8));
        assert_eq!(tok.id_to_token(10), None);
        assert_eq!(
            tok.decode(&[2, 5, 8, 9, 6, 10, 3], true).unwrap(),
            "hellolo, world"
        );
        assert_eq!(tok.decode(&[10], false).unwrap(), "");
        // Without lowercasing (and so, by default, without stripping accents).
        let cased = bert_vocab(&[(
            "tokenizer.ggml.normalizer.lowercase",
            Some(MetaValue::Bool(false)),
        )])
        .unwrap();
        assert_eq!(cased.encode("Hello hello héllo", false).unwrap(), [1, 5, 1]);

        // Bad vocabularies: typed errors.
        for (change, needle) in [
            (
                ("tokenizer.ggml.unknown_token_id", None),
                "no unknown token",
            ),
            (("tokenizer.ggml.seperator_token_id", None), "no SEP token"),
            (("tokenizer.ggml.cls_token_id", None), "no CLS token"),
            (
                ("tokenizer.ggml.cls_token_id", Some(MetaValue::U32(12))),
                "cls_token_id is 12",
            ),
            (
                ("tokenizer.ggml.unknown_token_id", Some(MetaValue::U32(10))),
                "text of an earlier token",
            ),
            (
                (
                    "tokenizer.ggml.token_type",
                    Some(MetaValue::Array(crate::formats::gguf::MetaArray::I32(
                        vec![1; 3],
                    ))),
                ),
                "3 entries for 12 tokens",
            ),
        ] {
            let e = bert_vocab(&[change]).unwrap_err();
            assert!(matches!(e, Error::Tokenizer { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn dedup_keeps_first() {
        let mut v = vec![3, 1, 3, 2, 1];
        dedup(&mut v);
        assert_eq!(v, [3, 1, 2]);
    }
}
