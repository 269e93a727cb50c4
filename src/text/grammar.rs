//! Constrained decoding: a response format (a JSON schema, any JSON object, a Lark or GBNF
//! grammar, a regular expression) compiled by `llguidance` into a token mask per step, so that
//! the reply always parses.
//!
//! [`GrammarVocab`] is built once per tokenizer (the token trie and llguidance's parser factory);
//! [`Constraint`] follows one reply: [`Constraint::mask`] gives the tokens allowed next as a
//! bitset (one bit per token id, 32 per word, what the GPU's `mask_logits` kernel takes) and
//! [`Constraint::accept`] advances it by the token picked. The mask is computed on the host
//! while the GPU runs the step's forward pass (see `Decoder::step_masked`).

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::engine::now_ms;
use crate::error::{Error, Result};
use crate::text::Tokenizer;

/// What the reply must be (OpenAI's `response_format`, plus PocketLM's grammar and regex).
#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Any JSON object (`{type: "json_object"}`).
    JsonObject,
    /// JSON valid under a schema (`{type: "json_schema", json_schema: {name, schema}}`, or
    /// WebLLM's `{type: "json_object", schema: "<text>"}`).
    JsonSchema(Value),
    /// A Lark grammar (llguidance's dialect), or a GBNF one (llama.cpp's: rules written
    /// `name ::= …`, starting at `root`), converted to Lark.
    Grammar(String),
    /// Text matching a regular expression, whole.
    Regex(String),
}

impl ResponseFormat {
    /// Whether a reply under this format is JSON.
    pub fn is_json(&self) -> bool {
        matches!(
            self,
            ResponseFormat::JsonObject | ResponseFormat::JsonSchema(_)
        )
    }

    fn grammar(&self) -> Result<TopLevelGrammar> {
        Ok(match self {
            ResponseFormat::JsonObject => TopLevelGrammar::from_json_schema(with_layout(
                serde_json::json!({"type": "object"}),
            )),
            ResponseFormat::JsonSchema(schema) => {
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(Error::InvalidRequest(format!(
                        "response_format: a JSON schema must be an object, not {}",
                        kind_of(schema)
                    )));
                }
                TopLevelGrammar::from_json_schema(with_layout(schema.clone()))
            }
            ResponseFormat::Grammar(text) => {
                let lark = if is_gbnf(text) {
                    gbnf_to_lark(text)?
                } else {
                    text.clone()
                };
                TopLevelGrammar::from_lark(lark)
            }
            ResponseFormat::Regex(rx) => TopLevelGrammar::from_regex(rx),
        })
    }
}

/// A schema with PocketLM's JSON layout, unless it names its own (llguidance's `x-guidance`):
/// one line, `", "` between items and `": "` after keys, as Python's `json.dumps` writes. Free
/// whitespace would let a small model pad a reply with blank lines until `max_tokens`.
fn with_layout(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The most bytes of grammar or schema text accepted.
pub const MAX_GRAMMAR_BYTES: usize = 1 << 20;

/// A vocabulary as llguidance sees it: each token's bytes in a trie. Text is tokenized
/// greedily on the trie and declared non-canonical, so llguidance never forces the tokens of a
/// grammar's fixed text from a tokenization (a SentencePiece tokenizer would put its leading
/// space there); the mask alone decides, one token at a time.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

/// What constrained decoding needs of a model's vocabulary, built once: the token trie and
/// llguidance's parser factory. Cloning is cheap.
#[derive(Clone)]
pub struct GrammarVocab {
    factory: Arc<ParserFactory>,
    vocab: usize,
}

impl std::fmt::Debug for GrammarVocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarVocab")
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl GrammarVocab {
    /// For a model whose logits have `vocab` entries (at least the tokenizer's; ids past it
    /// are never allowed) and whose replies end with any of `eos`.
    pub fn new(tokenizer: &Tokenizer, vocab: usize, eos: &[u32]) -> Result<GrammarVocab> {
        let mut words = tokenizer.token_bytes()?;
        if words.len() > vocab {
            return Err(Error::Tokenizer {
                detail: format!(
                    "the tokenizer has {} tokens, more than the model's {vocab} logits",
                    words.len()
                ),
            });
        }
        words.resize(vocab, Vec::new());
        let first_eos = *eos.first().ok_or_else(|| Error::Tokenizer {
            detail: "constrained decoding needs an end-of-turn token, and the model names none"
                .into(),
        })?;
        let vocab_u32 = u32::try_from(vocab).map_err(|_| Error::Tokenizer {
            detail: format!("a vocabulary of {vocab} tokens"),
        })?;
        let info = TokRxInfo::new(vocab_u32, first_eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        let env: TokEnv = Arc::new(Env { trie });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::Tokenizer {
            detail: format!("constrained decoding could not index the vocabulary: {e}"),
        })?;
        factory.quiet();
        Ok(GrammarVocab {
            factory: Arc::new(factory),
            vocab,
        })
    }

    /// Compiles `format` for one reply. A schema or grammar llguidance cannot compile is
    /// [`Error::InvalidRequest`] with its reason.
    pub fn constraint(&self, format: &ResponseFormat) -> Result<Constraint> {
        let size = match format {
            ResponseFormat::JsonObject => 0,
            ResponseFormat::JsonSchema(v) => v.to_string().len(),
            ResponseFormat::Grammar(s) | ResponseFormat::Regex(s) => s.len(),
        };
        if size > MAX_GRAMMAR_BYTES {
            return Err(Error::InvalidRequest(format!(
                "response_format: the grammar is {size} bytes, over the limit of \
                 {MAX_GRAMMAR_BYTES}"
            )));
        }
        let grammar = format.grammar()?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| invalid_format(format, &e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid_format(format, &e));
        }
        Ok(Constraint {
            matcher,
            format: format.clone(),
            words: self.vocab.div_ceil(32),
            stats: MaskStats::default(),
        })
    }
}

fn invalid_format(format: &ResponseFormat, reason: &str) -> Error {
    let what = match format {
        ResponseFormat::JsonObject | ResponseFormat::JsonSchema(_) => "the JSON schema",
        ResponseFormat::Grammar(_) => "the grammar",
        ResponseFormat::Regex(_) => "the regular expression",
    };
    // llguidance's messages can quote the whole grammar: keep the start.
    let reason: String = reason.chars().take(600).collect();
    Error::InvalidRequest(format!(
        "response_format: {what} cannot be used: {}",
        reason.trim()
    ))
}

/// The host time masks took over one reply.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MaskStats {
    /// Masks computed.
    pub count: usize,
    /// Their total and longest time, milliseconds.
    pub total_ms: f64,
    pub max_ms: f64,
}

impl MaskStats {
    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.total_ms / self.count as f64
        }
    }
}

/// One reply's grammar state.
pub struct Constraint {
    matcher: Matcher,
    format: ResponseFormat,
    words: usize,
    pub stats: MaskStats,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("format", &self.format)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Constraint {
    /// The tokens allowed next: one bit per token id, low bit first, [`GrammarVocab`]'s
    /// vocabulary / 32 words (rounded up). Never empty: a grammar that allows nothing here is
    /// [`Error::InvalidRequest`].
    pub fn mask(&mut self) -> Result<Vec<u32>> {
        let start = now_ms();
        let mask = self.matcher.compute_mask();
        let ms = now_ms() - start;
        self.stats.count += 1;
        self.stats.total_ms += ms;
        self.stats.max_ms = self.stats.max_ms.max(ms);
        let mask = mask.map_err(|e| invalid_format(&self.format, &e.to_string()))?;
        let mut words = mask.as_slice().to_vec();
        words.resize(self.words, 0);
        if words.iter().all(|&w| w == 0) {
            return Err(Error::InvalidRequest(format!(
                "response_format: {} allows no token here: it accepts nothing, or nothing \
                 longer than the reply so far",
                match self.format {
                    ResponseFormat::Grammar(_) => "the grammar",
                    ResponseFormat::Regex(_) => "the regular expression",
                    _ => "the JSON schema",
                }
            )));
        }
        Ok(words)
    }

    /// Advances by the token picked (one the last mask allowed).
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| invalid_format(&self.format, &e.to_string()))
    }

    /// Whether the grammar is finished: nothing may follow (an end-of-turn token was accepted,
    /// or the grammar allows no more text).
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    pub fn format(&self) -> &ResponseFormat {
        &self.format
    }
}

/// Whether a grammar is GBNF (llama.cpp's `name ::= …` rules) rather than Lark.
pub fn is_gbnf(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .any(|l| l.contains("::="))
}

/// A GBNF grammar (llama.cpp's) as Lark: `name ::= body` becomes `name: body` on one line
/// (rule names made Lark rule names, `root` the start rule), `[…]` classes and `.` become
/// regular expressions, `#` comments go; strings, groups, alternatives and the repetitions
/// `* + ? {m} {m,} {m,n}` are the same in both.
pub fn gbnf_to_lark(text: &str) -> Result<String> {
    let bad = |msg: String| Error::InvalidRequest(format!("response_format: GBNF grammar: {msg}"));
    let chars: Vec<char> = text.chars().collect();
    let mut rules: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    let rule_name = |name: &str| -> String {
        if name == "root" {
            return "start".into();
        }
        let mut s: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        // A GBNF name may differ from another only in case or dashes: keep them apart.
        s.push_str(&format!("_{:x}", fnv(name)));
        format!("r_{s}")
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(bad(format!("unterminated string at character {start}")));
            }
            i += 1;
            let lit: String = chars[start..i].iter().collect();
            // Lark strings are double-quoted.
            let lit = if c == '\'' {
                format!(
                    "\"{}\"",
                    lit[1..lit.len() - 1]
                        .replace("\\'", "'")
                        .replace('"', "\\\"")
                )
            } else {
                lit
            };
            push_token(&mut rules, lit).map_err(bad)?;
        } else if c == '[' {
            let start = i;
            i += 1;
            if i < chars.len() && chars[i] == '^' {
                i += 1;
            }
            // A `]` right after `[` or `[^` is a member.
            if i < chars.len() && chars[i] == ']' {
                i += 1;
            }
            while i < chars.len() && chars[i] != ']' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err(bad(format!(
                    "unterminated character class at character {start}"
                )));
            }
            i += 1;
            let class: String = chars[start..i].iter().collect();
            push_token(&mut rules, format!("/{}/", class.replace('/', "\\/"))).map_err(bad)?;
        } else if c == '{' {
            let start = i;
            while i < chars.len() && chars[i] != '}' {
                i += 1;
            }
            if i >= chars.len() {
                return Err(bad(format!("unterminated repetition at character {start}")));
            }
            i += 1;
            let rep: String = chars[start..i]
                .iter()
                .filter(|c| !c.is_whitespace())
                .collect();
            push_token(&mut rules, rep).map_err(bad)?;
        } else if c == ':' && chars.get(i + 1) == Some(&':') && chars.get(i + 2) == Some(&'=') {
            return Err(bad(format!("'::=' without a rule name at character {i}")));
        } else if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '-' | '_'))
            {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            // A definition when `::=` follows.
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&':')
                && chars.get(j + 1) == Some(&':')
                && chars.get(j + 2) == Some(&'=')
            {
                rules.push((rule_name(&name), Vec::new()));
                i = j + 3;
            } else {
                push_token(&mut rules, rule_name(&name)).map_err(bad)?;
            }
        } else if matches!(c, '(' | ')' | '|' | '*' | '+' | '?') {
            push_token(&mut rules, c.to_string()).map_err(bad)?;
            i += 1;
        } else if c == '.' {
            push_token(&mut rules, "/(?s:.)/".into()).map_err(bad)?;
            i += 1;
        } else {
            return Err(bad(format!("unexpected '{c}' at character {i}")));
        }
    }
    if !rules.iter().any(|(n, _)| n == "start") {
        return Err(bad("it has no 'root' rule".into()));
    }
    let mut out = String::new();
    for (name, body) in rules {
        if body.is_empty() {
            return Err(bad("a rule has an empty body".into()));
        }
        out.push_str(&name);
        out.push_str(": ");
        out.push_str(&body.join(" "));
        out.push('\n');
    }
    Ok(out)
}

fn push_token(
    rules: &mut [(String, Vec<String>)],
    token: String,
) -> std::result::Result<(), String> {
    match rules.last_mut() {
        Some((_, body)) => {
            body.push(token);
            Ok(())
        }
        None => Err(format!("'{token}' comes before the first rule")),
    }
}

/// FNV-1a of a name, to keep rule names apart.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbnf_becomes_lark() {
        let g = r#"
            # a yes/no answer
            root ::= answer ("." | "!")?
            answer ::= "yes" | 'no'
              | [A-Z] [a-z]{2,5}
            any-char ::= . x
            x ::= [^\]"]*
        "#;
        assert!(is_gbnf(g));
        let lark = gbnf_to_lark(g).unwrap();
        let lines: Vec<&str> = lark.lines().collect();
        assert_eq!(lines.len(), 4, "{lark}");
        assert!(lines[0].starts_with("start: r_answer_"), "{lark}");
        assert!(lines[0].ends_with(r#"( "." | "!" ) ?"#), "{lark}");
        assert!(
            lines[1].contains(r#""yes" | "no" | /[A-Z]/ /[a-z]/ {2,5}"#),
            "{lark}"
        );
        assert!(lines[2].contains("/(?s:.)/"), "{lark}");
        assert!(lines[3].contains(r#"/[^\]"]/ *"#), "{lark}");
        assert!(!is_gbnf("start: \"a\" # ::= in a comment"));
    }

    #[test]
    fn bad_gbnf_is_an_invalid_request() {
        for (g, want) in [
            ("root ::= \"a", "unterminated string"),
            ("root ::= [a-z", "unterminated character class"),
            ("other ::= \"a\"", "no 'root' rule"),
            ("\"a\" root ::= \"b\"", "before the first rule"),
            ("root ::= \"a\" ; ", "unexpected ';'"),
            ("root ::=", "empty body"),
        ] {
            let e = gbnf_to_lark(g).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(e.to_string().contains(want), "{g}: {e}");
        }
    }
}
