#!/usr/bin/env python3
"""What Hugging Face transformers renders for each chat template in tests/fixtures/templates/,
for a fixed set of conversations: tests/fixtures/templates/expected.json, which
tests/chat_template.rs renders again with PocketLM and compares byte for byte.

The renderer is transformers' own (`transformers.utils.chat_template_utils.render_jinja_template`,
what `PreTrainedTokenizerBase.apply_chat_template` calls), given what apply_chat_template gives
it: the case's `tools` (None for most), `documents=None`, the tokenizer's special tokens (a token the
tokenizer_config.json sets to null is not passed at all) and the extra keyword arguments
(`enable_thinking`). `strftime_now` is pinned to NOW so that templates that print today's date
(SmolLM3) render the same every run; the Rust test passes the same instant to `render_with_at`.

Where each template comes from: tests/fixtures/templates/README.md.

Run in the throwaway environment of scripts/make_fixtures.py (only transformers and jinja2 are
needed, no torch):
    /tmp/fx/bin/python scripts/make_template_fixtures.py
"""
import calendar
import datetime as dt
import json
import pathlib

import jinja2
import transformers
from transformers.utils import chat_template_utils

DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "templates"
OUT = DIR / "expected.json"

# 2025-07-26 13:05:09, a Saturday. transformers calls datetime.now() (local time); PocketLM's
# strftime_now works in UTC, so the instant is given to it as the same wall-clock time in UTC.
NOW = dt.datetime(2025, 7, 26, 13, 5, 9)
NOW_UNIX = calendar.timegm(NOW.timetuple())


class _PinnedDatetime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


chat_template_utils.datetime = _PinnedDatetime

# file, and bos_token / eos_token as each model's tokenizer_config.json has them (None: null there).
TEMPLATES = {
    # The templates that were here before; tokens as the existing tests use them.
    "llama3": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "mistral": ("mistral.jinja", "<s>", "</s>"),
    "phi3": ("phi3.jinja", "<s>", "<|endoftext|>"),
    "qwen2.5": ("qwen2.5.jinja", None, "<|im_end|>"),
    "smollm2": ("smollm2.jinja", "<|im_start|>", "<|im_end|>"),
    # The new architectures.
    "gemma3": ("gemma3.jinja", "<bos>", "<end_of_turn>"),
    "qwen3": ("qwen3.jinja", None, "<|im_end|>"),
    "phi4-mini": ("phi4-mini.jinja", "<|endoftext|>", "<|endoftext|>"),
    "smollm3": ("smollm3.jinja", None, "<|im_end|>"),
    # Not a model's: values other than strings (dicts, lists, floats, tojson's options), as
    # tools and extra variables bring them to templates.
    "python-compat": ("python-compat.jinja", None, None),
}
THINKING = ("qwen3", "smollm3")


def sys_(c):
    return {"role": "system", "content": c}


def user(c):
    return {"role": "user", "content": c}


def asst(c):
    return {"role": "assistant", "content": c}


# The assistant's replies carry surrounding whitespace so that templates that trim show it.
SYSTEM_TURNS = [sys_("You are terse."), user("Hi!"), asst(" Hello. "), user("2+2?")]
NO_SYSTEM = [user("Hi")]
MULTI_TURN = [user("Name a colour."), asst("Blue."), user("Another?"), asst("\nGreen. ")]
MULTI_TURN_OPEN = MULTI_TURN[:3]

# (name, messages, add_generation_prompt, extra keyword arguments) for every template.
COMMON = [
    ("system_turns", SYSTEM_TURNS, False, {}),
    ("system_turns_prompt", SYSTEM_TURNS, True, {}),
    ("no_system", NO_SYSTEM, False, {}),
    ("no_system_prompt", NO_SYSTEM, True, {}),
    ("multi_turn", MULTI_TURN, False, {}),
    ("multi_turn_prompt", MULTI_TURN_OPEN, True, {}),
    ("roles_do_not_alternate", [user("a"), user("b")], True, {}),
]

# For the templates that read enable_thinking (and SmolLM3's /think and /no_think flags).
THINKING_CASES = []
for on in (True, False):
    tag = "on" if on else "off"
    kw = {"enable_thinking": on}
    THINKING_CASES += [
        (f"thinking_{tag}_system_turns_prompt", SYSTEM_TURNS, True, kw),
        (f"thinking_{tag}_no_system_prompt", NO_SYSTEM, True, kw),
        (f"thinking_{tag}_multi_turn", MULTI_TURN, False, kw),
        (f"thinking_{tag}_multi_turn_prompt", MULTI_TURN_OPEN, True, kw),
    ]
THINKING_CASES += [
    # The system prompt's flag overrides enable_thinking (SmolLM3); Qwen3 shows it verbatim.
    ("no_think_flag_beats_enable_thinking", [sys_("Be brief. /no_think"), user("Hi")], True,
     {"enable_thinking": True}),
    ("think_flag_beats_enable_thinking", [sys_("/think"), user("Hi")], True,
     {"enable_thinking": False}),
    ("system_override", [sys_("Only this. /system_override"), user("Hi")], True, {}),
    # Reasoning in the history: Qwen3 drops it before the last user turn and keeps it after.
    ("reasoning_in_history",
     [user("2+2?"), asst("<think>\nadd them\n</think>\n\n4"), user("And 3+3?")], True, {}),
    ("reasoning_in_last_turn",
     [user("2+2?"), asst("<think>\nadd them\n</think>\n\n4")], False, {}),
]


# PocketLM takes extra variables as a serde_json object, whose keys come out sorted; dicts here
# are written with their keys in that order so that both sides iterate them alike.
WEATHER = {
    "description": "Current weather in a city",
    "name": "get_weather",
    "parameters": {
        "properties": {"city": {"description": "City name", "type": "string"}},
        "required": ["city"],
        "type": "object",
    },
}
SMOLLM3_TOOLS = [
    ("xml_tools", [user("Weather in Paris?")], True, {"xml_tools": [WEATHER]}),
    ("python_tools_thinking_off", [sys_("Use tools."), user("Weather in Paris?")], True,
     {"enable_thinking": False, "python_tools": [WEATHER, {"name": "noop"}]}),
]

# OpenAI-style tools, as PocketLM passes them to a template's `tools` (the request's definitions)
# and in the history (a call's arguments parsed into an object, as transformers' callers do).
TOOL_DEFS = [{"function": WEATHER, "type": "function"}]
CALL = {"function": {"arguments": {"city": "Paris"}, "name": "get_weather"}, "id": "call_1",
        "type": "function"}
TOOL_TURNS = [user("Weather in Paris?"),
              {"content": "", "role": "assistant", "tool_calls": [CALL]},
              {"content": "Sunny, 24 C", "role": "tool", "tool_call_id": "call_1"}]
TOOL_CASES = [
    ("tools_prompt", [user("Weather in Paris?")], True, {}, TOOL_DEFS),
    ("tools_system_prompt", [sys_("Be brief."), user("Weather in Paris?")], True, {}, TOOL_DEFS),
    ("tool_turns_prompt", TOOL_TURNS, True, {}, TOOL_DEFS),
]
# Phi-4-mini reads the definitions from the system turn's `tools` (JSON text).
PHI4_TOOLS = [
    ("system_tools_prompt",
     [{"content": "Be brief.", "role": "system", "tools": json.dumps([WEATHER])},
      user("Weather in Paris?")], True, {}, None),
]

PYTHON_COMPAT = [
    ("values", [user("x")], False, {
        "obj": {"n": 3, "name": "get_weather", "none": None, "ok": True,
                "params": {"city": {"type": "string"}}, "r": 0.5},
        "lst": [1, "two", None, True, 2.0], "flag": False, "nothing": None, "ratio": 0.1,
        "count": 3, "big": 12345678901234, "text": "  abc bad  ", "uni": "caf\u00e9 \u2615 <b>&'",
        "msgs": [{"role": "user"}, {"role": "assistant"}, {"role": "user"}],
        "d2": {"a": [1, {"b": None}], "u": "\u00e9\U0001f600", "z": {}},
        "strs": ["it's", 'say "hi"', "both ' \"", "back\\slash", "nl\nt\tcr\r", "\x01\x7f\x9f",
                 "\u00e9\U0001f600", ""],
        "nums": [0.0, -0.0, 1e16, 1e15, 1.5e-5, 0.0001, 123456789.125, 1e-7, 3.0],
    }),
]


def cases_for(name):
    """(case, messages, add_generation_prompt, kwargs, tools) of a template."""
    if name == "python-compat":
        return [c + (None,) for c in PYTHON_COMPAT]
    cases = list(COMMON)
    if name in THINKING:
        cases += THINKING_CASES
    if name == "smollm3":
        cases += SMOLLM3_TOOLS
    cases = [c + (None,) for c in cases]
    if name in ("qwen2.5", "qwen3"):
        cases += TOOL_CASES
    if name == "phi4-mini":
        cases += PHI4_TOOLS
    return cases


def render(source, bos, eos, messages, add_generation_prompt, kwargs, tools):
    """As apply_chat_template(tokenize=False): special tokens first, kwargs over them."""
    template_kwargs = {}
    if bos is not None:
        template_kwargs["bos_token"] = bos
    if eos is not None:
        template_kwargs["eos_token"] = eos
    template_kwargs.update(kwargs)
    rendered, _ = chat_template_utils.render_jinja_template(
        conversations=[messages],
        tools=tools,
        documents=None,
        chat_template=source,
        add_generation_prompt=add_generation_prompt,
        **template_kwargs,
    )
    return rendered[0]


def main():
    out = {
        "generated_by": "scripts/make_template_fixtures.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "now": NOW.isoformat(),
        "now_unix": NOW_UNIX,
        "templates": {},
        "cases": [],
    }
    for name, (file, bos, eos) in TEMPLATES.items():
        source = (DIR / file).read_text(encoding="utf-8")
        out["templates"][name] = {"file": file, "bos_token": bos, "eos_token": eos}
        for case, messages, agp, kwargs, tools in cases_for(name):
            entry = {
                "template": name,
                "case": case,
                "messages": messages,
                "add_generation_prompt": agp,
                "kwargs": kwargs,
            }
            if tools is not None:
                entry["tools"] = tools
            try:
                entry["expected"] = render(source, bos, eos, messages, agp, kwargs, tools)
            except jinja2.TemplateError as e:
                # raise_exception("…") in the template: PocketLM's ChatTemplateRejected.
                entry["error"] = str(e)
            out["cases"].append(entry)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    n = len(out["cases"])
    errors = sum("error" in c for c in out["cases"])
    print(f"wrote {OUT} ({n} cases, {errors} rejected)")


if __name__ == "__main__":
    main()
