// make bench-browser: PocketLM and wllama (llama.cpp in wasm, the pinned @wllama/wllama
// devDependency) in the same headless Chromium, on the same GGUF file, prompts and greedy decoding,
// timed the same way in the page (test/bench.html): prefill is the time to the first streamed
// token, decode the tokens after it over the time after it. wllama runs on the CPU with one thread
// and, because the page is cross-origin isolated (COOP/COEP), with two (its multi-threaded build);
// PocketLM on its CPU backend (WebAssembly SIMD) with one thread (the single-thread build) and two
// (the threaded build: Web Workers on shared memory), and on the browser's WebGPU adapter,
// whatever it is (SwiftShader on a machine without a GPU).
// Each engine gets one untimed warm-up completion first. Prints a table and PocketLM's speed as a
// ratio of wllama's best.
//
// BENCH_MODEL (default: the default model, models/SmolLM2-135M-Instruct.Q4_1.gguf),
// BENCH_TOKENS (tokens per completion, default 16), BENCH_PROMPTS (how many of the prompts below,
// default 3), BENCH_ENGINES (a comma list of pocketlm-cpu-1, pocketlm-cpu-2, pocketlm-webgpu,
// wllama-1, wllama-2; default all).
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { launch, evaluate, value } from "../test/browser.mjs";
import { serve } from "../test/server.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const MODEL_FILE = resolve(process.env.BENCH_MODEL ?? join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"));
const TOKENS = Number(process.env.BENCH_TOKENS ?? 16);
const PROMPTS = [
  "The capital of France is",
  "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who",
  "Here is a short list of tips for staying healthy during the winter months: 1.",
  "The three primary colors are",
  "In computer science, a hash table is a data structure that",
].slice(0, Number(process.env.BENCH_PROMPTS ?? 3));
const ENGINES = (process.env.BENCH_ENGINES ?? "pocketlm-cpu-1,pocketlm-cpu-2,pocketlm-webgpu,wllama-1,wllama-2").split(",");

if (!existsSync(MODEL_FILE)) {
  console.error(`${MODEL_FILE} is missing: run make setup (scripts/fetch-model.sh)`);
  process.exit(1);
}

const isolation = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const server = await serve({ "/": WWW, "/bench-model/": dirname(MODEL_FILE) }, { headers: () => isolation });
const browser = await launch();
const page = await browser.newPage();
page.on("pageerror", (e) => console.error("[page]", e.message));
const modelUrl = `${server.url}/bench-model/${basename(MODEL_FILE)}`;

/** Loads one engine in the page, warms it up, runs every prompt: the load time and per-prompt
 * timings. */
async function run(engine) {
  await page.goto(`${server.url}/test/bench.html`);
  await page.waitForFunction(() => document.getElementById("out").textContent !== "importing…", null, { timeout: 60_000 });
  return value(
    await evaluate(
      page,
      async ({ engine, modelUrl, prompts, tokens }) => {
        const t0 = performance.now();
        let complete;
        let info;
        if (engine.startsWith("pocketlm")) {
          const [, backend, threads] = engine.split("-");
          const lm = await globalThis.pocketlm.PocketLM.load(modelUrl, { context: 512, backend, threads: threads ? Number(threads) : undefined });
          const report = await globalThis.pocketlm.PocketLM.supportReport();
          const adapter = report.adapter ? `${report.adapter.vendor} ${report.adapter.architecture} ${report.adapter.description ?? ""}`.trim() : "";
          info = backend === "cpu" ? `${lm.info.device}${lm.info.threadsNote ? ` (${lm.info.threadsNote})` : ""}` : `WebGPU ${lm.info.profile} profile on ${adapter}`;
          complete = async (prompt, n, onPiece) => {
            let usage = null;
            let own = null;
            for await (const c of await lm.completions.create({ prompt, max_tokens: n, temperature: 0, stream: true })) {
              if (c.choices[0]?.text) onPiece();
              if (c.usage) usage = c.usage;
              if (c.pocketlm) own = c.pocketlm;
            }
            return { promptTokens: usage.prompt_tokens, tokens: usage.completion_tokens, ownPrefillMs: own.prefill_ms, ownDecodeMs: own.decode_ms };
          };
        } else {
          const threads = Number(engine.split("-")[1]);
          const w = new globalThis.Wllama(globalThis.wllamaAssets, { suppressNativeLog: true });
          await w.loadModelFromUrl(modelUrl, { n_ctx: 512, n_threads: threads, n_gpu_layers: 0 });
          info = `${w.getNumThreads()} thread(s), ${w.isMultithread() ? "multi" : "single"}-thread build, crossOriginIsolated ${globalThis.crossOriginIsolated}`;
          complete = async (prompt, n, onPiece) => {
            let usage = null;
            let own = null;
            for await (const c of await w.createCompletion({ prompt, max_tokens: n, temperature: 0, stream: true })) {
              if (c.choices?.[0]?.text) onPiece();
              if (c.usage) usage = c.usage;
              if (c.timings) own = c.timings;
            }
            return {
              promptTokens: usage?.prompt_tokens ?? own?.prompt_n,
              tokens: usage?.completion_tokens ?? own?.predicted_n,
              ownPrefillMs: own?.prompt_ms,
              ownDecodeMs: own?.predicted_ms,
            };
          };
        }
        const loadMs = performance.now() - t0;
        await complete("Hello", 2, () => {});
        const runs = [];
        for (const prompt of prompts) runs.push(await globalThis.timeCompletion((onPiece) => complete(prompt, tokens, onPiece)));
        return { loadMs, info, runs };
      },
      { engine, modelUrl, prompts: PROMPTS, tokens: TOKENS },
    ),
  );
}

const fmt = (x, digits = 2) => (x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(digits));
const results = {};
try {
  for (const engine of ENGINES) {
    const r = await run(engine);
    // Over all prompts: prompt tokens over time to first token; generated tokens after the first
    // over the time after it.
    let promptTokens = 0;
    let ttft = 0;
    let decodeTokens = 0;
    let decodeMs = 0;
    for (const x of r.runs) {
      promptTokens += x.promptTokens;
      ttft += x.ttftMs;
      if (x.tokens > 1 && x.decodeTokensPerSecond) {
        decodeTokens += x.tokens - 1;
        decodeMs += ((x.tokens - 1) * 1000) / x.decodeTokensPerSecond;
      }
    }
    results[engine] = {
      info: r.info,
      loadS: r.loadMs / 1000,
      prefill: (promptTokens * 1000) / ttft,
      decode: decodeMs > 0 ? (decodeTokens * 1000) / decodeMs : null,
      promptTokens,
      tokens: r.runs.reduce((a, x) => a + x.tokens, 0),
    };
    console.log(`${engine}: ${r.info}; ${JSON.stringify(r.runs)}`);
  }
} finally {
  await browser.close();
  await server.close();
}

console.log(`\nmodel ${basename(MODEL_FILE)}, ${PROMPTS.length} prompts × ${TOKENS} tokens, greedy\n`);
console.log("engine             load s   prompt tokens   prefill tokens/s   decode tokens/s");
for (const [engine, r] of Object.entries(results)) {
  console.log(
    `${engine.padEnd(17)} ${fmt(r.loadS, 1).padStart(7)} ${String(r.promptTokens).padStart(15)} ${fmt(r.prefill).padStart(18)} ${fmt(r.decode).padStart(17)}`,
  );
}
const wllamas = Object.entries(results).filter(([e]) => e.startsWith("wllama"));
for (const [engine, p] of Object.entries(results).filter(([e]) => e.startsWith("pocketlm"))) {
  if (wllamas.length === 0) break;
  const best = (key) => Math.max(...wllamas.map(([, r]) => r[key] ?? 0));
  const one = results["wllama-1"];
  const single = engine === "pocketlm-cpu-1" && one ? `; / wllama on one thread: prefill ${fmt(p.prefill / one.prefill, 3)}×, decode ${fmt(p.decode / one.decode, 3)}×` : "";
  console.log(`\n${engine} / wllama's best: prefill ${fmt(p.prefill / best("prefill"), 3)}×, decode ${fmt(p.decode / best("decode"), 3)}×${single}`);
}
