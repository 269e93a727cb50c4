//! Tool calls (OpenAI's `tools` and `tool_choice`): the tool definitions reach the model the way
//! its chat template expects them, the model's reply is parsed into calls in the syntax that
//! model was trained on, and `tool_choice: "required"` or a named function constrains the reply
//! to a well-formed call whose arguments follow the function's JSON schema.
//!
//! The syntax is read from the chat template's text ([`ToolSyntax::detect`]):
//! - Hermes (`<tool_call>{"name": …, "arguments": …}</tool_call>`): Qwen2.5, Qwen3, SmolLM3
//!   (which takes the definitions as `xml_tools`), Hermes and their fine-tunes;
//! - Llama 3.1+ (a bare `{"name": …, "parameters": …}` reply, after `<|python_tag|>` or not);
//! - Mistral (`[TOOL_CALLS][{"name": …, "arguments": …}]`);
//! - Phi-4-mini (`<|tool_call|>[…]<|/tool_call|>`, definitions in the system turn's `tools`);
//! - any other template (SmolLM2, Gemma 3, …) gets the definitions and Hermes' instructions in
//!   a system turn, and earlier calls and results as text, and answers in Hermes' syntax.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::text::chat::ChatMessage;
use crate::text::grammar::ResponseFormat;

/// One function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    /// The function's JSON schema for its arguments (`{}` when the request gives none).
    pub parameters: Value,
    /// The definition as the request gave it (`{type: "function", function: {…}}`).
    pub definition: Value,
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model answers in text; the tools are not shown to it.
    None,
    /// The model decides.
    Auto,
    /// The reply is one or more calls.
    Required,
    /// The reply is a call of this function.
    Named(String),
}

/// A request's tools.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRequest {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
}

/// A parsed call, in OpenAI's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The call in OpenAI's shape: `{id, type: "function", function: {name, arguments}}`.
    pub fn to_openai(&self) -> Value {
        json!({"id": self.id, "type": "function",
            "function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// How a model writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolSyntax {
    /// `<tool_call>` JSON `</tool_call>`, definitions in `tools`.
    Hermes,
    /// As Hermes, with the definitions also in `xml_tools` (SmolLM3).
    HermesXml,
    /// A bare JSON object with `name` and `parameters` (Llama 3.1+).
    Llama3,
    /// `[TOOL_CALLS]` and a JSON list.
    Mistral,
    /// `<|tool_call|>` JSON list `<|/tool_call|>`, definitions in the system turn.
    Phi4,
    /// The template knows no tools: Hermes' syntax, taught in a system turn.
    Taught,
}

/// What Hermes-style templates (Qwen2.5's) tell the model, used for templates without tools.
const HERMES_INSTRUCTIONS: &str = "# Tools\n\nYou may call one or more functions to assist with \
the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n\
<tools>\n{tools}\n</tools>\n\nFor each function call, return a json object with function name \
and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": \
<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

impl ToolSyntax {
    /// The syntax a chat template's model uses, from the template's text.
    pub fn detect(template: &str) -> ToolSyntax {
        if template.contains("<tool_call>") {
            if template.contains("xml_tools") {
                ToolSyntax::HermesXml
            } else {
                ToolSyntax::Hermes
            }
        } else if template.contains("[TOOL_CALLS]") {
            ToolSyntax::Mistral
        } else if template.contains("<|tool_call|>") || template.contains("<|tool|>") {
            ToolSyntax::Phi4
        } else if template.contains("<|python_tag|>")
            || (template.contains("ipython") && template.contains("parameters"))
        {
            ToolSyntax::Llama3
        } else {
            ToolSyntax::Taught
        }
    }

    /// The text that opens a call in a reply (special tokens written out).
    fn opener(self) -> &'static str {
        match self {
            ToolSyntax::Hermes | ToolSyntax::HermesXml | ToolSyntax::Taught => "<tool_call>",
            ToolSyntax::Mistral => "[TOOL_CALLS]",
            ToolSyntax::Phi4 => "<|tool_call|>",
            ToolSyntax::Llama3 => "{",
        }
    }
}

/// The conversation, template variables and `tools` value a template gets for `request` under
/// `syntax`. With `tool_choice: "none"` or no tools, nothing changes but the history's calls.
pub fn prepare(
    syntax: ToolSyntax,
    messages: &[ChatMessage],
    request: Option<&ToolRequest>,
    extra: &Value,
) -> Result<(Vec<ChatMessage>, Value, Option<Value>)> {
    let active = request.filter(|r| r.choice != ToolChoice::None && !r.tools.is_empty());
    let mut messages = messages.to_vec();
    let mut extra = extra.clone();
    let definitions =
        active.map(|r| Value::Array(r.tools.iter().map(|t| t.definition.clone()).collect()));
    let functions = active.map(|r| {
        Value::Array(
            r.tools
                .iter()
                .map(|t| t.definition.get("function").cloned().unwrap_or(Value::Null))
                .collect(),
        )
    });
    match syntax {
        ToolSyntax::Taught => {
            // History as text the model can read, in the syntax it is taught.
            for m in &mut messages {
                if let Some(calls) = m.tool_calls.take() {
                    for call in calls.as_array().into_iter().flatten() {
                        let f = call.get("function").unwrap_or(call);
                        let text = json!({"name": f.get("name"), "arguments": f.get("arguments")});
                        m.content
                            .push_str(&format!("\n<tool_call>\n{text}\n</tool_call>"));
                    }
                    m.content = m.content.trim_start().to_string();
                }
                if m.role == "tool" {
                    m.role = "user".into();
                    m.content = format!("<tool_response>\n{}\n</tool_response>", m.content);
                    m.tool_call_id = None;
                    m.name = None;
                }
            }
            if let Some(defs) = &definitions {
                let list: Vec<String> = defs
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(Value::to_string)
                    .collect();
                let text = HERMES_INSTRUCTIONS.replace("{tools}", &list.join("\n"));
                match messages.first_mut().filter(|m| m.role == "system") {
                    Some(system) => system.content = format!("{}\n\n{text}", system.content),
                    None => messages.insert(0, ChatMessage::system(text)),
                }
            }
            Ok((messages, extra, None))
        }
        ToolSyntax::Phi4 => {
            if let Some(f) = &functions {
                match messages.first_mut().filter(|m| m.role == "system") {
                    Some(system) => system.tools = Some(f.to_string()),
                    None => {
                        let mut system = ChatMessage::system("");
                        system.tools = Some(f.to_string());
                        messages.insert(0, system);
                    }
                }
            }
            Ok((messages, extra, definitions))
        }
        ToolSyntax::HermesXml => {
            if let Some(defs) = &definitions {
                match &mut extra {
                    Value::Object(map) => {
                        map.entry("xml_tools").or_insert_with(|| defs.clone());
                    }
                    Value::Null => extra = json!({ "xml_tools": defs }),
                    _ => {}
                }
            }
            Ok((messages, extra, definitions))
        }
        ToolSyntax::Hermes | ToolSyntax::Llama3 | ToolSyntax::Mistral => {
            Ok((messages, extra, definitions))
        }
    }
}

/// The reply's format that makes it a call when `request` requires one (`tool_choice:
/// "required"` or a named function): the model's call syntax around JSON whose `name` is one of
/// the allowed functions and whose arguments follow that function's schema. `None` when the
/// choice leaves the model free. `special_id` gives the id of a special (control) token of the
/// vocabulary by its text: a marker such as Mistral's `[TOOL_CALLS]` is then that one token, as
/// the model writes it, and otherwise the marker's text.
pub fn required_format(
    syntax: ToolSyntax,
    request: &ToolRequest,
    special_id: impl Fn(&str) -> Option<u32>,
) -> Result<Option<ResponseFormat>> {
    let allowed: Vec<&Tool> = match &request.choice {
        ToolChoice::None | ToolChoice::Auto => return Ok(None),
        ToolChoice::Required => request.tools.iter().collect(),
        ToolChoice::Named(name) => request.tools.iter().filter(|t| &t.name == name).collect(),
    };
    if allowed.is_empty() {
        return Err(Error::InvalidRequest(
            "tool_choice requires a call, and there is no tool to call".into(),
        ));
    }
    let args_key = if syntax == ToolSyntax::Llama3 {
        "parameters"
    } else {
        "arguments"
    };
    let calls: Vec<Value> = allowed
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, args_key: t.parameters},
                "required": ["name", args_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let call = if calls.len() == 1 {
        calls[0].clone()
    } else {
        json!({ "anyOf": calls })
    };
    let layout =
        json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
    let with_layout = |mut schema: Value| {
        schema["x-guidance"] = layout.clone();
        schema
    };
    let one = with_layout(call.clone());
    let list = with_layout(json!({"type": "array", "items": call, "minItems": 1}));
    // llguidance names a token by id as `<[id]>`; a marker that is not one special token is
    // text (a JSON string is a Lark string).
    let marker = |text: &str| match special_id(text) {
        Some(id) => format!("<[{id}]>"),
        None => Value::from(text).to_string(),
    };
    let lark = match syntax {
        ToolSyntax::Hermes | ToolSyntax::HermesXml | ToolSyntax::Taught => {
            format!("start: \"<tool_call>\\n\" %json {one} \"\\n</tool_call>\"")
        }
        ToolSyntax::Llama3 => format!("start: %json {one}"),
        ToolSyntax::Mistral => format!("start: {} %json {list}", marker("[TOOL_CALLS]")),
        ToolSyntax::Phi4 => format!(
            "start: {} %json {list} {}",
            marker("<|tool_call|>"),
            marker("<|/tool_call|>")
        ),
    };
    Ok(Some(ResponseFormat::Grammar(lark)))
}

/// A reply split into its text and its calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedReply {
    /// The text before the first call (all of it when there is no call, or when the calls do
    /// not parse).
    pub content: String,
    pub calls: Vec<ToolCall>,
    /// Why call text did not parse, when it did not.
    pub problem: Option<String>,
}

/// Splits `text` (the reply with its special tokens written out) into content and calls, in
/// `syntax`.
pub fn parse_reply(syntax: ToolSyntax, text: &str) -> ParsedReply {
    let no_calls = |problem: Option<String>| ParsedReply {
        content: text.to_string(),
        calls: Vec::new(),
        problem,
    };
    let opener = syntax.opener();
    let start = if syntax == ToolSyntax::Llama3 {
        let body = text
            .trim_start()
            .trim_start_matches("<|python_tag|>")
            .trim_start();
        if !body.starts_with('{') {
            return no_calls(None);
        }
        text.len() - body.len()
    } else {
        match text.find(opener) {
            Some(i) => i,
            None => return no_calls(None),
        }
    };
    let content = text[..start]
        .replace("<|python_tag|>", "")
        .trim_end()
        .to_string();
    let rest = &text[start..];
    let values: std::result::Result<Vec<Value>, String> = match syntax {
        ToolSyntax::Hermes | ToolSyntax::HermesXml | ToolSyntax::Taught => rest
            .split("<tool_call>")
            .skip(1)
            .map(|part| {
                let body = part.split("</tool_call>").next().unwrap_or("").trim();
                serde_json::from_str(body).map_err(|e| format!("{e} in {body:?}"))
            })
            .collect(),
        ToolSyntax::Llama3 => first_json(rest).map(|v| vec![v]),
        ToolSyntax::Mistral => first_json(&rest[opener.len()..]).map(as_list),
        ToolSyntax::Phi4 => {
            let body = rest[opener.len()..]
                .split("<|/tool_call|>")
                .next()
                .unwrap_or("");
            first_json(body).map(as_list)
        }
    };
    let values = match values {
        Ok(v) => v,
        Err(e) => return no_calls(Some(format!("the tool call does not parse: {e}"))),
    };
    let mut calls = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let f = v.get("function").unwrap_or(v);
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return no_calls(Some(format!("the tool call has no name: {v}")));
        };
        let args = f
            .get("arguments")
            .or_else(|| f.get("parameters"))
            .cloned()
            .unwrap_or(json!({}));
        let arguments = match args {
            // Some models write the arguments as JSON text already.
            Value::String(s) => s,
            other => other.to_string(),
        };
        calls.push(ToolCall {
            id: format!("call_{:08x}{i}", fnv(text)),
            name: name.to_string(),
            arguments,
        });
    }
    if calls.is_empty() {
        return no_calls(Some("the tool call holds no call".into()));
    }
    ParsedReply {
        content,
        calls,
        problem: None,
    }
}

/// Whether streamed text may be the start of a call: from there on a stream holds its text
/// back until the reply is parsed.
pub fn call_starts_at(syntax: ToolSyntax, text: &str) -> Option<usize> {
    if syntax == ToolSyntax::Llama3 {
        let body = text.trim_start();
        return (body.starts_with('{') || body.starts_with("<|python_tag|>") || body.is_empty())
            .then_some(0);
    }
    let opener = syntax.opener();
    if let Some(i) = text.find(opener) {
        return Some(i);
    }
    // A prefix of the opener at the end of the text.
    (1..opener.len())
        .rev()
        .find(|&n| text.ends_with(&opener[..n]))
        .map(|n| text.len() - n)
}

/// A streamed reply with tools: text is passed on until a call may be starting, and held from
/// there (a call is sent whole once the reply is parsed, with any text held back before it).
#[derive(Debug)]
pub struct ToolStream {
    syntax: ToolSyntax,
    /// The reply so far with special tokens written out (a call may open with one).
    raw: String,
    /// Text held back since a possible call start.
    held: String,
    in_call: bool,
}

impl ToolStream {
    pub fn new(syntax: ToolSyntax) -> ToolStream {
        ToolStream {
            syntax,
            raw: String::new(),
            held: String::new(),
            in_call: false,
        }
    }

    /// Takes a token's shown text and its text with special tokens written out; returns the
    /// text that may be shown now.
    pub fn push(&mut self, shown: &str, raw: &str) -> String {
        if self.in_call {
            return String::new();
        }
        self.raw.push_str(raw);
        self.held.push_str(shown);
        let Some(i) = call_starts_at(self.syntax, &self.raw) else {
            return std::mem::take(&mut self.held);
        };
        let rest = self.raw[i..].trim_start();
        self.in_call = match self.syntax {
            ToolSyntax::Llama3 => rest.starts_with('{') || rest.starts_with("<|python_tag|>"),
            _ => rest.starts_with(self.syntax.opener()),
        };
        String::new()
    }
}

/// The first JSON value in `text` (text after it is ignored).
fn first_json(text: &str) -> std::result::Result<Value, String> {
    let mut stream = serde_json::Deserializer::from_str(text.trim_start()).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(format!("{e} in {:?}", text.trim())),
        None => Err("no JSON after the call marker".into()),
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(list) => list,
        other => vec![other],
    }
}

/// FNV-1a of the reply: call ids that differ between replies.
fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> Tool {
        let parameters = json!({"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"]});
        Tool {
            name: name.into(),
            parameters: parameters.clone(),
            definition: json!({"type": "function", "function": {"name": name,
                "description": "d", "parameters": parameters}}),
        }
    }

    #[test]
    fn each_syntax_parses_its_calls_and_keeps_the_text_before() {
        let cases = [
            (
                ToolSyntax::Hermes,
                "Let me check.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>",
                "Let me check.",
                2,
            ),
            (
                ToolSyntax::Llama3,
                "<|python_tag|>{\"name\": \"weather\", \"parameters\": {\"city\": \"Paris\"}}",
                "",
                1,
            ),
            (
                ToolSyntax::Mistral,
                "[TOOL_CALLS][{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}]</s>",
                "",
                1,
            ),
            (
                ToolSyntax::Phi4,
                "<|tool_call|>[{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}]<|/tool_call|>",
                "",
                1,
            ),
        ];
        for (syntax, text, content, n) in cases {
            let p = parse_reply(syntax, text);
            assert_eq!(p.problem, None, "{syntax:?}");
            assert_eq!(p.content, content, "{syntax:?}");
            assert_eq!(p.calls.len(), n, "{syntax:?}");
            assert_eq!(p.calls[0].name, "weather");
            assert_eq!(p.calls[0].arguments, r#"{"city":"Paris"}"#);
        }
        // Plain text is content; broken call text stays content and says why.
        let plain = parse_reply(ToolSyntax::Hermes, "It is sunny.");
        assert_eq!(
            (plain.content.as_str(), plain.calls.len()),
            ("It is sunny.", 0)
        );
        let broken = parse_reply(ToolSyntax::Hermes, "<tool_call>\n{\"name\": \"weather\"");
        assert!(broken.calls.is_empty());
        assert!(broken.problem.unwrap().contains("does not parse"));
        assert!(broken.content.starts_with("<tool_call>"));
        assert!(parse_reply(ToolSyntax::Llama3, "Sunny.").calls.is_empty());
    }

    #[test]
    fn streams_hold_back_from_a_possible_opener() {
        assert_eq!(call_starts_at(ToolSyntax::Hermes, "Sure. <tool"), Some(6));
        assert_eq!(
            call_starts_at(ToolSyntax::Hermes, "Sure. <tool_call>\n{"),
            Some(6)
        );
        assert_eq!(call_starts_at(ToolSyntax::Hermes, "Sure."), None);
        assert_eq!(call_starts_at(ToolSyntax::Llama3, " {\"na"), Some(0));
        assert_eq!(call_starts_at(ToolSyntax::Llama3, "Hello"), None);
    }

    #[test]
    fn a_stream_holds_a_call_back_and_passes_text_on() {
        let mut s = ToolStream::new(ToolSyntax::Hermes);
        assert_eq!(s.push("Sure", "Sure"), "Sure");
        assert_eq!(s.push(" <", " <"), "");
        assert_eq!(s.push("b>", "b>"), " <b>");
        assert_eq!(s.push(" <tool", " <tool"), "");
        assert_eq!(s.push("_call>", "_call>"), "");
        assert_eq!(s.push("{\"name\"", "{\"name\""), "");
        // A special-token opener is seen in the raw text though it is not shown.
        let mut s = ToolStream::new(ToolSyntax::Mistral);
        assert_eq!(s.push("", "[TOOL_CALLS]"), "");
        assert_eq!(s.push("[{", "[{"), "");
        let mut s = ToolStream::new(ToolSyntax::Llama3);
        assert_eq!(s.push(" ", " "), "");
        assert_eq!(s.push("Hi", "Hi"), " Hi");
    }

    #[test]
    fn templates_without_tools_are_taught_and_others_get_their_variables() {
        assert_eq!(
            ToolSyntax::detect("{{ '<tool_call>' }}"),
            ToolSyntax::Hermes
        );
        assert_eq!(
            ToolSyntax::detect("xml_tools <tool_call>"),
            ToolSyntax::HermesXml
        );
        assert_eq!(ToolSyntax::detect("[TOOL_CALLS]"), ToolSyntax::Mistral);
        assert_eq!(ToolSyntax::detect("<|tool|>"), ToolSyntax::Phi4);
        assert_eq!(ToolSyntax::detect("<|python_tag|>"), ToolSyntax::Llama3);
        assert_eq!(ToolSyntax::detect("{{ messages }}"), ToolSyntax::Taught);
        let request = ToolRequest {
            tools: vec![tool("weather")],
            choice: ToolChoice::Auto,
        };
        let mut call = ChatMessage::assistant("");
        call.tool_calls = Some(json!([{"id": "c1", "type": "function",
            "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]));
        let mut answer = ChatMessage::new("tool", "rain");
        answer.tool_call_id = Some("c1".into());
        let history = [ChatMessage::user("Weather?"), call, answer];
        let (m, _, tools) =
            prepare(ToolSyntax::Taught, &history, Some(&request), &Value::Null).unwrap();
        assert!(tools.is_none());
        assert_eq!(m[0].role, "system");
        assert!(
            m[0].content.contains("\"name\":\"weather\""),
            "{}",
            m[0].content
        );
        assert!(m[2].content.contains("<tool_call>") && m[2].tool_calls.is_none());
        assert_eq!(
            (m[3].role.as_str(), m[3].tool_call_id.as_ref()),
            ("user", None)
        );
        let (m, _, _) = prepare(ToolSyntax::Phi4, &history, Some(&request), &Value::Null).unwrap();
        let defs = m[0].tools.as_ref().unwrap();
        assert!(
            defs.starts_with("[{") && defs.contains("\"name\":\"weather\""),
            "{defs}"
        );
        let (_, extra, tools) = prepare(
            ToolSyntax::HermesXml,
            &history,
            Some(&request),
            &Value::Null,
        )
        .unwrap();
        assert_eq!(extra["xml_tools"], tools.unwrap());
        let none = ToolRequest {
            choice: ToolChoice::None,
            ..request.clone()
        };
        let (_, _, tools) =
            prepare(ToolSyntax::Hermes, &history, Some(&none), &Value::Null).unwrap();
        assert!(tools.is_none());
    }
}
