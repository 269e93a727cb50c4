//! Chat templates: a model's own Jinja template (GGUF `tokenizer.chat_template`, or
//! `tokenizer_config.json`'s `chat_template`) rendered with minijinja the way Hugging Face
//! `transformers` renders it: `trim_blocks` and `lstrip_blocks` on, loop controls, Python string
//! methods (`.strip()`, `.startswith()`, `.split()` … through minijinja-contrib's pycompat),
//! `raise_exception(msg)`, `strftime_now(fmt)`, `{% generation %}` … `{% endgeneration %}`
//! blocks (transformers' marker for the assistant's tokens in training; rendering ignores it),
//! Python's str() for lists, dicts and floats in `{{ … }}` and `| string`, and transformers'
//! `tojson` (json.dumps). Known differences that remain: `~` joins a list or dict in
//! minijinja's spelling ({"a": 1}, not {'a': 1}), `dictsort` yields lists, not tuples, and dicts
//! iterate in key order where Python keeps insertion order.
//!
//! The context: `messages` (a list of `{role, content}`), `add_generation_prompt`, `bos_token`,
//! `eos_token`, `tools` = none and `documents` = none (tool use and RAG are not supported yet),
//! plus any extra variables given to [`ChatTemplate::render_with`] (what `apply_chat_template`
//! takes as keyword arguments, e.g. Qwen3's and SmolLM3's `enable_thinking`).

use minijinja::budget::{self, BudgetExceeded};
use minijinja::value::merge_maps;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, State, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::gguf::GgufMetadata;

/// The name the template has inside its environment.
const TEMPLATE: &str = "chat_template";
/// The context variable that carries the render's clock to `strftime_now`.
const NOW_VAR: &str = "__pocketlm_now_unix";
/// The render state's counter of bytes formatted by `{{ … }}` (see [`python_formatter`]).
const EMITTED_VAR: &str = "__pocketlm_emitted";

/// The most template instructions one render may execute (minijinja's fuel). A template comes
/// from the model file, so it is untrusted code: without a budget, three nested
/// `range(100000)` loops spin for days. Real templates take 25 to 60 instructions per message
/// (the templates of tests/fixtures/templates, 800-message conversations), so this allows
/// conversations of 300,000 messages, far beyond any context, and stops a runaway template
/// after a second or so.
pub const MAX_TEMPLATE_FUEL: u64 = 20_000_000;
/// The most bytes one render may produce, counting everything `{{ … }}` formats (also inside
/// `{% set %}` blocks and macros) and the final prompt. 64 MiB of text is several million
/// tokens, more than any model's context.
pub const MAX_TEMPLATE_OUTPUT_BYTES: usize = 64 << 20;
/// The most bytes of values one render may create (strings, lists, maps; cumulative, so a
/// string rebuilt in a loop counts each time), and compiling a template likewise (minijinja
/// folds constant expressions). Without it a template doubles a string in a loop
/// (`{% set ns.s = ns.s ~ ns.s %}`) and a failed allocation aborts the process, the browser's
/// Worker included. Every operation that can build a value much larger than its inputs (`~`,
/// `+`, `*`, `|join`, `|replace`, `|indent`, `|format`, `.replace()`, materializing a lazy
/// list …) is checked against what remains before it allocates. Real templates create 3 to 5
/// times their messages' text plus a few hundred bytes per message (the templates of
/// tests/fixtures/templates: at most 0.6 MB for 2,000 short messages, 24 to 36 MB for 8 MB of
/// text), so renders fail here only past 50 MB or so of text, millions of tokens beyond any
/// context, while a hostile template stays within a few hundred MiB.
pub const MAX_TEMPLATE_VALUE_BYTES: usize = 256 << 20;
/// The largest template source accepted. Real templates are under 20 KiB.
pub const MAX_TEMPLATE_SOURCE_BYTES: usize = 1 << 20;
/// The widest `tojson(indent=…)` accepted.
const MAX_JSON_INDENT: usize = 256;
/// The deepest nesting of lists and dicts a template may build, and that `{{ … }}`, `string` and
/// `tojson` write (and minijinja formats): freeing, comparing or writing a value recurses once
/// per level, and a list wrapped in itself in a loop would overflow the stack. Chat messages and
/// tool schemas nest a few levels.
const MAX_VALUE_DEPTH: usize = budget::MAX_DEPTH;

/// One turn of a conversation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user", "assistant", "tool" (whatever the template knows).
    pub role: String,
    pub content: String,
    /// An assistant turn's tool calls, as templates read them: `[{id, type: "function",
    /// function: {name, arguments}}]` with `arguments` an object (OpenAI sends it as JSON text;
    /// it is parsed for the template, as transformers' callers do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool turn's answer to the call with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool turn's function name, where the request gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tool definitions as JSON text on a system turn, where a template reads them there
    /// (Phi-4-mini's `message['tools']`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..ChatMessage::default()
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        ChatMessage::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        ChatMessage::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        ChatMessage::new("assistant", content)
    }
}

/// A compiled chat template with the model's special tokens.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// How the template's model writes tool calls, read from its source.
    tool_syntax: crate::text::tools::ToolSyntax,
    name: String,
    bos_token: String,
    eos_token: String,
}

/// The error `raise_exception` raises, recognised in the error chain after rendering.
#[derive(Debug)]
struct Raised(String);

/// The error a render raises when its output passes [`MAX_TEMPLATE_OUTPUT_BYTES`].
#[derive(Debug)]
struct OutputLimit;

impl std::fmt::Display for OutputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the rendered prompt exceeds the output limit of {MAX_TEMPLATE_OUTPUT_BYTES} bytes"
        )
    }
}

impl std::error::Error for OutputLimit {}

fn output_limit_error() -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, OutputLimit.to_string())
        .with_source(OutputLimit)
}

/// Bytes formatted so far in one render, kept in the render's state.
#[derive(Debug, Default)]
struct Emitted(std::sync::atomic::AtomicUsize);

impl minijinja::value::Object for Emitted {}

/// Counts `n` more formatted bytes against [`MAX_TEMPLATE_OUTPUT_BYTES`].
fn count_emitted(state: &State, n: usize) -> std::result::Result<(), minijinja::Error> {
    let emitted = state.get_or_set_temp_object(EMITTED_VAR, Emitted::default);
    let before = emitted.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    if before.saturating_add(n) > MAX_TEMPLATE_OUTPUT_BYTES {
        return Err(output_limit_error());
    }
    Ok(())
}

/// The render's output (or `tojson`'s), refusing to grow past `limit` bytes: at most
/// [`MAX_TEMPLATE_OUTPUT_BYTES`].
struct LimitedOutput {
    bytes: Vec<u8>,
    limit: usize,
}

impl LimitedOutput {
    fn new(limit: usize) -> Self {
        LimitedOutput {
            bytes: Vec::new(),
            limit,
        }
    }
}

impl std::io::Write for LimitedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            return Err(std::io::Error::other(OutputLimit));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// Compiles `source`. `name` identifies the template in errors (e.g. the model file). A
    /// syntax error is [`Error::ChatTemplate`] with minijinja's message and the template's line,
    /// as is a source over [`MAX_TEMPLATE_SOURCE_BYTES`].
    ///
    /// Rendering is bounded: at most [`MAX_TEMPLATE_FUEL`] instructions,
    /// [`MAX_TEMPLATE_VALUE_BYTES`] of values created and [`MAX_TEMPLATE_OUTPUT_BYTES`] of
    /// output, else [`Error::ChatTemplate`] naming the limit.
    pub fn new(name: &str, source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        if source.len() > MAX_TEMPLATE_SOURCE_BYTES {
            return Err(Error::ChatTemplate {
                template: name.to_string(),
                line: None,
                message: format!(
                    "the template is {} bytes, over the limit of {MAX_TEMPLATE_SOURCE_BYTES} bytes",
                    source.len()
                ),
            });
        }
        let mut env = Environment::new();
        env.set_fuel(Some(MAX_TEMPLATE_FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(python_methods);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // Python's spelling of values: `{{ x }}` and `x | string` print lists and dicts as
        // Python's str() does ({'a': 'b'}, not {"a": "b"}), and `tojson` is transformers' own
        // (json.dumps: ", " and ": " separators, no HTML escaping, non-ASCII kept).
        env.set_formatter(python_formatter);
        env.add_filter("string", python_string_filter);
        env.add_filter("tojson", tojson);
        // Compiling folds constant expressions (`'x' * 100000000 ~ …`): under the budget too,
        // where a fold that does not fit is left to the render, which refuses it.
        budget::with_budget(MAX_TEMPLATE_VALUE_BYTES, || {
            env.add_template_owned(TEMPLATE, without_generation_tags(source))
        })
        .map_err(|e| template_error(name, e))?;
        Ok(ChatTemplate {
            tool_syntax: crate::text::tools::ToolSyntax::detect(source),
            env,
            name: name.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template of a GGUF file (`tokenizer.chat_template`), with its BOS and EOS tokens'
    /// text from `tokenizer.ggml.tokens` (empty when the file names none).
    pub fn from_gguf(meta: &GgufMetadata) -> Result<Self> {
        if meta.value("tokenizer.chat_template").is_none() {
            return Err(Error::MissingChatTemplate {
                source_name: meta.file().to_string(),
                detail: " (no metadata key 'tokenizer.chat_template')".into(),
            });
        }
        let source = meta.string("tokenizer.chat_template")?;
        let token = |key: &str| -> Result<String> {
            let Some(id) = meta.get_opt::<u32>(key)? else {
                return Ok(String::new());
            };
            let tokens = meta.string_array("tokenizer.ggml.tokens")?;
            Ok(tokens.get(id as usize).cloned().unwrap_or_default())
        };
        let bos = token("tokenizer.ggml.bos_token_id")?;
        let eos = token("tokenizer.ggml.eos_token_id")?;
        ChatTemplate::new(meta.file(), source, &bos, &eos)
    }

    /// The template of a `tokenizer_config.json`. Its `chat_template` is a string, or a list of
    /// `{name, template}`: then `template_name` picks one, and `None` picks "default" (the one
    /// `transformers` uses when no tools are passed). `bos_token` / `eos_token` may be strings
    /// or `{content: …}` objects.
    pub fn from_tokenizer_config(
        json: &str,
        source_name: &str,
        template_name: Option<&str>,
    ) -> Result<Self> {
        let config = parse_json(json, source_name)?;
        let (name, source) = template_in(&config, source_name, template_name)?;
        let (bos, eos) = special_tokens(&config);
        ChatTemplate::new(&name, source, &bos, &eos)
    }

    /// The template of a Hugging Face model folder, where transformers' tokenizer finds it:
    /// `chat_template.jinja` (transformers 4.52 and later save it there instead of in
    /// `tokenizer_config.json`), else `tokenizer_config.json`'s `chat_template`, else
    /// `chat_template.json` (a processor's file: multimodal checkpoints such as Gemma 3 4B).
    /// BOS and EOS come from `tokenizer_config.json`. `file` gives a companion file's text.
    pub fn from_hf_folder<'a>(file: impl Fn(&str) -> Option<&'a str>) -> Result<Self> {
        const CONFIG: &str = "tokenizer_config.json";
        let config = file(CONFIG)
            .map(|json| parse_json(json, CONFIG))
            .transpose()?
            .unwrap_or(serde_json::Value::Null);
        let (bos, eos) = special_tokens(&config);
        if let Some(source) = file("chat_template.jinja") {
            return ChatTemplate::new("chat_template.jinja", source, &bos, &eos);
        }
        if config.get("chat_template").is_some() {
            let (name, source) = template_in(&config, CONFIG, None)?;
            return ChatTemplate::new(&name, source, &bos, &eos);
        }
        const PROCESSOR: &str = "chat_template.json";
        match file(PROCESSOR) {
            Some(json) => {
                let processor = parse_json(json, PROCESSOR)?;
                let (name, source) = template_in(&processor, PROCESSOR, None)?;
                ChatTemplate::new(&name, source, &bos, &eos)
            }
            None => Err(Error::MissingChatTemplate {
                source_name: "the model's folder".into(),
                detail: " (no chat_template.jinja, no 'chat_template' in tokenizer_config.json, \
                         no chat_template.json)"
                    .into(),
            }),
        }
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How this template's model writes tool calls (read from the template's text).
    pub fn tool_syntax(&self) -> crate::text::tools::ToolSyntax {
        self.tool_syntax
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages`; with `add_generation_prompt`, ends with the header of the assistant's
    /// turn. `strftime_now` sees the current time.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_at(messages, add_generation_prompt, now_unix_seconds())
    }

    /// As [`ChatTemplate::render`], with `strftime_now` seeing `now_unix_seconds` (UTC).
    ///
    /// A template error while rendering is [`Error::ChatTemplate`]; a template calling
    /// `raise_exception` (e.g. "roles must alternate") is [`Error::ChatTemplateRejected`].
    pub fn render_at(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        now_unix_seconds: i64,
    ) -> Result<String> {
        self.render_with_at(
            messages,
            add_generation_prompt,
            &serde_json::Value::Null,
            now_unix_seconds,
        )
    }

    /// As [`ChatTemplate::render`], with extra template variables: a JSON object whose keys
    /// become variables, as the keyword arguments of transformers' `apply_chat_template` do, e.g.
    /// `{"enable_thinking": false}` for Qwen3 and SmolLM3. `null` adds none.
    ///
    /// As in transformers, an extra variable replaces `bos_token` / `eos_token`, but not
    /// `messages`, `add_generation_prompt`, `tools` or `documents` (those keys are ignored). Any
    /// other value than an object or null is [`Error::InvalidRequest`].
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
    ) -> Result<String> {
        self.render_with_at(messages, add_generation_prompt, extra, now_unix_seconds())
    }

    /// [`ChatTemplate::render_with`] with `strftime_now` seeing `now_unix_seconds` (UTC).
    pub fn render_with_at(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
        now_unix_seconds: i64,
    ) -> Result<String> {
        self.render_tools_at(
            messages,
            add_generation_prompt,
            extra,
            None,
            now_unix_seconds,
        )
    }

    /// [`ChatTemplate::render_with`] with the template's `tools` variable (see
    /// [`ChatTemplate::render_tools_at`]).
    pub fn render_tools(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        self.render_tools_at(
            messages,
            add_generation_prompt,
            extra,
            tools,
            now_unix_seconds(),
        )
    }

    /// [`ChatTemplate::render_with_at`] with the template's `tools` variable: the request's tool
    /// definitions (`[{type: "function", function: {name, description, parameters}}]`), as
    /// transformers' `apply_chat_template(tools=…)` passes them; `None` leaves it none.
    pub fn render_tools_at(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        now_unix_seconds: i64,
    ) -> Result<String> {
        budget::with_budget(MAX_TEMPLATE_VALUE_BYTES, || {
            self.render_budgeted(
                messages,
                add_generation_prompt,
                extra,
                tools,
                now_unix_seconds,
            )
        })
    }

    /// [`ChatTemplate::render_tools_at`] inside the render's value budget.
    fn render_budgeted(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        extra: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        now_unix_seconds: i64,
    ) -> Result<String> {
        let extra = match extra {
            serde_json::Value::Null => minijinja::context! {},
            serde_json::Value::Object(_) => Value::from_serialize(extra),
            other => {
                return Err(Error::InvalidRequest(format!(
                    "chat template variables must be a JSON object, not {other}"
                )))
            }
        };
        let template = self
            .env
            .get_template(TEMPLATE)
            .map_err(|e| template_error(&self.name, e))?;
        // The last map that has a key wins: what apply_chat_template takes as its own arguments
        // over the caller's variables, and those over the special tokens.
        let ctx = merge_maps([
            minijinja::context! {
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            },
            extra,
            minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                tools => tools.map_or(Value::from(()), Value::from_serialize),
                documents => Value::from(()),
                __pocketlm_now_unix => now_unix_seconds,
            },
        ]);
        let mut out = LimitedOutput::new(MAX_TEMPLATE_OUTPUT_BYTES);
        template
            .render_captured_to(ctx, &mut out)
            .map_err(|e| template_error(&self.name, e))?;
        // A value that passed the budget in the last instruction, or where the error could not
        // be returned (formatting, a conversion), stops the render here.
        if let Some(why) = budget::exceeded() {
            return Err(template_error(&self.name, why.into()));
        }
        // Every write came from a &str, so the bytes are UTF-8.
        String::from_utf8(out.bytes).map_err(|e| Error::ChatTemplate {
            template: self.name.clone(),
            line: None,
            message: format!("the output is not UTF-8: {e}"),
        })
    }
}

/// `source` with transformers' `{% generation %}` and `{% endgeneration %}` tags (its
/// AssistantTracker extension, which marks the assistant's tokens for training and renders its
/// body unchanged) turned into `{% if true %}` and `{% endif %}`, which minijinja knows and which
/// render the same, whitespace control (`-`, `+`) included.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        // The closing "%}" comes after the opening "{%" ("{%}" is not a tag).
        let Some(end) = tag[2..].find("%}").map(|e| e + 2) else {
            break;
        };
        out.push_str(before);
        let inner = &tag[2..end];
        let open = inner.len() - inner.trim_start_matches(['-', '+']).len();
        let close = inner.len() - inner.trim_end_matches(['-', '+']).len();
        let keyword = inner[open..inner.len() - close].trim();
        let replacement = match keyword {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push_str("{%");
                out.push_str(&inner[..open]);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(&inner[inner.len() - close..]);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn template_error(name: &str, e: minijinja::Error) -> Error {
    let budget_error = |why: BudgetExceeded| Error::ChatTemplate {
        template: name.to_string(),
        line: e.line(),
        message: match why {
            BudgetExceeded::Size { .. } => format!(
                "the template's values exceed the value size limit of \
                 {MAX_TEMPLATE_VALUE_BYTES} bytes (a string or list built up without bound, \
                 e.g. doubled in a loop)"
            ),
            BudgetExceeded::Depth => format!(
                "the template's values are nested deeper than the limit of {MAX_VALUE_DEPTH} \
                 levels, or a namespace was given a value holding a namespace (e.g. itself)"
            ),
        },
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(why) = s.downcast_ref::<BudgetExceeded>() {
            return budget_error(*why);
        }
        if let Some(raised) = s.downcast_ref::<Raised>() {
            return Error::ChatTemplateRejected {
                template: name.to_string(),
                message: raised.0.clone(),
            };
        }
        let io_inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if s.downcast_ref::<OutputLimit>().is_some()
            || io_inner.is_some_and(|inner| inner.is::<OutputLimit>())
        {
            return Error::ChatTemplate {
                template: name.to_string(),
                line: e.line(),
                message: OutputLimit.to_string(),
            };
        }
        source = s.source();
    }
    // An error caused by the budget where the budget's own error was lost on the way (an
    // iterator that turned it into an invalid value, a fallback taken instead).
    if let Some(why) = budget::exceeded() {
        return budget_error(why);
    }
    let message = match (e.kind(), e.detail()) {
        (ErrorKind::OutOfFuel, _) => format!(
            "the template ran out of fuel: it used its budget of {MAX_TEMPLATE_FUEL} \
             instructions (a loop that does not end, or far too much work for a chat prompt)"
        ),
        (kind, Some(detail)) => format!("{kind}: {detail}"),
        (kind, None) => kind.to_string(),
    };
    Error::ChatTemplate {
        template: name.to_string(),
        line: e.line(),
        message,
    }
}

/// Writes `{{ value }}` as Jinja2 under Python does: lists, dicts and floats as Python's str()
/// spells them; everything else as minijinja does (which already writes True, False and None).
/// Every byte it writes counts against [`MAX_TEMPLATE_OUTPUT_BYTES`], also where the output is
/// captured (`{% set %}` blocks, macros) rather than written out.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &State,
    value: &Value,
) -> std::result::Result<(), minijinja::Error> {
    let formatted = match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map if !value.is_kwargs() => {
            Some(python_str(value)?)
        }
        ValueKind::Number if !value.is_integer() => Some(python_float(
            f64::try_from(value.clone()).unwrap_or(f64::NAN),
        )),
        _ => None,
    };
    match formatted {
        Some(s) => {
            count_emitted(state, s.len())?;
            out.write_str(&s)
                .map_err(|e| minijinja::Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        None => {
            count_emitted(state, value.as_str().map_or(0, str::len))?;
            minijinja::escape_formatter(out, state, value)
        }
    }
}

/// Why [`python_repr`] stopped.
enum ReprStop {
    /// The text would pass its limit.
    Size,
    /// Lists and dicts nested deeper than [`MAX_VALUE_DEPTH`].
    Depth,
}

/// [`python_repr`] of a list or dict, refused once it passes [`MAX_TEMPLATE_OUTPUT_BYTES`] or
/// what remains of the value budget (a lazily repeated list, `[0] * 10**12`, stops there
/// instead of being walked to its end), or nests deeper than [`MAX_VALUE_DEPTH`].
fn python_str(value: &Value) -> std::result::Result<String, minijinja::Error> {
    let budget_left = budget::remaining().unwrap_or(usize::MAX);
    let limit = MAX_TEMPLATE_OUTPUT_BYTES.min(budget_left);
    let mut s = String::new();
    match python_repr(value, &mut s, limit, 0) {
        Ok(()) => Ok(s),
        Err(ReprStop::Depth) => Err(BudgetExceeded::Depth.into()),
        // Past the value budget before the output limit: the budget's error (and the render
        // stops).
        Err(ReprStop::Size) if budget_left < MAX_TEMPLATE_OUTPUT_BYTES => {
            Err(budget::ensure(usize::MAX)
                .err()
                .unwrap_or_else(output_limit_error))
        }
        Err(ReprStop::Size) => Err(output_limit_error()),
    }
}

/// The `string` filter as Python's str(): a string unchanged, anything else as [`python_repr`].
fn python_string_filter(value: &Value) -> std::result::Result<Value, minijinja::Error> {
    Ok(match value.kind() {
        ValueKind::String => value.clone(),
        ValueKind::Undefined => Value::from(""),
        _ => Value::from(python_str(value)?),
    })
}

/// Python's repr() of a template value, as str() shows the items of a list or dict, at nesting
/// `depth`. Stops, leaving `out` incomplete, as soon as it is clear that `out` would pass
/// `limit` bytes (a list whose items' ", " separators alone would not fit is refused before it
/// is walked), or at [`MAX_VALUE_DEPTH`].
fn python_repr(
    value: &Value,
    out: &mut String,
    limit: usize,
    depth: usize,
) -> std::result::Result<(), ReprStop> {
    let fits = |out: &String, items: Option<usize>| {
        let room = limit.saturating_sub(out.len());
        if out.len() <= limit && items.is_none_or(|n| n <= room / 2 + 1) {
            Ok(())
        } else {
            Err(ReprStop::Size)
        }
    };
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number if !value.is_integer() => out.push_str(&python_float(
            f64::try_from(value.clone()).unwrap_or(f64::NAN),
        )),
        ValueKind::String => python_str_repr(value.as_str().unwrap_or_default(), out, limit)?,
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map if depth >= MAX_VALUE_DEPTH => {
            return Err(ReprStop::Depth)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            fits(out, value.len())?;
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(&item, out, limit, depth + 1)?;
                    fits(out, None)?;
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            fits(out, value.len())?;
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(&key, out, limit, depth + 1)?;
                    out.push_str(": ");
                    let item = value.get_item(&key).unwrap_or_default();
                    python_repr(&item, out, limit, depth + 1)?;
                    fits(out, None)?;
                }
            }
            out.push('}');
        }
        // Formatted by minijinja, which bounds it by the value budget.
        _ => out.push_str(&value.to_string()),
    }
    fits(out, None)
}

/// Python's repr() of a str: single quotes unless the text has a ' and no ", backslash escapes
/// for the quote, backslash and control characters. Stops once `out` would pass `limit` bytes
/// (an escape takes up to 6 bytes per character).
fn python_str_repr(s: &str, out: &mut String, limit: usize) -> std::result::Result<(), ReprStop> {
    if out.len().saturating_add(s.len()).saturating_add(2) > limit {
        return Err(ReprStop::Size);
    }
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        if out.len() > limit {
            return Err(ReprStop::Size);
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{a0}').contains(&c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    Ok(())
}

/// Python's repr() of a float: the shortest digits that read back the same, in positional
/// notation with at least one decimal for exponents -4 to 15, else as 1.5e+20.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{f}");
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)` with those keyword arguments.
fn tojson(value: &Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let bad = |detail: String| minijinja::Error::new(ErrorKind::InvalidOperation, detail);
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_string()),
        Some(v) => {
            let n = i64::try_from(v)?.max(0);
            if n > MAX_JSON_INDENT as i64 {
                return Err(bad(format!(
                    "tojson: indent {n} is over the limit of {MAX_JSON_INDENT}"
                )));
            }
            Some(" ".repeat(n as usize))
        }
    };
    // Written once per level per item: a string indent is bounded like a numeric one.
    if indent.as_ref().is_some_and(|s| s.len() > MAX_JSON_INDENT) {
        return Err(bad(format!(
            "tojson: an indent string is over the limit of {MAX_JSON_INDENT} bytes"
        )));
    }
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators.as_deref() {
        None => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(bad("tojson: separators must be an (item, key) pair".into())),
    };
    // Every item takes at least a byte: a longer (lazily repeated) list cannot fit.
    if value.len().is_some_and(|n| n > MAX_TEMPLATE_OUTPUT_BYTES) {
        return Err(output_limit_error());
    }
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let formatter = PyJson {
        indent,
        item_sep,
        key_sep,
        ensure_ascii,
        level: 0,
        has_value: false,
    };
    // The text is a value too: within what remains of the value budget.
    let budget_left = budget::remaining().unwrap_or(usize::MAX);
    let mut bytes = LimitedOutput::new(MAX_TEMPLATE_OUTPUT_BYTES.min(budget_left));
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    let result = if sort_keys {
        serde::Serialize::serialize(&SortedKeys(value), &mut ser)
    } else {
        serde::Serialize::serialize(value, &mut ser)
    };
    match result {
        Err(e) if e.is_io() => {
            let io = std::io::Error::from(e);
            if io.get_ref().is_some_and(|inner| inner.is::<JsonTooDeep>()) {
                return Err(BudgetExceeded::Depth.into());
            }
            if budget_left < MAX_TEMPLATE_OUTPUT_BYTES {
                return Err(budget::ensure(usize::MAX)
                    .err()
                    .unwrap_or_else(output_limit_error));
            }
            return Err(output_limit_error());
        }
        Err(e) => return Err(bad(format!("tojson: {e}"))),
        Ok(()) => {}
    }
    Ok(Value::from(
        String::from_utf8(bytes.bytes).unwrap_or_default(),
    ))
}

/// A value serialized with its dicts' keys sorted (json.dumps' `sort_keys`), in the order
/// serde_json's own map keeps them, without building a copy of the value.
struct SortedKeys<'a>(&'a Value);

impl serde::Serialize for SortedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap, SerializeSeq};
        let value = self.0;
        match value.kind() {
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter().map_err(S::Error::custom)? {
                    let item = value.get_item(&key).unwrap_or_default();
                    let key = match key.kind() {
                        ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                        ValueKind::Bool => key.is_true().to_string(),
                        ValueKind::Number if key.is_integer() => key.to_string(),
                        ValueKind::Number => python_float(f64::try_from(key).unwrap_or(f64::NAN)),
                        _ => return Err(S::Error::custom("key must be a string")),
                    };
                    entries.push((key, item));
                }
                // As a map keyed by these strings: sorted, and a repeated key keeps its last value.
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.dedup_by(|later, earlier| {
                    let same = later.0 == earlier.0;
                    if same {
                        std::mem::swap(later, earlier);
                    }
                    same
                });
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, item) in &entries {
                    map.serialize_entry(key, &SortedKeys(item))?;
                }
                map.end()
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let mut seq = s.serialize_seq(value.len())?;
                for item in value.try_iter().map_err(S::Error::custom)? {
                    seq.serialize_element(&SortedKeys(&item))?;
                }
                seq.end()
            }
            _ => value.serialize(s),
        }
    }
}

/// The error [`PyJson`] stops with past [`MAX_VALUE_DEPTH`] levels of lists and dicts.
#[derive(Debug)]
struct JsonTooDeep;

impl std::fmt::Display for JsonTooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nested deeper than {MAX_VALUE_DEPTH} levels")
    }
}

impl std::error::Error for JsonTooDeep {}

/// Python json.dumps' layout for serde_json.
struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    level: usize,
    has_value: bool,
}

impl PyJson {
    /// One level deeper; serializing stops past [`MAX_VALUE_DEPTH`] (before recursing further,
    /// so a dict that contains itself ends here).
    fn nest(&mut self) -> std::io::Result<()> {
        if self.level >= MAX_VALUE_DEPTH {
            return Err(std::io::Error::other(JsonTooDeep));
        }
        self.level += 1;
        Ok(())
    }

    fn item<W: ?Sized + std::io::Write>(&self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        if let Some(indent) = &self.indent {
            w.write_all(b"\n")?;
            w.write_all(indent.repeat(self.level).as_bytes())?;
        }
        Ok(())
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.level -= 1;
        if let (Some(indent), true) = (&self.indent, self.has_value) {
            w.write_all(b"\n")?;
            w.write_all(indent.repeat(self.level).as_bytes())?;
        }
        self.has_value = true;
        w.write_all(bracket)
    }
}

impl serde_json::ser::Formatter for PyJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.nest()?;
        self.has_value = false;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.nest()?;
        self.has_value = false;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(self.key_sep.as_bytes())
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn write_f64<W: ?Sized + std::io::Write>(&mut self, w: &mut W, v: f64) -> std::io::Result<()> {
        let s = match python_float(v).as_str() {
            "nan" => "NaN".to_string(),
            "inf" => "Infinity".to_string(),
            "-inf" => "-Infinity".to_string(),
            other => other.to_string(),
        };
        w.write_all(s.as_bytes())
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if !self.ensure_ascii {
            return w.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(Raised(message)),
    )
}

/// Python's string methods (minijinja-contrib's pycompat), with the size of what the ones that
/// can return much more than their string create checked against the value budget before they
/// allocate it. `join` is done here, under the budget.
fn python_methods(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> std::result::Result<Value, minijinja::Error> {
    if let Some(s) = value.as_str() {
        if method == "join" {
            let (items,): (&Value,) = minijinja::value::from_args(args)?;
            let mut joined = budget::BoundedString::new();
            for (i, item) in items.try_iter()?.enumerate() {
                if i > 0 {
                    joined.push_str(s)?;
                }
                write!(joined, "{item}")?;
            }
            return Ok(Value::from(joined.finish()?));
        }
        if let Some(bytes) = python_method_size(s, method, args) {
            budget::ensure(bytes)?;
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// An upper bound of the bytes `s.method(*args)` creates, for the string methods whose result
/// can be much larger than `s`, also those pycompat does not have yet (`center`, `zfill` …, so
/// that they stay bounded when it does); None for the others (minijinja charges their result
/// when it becomes a value, and bounds `format`'s widths itself).
fn python_method_size(s: &str, method: &str, args: &[Value]) -> Option<usize> {
    let int_arg = |i: usize| {
        args.get(i)
            .and_then(|v| i128::try_from(v.clone()).ok())
            .map_or(0, |n| usize::try_from(n.max(0)).unwrap_or(usize::MAX))
    };
    let str_arg = |i: usize| args.get(i).and_then(Value::as_str).unwrap_or("");
    Some(match method {
        // A character's other case is up to three characters.
        "upper" | "lower" | "title" | "capitalize" | "swapcase" | "casefold" => {
            s.len().saturating_mul(3)
        }
        "replace" => {
            let (old, new) = (str_arg(0), str_arg(1));
            let count = args
                .get(2)
                .and_then(|v| i64::try_from(v.clone()).ok())
                .filter(|&n| n >= 0)
                .map_or(usize::MAX, |n| n as usize);
            // "" matches before every character and at the end.
            let matches = if old.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(old).count()
            };
            s.len()
                .saturating_add(new.len().saturating_mul(matches.min(count)))
        }
        // A list item per line.
        "splitlines" => (s.bytes().filter(|&b| b == b'\n').count() + 1)
            .saturating_mul(std::mem::size_of::<Value>())
            .saturating_add(s.len()),
        // Padding: up to four bytes per fill character.
        "center" | "ljust" | "rjust" => int_arg(0).saturating_mul(4).saturating_add(s.len()),
        "zfill" => int_arg(0).saturating_add(s.len()),
        "expandtabs" => s.len().saturating_mul(if args.is_empty() {
            8
        } else {
            int_arg(0).max(1)
        }),
        _ => return None,
    })
}

fn strftime_now(state: &State, format: String) -> std::result::Result<String, minijinja::Error> {
    // A directive of two bytes writes at most ten ("%F": 2024-07-26).
    budget::ensure(format.len().saturating_mul(5))?;
    let now = state
        .lookup(NOW_VAR)
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    strftime(now, &format)
        .map_err(|detail| minijinja::Error::new(ErrorKind::InvalidOperation, detail))
}

fn now_unix_seconds() -> i64 {
    #[cfg(target_arch = "wasm32")]
    {
        (js_sys::Date::now() / 1000.0).floor() as i64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Python's `strftime` for the C locale in UTC, for the directives chat templates use.
pub fn strftime(unix_seconds: i64, format: &str) -> std::result::Result<String, String> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            return Err("strftime_now: format ends with a lone '%'".into());
        };
        match d {
            'Y' => out.push_str(&year.to_string()),
            'y' => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            'm' => out.push_str(&format!("{month:02}")),
            'd' => out.push_str(&format!("{day:02}")),
            'e' => out.push_str(&format!("{day:2}")),
            'j' => out.push_str(&format!("{yday:03}")),
            'B' => out.push_str(MONTHS[month as usize - 1]),
            'b' | 'h' => out.push_str(&MONTHS[month as usize - 1][..3]),
            'A' => out.push_str(WEEKDAYS[weekday]),
            'a' => out.push_str(&WEEKDAYS[weekday][..3]),
            'H' => out.push_str(&format!("{hour:02}")),
            'I' => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'M' => out.push_str(&format!("{minute:02}")),
            'S' => out.push_str(&format!("{second:02}")),
            'F' => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            '%' => out.push('%'),
            other => return Err(format!("strftime_now: unsupported directive '%{other}'")),
        }
    }
    Ok(out)
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_json(json: &str, source_name: &str) -> Result<serde_json::Value> {
    serde_json::from_str(json).map_err(|e| Error::InvalidHeader {
        file: source_name.to_string(),
        detail: format!("not valid JSON: {e}"),
    })
}

/// The `chat_template` of a `tokenizer_config.json` or `chat_template.json`, with the name
/// errors give it: a string, or the entry of a `{name, template}` list that `template_name`
/// names ("default" when `None`).
fn template_in<'c>(
    config: &'c serde_json::Value,
    source_name: &str,
    template_name: Option<&str>,
) -> Result<(String, &'c str)> {
    let missing = |detail: String| Error::MissingChatTemplate {
        source_name: source_name.to_string(),
        detail,
    };
    let wanted = template_name.unwrap_or("default");
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok((source_name.to_string(), s.as_str())),
        Some(serde_json::Value::Array(list)) => {
            let mut names = Vec::new();
            let mut found = None;
            for entry in list {
                let n = entry.get("name").and_then(|v| v.as_str());
                let t = entry.get("template").and_then(|v| v.as_str());
                if let (Some(n), Some(t)) = (n, t) {
                    names.push(n.to_string());
                    if n == wanted {
                        found = Some(t);
                    }
                }
            }
            let source = found.ok_or_else(|| {
                missing(format!(
                    " named '{wanted}' (it has: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            })?;
            Ok((format!("{source_name}#{wanted}"), source))
        }
        Some(_) => Err(missing(
            " ('chat_template' is neither a string nor a list)".into(),
        )),
        None => Err(missing(" (no 'chat_template' key)".into())),
    }
}

/// `bos_token` and `eos_token` of a `tokenizer_config.json`: strings or `{content: …}` objects;
/// empty where absent.
fn special_tokens(config: &serde_json::Value) -> (String, String) {
    let token = |key: &str| -> String {
        match config.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        }
    };
    (token("bos_token"), token("eos_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_an_if_true_block() {
        let src = "A{% generation %}B{%- endgeneration -%} C{%+generation+%}{%endgeneration%}\n\
                   {{ add_generation_prompt }}{% if x %}{% endif %}{# generation #}{% set";
        assert_eq!(
            without_generation_tags(src),
            "A{% if true %}B{%- endif -%} C{%+ if true +%}{% endif %}\n\
             {{ add_generation_prompt }}{% if x %}{% endif %}{# generation #}{% set"
        );
        // Found by the chat_template fuzzer: "{%}" has its "%}" inside the "{%".
        assert_eq!(without_generation_tags("a{%}b"), "a{%}b");
        let t = ChatTemplate::new(
            "gen",
            "{% for m in messages %}\n  {% generation %}\n  [{{ m.content }}]\n  {% endgeneration %}\n{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false)
                .unwrap(),
            "  [a]\n  [b]\n"
        );
    }

    #[test]
    fn extra_variables_sit_between_the_arguments_and_the_special_tokens() {
        let t = ChatTemplate::new(
            "vars",
            "{{ enable_thinking }}|{{ bos_token }}|{{ messages | length }}|{{ tools is none }}|\
             {{ documents is none }}|{{ add_generation_prompt }}|{{ other is defined }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let msgs = [ChatMessage::user("hi")];
        let extra = serde_json::json!({
            "enable_thinking": false,
            "bos_token": "<B>",
            "messages": [],
            "tools": [1],
            "documents": [1],
            "add_generation_prompt": true,
        });
        assert_eq!(
            t.render_with_at(&msgs, false, &extra, 0).unwrap(),
            "False|<B>|1|True|True|False|False"
        );
        assert_eq!(
            t.render_with_at(&msgs, true, &serde_json::Value::Null, 0)
                .unwrap(),
            "|<s>|1|True|True|True|False"
        );
        let err = t
            .render_with_at(&msgs, true, &serde_json::json!([1]), 0)
            .unwrap_err();
        assert_eq!(err.code(), "invalid_request");
    }

    #[test]
    fn strftime_known_dates() {
        // 2024-07-26 00:00:00 UTC was a Friday, day 208.
        let t = 1_721_952_000;
        assert_eq!(strftime(t, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime(
                t + 13 * 3600 + 5 * 60 + 9,
                "%A %B %e %j %H:%M:%S %I%p %y %%"
            )
            .unwrap(),
            "Friday July 26 208 13:05:09 01PM 24 %"
        );
        assert_eq!(strftime(0, "%F %a").unwrap(), "1970-01-01 Thu");
        assert_eq!(strftime(-86_400, "%F").unwrap(), "1969-12-31");
        assert_eq!(strftime(951_782_400, "%F").unwrap(), "2000-02-29");
        assert!(strftime(0, "%Q").is_err());
    }
}
