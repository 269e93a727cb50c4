// Semantic search that never leaves the device: a sentence-embedding model (all-MiniLM-L6-v2)
// embeds every note once into memory; a query is embedded the same way and the notes are ranked
// by cosine similarity (the vectors are normalized, so a dot product). sw.js keeps the app and
// PocketLM's code for offline use; PocketLM keeps the model in its own cache.
import { PocketLM } from "./vendor/pocketlm/src/index.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MODEL = params.get("model") ?? new URL("../../models/all-MiniLM-L6-v2/", location.href).href;
const TOP = 5;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("sw.js", { type: "module" }).catch((e) => console.error("service worker:", e));
}

const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

async function main() {
  $("status").textContent = navigator.onLine ? "loading the model…" : "offline: loading the model from the cache…";
  const lm = await PocketLM.load(MODEL, {
    onProgress: (p) => {
      if (p.allTotal) $("progress").value = p.allDone / p.allTotal;
    },
  });
  const { texts } = await (await fetch("notes.json")).json();
  const t0 = performance.now();
  const vectors = [];
  for (let i = 0; i < texts.length; i += 25) {
    const { data } = await lm.embeddings.create({ input: texts.slice(i, i + 25) });
    vectors.push(...data.map((d) => d.embedding));
    $("progress").value = vectors.length / texts.length;
    $("status").textContent = `indexing: ${vectors.length} of ${texts.length} notes`;
  }
  const seconds = (performance.now() - t0) / 1000;
  $("status").textContent = `${texts.length} notes indexed in ${seconds.toFixed(1)} s with ${lm.info.name} on ${lm.info.backend}`;
  $("status").dataset.ready = "true";
  $("query").disabled = $("go").disabled = false;
  $("search").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("go").disabled = true;
    try {
      const { data } = await lm.embeddings.create({ input: $("query").value });
      const q = data[0].embedding;
      const ranked = texts.map((text, i) => ({ text, score: dot(q, vectors[i]) })).sort((a, b) => b.score - a.score);
      $("results").replaceChildren(
        ...ranked.slice(0, TOP).map(({ text, score }) => {
          const li = document.createElement("li");
          const s = document.createElement("span");
          s.className = "score";
          s.textContent = score.toFixed(3);
          li.append(s, text);
          return li;
        }),
      );
      $("results").dataset.done = String(Number($("results").dataset.done ?? 0) + 1);
    } catch (err) {
      $("results").replaceChildren(`[${err.code}] ${err.message}`);
    } finally {
      $("go").disabled = false;
    }
  });
}

main().catch((e) => {
  $("status").textContent = `failed: [${e.code ?? e.name}] ${e.message}`;
});
