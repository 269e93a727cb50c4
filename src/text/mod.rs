//! Text: turning strings into token ids and back.
//!
//! [`tokenizer::Tokenizer`] wraps the `tokenizers` crate and builds it either from a
//! `tokenizer.json` or from the vocabulary a GGUF file carries in its metadata;
//! [`tokenizer::DecodeStream`] turns generated ids into text one token at a time.

pub(crate) mod bpe;
pub mod chat;
pub mod grammar;
pub mod tokenizer;
pub mod tools;

pub use self::chat::{ChatMessage, ChatTemplate};
pub use self::grammar::{Constraint, GrammarVocab, MaskStats, ResponseFormat};
pub use self::tokenizer::{DecodeStream, Tokenizer};
pub use self::tools::{ToolCall, ToolChoice, ToolRequest, ToolSyntax};
