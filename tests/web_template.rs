//! Hostile chat templates in wasm: the fuel, value-size, output and nesting limits give typed
//! `chat_template` errors in the browser too (natively: tests/chat_template.rs), where an endless
//! loop would hang the Worker, and a huge allocation or a stack overflow would kill it. wasm's
//! stack is 1 MiB, so the nesting limit matters most here.
#![cfg(target_arch = "wasm32")]

use pocketlm::text::{ChatMessage, ChatTemplate};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn refused(template: &str, needle: &str) {
    let t = ChatTemplate::new("hostile", template, "", "").unwrap();
    let e = t
        .render(&[ChatMessage::user("hi")], true)
        .expect_err(template);
    assert_eq!(e.code(), "chat_template", "{template}: {e}");
    assert!(e.to_string().contains(needle), "{template}: {e}");
}

#[wasm_bindgen_test]
fn hostile_templates_are_typed_errors_and_rendering_goes_on() {
    refused(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}\
         {% endfor %}{% endfor %}{% endfor %}",
        "fuel",
    );
    refused(
        "{% set ns = namespace(s='x') %}{% for i in range(70) %}{% set ns.s = ns.s ~ ns.s %}\
         {% endfor %}",
        "value size limit",
    );
    for wrap in ["[ns.v]", "{'k': ns.v}", "ns.v | chain({'b': i})"] {
        refused(
            &format!(
                "{{% set ns = namespace(v={{}}) %}}{{% for i in range(100000) %}}\
                 {{% set ns.v = {wrap} %}}{{% endfor %}}{{{{ ns.v }}}}"
            ),
            "nested deeper than the limit",
        );
    }
    refused(
        "{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}",
        "namespace",
    );
    // minijinja's recursion limit (500 levels of macros, includes or loops) fits the stack.
    refused(
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "recursion",
    );
    refused(
        "{% macro f(n) %}{% for x in [n] %}{% if true %}{{ f(n + 1) | upper }}{% endif %}\
         {% endfor %}{% endmacro %}{{ f(0) }}",
        "recursion",
    );
    // Up to the limit, a nested value is written out.
    let deep = ChatTemplate::new(
        "deep",
        "{% set ns = namespace(v=[]) %}{% for i in range(90) %}{% set ns.v = [ns.v] %}\
         {% endfor %}{{ ns.v | tojson | length }}",
        "",
        "",
    )
    .unwrap();
    assert_eq!(deep.render(&[], false).unwrap(), "182");
    let ok = ChatTemplate::new("ok", "{{ messages[0]['content'] }}", "", "").unwrap();
    assert_eq!(ok.render(&[ChatMessage::user("hi")], false).unwrap(), "hi");
}
