// make bench-browser: PocketLM and wllama (llama.cpp in wasm, the pinned @wllama/wllama
// devDependency) in the same headless Chromium, on the same GGUF file, prompts and greedy decoding,
// timed the same way in the page (test/bench.html): prefill is the time to the first streamed
// token, decode the tokens after it over the time after it. wllama runs on the CPU with one thread
// and, because the page is cross-origin isolated (COOP/COEP), with two (its multi-threaded build);
// PocketLM on its CPU backend (WebAssembly SIMD) with one thread (the single-thread build) and two
// (the threaded build: Web Workers on shared memory), and on the browser's WebGPU adapter,
// whatever it is (SwiftShader on a machine without a GPU).
// Each engine gets one untimed warm-up completion first. Prints a table and PocketLM's speed as a
// ratio of wllama's best. Memory: after the warm-up (embeddings: after the load), the page's
// memory with its workers', wasm memories included (`performance.measureUserAgentSpecificMemory`,
// answered at once with Blink's ForceEagerMeasureMemory; PocketLM's single-thread worker, which
// Chromium leaves out of it, is added from the wasm memory PocketLM reports: test/bench.html's
// pageMemory), and PocketLM's CPU backend's as a ratio of the smallest wllama's (on WebGPU the
// weights are in GPU memory, not counted here).
//
// Then embeddings: all-MiniLM-L6-v2, PocketLM's `embeddings.create` against wllama's
// `createEmbedding`, both on the one f32 GGUF that scripts/st_to_gguf.py makes from the
// sentence-transformers folder (models/all-MiniLM-L6-v2, scripts/fetch-minilm.sh; the file is what
// llama.cpp's convert_hf_to_gguf.py writes, byte for byte; made here when missing, with the `gguf`
// package in a venv, target/gguf-venv), on the same texts: batches of 1, 8 and 64 texts, each one call with
// the batch as its `input` list for both engines (wllama 3 runs llama.cpp's server loop in wasm:
// the texts of one call become one task each, decoded together in its parallel slots, 8 here).
// Each batch size gets one untimed call, then timed calls until BENCH_EMBED_SECONDS have passed
// (an engine slower than that, WebGPU on SwiftShader, is timed on that first call instead);
// embeddings/s and tokens/s (each engine's own prompt_tokens count), timed in the page around the
// call, and PocketLM's as a ratio of wllama's best. The engines' vectors for the 64 texts are
// compared (cosine distance), so both do the same work.
//
// Then loads: the decode model loaded by PocketLM's CPU backend (one thread) and by wllama (one
// thread), each with its own cache emptied first (cold: download, store, load; PocketLM's Cache
// API buckets, wllama's origin private file system) and again from that cache (warm), from the
// local server, alternating for BENCH_LOAD_ROUNDS rounds (default 3): the median seconds of each
// and PocketLM's as a ratio of wllama's. Each load is timed in the page from the call until the
// model can generate, and the model is unloaded after it.
//
// BENCH_MODEL (default: the default model, models/SmolLM2-135M-Instruct.Q4_1.gguf),
// BENCH_TOKENS (tokens per completion, default 16), BENCH_PROMPTS (how many of the prompts below,
// default 3), BENCH_PROMPT_REPEAT (each prompt that many times over, for long prompts; default 1),
// BENCH_CONTEXT (both engines' context for the decode section, default 512; raise it with
// BENCH_PROMPT_REPEAT), BENCH_KV_DTYPE (PocketLM's `kvDtype`, f16 or f32; default its own, f16),
// BENCH_ENGINES (a comma list of pocketlm-cpu-1, pocketlm-cpu-2,
// pocketlm-cpu-1-simd128, pocketlm-cpu-2-simd128, pocketlm-webgpu, wllama-1, wllama-2; default
// all: pocketlm-cpu-N is the build the package picks, relaxed SIMD in Chromium, and
// pocketlm-cpu-N-simd128 the SIMD128 build, `relaxedSimd: false`, with their ratio printed). BENCH_SECTIONS (decode, embeddings, load; default all),
// BENCH_EMBED_ENGINES (the same names; default all but the SIMD128 builds), BENCH_EMBED_BATCHES (default 1,8,64),
// BENCH_EMBED_SECONDS (timed seconds per batch size and engine, default 2), BENCH_EMBED_MAX_SECONDS
// (a batch size whose one call would take longer, estimated from the smaller one, is skipped:
// default 60, which leaves out batch 64 on SwiftShader), BENCH_EMBED_MODEL (a
// sentence-transformers BERT folder, default models/all-MiniLM-L6-v2), BENCH_EMBED_GGUF (its GGUF,
// default beside it: models/all-MiniLM-L6-v2.f32.gguf), BENCH_WLLAMA_PARALLEL (wllama's slots,
// default 8).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { launch, evaluate, value } from "../test/browser.mjs";
import { serve } from "../test/server.mjs";
import { cosineDistance } from "../test/vectors.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const MODEL_FILE = resolve(process.env.BENCH_MODEL ?? join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"));
const TOKENS = Number(process.env.BENCH_TOKENS ?? 16);
const CONTEXT = Number(process.env.BENCH_CONTEXT ?? 512);
const KV_DTYPE = process.env.BENCH_KV_DTYPE;
const PROMPTS = [
  "The capital of France is",
  "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who",
  "Here is a short list of tips for staying healthy during the winter months: 1.",
  "The three primary colors are",
  "In computer science, a hash table is a data structure that",
].slice(0, Number(process.env.BENCH_PROMPTS ?? 3)).map((p) => Array(Number(process.env.BENCH_PROMPT_REPEAT ?? 1)).fill(p).join(" "));
const ALL_ENGINES = "pocketlm-cpu-1,pocketlm-cpu-2,pocketlm-cpu-1-simd128,pocketlm-cpu-2-simd128,pocketlm-webgpu,wllama-1,wllama-2";
// The engines the embeddings section runs by default (the SIMD128 builds are compared on decode).
const EMBED_DEFAULT = "pocketlm-cpu-1,pocketlm-cpu-2,pocketlm-webgpu,wllama-1,wllama-2";
const ENGINES = (process.env.BENCH_ENGINES ?? ALL_ENGINES).split(",");
const SECTIONS = (process.env.BENCH_SECTIONS ?? "decode,embeddings,load").split(",");
const LOAD_ROUNDS = Number(process.env.BENCH_LOAD_ROUNDS ?? 3);
for (const s of SECTIONS) {
  if (!["decode", "embeddings", "load"].includes(s)) throw new Error(`BENCH_SECTIONS: unknown section ${s} (decode, embeddings, load)`);
}
const EMBED_ENGINES = (process.env.BENCH_EMBED_ENGINES ?? EMBED_DEFAULT).split(",");
for (const [name, list] of [["BENCH_ENGINES", ENGINES], ["BENCH_EMBED_ENGINES", EMBED_ENGINES]]) {
  for (const e of list) {
    if (!ALL_ENGINES.split(",").includes(e)) throw new Error(`${name}: unknown engine ${e} (${ALL_ENGINES})`);
  }
}
const EMBED_BATCHES = (process.env.BENCH_EMBED_BATCHES ?? "1,8,64").split(",").map(Number);
const EMBED_SECONDS = Number(process.env.BENCH_EMBED_SECONDS ?? 2);
const EMBED_MAX_SECONDS = Number(process.env.BENCH_EMBED_MAX_SECONDS ?? 60);
const EMBED_DIR = resolve(process.env.BENCH_EMBED_MODEL ?? join(ROOT, "models", "all-MiniLM-L6-v2"));
const EMBED_GGUF = resolve(process.env.BENCH_EMBED_GGUF ?? `${EMBED_DIR}.f32.gguf`);
const WLLAMA_PARALLEL = Number(process.env.BENCH_WLLAMA_PARALLEL ?? 8);
// 64 texts of 6 to 35 words (about 8 to 45 tokens), cut from one paragraph at different places.
const PARAGRAPH = (
  "Semantic search finds notes by meaning rather than by their exact words. Each note is turned into a vector " +
  "by a small sentence encoder, and a question is turned into a vector the same way; the notes whose vectors " +
  "point in the closest direction are shown first. The encoder runs on the device, so nothing leaves it, and a " +
  "few hundred notes are indexed in seconds. Short notes such as a shopping list, a phone number or a reminder " +
  "to water the plants sit next to long ones: meeting minutes, a recipe for bread with rye flour and caraway, " +
  "directions to the old mill by the river, or a paragraph copied from a manual about replacing a bicycle chain. " +
  "Good results depend on the model, on how the text is cut into pieces, and on whether the vectors are normalised " +
  "before they are compared."
).split(" ");
const TEXTS = Array.from({ length: 64 }, (_, i) => {
  const start = (i * 13) % PARAGRAPH.length;
  const words = [...PARAGRAPH, ...PARAGRAPH].slice(start, start + 6 + ((i * 11) % 30));
  return words.join(" ");
});

if ((SECTIONS.includes("decode") || SECTIONS.includes("load")) && !existsSync(MODEL_FILE)) {
  console.error(`${MODEL_FILE} is missing: run make setup (scripts/fetch-model.sh)`);
  process.exit(1);
}
if (SECTIONS.includes("embeddings")) {
  if (!existsSync(join(EMBED_DIR, "config.json"))) {
    console.error(`${EMBED_DIR} is missing: run scripts/fetch-minilm.sh`);
    process.exit(1);
  }
  if (!existsSync(EMBED_GGUF)) makeGguf();
}

/** wllama's GGUF of the embedding model, by scripts/st_to_gguf.py with the `gguf` package (0.19.0,
 * and numpy) in a venv of its own, made once. */
function makeGguf() {
  const venv = join(process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target"), "gguf-venv");
  const python = join(venv, "bin", "python");
  const run = (cmd, args) => execFileSync(cmd, args, { stdio: "inherit" });
  try {
    execFileSync(python, ["-c", "import gguf, numpy"], { stdio: "ignore" });
  } catch {
    console.log(`making ${venv} (the gguf package, for scripts/st_to_gguf.py)`);
    run("python3", ["-m", "venv", venv]);
    run(join(venv, "bin", "pip"), ["install", "--quiet", "--disable-pip-version-check", "gguf==0.19.0", "numpy"]);
  }
  console.log(`converting ${EMBED_DIR} to ${EMBED_GGUF} (scripts/st_to_gguf.py, f32)`);
  run(python, [join(ROOT, "scripts", "st_to_gguf.py"), EMBED_DIR, EMBED_GGUF, "--outtype", "f32", "--quiet"]);
}

const isolation = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
const server = await serve(
  { "/": WWW, "/bench-model/": dirname(MODEL_FILE), "/bench-embed-gguf/": dirname(EMBED_GGUF) },
  { headers: () => isolation },
);
const browser = await launch({ eagerMemory: true });
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
      async ({ engine, modelUrl, prompts, tokens, context, kvDtype }) => {
        const t0 = performance.now();
        let complete;
        let info;
        let ownWasm = null;
        if (engine.startsWith("pocketlm")) {
          const [, backend, threads, build] = engine.split("-");
          const lm = await globalThis.pocketlm.PocketLM.load(modelUrl, {
            context,
            kvDtype,
            backend,
            threads: threads ? Number(threads) : undefined,
            relaxedSimd: build === "simd128" ? false : undefined,
          });
          const report = await globalThis.pocketlm.PocketLM.supportReport();
          const adapter = report.adapter ? `${report.adapter.vendor} ${report.adapter.architecture} ${report.adapter.description ?? ""}`.trim() : "";
          info = backend === "cpu" ? `${lm.info.device}${lm.info.threadsNote ? ` (${lm.info.threadsNote})` : ""}` : `WebGPU ${lm.info.profile} profile on ${adapter}`;
          ownWasm = async () => (await lm.memoryUsage()).wasmBytes;
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
          await w.loadModelFromUrl(modelUrl, { n_ctx: context, n_threads: threads, n_gpu_layers: 0 });
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
        const memory = await globalThis.pageMemory(ownWasm ? await ownWasm() : null);
        const runs = [];
        for (const prompt of prompts) runs.push(await globalThis.timeCompletion((onPiece) => complete(prompt, tokens, onPiece)));
        // After the prompts: what the KV cache of the longest took (wllama sizes its for the
        // context at load; PocketLM's grows with the positions it holds).
        const memoryAfter = await globalThis.pageMemory(ownWasm ? await ownWasm() : null);
        return { loadMs, info, runs, memory, memoryAfter };
      },
      { engine, modelUrl, prompts: PROMPTS, tokens: TOKENS, context: CONTEXT, kvDtype: KV_DTYPE },
    ),
  );
}

/** Loads one engine with the embedding model, then per batch size one untimed call and timed calls
 * until `seconds` have passed: calls, texts, tokens and milliseconds, and the vectors of the first
 * 64 texts. */
async function runEmbeddings(engine) {
  await page.goto(`${server.url}/test/bench.html`);
  await page.waitForFunction(() => document.getElementById("out").textContent !== "importing…", null, { timeout: 60_000 });
  return value(
    await evaluate(
      page,
      async ({ engine, ggufUrl, texts, batches, seconds, maxSeconds, parallel }) => {
        const t0 = performance.now();
        let embed;
        let info;
        let unload;
        let ownWasm = null;
        if (engine.startsWith("pocketlm")) {
          const [, backend, threads, build] = engine.split("-");
          const lm = await globalThis.pocketlm.PocketLM.load(ggufUrl, {
            backend,
            threads: threads ? Number(threads) : undefined,
            relaxedSimd: build === "simd128" ? false : undefined,
          });
          const report = await globalThis.pocketlm.PocketLM.supportReport();
          const adapter = report.adapter ? `${report.adapter.vendor} ${report.adapter.architecture} ${report.adapter.description ?? ""}`.trim() : "";
          info = backend === "cpu" ? `${lm.info.device}${lm.info.threadsNote ? ` (${lm.info.threadsNote})` : ""}` : `WebGPU ${lm.info.profile} profile on ${adapter}`;
          embed = async (input) => {
            const r = await lm.embeddings.create({ input });
            return { vectors: r.data.map((d) => d.embedding), tokens: r.usage.prompt_tokens };
          };
          unload = () => lm.unload();
          ownWasm = async () => (await lm.memoryUsage()).wasmBytes;
        } else {
          const threads = Number(engine.split("-")[1]);
          const w = new globalThis.Wllama(globalThis.wllamaAssets, { suppressNativeLog: true });
          // n_batch = n_ubatch: an encoder's input is decoded in one piece; `parallel` slots, so a
          // call's texts are decoded together, up to 512 tokens a batch.
          await w.loadModelFromUrl(ggufUrl, { embeddings: true, n_ctx: 512, n_batch: 512, n_ubatch: 512, n_parallel: parallel, n_threads: threads, n_gpu_layers: 0 });
          info = `${w.getNumThreads()} thread(s), ${w.isMultithread() ? "multi" : "single"}-thread build, ${parallel} slots, crossOriginIsolated ${globalThis.crossOriginIsolated}`;
          embed = async (input) => {
            const r = await w.createEmbedding({ input });
            return { vectors: r.data.sort((a, b) => a.index - b.index).map((d) => d.embedding), tokens: r.usage?.prompt_tokens };
          };
          unload = () => w.exit();
        }
        const loadMs = performance.now() - t0;
        const wasm = ownWasm ? await ownWasm() : null;
        const memory = await globalThis.pageMemory(wasm);
        const pick = (n, call) => Array.from({ length: n }, (_, j) => texts[(call * n + j) % texts.length]);
        const runs = [];
        let vectors = [];
        // Seconds per text of the last batch size, to skip a batch size whose one call would take
        // longer than `maxSeconds` (batch 64 on SwiftShader takes minutes).
        let perText = null;
        for (const n of [...batches].sort((a, b) => a - b)) {
          if (perText !== null && perText * n > maxSeconds) {
            runs.push({ batch: n, skipped: Math.round(perText * n) });
            continue;
          }
          // The first call's inputs are the first n texts, the same for every engine.
          const t = performance.now();
          const first = await embed(pick(n, 0));
          const firstMs = performance.now() - t;
          if (first.vectors.length > vectors.length) vectors = first.vectors;
          let calls = 0;
          let tokens = 0;
          let ms;
          if (firstMs > seconds * 1000 && runs.length > 0) {
            // A slow engine's first call of a batch size is its measurement (the untimed call of
            // the smallest batch size warmed it up).
            calls = 1;
            tokens = first.tokens;
            ms = firstMs;
          } else {
            const start = performance.now();
            while (calls === 0 || performance.now() - start < seconds * 1000) {
              const r = await embed(pick(n, calls + 1));
              tokens += r.tokens;
              calls += 1;
            }
            ms = performance.now() - start;
          }
          perText = ms / 1000 / (calls * n);
          runs.push({ batch: n, calls, texts: calls * n, tokens, ms, firstTokens: first.tokens });
        }
        await unload();
        return { loadMs, info, runs, vectors, memory, wasm };
      },
      {
        engine,
        ggufUrl: `${server.url}/bench-embed-gguf/${basename(EMBED_GGUF)}`,
        texts: TEXTS,
        batches: EMBED_BATCHES,
        seconds: EMBED_SECONDS,
        maxSeconds: EMBED_MAX_SECONDS,
        parallel: WLLAMA_PARALLEL,
      },
    ),
  );
}

const fmt = (x, digits = 2) => (x === null || x === undefined || !Number.isFinite(x) ? "—" : x.toFixed(digits));
const results = {};
const embedResults = {};
const loadResults = { pocketlm: { cold: [], warm: [] }, wllama: { cold: [], warm: [] } };
try {
  for (const engine of SECTIONS.includes("decode") ? ENGINES : []) {
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
      memory: r.memory,
      memoryAfter: r.memoryAfter,
      prefill: (promptTokens * 1000) / ttft,
      decode: decodeMs > 0 ? (decodeTokens * 1000) / decodeMs : null,
      promptTokens,
      tokens: r.runs.reduce((a, x) => a + x.tokens, 0),
    };
    console.log(`${engine}: ${r.info}; ${JSON.stringify(r.runs)}`);
  }
  for (const engine of SECTIONS.includes("embeddings") ? EMBED_ENGINES : []) {
    const r = await runEmbeddings(engine);
    embedResults[engine] = r;
    console.log(`embeddings ${engine}: ${r.info}; memory ${mib(r.memory)} MiB (page and workers)${r.wasm != null ? `, its own wasm memory ${mib(r.wasm)} MiB` : ""}; ${JSON.stringify(r.runs)}`);
  }
  for (let round = 0; round < (SECTIONS.includes("load") ? LOAD_ROUNDS : 0); round++) {
    for (const engine of ["pocketlm", "wllama"]) {
      for (const cache of ["cold", "warm"]) {
        const s = await timeLoad(engine, cache);
        loadResults[engine][cache].push(s);
        console.log(`load round ${round + 1}: ${engine} ${cache} ${fmt(s, 2)} s`);
      }
    }
  }
} finally {
  await browser.close();
  await server.close();
}

if (Object.keys(results).length > 0) printDecode();
if (Object.keys(embedResults).length > 0) printEmbeddings();
if (loadResults.pocketlm.cold.length > 0) printLoads();

/** Seconds from the load call until the model can generate, with the engine's cache emptied first
 * (`cold`) or as the previous load left it (`warm`); the model is unloaded after. */
async function timeLoad(engine, cache) {
  await page.goto(`${server.url}/test/bench.html`);
  await page.waitForFunction(() => document.getElementById("out").textContent !== "importing…", null, { timeout: 60_000 });
  const ms = value(
    await evaluate(
      page,
      async ({ engine, cache, modelUrl }) => {
        if (engine === "pocketlm") {
          const { PocketLM } = globalThis.pocketlm;
          if (cache === "cold") await PocketLM.cache.clear();
          const t0 = performance.now();
          const lm = await PocketLM.load(modelUrl, { context: 512, backend: "cpu", threads: 1 });
          const ms = performance.now() - t0;
          await lm.unload();
          return ms;
        }
        if (cache === "cold") {
          const root = await navigator.storage.getDirectory();
          for await (const [name] of root.entries()) await root.removeEntry(name, { recursive: true });
        }
        const t0 = performance.now();
        const w = new globalThis.Wllama(globalThis.wllamaAssets, { suppressNativeLog: true });
        await w.loadModelFromUrl(modelUrl, { n_ctx: 512, n_threads: 1, n_gpu_layers: 0 });
        const ms = performance.now() - t0;
        await w.exit();
        return ms;
      },
      { engine, cache, modelUrl },
    ),
  );
  return ms / 1000;
}

function printLoads() {
  const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
  const { pocketlm: p, wllama: w } = loadResults;
  console.log(`
loads of ${basename(MODEL_FILE)} from the local server, one thread, median of ${p.cold.length} alternating rounds (s)
`);
  console.log("engine             cold (download, store, load)   warm (from its cache)");
  for (const [engine, r] of [["pocketlm-cpu-1", p], ["wllama-1", w]]) {
    console.log(`${engine.padEnd(17)} ${fmt(median(r.cold), 2).padStart(29)} ${fmt(median(r.warm), 2).padStart(23)}`);
  }
  console.log(`
pocketlm / wllama load time: cold ${fmt(median(p.cold) / median(w.cold), 3)}×, warm ${fmt(median(p.warm) / median(w.warm), 3)}× (lower is faster)`);
}

function printDecode() {
  console.log(`\nmodel ${basename(MODEL_FILE)}, ${PROMPTS.length} prompts × ${TOKENS} tokens, greedy\n`);
  console.log(`context ${CONTEXT} positions${KV_DTYPE ? `, PocketLM's KV cache ${KV_DTYPE}` : ""}; memory after load and after the prompts\n`);
  console.log("engine                   load s   memory MiB   after MiB   prompt tokens   prefill tokens/s   decode tokens/s");
  for (const [engine, r] of Object.entries(results)) {
    console.log(
      `${engine.padEnd(23)} ${fmt(r.loadS, 1).padStart(7)} ${mib(r.memory).padStart(12)} ${mib(r.memoryAfter).padStart(11)} ${String(r.promptTokens).padStart(15)} ${fmt(r.prefill).padStart(18)} ${fmt(r.decode).padStart(17)}`,
    );
  }
  memoryRatios(results);
  memoryRatios(results, "memoryAfter", "memory after the prompts");
  const wllamas = Object.entries(results).filter(([e]) => e.startsWith("wllama"));
  for (const [engine, p] of Object.entries(results).filter(([e]) => e.startsWith("pocketlm"))) {
    if (wllamas.length === 0) break;
    const best = (key) => Math.max(...wllamas.map(([, r]) => r[key] ?? 0));
    const one = results["wllama-1"];
    const single = engine === "pocketlm-cpu-1" && one ? `; / wllama on one thread: prefill ${fmt(p.prefill / one.prefill, 3)}×, decode ${fmt(p.decode / one.decode, 3)}×` : "";
    console.log(`\n${engine} / wllama's best: prefill ${fmt(p.prefill / best("prefill"), 3)}×, decode ${fmt(p.decode / best("decode"), 3)}×${single}`);
  }
  for (const threads of [1, 2]) {
    const [relaxed, plain] = [results[`pocketlm-cpu-${threads}`], results[`pocketlm-cpu-${threads}-simd128`]];
    if (!relaxed || !plain) continue;
    console.log(`\npocketlm-cpu-${threads}, relaxed-SIMD build / SIMD128 build: prefill ${fmt(relaxed.prefill / plain.prefill, 3)}×, decode ${fmt(relaxed.decode / plain.decode, 3)}×`);
  }
}

/** Bytes as MiB for the tables ("-" when the page could not measure). */
function mib(bytes) {
  return bytes == null ? "-" : (bytes / 2 ** 20).toFixed(1);
}

/** Each PocketLM CPU engine's memory (`key` of its row: after load by default; page and workers)
 * as a ratio of the smallest wllama's. */
function memoryRatios(rows, key = "memory", what = "memory after load") {
  const peers = Object.entries(rows).filter(([e, r]) => e.startsWith("wllama") && r[key] != null);
  if (peers.length === 0) return;
  const least = Math.min(...peers.map(([, r]) => r[key]));
  const own = Object.entries(rows).filter(([e, r]) => e.startsWith("pocketlm-cpu") && r[key] != null);
  const parts = own.map(([e, r]) => `${e} ${fmt(r[key] / least, 3)}×`);
  if (parts.length > 0) console.log(`${what} (page and workers) / wllama's smallest: ${parts.join(", ")}`);
}

function printEmbeddings() {
  const entries = Object.entries(embedResults);
  const rate = (r, n) => {
    const x = r.runs.find((x) => x.batch === n && !x.skipped);
    return x ? { emb: (x.texts * 1000) / x.ms, tok: (x.tokens * 1000) / x.ms, firstTokens: x.firstTokens } : null;
  };
  console.log(
    `\nembeddings: ${basename(EMBED_DIR)} (both engines: ${basename(EMBED_GGUF)} by scripts/st_to_gguf.py), ` +
      `${TEXTS.length} texts, batches of ${EMBED_BATCHES.join(", ")} texts per call, ≥ ${EMBED_SECONDS} s timed each\n`,
  );
  console.log(`engine             load s   memory MiB ${EMBED_BATCHES.map((n) => `  batch ${String(n).padStart(2)}: emb/s   tokens/s`).join("")}`);
  for (const [engine, r] of entries) {
    const cells = EMBED_BATCHES.map((n) => {
      const x = rate(r, n);
      return `${fmt(x?.emb, 1).padStart(17)} ${fmt(x?.tok, 0).padStart(10)}`;
    });
    console.log(`${engine.padEnd(17)} ${fmt(r.loadMs / 1000, 1).padStart(7)} ${mib(r.memory).padStart(12)} ${cells.join(" ")}`);
  }
  memoryRatios(embedResults);
  // Same work: the tokens per text and the vectors of the 64 texts, against the first wllama run.
  const wllamas = entries.filter(([e]) => e.startsWith("wllama"));
  const [peerName, peer] = wllamas[0] ?? entries[0];
  const [firstName, firstEngine] = entries[0];
  const distances = (a, b) => {
    const d = a.vectors.slice(0, b.vectors.length).map((v, i) => cosineDistance(v, b.vectors[i]));
    return `max ${Math.max(...d).toExponential(2)}, mean ${(d.reduce((s, x) => s + x, 0) / d.length).toExponential(2)} over the first ${d.length} texts`;
  };
  for (const [engine, r] of entries) {
    if (engine === peerName) continue;
    const tokens = EMBED_BATCHES.map((n) => `${rate(r, n)?.firstTokens ?? "—"}/${rate(peer, n)?.firstTokens ?? "—"}`).join(", ");
    const own = engine !== firstName && firstName !== peerName ? `; vs ${firstName}: ${distances(r, firstEngine)}` : "";
    console.log(`${engine} vs ${peerName}: cosine distance ${distances(r, peer)}${own}; prompt tokens of the same first call per batch size: ${tokens}`);
  }
  for (const [engine, r] of entries) {
    for (const x of r.runs.filter((x) => x.skipped)) {
      console.log(`${engine}: batch ${x.batch} skipped, one call would take about ${x.skipped} s (BENCH_EMBED_MAX_SECONDS=${EMBED_MAX_SECONDS})`);
    }
  }
  for (const [engine, p] of entries.filter(([e]) => e.startsWith("pocketlm"))) {
    if (wllamas.length === 0) break;
    const ratios = EMBED_BATCHES.map((n) => {
      const best = Math.max(...wllamas.map(([, w]) => rate(w, n)?.emb ?? 0));
      return `batch ${n} ${fmt(rate(p, n)?.emb / best, 3)}×`;
    });
    const one = embedResults["wllama-1"];
    const single =
      engine === "pocketlm-cpu-1" && one ? `; / wllama on one thread: ${EMBED_BATCHES.map((n) => `batch ${n} ${fmt(rate(p, n)?.emb / rate(one, n)?.emb, 3)}×`).join(", ")}` : "";
    console.log(`\n${engine} / wllama's best, embeddings/s: ${ratios.join(", ")}${single}`);
  }
}
