// Long use stays flat, in a real headless Chromium: many short generations on one model (turns
// that extend the previous prompt and reuse its KV cache, fresh prompts, aborted streams, stop
// strings, greedy and seeded sampling) and repeated load/unload cycles of the tiny model, with
// the engine in the page (`worker: false`) so that one realm's memory is measured throughout:
// wasm linear memory, the JS heap (after a forced GC) and the GPU buffers PocketLM holds (count
// and bytes, from its own allocator).
//
// The bounds: the GPU buffers held after the warm-up do not change at all across generations,
// and return to where they were before the first load once a model is unloaded; wasm memory
// (a high-water mark) grows by at most 2 MiB and the JS heap by at most 4 MiB from the warm-up
// to the end. `make test` runs the short version (100 generations, 10 load cycles); `make soak`
// (POCKETLM_SOAK=long) the long one (1,000 generations, 50 load cycles).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const TINY = "/fixtures/models/tiny-llama.gguf";
const LONG = process.env.POCKETLM_SOAK === "long";
const GENERATIONS = LONG ? 1000 : 100;
const CYCLES = LONG ? 50 : 10;
const MIB = 1 << 20;
const WASM_BOUND = 2 * MIB;
const HEAP_BOUND = 4 * MIB;

let server, browser, page;

before(async () => {
  server = await serve({ "/": WWW, "/fixtures/": join(ROOT, "tests", "fixtures") });
  browser = await launch({ measureMemory: true });
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error("[page]", e.message));
  await page.goto(`${server.url}/test/package.html`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 60_000 });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

const run = async (fn, arg) => value(await evaluate(page, fn, arg));

/** The page's memory after a full GC, as PocketLM reports it. */
const memory = () =>
  run(async () => {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 0));
    globalThis.gc();
    return globalThis.pocketlm.PocketLM.memoryUsage();
  });

function report(label, from, to) {
  const mib = (b) => (b / MIB).toFixed(2);
  console.log(
    `${label}: wasm ${mib(from.wasmBytes)} → ${mib(to.wasmBytes)} MiB, JS heap ${mib(from.jsHeapBytes)} → ` +
      `${mib(to.jsHeapBytes)} MiB, GPU buffers ${from.gpuBuffers} (${mib(from.gpuBytes)} MiB) → ${to.gpuBuffers} (${mib(to.gpuBytes)} MiB)`,
  );
}

/** Runs generations `from..to` on the model in `globalThis.soakModel`: a mix of turns that
 * extend the last prompt (KV reuse), fresh prompts, aborted streams, stop strings and sampling. */
const generations = (range) =>
  run(async ([from, to]) => {
    const lm = globalThis.soakModel;
    const words = ["the", "river", "cold", "light", "over", "stone", "and", "we", "walk", "far"];
    let prompt = globalThis.soakPrompt ?? "once upon a time";
    const stats = { aborted: 0, stopped: 0, reused: 0, length: 0 };
    for (let i = from; i < to; i++) {
      if (i % 9 === 0) prompt = `${words[i % words.length]} ${words[(i * 7) % words.length]} ${i}`;
      const sampling = i % 3 === 0 ? { temperature: 0 } : { temperature: 0.9, top_p: 0.9, seed: i };
      const request = { prompt, max_tokens: 3 + (i % 5), ...sampling };
      // Stop strings that any text is likely to hold.
      if (i % 7 === 3) request.stop = ["e", "a", "o", " "];
      let text;
      if (i % 5 === 2) {
        // A stream aborted after its first piece.
        const controller = new AbortController();
        let got = "";
        const stream = await lm.completions.create({ ...request, stream: true, signal: controller.signal });
        for await (const chunk of stream) {
          got += chunk.choices[0]?.text ?? "";
          controller.abort();
        }
        text = got;
        stats.aborted++;
      } else {
        const r = await lm.completions.create(request);
        text = r.choices[0].text;
        if (r.choices[0].finish_reason === "stop") stats.stopped++;
        if (r.choices[0].finish_reason === "length") stats.length++;
        if (r.usage.prompt_tokens_details.cached_tokens > 0) stats.reused++;
      }
      // The next turn extends this one: its prompt shares everything so far.
      prompt = `${prompt}${text} ${words[(i * 3) % words.length]}`;
      if (prompt.length > 300) prompt = prompt.slice(-40);
    }
    globalThis.soakPrompt = prompt;
    return stats;
  }, range);

test(`${GENERATIONS} generations on one model keep memory flat`, { timeout: LONG ? 3_600_000 : 900_000 }, async () => {
  const start = await memory();
  await run(async (path) => {
    globalThis.soakModel = await globalThis.pocketlm.PocketLM.load(path, { backend: "webgpu", worker: false, context: 256 });
  }, TINY);
  const warmupCount = 30;
  await generations([0, warmupCount]);
  const warm = await memory();
  const stats = await generations([warmupCount, warmupCount + GENERATIONS]);
  const end = await memory();
  report(`${GENERATIONS} generations ${JSON.stringify(stats)}`, warm, end);
  assert.ok(stats.aborted > 0 && stats.stopped > 0 && stats.reused > 0 && stats.length > 0, JSON.stringify(stats));
  assert.equal(end.gpuBuffers, warm.gpuBuffers, "GPU buffers held after the warm-up");
  assert.equal(end.gpuBytes, warm.gpuBytes, "GPU bytes held after the warm-up");
  assert.ok(end.wasmBytes - warm.wasmBytes <= WASM_BOUND, `wasm memory grew by ${end.wasmBytes - warm.wasmBytes} bytes`);
  assert.ok(end.jsHeapBytes - warm.jsHeapBytes <= HEAP_BOUND, `the JS heap grew by ${end.jsHeapBytes - warm.jsHeapBytes} bytes`);
  await run(async () => {
    await globalThis.soakModel.unload();
    globalThis.soakModel = null;
  });
  const unloaded = await memory();
  assert.equal(unloaded.gpuBuffers, start.gpuBuffers, "GPU buffers after unloading");
  assert.equal(unloaded.gpuBytes, start.gpuBytes, "GPU bytes after unloading");
});

test(`${CYCLES} load/unload cycles leave nothing behind`, { timeout: LONG ? 3_600_000 : 900_000 }, async () => {
  const cycle = (n) =>
    run(
      async ([path, n]) => {
        for (let i = 0; i < n; i++) {
          const lm = await globalThis.pocketlm.PocketLM.load(path, { backend: "webgpu", worker: false, context: 128 });
          const r = await lm.completions.create({ prompt: `cycle ${i}`, max_tokens: 2, temperature: 0 });
          if (r.choices[0].text === undefined) throw new Error("no text");
          await lm.unload();
        }
      },
      [TINY, n],
    );
  const start = await memory();
  await cycle(2);
  const warm = await memory();
  await cycle(CYCLES);
  const end = await memory();
  report(`${CYCLES} load/unload cycles`, warm, end);
  assert.equal(warm.gpuBuffers, start.gpuBuffers, "GPU buffers after the first cycles");
  assert.equal(end.gpuBuffers, start.gpuBuffers, "GPU buffers after every cycle");
  assert.equal(end.gpuBytes, start.gpuBytes, "GPU bytes after every cycle");
  assert.ok(end.wasmBytes - warm.wasmBytes <= WASM_BOUND, `wasm memory grew by ${end.wasmBytes - warm.wasmBytes} bytes`);
  assert.ok(end.jsHeapBytes - warm.jsHeapBytes <= HEAP_BOUND, `the JS heap grew by ${end.jsHeapBytes - warm.jsHeapBytes} bytes`);
});
