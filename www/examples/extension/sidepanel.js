// The side panel: PocketLM runs in its Web Worker, started from this extension page, so the model
// stays loaded while the panel is open even when Chrome stops the extension's service worker
// (background.js holds nothing; it may be a fresh instance at any event). The package
// lies in vendor/pocketlm (copied by scripts/vendor-examples.mjs; with npm, copy
// node_modules/pocketlm/{src,pkg} there). The manifest's CSP allows 'wasm-unsafe-eval', which
// WebAssembly needs, and host_permissions must cover the model's URL.
import { PocketLM } from "./vendor/pocketlm/src/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$("model").value = params.get("model") ?? "http://127.0.0.1:8080/models/SmolLM2-135M-Instruct.Q4_1.gguf";
let lm = null;
let running = null;

$("load").addEventListener("click", async () => {
  $("load").disabled = true;
  await lm?.unload();
  lm = null;
  try {
    const report = await PocketLM.supportReport();
    if (!report.supported) throw Object.assign(new Error(report.reason), { code: "not_supported" });
    $("status").textContent = "loading…";
    lm = await PocketLM.load($("model").value, {
      onProgress: (p) => {
        if (p.allTotal) $("progress").value = p.allDone / p.allTotal;
      },
    });
    $("progress").value = 1;
    $("status").textContent = `ready: ${lm.info.name}`;
    $("prompt").disabled = $("send").disabled = false;
  } catch (e) {
    $("status").textContent = `failed: [${e.code}] ${e.message}`;
  } finally {
    $("load").disabled = false;
  }
});

$("send").addEventListener("click", async () => {
  $("send").disabled = true;
  $("stop").disabled = false;
  $("out").textContent = "";
  delete $("out").dataset.done;
  running = new AbortController();
  try {
    const stream = await lm.chat.completions.create({
      messages: [{ role: "user", content: $("prompt").value }],
      stream: true,
      max_tokens: Number(params.get("max_tokens") ?? 128),
      temperature: Number(params.get("temperature") ?? 0.7),
      signal: running.signal,
    });
    for await (const chunk of stream) $("out").textContent += chunk.choices[0].delta.content ?? "";
    $("out").dataset.done = "true";
  } catch (e) {
    $("out").textContent = `[${e.code}] ${e.message}`;
  } finally {
    $("send").disabled = false;
    $("stop").disabled = true;
  }
});

$("stop").addEventListener("click", () => running?.abort());
