// The demo chat page: load a model with a progress bar, stream answers, stop them, show tokens/s.
// It also announces what happens as window events ("pocketlm:loaded", "pocketlm:token",
// "pocketlm:tool_call", "pocketlm:done", "pocketlm:error") so that scripts/demo-prompt.mjs can drive it
// headless. The reply may be text, JSON under a schema (response_format) or a tool call.
import { PocketLM } from "../src/index.js";

const DEFAULT_MODEL = new URL("../models/SmolLM2-135M-Instruct.Q4_1.gguf", import.meta.url).href;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const announce = (name, detail) => window.dispatchEvent(new CustomEvent(`pocketlm:${name}`, { detail }));

let lm = null;
let history = [];
let running = null; // the AbortController of the answer being written

$("model-url").value = params.get("model") ?? DEFAULT_MODEL;
$("schema").value = JSON.stringify(
  {
    type: "object",
    properties: { answer: { type: "string" }, confidence: { enum: ["low", "medium", "high"] } },
    required: ["answer", "confidence"],
    additionalProperties: false,
  },
  null,
  2,
);
$("tools").value = JSON.stringify(
  [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The current weather in a city",
        parameters: {
          type: "object",
          properties: { city: { type: "string" }, unit: { enum: ["celsius", "fahrenheit"] } },
          required: ["city", "unit"],
          additionalProperties: false,
        },
      },
    },
  ],
  null,
  2,
);
const mode = () => document.querySelector('input[name="mode"]:checked').value;
const showMode = () => {
  $("json-box").hidden = mode() !== "json";
  $("tools-box").hidden = mode() !== "tools";
};
for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showMode);
if (params.has("mode")) document.querySelector(`input[name="mode"][value="${params.get("mode")}"]`)?.click();
showMode();

/** The request fields of the chosen reply mode: a JSON schema's response_format, or tools. */
function modeFields() {
  if (mode() === "json") {
    const text = $("schema").value.trim();
    if (!text) return { response_format: { type: "json_object" } };
    return { response_format: { type: "json_schema", json_schema: { name: "reply", schema: JSON.parse(text), strict: true } } };
  }
  if (mode() === "tools") {
    return { tools: JSON.parse($("tools").value), tool_choice: $("tool-required").checked ? "required" : "auto" };
  }
  return {};
}
if (params.has("temperature")) $("temperature").value = params.get("temperature");
if (params.has("max_tokens")) $("max-tokens").value = params.get("max_tokens");

const mib = (n) => `${(n / (1 << 20)).toFixed(1)} MiB`;

function setChatEnabled(on) {
  for (const id of ["prompt", "send", "clear"]) $(id).disabled = !on;
}

function bubble(role, text = "") {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("chat").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function showError(e) {
  bubble("error", `${e.code ? `[${e.code}] ` : ""}${e.message}`);
  announce("error", { code: e.code, message: e.message });
}

async function checkSupport() {
  const report = await PocketLM.supportReport();
  if (!report.supported) {
    $("support").hidden = false;
    $("support").textContent = `PocketLM cannot run here: ${report.reason}`;
  } else if (report.backend === "cpu") {
    $("device").textContent = `CPU backend (WebAssembly): ${report.backendReason}`;
  } else {
    const a = report.adapter;
    $("device").textContent = `WebGPU: ${a.description || a.vendor || "GPU"}`;
  }
  return report.supported;
}

async function load(url) {
  $("load").disabled = true;
  setChatEnabled(false);
  const old = lm;
  lm = null;
  await old?.unload();
  $("progress").value = 0;
  $("load-status").textContent = "starting…";
  const t0 = performance.now();
  try {
    lm = await PocketLM.load(url, {
      // ?context=N: KV-cache positions (default: the model's, up to 4096).
      ...(params.has("context") ? { context: Number(params.get("context")) } : {}),
      onProgress(p) {
        const total = p.allTotal ?? p.bytesTotal;
        const done = p.allDone ?? p.bytesDone;
        if (total) $("progress").value = done / total;
        $("load-status").textContent = `${mib(done)}${total ? ` of ${mib(total)}` : ""}`;
      },
    });
  } catch (e) {
    $("load-status").textContent = "failed";
    $("load").disabled = false;
    showError(e);
    return;
  }
  lm.addEventListener("error", (event) => {
    showError(event.error);
    $("load-status").textContent = "lost: load again";
    setChatEnabled(false);
    $("load").disabled = false;
  });
  const seconds = (performance.now() - t0) / 1000;
  const info = lm.info;
  $("progress").value = 1;
  $("load-status").textContent = `ready: ${info.name} in ${seconds.toFixed(1)} s`;
  const where = info.backend === "cpu" ? `runs on the ${info.device}` : `runs on WebGPU, ${info.profile} profile`;
  $("device").textContent = `${where} · ${info.layers} layers · context ${info.context}`;
  $("load").disabled = false;
  setChatEnabled(true);
  announce("loaded", { info, seconds });
}

async function ask(text) {
  if (!lm || running) return;
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant");
  out.classList.add("streaming");
  running = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  let tokens = 0;
  let firstAt = 0;
  let reply = "";
  const calls = [];
  try {
    const stream = await lm.chat.completions.create({
      messages: history,
      stream: true,
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      max_tokens: Number($("max-tokens").value),
      signal: running.signal,
      ...modeFields(),
    });
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      for (const call of choice.delta.tool_calls ?? []) {
        calls.push(call);
        bubble("tool-call", `${call.function.name}(${call.function.arguments})`);
        announce("tool_call", call);
      }
      const piece = choice.delta.content ?? "";
      if (piece) {
        tokens += 1;
        if (tokens === 1) firstAt = performance.now();
        else $("speed").textContent = `${(((tokens - 1) * 1000) / (performance.now() - firstAt)).toFixed(2)} tokens/s`;
        reply += piece;
        out.textContent = reply;
        out.scrollIntoView({ block: "end" });
        announce("token", piece);
      }
      if (choice.finish_reason) {
        const rate = chunk.pocketlm?.tokens_per_second;
        const u = chunk.usage;
        $("speed").textContent =
          `${rate ? `${rate.toFixed(2)} tokens/s` : "–"} · ${u.completion_tokens} tokens · prompt ${u.prompt_tokens}` +
          (choice.finish_reason === "abort" ? " · stopped" : "");
        announce("done", { text: reply, finish_reason: choice.finish_reason, usage: u, tokens_per_second: rate ?? null });
      }
    }
    if (!reply && calls.length) out.remove();
    history.push(
      calls.length
        ? { role: "assistant", content: reply || null, tool_calls: calls.map(({ index, ...c }) => c) }
        : { role: "assistant", content: reply },
    );
  } catch (e) {
    history.pop();
    showError(e);
  } finally {
    out.classList.remove("streaming");
    running = null;
    $("stop").disabled = true;
    $("send").disabled = !lm;
  }
}

$("load-form").addEventListener("submit", (e) => {
  e.preventDefault();
  load($("model-url").value);
});
$("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("prompt").value = "";
  ask(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("ask-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => running?.abort());
$("clear").addEventListener("click", () => {
  history = [];
  $("chat").replaceChildren();
});

if ((await checkSupport()) && params.has("autoload")) load($("model-url").value);
