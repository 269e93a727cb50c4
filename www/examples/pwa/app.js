// An offline PWA: sw.js keeps the app and the wasm; PocketLM keeps the model in its own cache
// (Cache API), so after the first visit everything works without a network.
import { PocketLM } from "./vendor/pocketlm/src/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MODEL = params.get("model") ?? new URL("../../models/SmolLM2-135M-Instruct.Q4_1.gguf", location.href).href;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js", { type: "module" }).catch((e) => console.error("service worker:", e));
}

async function main() {
  const support = await PocketLM.supportReport();
  if (!support.supported) {
    $("status").textContent = `PocketLM cannot run here: ${support.reason}`;
    return;
  }
  $("status").textContent = navigator.onLine ? "loading the model…" : "offline: loading the model from the cache…";
  const lm = await PocketLM.load(MODEL, {
    onProgress: (p) => {
      if (p.allTotal) $("progress").value = p.allDone / p.allTotal;
    },
  });
  $("progress").value = 1;
  $("status").textContent = `ready (${lm.info.name})`;
  $("prompt").disabled = $("send").disabled = false;
  $("ask").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("send").disabled = true;
    $("out").textContent = "";
    try {
      const stream = await lm.chat.completions.create({
        messages: [{ role: "user", content: $("prompt").value }],
        stream: true,
        temperature: Number(params.get("temperature") ?? 0.7),
        max_tokens: Number(params.get("max_tokens") ?? 128),
      });
      for await (const chunk of stream) $("out").textContent += chunk.choices[0].delta.content ?? "";
      $("out").dataset.done = "true";
    } catch (err) {
      $("out").textContent = `[${err.code}] ${err.message}`;
    } finally {
      $("send").disabled = false;
    }
  });
}

main().catch((e) => {
  $("status").textContent = `failed: [${e.code ?? e.name}] ${e.message}`;
});
