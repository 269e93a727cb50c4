//! OpenAI-style generation requests as JSON: `messages` (a chat, through the model's template)
//! or `prompt` (plain text), and the sampling options. The wasm bindings (`web.rs`) hand the
//! page's request over as JSON and read it here, so the same parser runs (and is fuzzed and
//! tested) natively. Every problem is [`Error::InvalidRequest`] naming the field.

use serde_json::Value;

use crate::engine::GenerateOptions;
use crate::error::{Error, Result};
use crate::sample::{SamplingParams, MAX_TOP_LOGPROBS};
use crate::text::tools::Tool;
use crate::text::{ChatMessage, ResponseFormat, ToolChoice, ToolRequest};

/// What to generate from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// The messages, the extra template variables (`chat_template_kwargs`, or null) and the
    /// tools the model may call.
    Chat(Vec<ChatMessage>, Value, Option<ToolRequest>),
    Text(String),
}

/// How much of a value an error message shows.
const SHOWN_CHARS: usize = 200;

/// A value as JSON for error messages, cut after [`SHOWN_CHARS`] characters.
fn describe(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

/// A field that is present and not null.
fn get<'a>(request: &'a Value, key: &str) -> Option<&'a Value> {
    request.get(key).filter(|v| !v.is_null())
}

fn positive_int(v: &Value, name: &str) -> Result<usize> {
    match v.as_f64() {
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 1e9 => Ok(n as usize),
        _ => Err(Error::InvalidRequest(format!(
            "{name} must be a positive integer, not {}",
            describe(v)
        ))),
    }
}

/// A number option that must be finite, or absent.
fn number(request: &Value, name: &str) -> Result<Option<f32>> {
    match get(request, name) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() => Ok(Some(n as f32)),
            _ => Err(Error::InvalidRequest(format!(
                "{name} must be a finite number, not {}",
                describe(v)
            ))),
        },
    }
}

/// [`parse_request`] of JSON text.
pub fn parse_request_json(json: &str) -> Result<(GenerateOptions, Prompt)> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::InvalidRequest(format!("the request is not valid JSON: {e}")))?;
    parse_request(&value)
}

/// The request fields PocketLM reads.
const READ: &[&str] = &[
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "chat_template_kwargs",
    "response_format",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "n",
    "stream",
    "stream_options",
];

/// Fields that do not change the reply, accepted and not used: the model answering is the one
/// loaded, and the rest is bookkeeping for hosted services. (`signal` is the JavaScript API's.)
const IGNORED: &[&str] = &[
    "model",
    "user",
    "store",
    "metadata",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "signal",
];

/// OpenAI fields PocketLM does not implement yet, with what to do instead. A request that sets
/// one is refused: a reply that silently ignored it would not be what was asked for.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    ("functions", "function calls are not supported"),
    ("function_call", "function calls are not supported"),
    ("audio", "PocketLM's models read and write text only"),
    ("modalities", "PocketLM's models read and write text only"),
    ("prediction", "predicted outputs are not supported"),
    ("web_search_options", "PocketLM does not search the web"),
    (
        "reasoning_effort",
        "set the model's own switch in chat_template_kwargs instead",
    ),
    ("verbosity", "not supported"),
    ("best_of", "one completion per request"),
    ("echo", "the prompt is not echoed"),
    ("suffix", "insertion (a suffix) is not supported"),
];

/// Refuses a field PocketLM would otherwise drop: one it does not implement (unless set to its
/// default: `logprobs: false`, empty `tools`, `tool_choice: "none"`, …) or does not know.
fn refuse_unused_fields(request: &serde_json::Map<String, Value>) -> Result<()> {
    for (key, v) in request {
        if READ.contains(&key.as_str()) || IGNORED.contains(&key.as_str()) {
            continue;
        }
        let is_default = match (key.as_str(), v) {
            (_, Value::Null) => true,
            ("echo", Value::Bool(false)) => true,
            ("functions", Value::Array(a)) => a.is_empty(),
            ("function_call", Value::String(s)) => s == "none",
            ("modalities", Value::Array(a)) => a.iter().all(|m| m == "text"),
            ("best_of", Value::Number(n)) => n.as_f64() == Some(1.0),
            _ => false,
        };
        if is_default {
            continue;
        }
        return Err(Error::InvalidRequest(
            match NOT_IMPLEMENTED.iter().find(|(k, _)| k == key) {
                Some((_, why)) => format!("{key} is not supported: {why}"),
                None => format!(
                    "unknown field {key} (PocketLM reads {}; and accepts {})",
                    READ.join(", "),
                    IGNORED.join(", ")
                ),
            },
        ));
    }
    Ok(())
}

/// Reads an OpenAI-style request: `messages` or `prompt`, `max_tokens` (or
/// `max_completion_tokens`), `temperature`, `top_p`, `top_k`, `min_p`, `seed`, `stop`,
/// `frequency_penalty`, `presence_penalty`, `repetition_penalty`, `chat_template_kwargs`,
/// `response_format`, `n` (1). A field that would change the reply and is not read here is an
/// error naming it (see [`NOT_IMPLEMENTED`]); `model` and other bookkeeping are accepted.
pub fn parse_request(request: &Value) -> Result<(GenerateOptions, Prompt)> {
    let Some(fields) = request.as_object() else {
        return Err(Error::InvalidRequest(
            "the request must be an object".into(),
        ));
    };
    refuse_unused_fields(fields)?;
    if let Some(n) = get(request, "n") {
        if n.as_f64() != Some(1.0) {
            return Err(Error::InvalidRequest(format!(
                "n must be 1 (one choice per request), not {}",
                describe(n)
            )));
        }
    }
    if let Some(s) = get(request, "stream_options") {
        if !s.is_object() {
            return Err(Error::InvalidRequest(format!(
                "stream_options must be an object such as {{\"include_usage\": true}}, not {}",
                describe(s)
            )));
        }
        if let Some(u) = get(s, "include_usage") {
            if !u.is_boolean() {
                return Err(Error::InvalidRequest(format!(
                    "stream_options.include_usage must be a boolean, not {}",
                    describe(u)
                )));
            }
        }
    }
    let mut p = SamplingParams::default();
    for (name, field) in [
        ("temperature", &mut p.temperature),
        ("top_p", &mut p.top_p),
        ("min_p", &mut p.min_p),
        ("frequency_penalty", &mut p.frequency_penalty),
        ("presence_penalty", &mut p.presence_penalty),
        ("repetition_penalty", &mut p.repetition_penalty),
    ] {
        if let Some(t) = number(request, name)? {
            *field = t;
        }
    }
    if let Some(v) = get(request, "top_k") {
        p.top_k = match v.as_f64() {
            Some(0.0) => 0,
            _ => positive_int(v, "top_k")?,
        };
    }
    if let Some(v) = get(request, "seed") {
        p.seed = match v.as_f64() {
            Some(n) if n.fract() == 0.0 && n.abs() <= 2f64.powi(53) => Some(n as i64 as u64),
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "seed must be an integer, not {}",
                    describe(v)
                )))
            }
        };
    }
    if let Some(v) = get(request, "logit_bias") {
        p.logit_bias = parse_logit_bias(v)?;
    }
    p.validate()?;
    let max_tokens = match (
        get(request, "max_tokens"),
        get(request, "max_completion_tokens"),
    ) {
        (Some(v), _) => Some(positive_int(v, "max_tokens")?),
        (None, Some(v)) => Some(positive_int(v, "max_completion_tokens")?),
        (None, None) => None,
    };
    let stop_error = |v: &Value| {
        Error::InvalidRequest(format!(
            "stop must be a string or an array of strings, not {}",
            describe(v)
        ))
    };
    let stop = match get(request, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(v @ Value::Array(list)) => list
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| stop_error(v)))
            .collect::<Result<_>>()?,
        Some(v) => return Err(stop_error(v)),
    };
    let tools = parse_tools(request)?;
    let prompt = match (get(request, "messages"), get(request, "prompt")) {
        (Some(m), None) => Prompt::Chat(parse_messages(m)?, parse_template_kwargs(request)?, tools),
        (None, Some(_)) if tools.is_some() => {
            return Err(Error::InvalidRequest(
                "tools need messages (a chat): a plain prompt has no template to give them to"
                    .into(),
            ))
        }
        (None, Some(t)) => Prompt::Text(
            t.as_str()
                .ok_or_else(|| {
                    Error::InvalidRequest(format!("prompt must be a string, not {}", describe(t)))
                })?
                .to_string(),
        ),
        (Some(_), Some(_)) => {
            return Err(Error::InvalidRequest(
                "give either messages or prompt, not both".into(),
            ))
        }
        (None, None) => {
            return Err(Error::InvalidRequest(
                "the request needs messages (a chat) or prompt (plain text)".into(),
            ))
        }
    };
    let options = GenerateOptions {
        sampling: p,
        max_tokens,
        stop,
        ignore_eos: false,
        pipeline: true,
        gpu_nucleus: true,
        response_format: parse_response_format(request)?,
        logprobs: parse_logprobs(request)?,
    };
    Ok((options, prompt))
}

/// `response_format`: OpenAI's `{type: "text" | "json_object" | "json_schema", json_schema:
/// {name, schema, strict}}`, WebLLM's `{type: "json_object", schema: "<JSON text>"}`, and
/// PocketLM's `{type: "grammar", grammar: "<Lark or GBNF>"}` and `{type: "regex", pattern}`.
fn parse_response_format(request: &Value) -> Result<Option<ResponseFormat>> {
    let Some(rf) = get(request, "response_format") else {
        return Ok(None);
    };
    let bad = |msg: String| Error::InvalidRequest(format!("response_format: {msg}"));
    let text = |key: &str| -> Result<String> {
        match get(rf, key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(bad(format!("{key} must be a string, not {}", describe(v)))),
            None => Err(bad(format!(
                "type '{}' needs {key}",
                rf["type"].as_str().unwrap_or("")
            ))),
        }
    };
    match get(rf, "type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => match get(rf, "schema") {
            None => Ok(Some(ResponseFormat::JsonObject)),
            // WebLLM passes the schema as JSON text; take an object too.
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(|v| Some(ResponseFormat::JsonSchema(v)))
                .map_err(|e| bad(format!("schema is not valid JSON: {e}"))),
            Some(v) => Ok(Some(ResponseFormat::JsonSchema(v.clone()))),
        },
        Some("json_schema") => {
            let Some(js) = get(rf, "json_schema").filter(|v| v.is_object()) else {
                return Err(bad(
                    "type 'json_schema' needs json_schema: {name, schema, strict}".into(),
                ));
            };
            match get(js, "schema") {
                Some(schema) => Ok(Some(ResponseFormat::JsonSchema(schema.clone()))),
                None => Err(bad("json_schema.schema is missing".into())),
            }
        }
        Some("grammar") => Ok(Some(ResponseFormat::Grammar(text("grammar")?))),
        Some("regex") => Ok(Some(ResponseFormat::Regex(text("pattern")?))),
        Some(other) => Err(bad(format!(
            "type '{other}' is not supported (text, json_object, json_schema, grammar, regex)"
        ))),
        None => Err(bad(format!(
            "must be an object with a type such as {{\"type\": \"json_object\"}}, not {}",
            describe(rf)
        ))),
    }
}

/// `tools` (`[{type: "function", function: {name, description, parameters}}]`), `tool_choice`
/// (`"none"`, `"auto"`, `"required"` or `{type: "function", function: {name}}`; default `auto`
/// with tools) and `parallel_tool_calls` (a boolean). No tools: `None` (a `tool_choice` other
/// than `none` is then an error).
pub fn parse_tools(request: &Value) -> Result<Option<ToolRequest>> {
    let bad = |msg: String| Error::InvalidRequest(msg);
    if let Some(v) = get(request, "parallel_tool_calls") {
        if !v.is_boolean() {
            return Err(bad(format!(
                "parallel_tool_calls must be a boolean, not {}",
                describe(v)
            )));
        }
    }
    let tools: Vec<Tool> = match get(request, "tools") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = t.get("function").filter(|f| f.is_object());
                let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
                match (t.get("type").and_then(Value::as_str), name) {
                    (Some("function"), Some(name)) if !name.is_empty() => {
                        let parameters = f
                            .and_then(|f| get(f, "parameters"))
                            .cloned()
                            .unwrap_or_else(|| serde_json::json!({"type": "object"}));
                        if !parameters.is_object() {
                            return Err(bad(format!(
                                "tools[{i}].function.parameters must be a JSON schema object, \
                                 not {}",
                                describe(&parameters)
                            )));
                        }
                        Ok(Tool {
                            name: name.to_string(),
                            parameters,
                            definition: t.clone(),
                        })
                    }
                    _ => Err(bad(format!(
                        "tools[{i}] must be {{type: \"function\", function: {{name, description, \
                         parameters}}}}, not {}",
                        describe(t)
                    ))),
                }
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(bad(format!(
                "tools must be an array of {{type: \"function\", function: {{…}}}}, not {}",
                describe(v)
            )))
        }
    };
    for (i, t) in tools.iter().enumerate() {
        if tools[..i].iter().any(|o| o.name == t.name) {
            return Err(bad(format!("tools: two functions are named '{}'", t.name)));
        }
    }
    let choice = match get(request, "tool_choice") {
        None if tools.is_empty() => ToolChoice::None,
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "tool_choice must be \"none\", \"auto\", \"required\" or {{type: \
                     \"function\", function: {{name}}}}, not \"{other}\""
                )))
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if tools.iter().any(|t| t.name == name) => {
                ToolChoice::Named(name.to_string())
            }
            Some(name) => {
                return Err(bad(format!(
                    "tool_choice names the function '{name}', which is not among the tools ({})",
                    tools
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            None => {
                return Err(bad(format!(
                    "tool_choice must be a string or {{type: \"function\", function: {{name}}}}, \
                     not {}",
                    describe(v)
                )))
            }
        },
    };
    if tools.is_empty() {
        return match choice {
            ToolChoice::None => Ok(None),
            _ => Err(bad(
                "tool_choice asks for a call, and there are no tools".into()
            )),
        };
    }
    Ok(Some(ToolRequest { tools, choice }))
}

/// `logprobs` and `top_logprobs`: chat's `logprobs: true` with `top_logprobs` (0–20), or the
/// legacy completions' `logprobs: n` (the alternatives per token). The number of alternatives,
/// or `None`.
fn parse_logprobs(request: &Value) -> Result<Option<usize>> {
    let top = match get(request, "top_logprobs") {
        None => None,
        Some(v) => match v.as_f64() {
            Some(n) if n.fract() == 0.0 && (0.0..=MAX_TOP_LOGPROBS as f64).contains(&n) => {
                Some(n as usize)
            }
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "top_logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, not {}",
                    describe(v)
                )))
            }
        },
    };
    match (get(request, "logprobs"), top) {
        (None | Some(Value::Bool(false)), None) => Ok(None),
        (None | Some(Value::Bool(false)), Some(_)) => Err(Error::InvalidRequest(
            "top_logprobs needs logprobs: true".into(),
        )),
        (Some(Value::Bool(true)), top) => Ok(Some(top.unwrap_or(0))),
        (Some(v), None)
            if v.as_f64().is_some_and(|n| {
                n.fract() == 0.0 && (0.0..=MAX_TOP_LOGPROBS as f64).contains(&n)
            }) =>
        {
            Ok(v.as_f64().map(|n| n as usize))
        }
        (Some(v), _) => Err(Error::InvalidRequest(format!(
            "logprobs must be true or false (chat) or an integer from 0 to {MAX_TOP_LOGPROBS} \
             (completions), not {}",
            describe(v)
        ))),
    }
}

/// `logit_bias`: an object from token ids (as strings, OpenAI's form) to biases in [−100, 100].
fn parse_logit_bias(v: &Value) -> Result<Vec<(u32, f32)>> {
    let bad = |what: String| Error::InvalidRequest(format!("logit_bias: {what}"));
    let Some(map) = v.as_object() else {
        return Err(bad(format!(
            "must be an object from token ids to biases such as {{\"50256\": -100}}, not {}",
            describe(v)
        )));
    };
    map.iter()
        .map(|(k, b)| {
            let token: u32 = k
                .trim()
                .parse()
                .map_err(|_| bad(format!("'{k}' is not a token id")))?;
            match b.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((token, b as f32)),
                _ => Err(bad(format!(
                    "token {token}'s bias must be a number in [-100, 100], not {}",
                    describe(b)
                ))),
            }
        })
        .collect()
}

/// `chat_template_kwargs`: an object of extra chat-template variables, or absent (null).
fn parse_template_kwargs(request: &Value) -> Result<Value> {
    match get(request, "chat_template_kwargs") {
        None => Ok(Value::Null),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(v) => Err(Error::InvalidRequest(format!(
            "chat_template_kwargs must be an object such as {{\"enable_thinking\": false}}, not {}",
            describe(v)
        ))),
    }
}

/// `[{role, content}, …]` with string roles and contents, at least one message.
pub fn parse_messages(v: &Value) -> Result<Vec<ChatMessage>> {
    let Some(list) = v.as_array() else {
        return Err(Error::InvalidRequest(format!(
            "messages must be an array of {{role, content}}, not {}",
            describe(v)
        )));
    };
    if list.is_empty() {
        return Err(Error::InvalidRequest("messages is empty".into()));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = |k: &str| get(m, k).and_then(Value::as_str);
            let calls = get(m, "tool_calls");
            // An assistant turn that only calls tools may have no content.
            let content = match (field("content"), get(m, "content"), calls) {
                (Some(c), _, _) => Some(c),
                (None, None, Some(_)) => Some(""),
                _ => None,
            };
            let mut message = match (field("role"), content) {
                // OpenAI's developer messages are system messages to a template.
                (Some("developer"), Some(content)) => ChatMessage::system(content),
                (Some(role), Some(content)) if !role.is_empty() => ChatMessage::new(role, content),
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "messages[{i}] must be {{role: string, content: string}}, not {}",
                        describe(m)
                    )))
                }
            };
            if let Some(calls) = calls {
                message.tool_calls = Some(parse_history_calls(calls, i)?);
            }
            message.tool_call_id = field("tool_call_id").map(str::to_string);
            message.name = field("name").map(str::to_string);
            Ok(message)
        })
        .collect()
}

/// An assistant turn's `tool_calls` as templates read them: each call's `function.arguments`
/// (JSON text in OpenAI's form) parsed into an object.
fn parse_history_calls(calls: &Value, i: usize) -> Result<Value> {
    let Some(list) = calls.as_array() else {
        return Err(Error::InvalidRequest(format!(
            "messages[{i}].tool_calls must be an array, not {}",
            describe(calls)
        )));
    };
    list.iter()
        .enumerate()
        .map(|(j, call)| {
            let mut call = call.clone();
            let Some(f) = call.get_mut("function").filter(|f| f.is_object()) else {
                return Err(Error::InvalidRequest(format!(
                    "messages[{i}].tool_calls[{j}] must be {{id, type: \"function\", function: \
                     {{name, arguments}}}}"
                )));
            };
            if let Some(Value::String(text)) = f.get("arguments") {
                let parsed: Value = serde_json::from_str(text).map_err(|e| {
                    Error::InvalidRequest(format!(
                        "messages[{i}].tool_calls[{j}].function.arguments is not JSON: {e}"
                    ))
                })?;
                f["arguments"] = parsed;
            }
            Ok(call)
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        let e = parse_request(&v).unwrap_err();
        assert_eq!(e.code(), "invalid_request", "{e}");
        e.to_string()
    }

    #[test]
    fn a_full_chat_request() {
        let (o, p) = parse_request(&json!({
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 16, "temperature": 0, "top_k": 0, "top_p": 0.9, "seed": 7,
            "stop": ["\n", "END"], "chat_template_kwargs": {"enable_thinking": false},
            "signal": {}, "stream": true,
        }))
        .unwrap();
        assert_eq!(o.max_tokens, Some(16));
        assert_eq!(o.sampling.temperature, 0.0);
        assert_eq!(o.sampling.top_p, 0.9);
        assert_eq!(o.sampling.seed, Some(7));
        assert_eq!(o.stop, ["\n", "END"]);
        assert_eq!(
            p,
            Prompt::Chat(
                vec![ChatMessage::user("Hi")],
                json!({"enable_thinking": false}),
                None
            )
        );
        let (o, p) = parse_request_json(r#"{"prompt": "x", "stop": "y", "seed": null}"#).unwrap();
        assert_eq!((o.stop, o.sampling.seed), (vec!["y".to_string()], None));
        assert_eq!(p, Prompt::Text("x".into()));
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert!(err(json!([1])).contains("must be an object"));
        assert!(err(json!({})).contains("needs messages"));
        assert!(err(json!({"prompt": "a", "messages": []})).contains("not both"));
        assert!(err(json!({"messages": []})).contains("messages is empty"));
        assert!(err(json!({"messages": [{"role": "", "content": "x"}]})).contains("messages[0]"));
        assert!(err(json!({"prompt": 1})).contains("prompt must be a string"));
        assert!(err(json!({"prompt": "a", "max_tokens": 0})).contains("max_tokens"));
        assert!(err(json!({"prompt": "a", "max_tokens": 1.5})).contains("max_tokens"));
        assert!(err(json!({"prompt": "a", "top_k": -1})).contains("top_k"));
        assert!(err(json!({"prompt": "a", "seed": 0.5})).contains("seed"));
        assert!(err(json!({"prompt": "a", "temperature": "hot"})).contains("temperature"));
        assert!(err(json!({"prompt": "a", "stop": [1]})).contains("stop"));
        assert!(err(
            json!({"messages": [{"role": "u", "content": "x"}], "chat_template_kwargs": 1})
        )
        .contains("chat_template_kwargs"));
        let long = "x".repeat(10_000);
        assert!(err(json!({ "prompt": "a", "stop": { "k": long } })).len() < 400);
        let e = parse_request_json("{").unwrap_err();
        assert_eq!(e.code(), "invalid_request");
    }

    #[test]
    fn fields_that_would_be_dropped_are_refused_by_name() {
        let base = || json!({"prompt": "a", "model": "x", "user": "u", "metadata": {"k": "v"}});
        parse_request(&base()).unwrap();
        let with = |k: &str, v: Value| {
            let mut r = base();
            r[k] = v;
            parse_request(&r)
        };
        // Defaults of unimplemented fields are fine.
        for (k, v) in [
            ("logprobs", json!(false)),
            ("tools", json!([])),
            ("parallel_tool_calls", json!(false)),
            ("tool_choice", json!("none")),
            ("logit_bias", json!({})),
            ("logit_bias", json!({"5": 10, "7": -100})),
            ("logprobs", json!(true)),
            ("logprobs", json!(3)),
            ("modalities", json!(["text"])),
            ("n", json!(1)),
            ("stream_options", json!({"include_usage": true})),
            ("max_completion_tokens", json!(7)),
        ] {
            with(k, v.clone()).unwrap_or_else(|e| panic!("{k}: {v}: {e}"));
        }
        assert_eq!(
            with("max_completion_tokens", json!(7))
                .unwrap()
                .0
                .max_tokens,
            Some(7)
        );
        for (k, v, want) in [
            ("logprobs", json!("yes"), "logprobs must be true or false"),
            (
                "top_logprobs",
                json!(3),
                "top_logprobs needs logprobs: true",
            ),
            ("logprobs", json!(21), "from 0 to 20"),
            ("tools", json!([{"type": "function"}]), "tools[0] must be"),
            ("tool_choice", json!("required"), "there are no tools"),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
                "tools need messages",
            ),
            ("logit_bias", json!({"x": 10}), "'x' is not a token id"),
            (
                "logit_bias",
                json!({"5": 101}),
                "bias must be a number in [-100, 100]",
            ),
            ("logit_bias", json!([5]), "must be an object"),
            ("audio", json!({"voice": "x"}), "audio"),
            ("n", json!(2), "n must be 1"),
            ("frobnicate", json!(1), "unknown field frobnicate"),
            (
                "stream_options",
                json!(true),
                "stream_options must be an object",
            ),
            (
                "stream_options",
                json!({"include_usage": "yes"}),
                "include_usage must be a boolean",
            ),
        ] {
            let e = with(k, v).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(e.to_string().contains(want), "{k}: {e}");
        }
    }

    #[test]
    fn tools_choices_and_tool_turns() {
        let weather = json!({"type": "function", "function": {"name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}});
        let messages = json!([
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        ]);
        let parse = |extra: Value| {
            let mut r = json!({"messages": messages, "tools": [weather]});
            for (k, v) in extra.as_object().unwrap() {
                r[k] = v.clone();
            }
            parse_request(&r).map(|(_, p)| p)
        };
        let Prompt::Chat(m, _, Some(tools)) = parse(json!({})).unwrap() else {
            panic!("no tools")
        };
        assert_eq!(tools.choice, ToolChoice::Auto);
        assert_eq!(tools.tools[0].name, "weather");
        assert_eq!(m[0].role, "system");
        assert_eq!(
            m[2].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
            json!({"city": "Oslo"})
        );
        assert_eq!(
            (m[2].content.as_str(), m[3].tool_call_id.as_deref()),
            ("", Some("c1"))
        );
        for (choice, want) in [
            (json!("none"), ToolChoice::None),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "weather"}}),
                ToolChoice::Named("weather".into()),
            ),
        ] {
            let Prompt::Chat(_, _, Some(t)) = parse(json!({"tool_choice": choice})).unwrap() else {
                panic!()
            };
            assert_eq!(t.choice, want);
        }
        for (extra, want) in [
            (
                json!({"tool_choice": {"type": "function", "function": {"name": "x"}}}),
                "'x'",
            ),
            (json!({"tool_choice": "sometimes"}), "tool_choice must be"),
            (
                json!({"tools": [weather, weather]}),
                "two functions are named 'weather'",
            ),
            (json!({"parallel_tool_calls": "yes"}), "parallel_tool_calls"),
        ] {
            let e = parse(extra.clone()).unwrap_err();
            assert!(e.to_string().contains(want), "{extra}: {e}");
        }
        let bad_args = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c",
            "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]});
        assert!(parse_request(&bad_args)
            .unwrap_err()
            .to_string()
            .contains("arguments is not JSON"));
    }

    #[test]
    fn response_formats() {
        let rf = |f: Value| parse_request(&json!({"prompt": "a", "response_format": f}));
        let format = |f: Value| rf(f).unwrap().0.response_format;
        assert_eq!(format(json!({"type": "text"})), None);
        assert_eq!(
            format(json!({"type": "json_object"})),
            Some(ResponseFormat::JsonObject)
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            format(json!({"type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": true}})),
            Some(ResponseFormat::JsonSchema(schema.clone()))
        );
        assert_eq!(
            format(json!({"type": "json_object", "schema": schema.to_string()})),
            Some(ResponseFormat::JsonSchema(schema))
        );
        assert_eq!(
            format(json!({"type": "grammar", "grammar": "start: \"a\""})),
            Some(ResponseFormat::Grammar("start: \"a\"".into()))
        );
        assert_eq!(
            format(json!({"type": "regex", "pattern": "[0-9]+"})),
            Some(ResponseFormat::Regex("[0-9]+".into()))
        );
        for (f, want) in [
            (json!("json"), "must be an object with a type"),
            (json!({"type": "yaml"}), "type 'yaml' is not supported"),
            (json!({"type": "json_schema"}), "needs json_schema"),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x"}}),
                "schema is missing",
            ),
            (
                json!({"type": "json_object", "schema": "{"}),
                "not valid JSON",
            ),
            (json!({"type": "grammar"}), "needs grammar"),
            (
                json!({"type": "regex", "pattern": 3}),
                "pattern must be a string",
            ),
        ] {
            let e = rf(f.clone()).unwrap_err();
            assert_eq!(e.code(), "invalid_request");
            assert!(e.to_string().contains(want), "{f}: {e}");
        }
    }
}
