//! Chat templates rendered with minijinja, checked against the strings Python's Jinja2 renders
//! with Hugging Face's settings (trim_blocks, lstrip_blocks, loop controls) for the same input.
//! `transformers_renders_the_same` compares every template in tests/fixtures/templates/ with
//! what transformers' own renderer made of the same conversations (expected.json, written by
//! scripts/make_template_fixtures.py).

use pocketlm::formats::gguf::MetaValue;
use pocketlm::formats::GgufHeader;
use std::time::{Duration, Instant};

use pocketlm::text::chat::{
    ChatMessage, ChatTemplate, MAX_TEMPLATE_FUEL, MAX_TEMPLATE_OUTPUT_BYTES,
    MAX_TEMPLATE_SOURCE_BYTES, MAX_TEMPLATE_VALUE_BYTES,
};
use pocketlm::Error;

/// This test binary's allocator counts, per thread, the bytes allocated and not yet freed, and
/// the most since [`peak::reset`]: what a render allocated at its worst, measured rather than
/// guessed from the process (the tests run in parallel threads).
mod peak {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    pub struct Counting;

    fn add(n: isize) {
        // try_with: a thread's counters are gone while it exits.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + n;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                // At worst the old and the new block exist together, while copying.
                add(new_size as isize);
                add(-(layout.size() as isize));
            }
            p
        }
    }

    /// Starts measuring: the peak from here is what this thread holds now.
    pub fn reset() -> isize {
        let live = LIVE.with(|l| l.get());
        PEAK.with(|p| p.set(live));
        live
    }

    /// The bytes this thread holds now.
    pub fn live() -> isize {
        LIVE.with(|l| l.get())
    }

    /// The most bytes this thread held since [`reset`] returned `start`, above `start`.
    pub fn since(start: isize) -> usize {
        PEAK.with(|p| p.get() - start).max(0) as usize
    }
}

#[global_allocator]
static ALLOCATOR: peak::Counting = peak::Counting;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/templates/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// system + user + assistant + user; the assistant's reply has surrounding spaces so that
/// templates that `trim` it show it.
fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are terse."),
        ChatMessage::user("Hi!"),
        ChatMessage::assistant(" Hello. "),
        ChatMessage::user("2+2?"),
    ]
}

fn check(file: &str, bos: &str, eos: &str, without: &str, with: &str) {
    let t = ChatTemplate::new(file, &fixture(file), bos, eos).unwrap();
    assert_eq!(t.render(&conversation(), false).unwrap(), without, "{file}");
    assert_eq!(t.render(&conversation(), true).unwrap(), with, "{file}");
}

#[test]
fn smollm2_template_from_the_gguf() {
    let without = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n Hello. <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n";
    check(
        "smollm2.jinja",
        "<|im_start|>",
        "<|im_end|>",
        without,
        &format!("{without}<|im_start|>assistant\n"),
    );
    // Without a system message the template adds its own.
    let t = ChatTemplate::new("smollm2", &fixture("smollm2.jinja"), "", "").unwrap();
    assert_eq!(
        t.render(&[ChatMessage::user("Hi")], true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// The fixture is the model's own template, as the GGUF holds it (setup fetches the model).
#[test]
fn smollm2_fixture_matches_the_gguf() {
    let path = format!(
        "{}/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/fetch-model.sh)"));
    let header = pocketlm::formats::GgufHeader::parse_file(&bytes, &path).unwrap();
    let source = header.metadata.string("tokenizer.chat_template").unwrap();
    assert_eq!(source, fixture("smollm2.jinja"));
    let t = ChatTemplate::from_gguf(&header.metadata).unwrap();
    assert_eq!(
        (t.bos_token(), t.eos_token()),
        ("<|im_start|>", "<|im_end|>")
    );
    assert!(t
        .render(&conversation(), true)
        .unwrap()
        .ends_with("2+2?<|im_end|>\n<|im_start|>assistant\n"));
}

#[test]
fn llama3_template() {
    let without = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>";
    check(
        "llama3.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
        without,
        &format!("{without}<|start_header_id|>assistant<|end_header_id|>\n\n"),
    );
}

#[test]
fn qwen25_template_without_tools() {
    let without = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n Hello. <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n";
    check(
        "qwen2.5.jinja",
        "",
        "<|im_end|>",
        without,
        &format!("{without}<|im_start|>assistant\n"),
    );
    let t = ChatTemplate::new("qwen", &fixture("qwen2.5.jinja"), "", "").unwrap();
    assert_eq!(
        t.render(&[ChatMessage::user("Hi")], false).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
}

#[test]
fn mistral_template_and_its_exceptions() {
    let both = "<s>[INST] Hi![/INST] Hello.</s>[INST] You are terse.\n\n2+2?[/INST]";
    check("mistral.jinja", "<s>", "</s>", both, both);
    let t = ChatTemplate::new("mistral", &fixture("mistral.jinja"), "<s>", "</s>").unwrap();
    let err = t
        .render(&[ChatMessage::user("a"), ChatMessage::user("b")], true)
        .unwrap_err();
    assert_eq!(err.code(), "chat_template_rejected");
    match err {
        Error::ChatTemplateRejected { template, message } => {
            assert_eq!(template, "mistral");
            assert!(
                message.starts_with(
                    "After the optional system message, conversation roles must alternate"
                ),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn phi3_template() {
    let base = "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n Hello. <|end|>\n<|user|>\n2+2?<|end|>\n";
    check(
        "phi3.jinja",
        "<s>",
        "<|endoftext|>",
        &format!("{base}<|endoftext|>"),
        &format!("{base}<|assistant|>\n"),
    );
}

#[test]
fn python_string_methods_namespace_and_loop_controls() {
    let src = "{%- set ns = namespace(n=0) %}\n{%- for m in messages %}\n    {%- if m.role == 'system' %}{% continue %}{% endif %}\n    {%- set ns.n = ns.n + 1 %}\n    {{- m.role.upper() }}: {{ m.content.strip() }}{% if m.content.startswith('2') %} [math]{% endif %}\n    {{- ' |' + m.content.split('!')[0] + '|' + m.content.replace('?', '.') + '\\n' }}\n    {%- if ns.n >= 3 %}{% break %}{% endif %}\n{%- endfor %}\n{{- messages | length }}";
    let t = ChatTemplate::new("pycompat", src, "", "").unwrap();
    assert_eq!(
        t.render(&conversation(), false).unwrap(),
        "USER: Hi! |Hi|Hi!\nASSISTANT: Hello. | Hello. | Hello. \nUSER: 2+2? [math] |2+2?|2+2.\n4"
    );
}

#[test]
fn strftime_now_uses_the_given_clock() {
    let t = ChatTemplate::new(
        "date",
        "Today Date: {{ strftime_now('%d %b %Y') }}{% if tools is none %} (no tools){% endif %}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(
        t.render_at(&[], false, 1_721_952_000).unwrap(),
        "Today Date: 26 Jul 2024 (no tools)"
    );
    // The real clock gives some date of that shape.
    let now = t.render(&[], false).unwrap();
    assert_eq!(
        now.len(),
        "Today Date: 26 Jul 2024 (no tools)".len(),
        "{now}"
    );
}

#[test]
fn malformed_template_is_a_typed_error_with_its_line() {
    let src = "{% for m in messages %}\n{{ m.content }}\n{% if m.role == 'user' %}\n{% endfor %}";
    let err = ChatTemplate::new("broken", src, "", "").unwrap_err();
    assert_eq!(err.code(), "chat_template");
    match &err {
        Error::ChatTemplate {
            template,
            line,
            message,
        } => {
            assert_eq!(template, "broken");
            assert_eq!(*line, Some(4), "{message}");
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("line 4"), "{err}");

    // An error that only shows while rendering also carries its line.
    let t = ChatTemplate::new("runtime", "ok\n{{ messages[0].content + 1 }}", "", "").unwrap();
    match t.render(&conversation(), false).unwrap_err() {
        Error::ChatTemplate { line, .. } => assert_eq!(line, Some(2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokenizer_config_string_or_named_list() {
    let phi = fixture("phi3.jinja");
    let json = serde_json::json!({
        "bos_token": {"content": "<s>", "lstrip": false},
        "eos_token": "<|endoftext|>",
        "chat_template": phi,
    })
    .to_string();
    let t = ChatTemplate::from_tokenizer_config(&json, "tokenizer_config.json", None).unwrap();
    assert_eq!((t.bos_token(), t.eos_token()), ("<s>", "<|endoftext|>"));
    assert!(t
        .render(&conversation(), false)
        .unwrap()
        .ends_with("<|end|>\n<|endoftext|>"));

    let json = serde_json::json!({
        "eos_token": "</s>",
        "chat_template": [
            {"name": "default", "template": "D{{ eos_token }}"},
            {"name": "tool_use", "template": "T"},
        ],
    })
    .to_string();
    let t = ChatTemplate::from_tokenizer_config(&json, "cfg", None).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "D</s>");
    let t = ChatTemplate::from_tokenizer_config(&json, "cfg", Some("tool_use")).unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "T");
    let err = ChatTemplate::from_tokenizer_config(&json, "cfg", Some("rag")).unwrap_err();
    assert_eq!(err.code(), "missing_chat_template");
    assert!(err.to_string().contains("default, tool_use"), "{err}");

    let err = ChatTemplate::from_tokenizer_config("{}", "cfg", None).unwrap_err();
    assert_eq!(err.code(), "missing_chat_template");
}

/// A model folder's template comes from where transformers' tokenizer finds it:
/// `chat_template.jinja` first (transformers 4.52 and later write it there), then
/// `tokenizer_config.json`, then a processor's `chat_template.json` (multimodal checkpoints);
/// BOS and EOS always from `tokenizer_config.json`.
#[test]
fn folder_templates_follow_transformers_order() {
    let gemma = fixture("gemma3.jinja");
    let config = serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>"}).to_string();
    let config_with =
        serde_json::json!({"bos_token": "<bos>", "eos_token": "<eos>", "chat_template": "C"})
            .to_string();
    let processor = serde_json::json!({ "chat_template": gemma }).to_string();
    let folder = |files: &[(&str, &str)]| {
        ChatTemplate::from_hf_folder(|f| files.iter().find(|(n, _)| *n == f).map(|(_, t)| *t))
    };
    let want = "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\n";
    let hello = [ChatMessage::new("user", "Hello!")];
    // The processor's file alone (a multimodal checkpoint without a template elsewhere).
    let t = folder(&[
        ("tokenizer_config.json", &config),
        ("chat_template.json", &processor),
    ])
    .unwrap();
    assert_eq!(t.name(), "chat_template.json");
    assert_eq!(t.render(&hello, true).unwrap(), want);
    // tokenizer_config.json's before it, chat_template.jinja before both.
    let t = folder(&[
        ("tokenizer_config.json", &config_with),
        ("chat_template.json", &processor),
    ])
    .unwrap();
    assert_eq!(t.render(&hello, true).unwrap(), "C");
    let t = folder(&[
        ("tokenizer_config.json", &config_with),
        ("chat_template.jinja", &gemma),
        ("chat_template.json", "not json"),
    ])
    .unwrap();
    assert_eq!(t.name(), "chat_template.jinja");
    assert_eq!(t.render(&hello, true).unwrap(), want);
    assert_eq!((t.bos_token(), t.eos_token()), ("<bos>", "<eos>"));
    // None of them: a typed error (the engine then runs plain prompts only).
    let err = folder(&[("tokenizer_config.json", &config)]).unwrap_err();
    assert_eq!(err.code(), "missing_chat_template");
    assert!(err.to_string().contains("chat_template.jinja"), "{err}");
    let err = folder(&[("chat_template.json", "{")]).unwrap_err();
    assert!(err.to_string().contains("chat_template.json"), "{err}");
}

/// Every case of expected.json: the conversation, add_generation_prompt and the extra keyword
/// arguments transformers rendered, rendered again here at the same pinned clock. Either the
/// exact same string, or — where transformers' `raise_exception` fired — a rejection with the
/// same message. All differences are listed before the test fails.
#[test]
fn transformers_renders_the_same() {
    let expected: serde_json::Value = serde_json::from_str(&fixture("expected.json")).unwrap();
    let now = expected["now_unix"].as_i64().unwrap();
    let mut templates = std::collections::BTreeMap::new();
    for (name, t) in expected["templates"].as_object().unwrap() {
        let token = |key: &str| t[key].as_str().unwrap_or_default().to_string();
        let file = t["file"].as_str().unwrap();
        let template = ChatTemplate::new(
            name,
            &fixture(file),
            &token("bos_token"),
            &token("eos_token"),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        templates.insert(name.clone(), template);
    }
    let cases = expected["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let label = format!("{name} / {}", case["case"].as_str().unwrap());
        seen.insert(name);
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let agp = case["add_generation_prompt"].as_bool().unwrap();
        let tools = case.get("tools");
        let got = templates[name].render_tools_at(&messages, agp, &case["kwargs"], tools, now);
        match (case.get("expected"), got) {
            (Some(want), Ok(got)) if want.as_str() == Some(got.as_str()) => {}
            (None, Err(Error::ChatTemplateRejected { message, .. }))
                if case["error"].as_str() == Some(message.as_str()) => {}
            (want, got) => failures.push(format!(
                "{label}:\n  transformers: {:?}\n  pocketlm:     {got:?}",
                want.unwrap_or(&case["error"])
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Tool definitions and tool turns render as transformers renders them.
    for name in ["qwen2.5", "qwen3", "phi4-mini"] {
        assert!(
            cases.iter().any(|c| c["template"] == name
                && (c.get("tools").is_some() || c["messages"][0].get("tools").is_some())),
            "{name} has no tools case"
        );
    }
    // The new architectures' templates are all there, with their thinking switches.
    for name in ["gemma3", "qwen3", "phi4-mini", "smollm3"] {
        assert!(seen.contains(name), "{name} missing from expected.json");
    }
    for name in ["qwen3", "smollm3"] {
        assert!(
            cases.iter().any(|c| c["template"] == name
                && c["kwargs"]["enable_thinking"] == serde_json::json!(false)),
            "{name} has no enable_thinking=false case"
        );
    }
}

// ---- bounds: a template is untrusted code ---------------------------------------------------

fn limit_error(template: &str) -> (String, Error) {
    let t = ChatTemplate::new("hostile", template, "", "").unwrap();
    let err = t.render(&conversation(), true).unwrap_err();
    (err.to_string(), err)
}

/// The reported case: three nested `range(100000)` loops (10^15 iterations) stop at the fuel
/// budget with a `chat_template` error naming it, instead of spinning with memory growing.
#[test]
fn endless_loops_run_out_of_fuel() {
    let (msg, err) = limit_error(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}\
         {{ a }}{% endfor %}{% endfor %}{% endfor %}",
    );
    assert_eq!(err.code(), "chat_template", "{msg}");
    assert!(
        msg.contains("fuel") && msg.contains(&MAX_TEMPLATE_FUEL.to_string()),
        "{msg}"
    );
    // Loops that print nothing run out of fuel the same way.
    let (msg, err) = limit_error(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    );
    assert_eq!(err.code(), "chat_template");
    assert!(msg.contains("fuel"), "{msg}");
}

/// A string repeated into hundreds of MB is refused at the output limit: written out, captured
/// into a variable, or printed as a lazily repeated list. (A list repeated 10^12 times is now
/// refused earlier, at the value limit: see `value_blow_ups_hit_the_value_limit`.)
#[test]
fn output_blow_ups_hit_the_output_limit() {
    let limit = MAX_TEMPLATE_OUTPUT_BYTES.to_string();
    for template in [
        "{% for i in range(8) %}{{ 'x' * 100000000 }}{% endfor %}",
        "{% set s %}{% for i in range(8) %}{{ 'y' * 100000000 }}{% endfor %}{% endset %}\
         {{ s | length }}",
        "{% macro m() %}{{ 'z' * 100000000 }}{% endmacro %}{% for i in range(8) %}{% set _ = m() %}\
         {% endfor %}",
        // 5,000,000 items fit the value budget; their text does not fit the output.
        "{{ ['abcdefghijklmnopqrst'] * 5000000 }}",
        "{{ ([['abcdefghijklmnopqrst']] * 5000000) | string }}",
        "{{ (['abcdefghijklmnopqrst'] * 5000000) | tojson }}",
        "{{ (['abcdefghijklmnopqrst'] * 5000000) | tojson(sort_keys=true) }}",
    ] {
        let (msg, err) = limit_error(template);
        assert_eq!(err.code(), "chat_template", "{template}: {msg}");
        assert!(
            msg.contains("output limit") && msg.contains(&limit),
            "{template}: {msg}"
        );
    }
    // Just under the limit is fine.
    let t = ChatTemplate::new("big", "{{ 'x' * 1000000 }}", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap().len(), 1_000_000);
}

#[test]
fn oversized_template_sources_and_json_indents_are_refused() {
    let src = "x".repeat(MAX_TEMPLATE_SOURCE_BYTES + 1);
    let err = ChatTemplate::new("huge", &src, "", "").unwrap_err();
    assert_eq!(err.code(), "chat_template");
    assert!(
        err.to_string()
            .contains(&MAX_TEMPLATE_SOURCE_BYTES.to_string()),
        "{err}"
    );
    let (msg, err) = limit_error("{{ messages | tojson(indent=1000000000000) }}");
    assert_eq!(err.code(), "chat_template");
    assert!(msg.contains("indent 1000000000000"), "{msg}");
    // Real indents work.
    let t = ChatTemplate::new("json", "{{ [1] | tojson(indent=2) }}", "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "[\n  1\n]");
}

/// The bounds hold for templates from tokenizer_config.json and from GGUF metadata (the same
/// environment is built for every source): the reported case from a tokenizer_config.json, and
/// from a GGUF file a case that fails faster (fuel takes seconds in a debug build).
#[test]
fn templates_from_files_are_bounded_too() {
    let nested = "{% for a in range(100000) %}{% for b in range(100000) %}\
                  {% for c in range(100000) %}.{% endfor %}{% endfor %}{% endfor %}";
    let config = serde_json::json!({ "chat_template": nested }).to_string();
    let t = ChatTemplate::from_tokenizer_config(&config, "tokenizer_config.json", None).unwrap();
    let err = t.render(&conversation(), true).unwrap_err();
    assert_eq!(err.code(), "chat_template");
    assert!(err.to_string().contains("fuel"), "{err}");

    let deep = "{% set ns = namespace(v=[]) %}{% for i in range(100000) %}\
                {% set ns.v = [ns.v] %}{% endfor %}";
    let bytes = pocketlm::fuzzing::gguf_bytes(&[
        ("general.architecture", MetaValue::String("llama".into())),
        ("tokenizer.chat_template", MetaValue::String(deep.into())),
    ]);
    let header = GgufHeader::parse_file(&bytes, "hostile.gguf").unwrap();
    let t = ChatTemplate::from_gguf(&header.metadata).unwrap();
    let err = t.render(&conversation(), true).unwrap_err();
    assert_eq!(err.code(), "chat_template");
    assert!(err.to_string().contains("nested deeper"), "{err}");
}

/// The budget is generous: every fixture template renders a 2,000-message conversation.
#[test]
fn real_templates_fit_the_budget_with_long_conversations() {
    let dir = format!("{}/tests/fixtures/templates", env!("CARGO_MANIFEST_DIR"));
    let mut messages = vec![ChatMessage::system("You are terse.")];
    for i in 0..1000 {
        messages.push(ChatMessage::user(format!("question {i}")));
        messages.push(ChatMessage::assistant(format!("answer {i}")));
    }
    messages.push(ChatMessage::user("last"));
    let mut rendered = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".jinja") || name == "python-compat.jinja" {
            continue;
        }
        let t = ChatTemplate::new(
            &name,
            &std::fs::read_to_string(&path).unwrap(),
            "<s>",
            "</s>",
        )
        .unwrap();
        let text = t
            .render(&messages, true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.contains("question 999") && text.contains("last"),
            "{name}"
        );
        rendered += 1;
    }
    assert!(rendered >= 9, "only {rendered} templates found");
}

/// Which limit a hostile template runs into.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    Value,
    Output,
    Depth,
}

/// Renders `template`, which must fail with a `chat_template` error naming `limit`, within
/// seconds, holding at most a small multiple of the value budget at any time (without the
/// bounds, each of these allocates terabytes or recurses until the stack overflows, and the
/// process aborts: it cannot catch either). A multiple: a string being built is checked against
/// what remains of the budget and charged once it is a value, so two such strings can be alive
/// at once (a list formatted into a string, then into `format`'s output), and a growing string
/// or vector briefly holds its old and new buffers.
fn assert_refused(template: &str, limit: Limit) {
    let start = Instant::now();
    let before = peak::reset();
    let t = ChatTemplate::new("hostile", template, "", "")
        .unwrap_or_else(|e| panic!("{template}: does not compile: {e}"));
    let err = match t.render(&conversation(), true) {
        Ok(text) => panic!("{template}: rendered {} bytes", text.len()),
        Err(e) => e,
    };
    let peak = peak::since(before);
    drop(t);
    let msg = err.to_string();
    assert_eq!(err.code(), "chat_template", "{template}: {msg}");
    let named = match limit {
        Limit::Value => {
            msg.contains("value size limit") && msg.contains(&MAX_TEMPLATE_VALUE_BYTES.to_string())
        }
        Limit::Output => {
            msg.contains("output limit") && msg.contains(&MAX_TEMPLATE_OUTPUT_BYTES.to_string())
        }
        Limit::Depth => msg.contains("nested deeper than the limit of 100 levels"),
    };
    assert!(
        named,
        "{template}: expected the {limit:?} limit, got: {msg}"
    );
    assert!(
        peak < 3 * MAX_TEMPLATE_VALUE_BYTES,
        "{template}: allocated up to {peak} bytes"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{template}: took {:?}",
        start.elapsed()
    );
}

/// Values a template builds are bounded by MAX_TEMPLATE_VALUE_BYTES: doubling a string or a
/// list in a loop or a recursive macro, repeating, and the filters and Python methods whose
/// output size comes from an argument, each refused before it allocates.
#[test]
fn value_blow_ups_hit_the_value_limit() {
    let doubled = |setup: &str, n: usize, op: &str, then: &str| {
        format!(
            "{{% set ns = namespace(v={setup}) %}}{{% for i in range({n}) %}}\
             {{% set ns.v = {op} %}}{{% endfor %}}{then}"
        )
    };
    // Strings made while rendering (not folded while compiling) that leave 28 MiB of the budget:
    // a list materialized from a lazy one of 2^20 items (24 MiB) then does not fit, and stops
    // after a few hundred thousand items instead of millions.
    let mut padding = "{% set n = 1 %}".to_string();
    let mut left = MAX_TEMPLATE_VALUE_BYTES - (28 << 20);
    while left > 0 {
        let piece = left.min(90_000_000);
        padding += &format!("{{% set _ = 'x' * n * {piece} %}}");
        left -= piece;
    }
    let padded = |then: &str| format!("{padding}{}", doubled("[1]", 20, "ns.v + ns.v", then));
    let s10k = "('x' * 10000)";
    // 10^7 writes of 1000 bytes of template text.
    let raw_loop = format!(
        "{{% for i in range(100000) %}}{{% for j in range(100) %}}{}{{% endfor %}}{{% endfor %}}",
        "x".repeat(1000)
    );
    let cases = [
        // A string doubled by `~` and `+`, in a loop and in a recursive macro.
        doubled("'x'", 70, "ns.v ~ ns.v", "{{ ns.v | length }}"),
        doubled("'x'", 70, "ns.v + ns.v", "{{ ns.v | length }}"),
        "{% macro d(s, n) %}{% if n == 0 %}{{ s | length }}{% else %}{{ d(s ~ s, n - 1) }}\
         {% endif %}{% endmacro %}{{ d('x', 60) }}"
            .to_string(),
        // A list doubled by `+` (lazily: nothing is copied, but it is charged for its items)…
        doubled("[1]", 70, "ns.v + ns.v", "{{ ns.v | length }}"),
        doubled("{'a': 1}", 70, "ns.v | chain(ns.v)", "{{ ns.v | length }}"),
        doubled("'ab' | chain('cd')", 70, "ns.v + ns.v", "done"),
        // A chain of chains searched, joined or listed within one instruction: every item it
        // yields is charged, so the search stops at the budget instead of running for ever.
        doubled(
            "'ab' | chain('cd')",
            70,
            "ns.v | chain(ns.v)",
            "{{ 'z' in ns.v }}",
        ),
        doubled(
            "'ab' | chain('cd')",
            70,
            "ns.v | chain(ns.v)",
            "{{ ns.v | join }}",
        ),
        doubled("range(3)", 70, "ns.v | chain(ns.v)", "{{ 'z' in ns.v }}"),
        doubled("[]", 70, "ns.v + ns.v", "done"),
        // … and materialized while it still fits: as a list, sorted, reversed, as text.
        padded("{{ ns.v | list | length }}"),
        padded("{{ ns.v | sort | length }}"),
        padded("{{ ns.v | last }}"),
        padded("{{ ns.v[::-1] | list | length }}"),
        padded("{{ ns.v | select | length }}"),
        padded("{{ ns.v | map('abs') | length }}"),
        padded("{{ ns.v | batch(3) | length }}"),
        padded("{{ ns.v | slice(3) | length }}"),
        padded("{{ ns.v | groupby('real') | length }}"),
        padded("{{ range(*ns.v) }}"),
        doubled(
            &format!("[{s10k}]"),
            16,
            "ns.v + ns.v",
            "{{ ns.v | join(',') | length }}",
        ),
        doubled(
            &format!("[{s10k}]"),
            16,
            "ns.v + ns.v",
            "{{ (ns.v ~ '') | length }}",
        ),
        doubled(
            &format!("[{s10k}]"),
            16,
            "ns.v + ns.v",
            "{{ ','.join(ns.v) | length }}",
        ),
        doubled(
            &format!("[{s10k}]"),
            16,
            "ns.v + ns.v",
            "{{ '%s' | format(ns.v) | length }}",
        ),
        doubled(
            &format!("[{s10k}]"),
            16,
            "ns.v + ns.v",
            "{{ ns.v | pprint | length }}",
        ),
        // Repetition.
        "{{ [0] * 1000000000000 }}".to_string(),
        "{{ ([['a']] * 100000000000) | string }}".to_string(),
        "{{ (['abc'] * 100000000000) | tojson }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ ([s] * 1000000 ~ '') | length }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ ([s] * 1000000) | join | length }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ (s ~ s ~ s) | length }}".to_string(),
        // Folded while compiling (constant operands), and refused when rendering.
        "{{ (('x' * 100000000) ~ ('x' * 100000000) ~ ('x' * 100000000)) | length }}".to_string(),
        // Size arguments of filters and Python methods.
        "{{ 'x' | indent(1000000000000, true) }}".to_string(),
        "{% set s = 'x' * 10000000 %}{{ s | replace('', s) | length }}".to_string(),
        "{{ (['x'] * 1000000) | join('y' * 1000) | length }}".to_string(),
        "{{ '%1000000000000s' | format(1) }}".to_string(),
        "{{ '%.1000000000000f' | format(1.5) }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ '%s%s%s' | format(s, s, s) | length }}".to_string(),
        "{{ '{:1000000000000}'.format(1) }}".to_string(),
        "{{ 'x'.center(1000000000000) }}".to_string(),
        "{{ 'x'.ljust(1000000000000) }}".to_string(),
        "{{ 'x'.rjust(1000000000000, '*') }}".to_string(),
        "{{ 'x'.zfill(1000000000000) }}".to_string(),
        "{{ ('\t' * 10000000).expandtabs(100) }}".to_string(),
        "{% set s = 'x' * 10000000 %}{{ s.replace('', s) | length }}".to_string(),
        "{% set s = 'x' * 10000 %}{{ s.join([s] * 1000000) | length }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ s.upper() | length }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ s | title | length }}".to_string(),
        "{% set s = '\"' * 100000000 %}{{ s | escape | length }}".to_string(),
        "{{ [1] | batch(1000000000000) | length }}".to_string(),
        "{{ [1] | slice(1000000000000) | length }}".to_string(),
        "{{ strftime_now('%F' * 40000000) | length }}".to_string(),
        // A string's characters as a list: 24 bytes each.
        "{% set s = 'x' * 100000000 %}{{ s | list | length }}".to_string(),
        "{% set s = 'x' * 100000000 %}{{ s | map('upper') | length }}".to_string(),
        "{% set s = ',' * 100000000 %}{{ s.split(',') | length }}".to_string(),
        "{% set s = '\n' * 100000000 %}{{ s.splitlines(true) | length }}".to_string(),
        // Text written in a loop and captured (not written out, where the output limit bounds
        // it): a `set` block, a macro's output, a `call` block, a `filter` block.
        format!("{{% set s %}}{raw_loop}{{% endset %}}{{{{ s | length }}}}"),
        format!("{{% macro m() %}}{raw_loop}{{% endmacro %}}{{{{ m() | length }}}}"),
        format!(
            "{{% macro m() %}}{{{{ caller() | length }}}}{{% endmacro %}}\
             {{% call m() %}}{raw_loop}{{% endcall %}}"
        ),
        format!("{{% filter length %}}{raw_loop}{{% endfilter %}}"),
        // Many distinct strings kept alive in a list.
        "{% set ns = namespace(l=[]) %}{% for i in range(5000) %}\
         {% set ns.l = ns.l + [('x' * 100000) ~ i] %}{% endfor %}{{ ns.l | length }}"
            .to_string(),
    ];
    for template in &cases {
        assert_refused(template, Limit::Value);
    }
}

/// Where the output limit is the smaller one, it answers first; values nested past the nesting
/// limit, and values that would contain themselves (through a namespace, the one mutable value),
/// are refused instead of overflowing the stack.
#[test]
fn other_blow_ups_hit_the_output_or_nesting_limit() {
    let doubled = "{% set ns = namespace(v=['x' * 10000]) %}{% for i in range(16) %}\
                   {% set ns.v = ns.v + ns.v %}{% endfor %}";
    for then in [
        "{{ ns.v }}",
        "{{ ns.v | string | length }}",
        "{{ ns.v | tojson | length }}",
    ] {
        assert_refused(&format!("{doubled}{then}"), Limit::Output);
    }
    // A namespace may not hold a namespace: no value can contain itself, and namespaces (the
    // values a template can change) cannot be chained after the lists holding them were built.
    for cyclic in [
        "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}",
        "{% set ns = namespace(a=1) %}{% set ns.list = [1, {'x': [ns]}] %}{{ ns.list }}",
        "{% set a = namespace() %}{% set b = namespace(a=a) %}{{ b }}",
    ] {
        assert_refused(cyclic, Limit::Depth);
    }
    // Values nested past the limit are refused when built, so nothing deep enough to overflow
    // the stack when freed, compared or written exists: a list, a dict, a kwargs dict or a
    // merged dict wrapped in itself in a loop, or a chain of namespaces.
    let wrapped = |init: &str, wrap: &str| {
        format!(
            "{{% set ns = namespace(v={init}) %}}{{% for i in range(100000) %}}\
             {{% set ns.v = {wrap} %}}{{% endfor %}}{{{{ ns.v | length }}}}"
        )
    };
    for template in [
        wrapped("[]", "[ns.v]"),
        wrapped("{}", "{'k': ns.v}"),
        wrapped("{}", "dict(k=ns.v)"),
        wrapped("{'a': 1}", "ns.v | chain({'b': i})"),
        wrapped("[]", "[1, [ns.v], 2]"),
        "{% set outer = namespace(cur=none) %}{% for i in range(100000) %}\
         {% set outer.cur = namespace(x=outer.cur) %}{% endfor %}"
            .to_string(),
    ] {
        assert_refused(&template, Limit::Depth);
    }
    // Up to the limit, nesting is fine.
    let t = ChatTemplate::new(
        "deep",
        &wrapped("[]", "[ns.v]").replace("100000", "90"),
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "1");
}

/// The budget is per render: a template that comes close to it renders every time, and a
/// refused render leaves the next one unaffected.
#[test]
fn the_value_budget_is_per_render() {
    // 200 MB of values: fits once, and again in every later render.
    let t = ChatTemplate::new(
        "big",
        "{% set s = 'x' * 100000000 %}{{ (s ~ s) | length }}",
        "",
        "",
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(t.render(&[], false).unwrap(), "200000000");
    }
    let hostile = ChatTemplate::new(
        "hostile",
        "{% set ns = namespace(s='x') %}{% for i in range(70) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}",
        "",
        "",
    )
    .unwrap();
    assert!(hostile.render(&[], false).is_err());
    assert_eq!(t.render(&[], false).unwrap(), "200000000");
    let ok = ChatTemplate::new("ok", "{{ messages | length }}", "", "").unwrap();
    assert_eq!(ok.render(&conversation(), false).unwrap(), "4");
}

/// Long conversations with long messages still render: the value budget counts everything a
/// render creates, and real templates create a few times their messages' text.
#[test]
fn real_templates_fit_the_value_budget_with_megabytes_of_text() {
    let dir = format!("{}/tests/fixtures/templates", env!("CARGO_MANIFEST_DIR"));
    let long = "word ".repeat(8_000);
    let mut messages = vec![ChatMessage::system("You are terse.")];
    for i in 0..100 {
        messages.push(ChatMessage::user(format!("question {i} {long}")));
        messages.push(ChatMessage::assistant(format!(
            "<think>hm</think>answer {i} {long}"
        )));
    }
    messages.push(ChatMessage::user("last"));
    let mut rendered = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".jinja") || name == "python-compat.jinja" {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let t = ChatTemplate::new(&name, &source, "<s>", "</s>").unwrap();
        let text = t
            .render(&messages, true)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.len() > 8_000_000, "{name}");
        rendered += 1;
    }
    assert!(rendered >= 9, "only {rendered} templates found");
}

/// A namespace that holds a macro that holds the namespace is a reference cycle, which would
/// leak what it holds on every render (up to the whole value budget): the render empties its
/// namespaces when it ends.
#[test]
fn a_cycle_through_a_namespace_does_not_leak() {
    let t = ChatTemplate::new(
        "cycle",
        "{% set n = 10000000 %}{% set ns = namespace(big='x' * n) %}\
         {% macro m() %}{{ ns.big | length }}{% endmacro %}{% set ns.m = m %}\
         {% set ns.list = [ns.big ~ 'y'] %}{{ ns.m() }}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "10000000");
    let before = peak::live();
    for _ in 0..5 {
        assert_eq!(t.render(&[], false).unwrap(), "10000000");
    }
    let kept = peak::live() - before;
    assert!(kept < 1 << 20, "{kept} bytes kept after 5 renders");
}
