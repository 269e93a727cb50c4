// Loading model weights in a real headless Chromium: the default model streams from a local
// server into GPU memory with wasm memory staying small, a second load of the same URL makes no
// request (Cache API), and bad downloads reject with typed errors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { serve } from "./server.mjs";
import { launch } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODELS = join(WWW, "..", "models");
const MODEL = "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const MIB = 1 << 20;
let server, browser, page;

before(async () => {
  assert.ok(existsSync(join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")), "run scripts/fetch-model.sh");
  server = await serve({ "/": WWW, "/models/": MODELS, "/fixtures/": join(WWW, "..", "tests", "fixtures"), "/repo/": join(WWW, "..") });
  browser = await launch();
  page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  await page.goto(`${server.url}/test/load.html`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 120_000 });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/// Runs `loadWeights` in the page; resolves to a summary or to the error's name, code and message.
function load(source, options = {}) {
  return page.evaluate(
    async ([source, options]) => {
      const { gpu, wasmMemoryBytes } = globalThis.pocketlm;
      const events = [];
      let controller;
      const opts = { ...options, onProgress: (p) => events.push(p) };
      if (options.abortAfter !== undefined) {
        controller = new AbortController();
        opts.signal = controller.signal;
        opts.onProgress = (p) => {
          events.push(p);
          if (p.bytesDone >= options.abortAfter) controller.abort();
        };
      }
      if (typeof source === "object" && source.fetchBytes) {
        source = new Uint8Array(await (await fetch(source.fetchBytes)).arrayBuffer());
      }
      try {
        const w = await gpu.loadWeights(source, opts);
        const result = { ok: true, companions: w.companionNames(), config: w.companion("config.json"), tensors: w.tensorCount, gpuBytes: w.gpuBytes, summary: w.summary(), events, memory: wasmMemoryBytes() };
        w.freeGpu();
        w.free();
        return result;
      } catch (e) {
        return { ok: false, name: e.name, code: e.code, message: e.message, events };
      }
    },
    [source, options],
  );
}

test("the default model streams into GPU memory with wasm memory under 48 MiB", async () => {
  const r = await load(MODEL);
  assert.equal(r.ok, true, `${r.code}: ${r.message}`);
  assert.equal(r.tensors, 272);
  assert.ok(r.gpuBytes > 90 * MIB, `${r.gpuBytes}`);
  assert.match(r.summary, /architecture: llama/);
  assert.ok(r.events.length > 10, `${r.events.length} progress events`);
  const last = r.events.at(-1);
  assert.equal(last.bytesDone, 98362432);
  assert.equal(last.bytesTotal, 98362432);
  console.log(`wasm memory after loading the 98 MB model: ${(r.memory / MIB).toFixed(1)} MiB`);
  assert.ok(r.memory < 48 * MIB, `wasm memory is ${(r.memory / MIB).toFixed(1)} MiB`);
});

test("a second load of the same URL makes no request for the weights", async () => {
  const before = server.requests.get(MODEL) ?? 0;
  assert.ok(before >= 1);
  const r = await load(MODEL);
  assert.equal(r.ok, true, `${r.code}: ${r.message}`);
  assert.equal(r.tensors, 272);
  assert.equal(server.requests.get(MODEL), before, "the weights were fetched again");
  const cached = await page.evaluate(() => globalThis.pocketlm.listCachedModels());
  assert.ok(cached.some((u) => u.endsWith(MODEL)), JSON.stringify(cached));
});

test("a sha256 mismatch rejects and drops the cached copy", async () => {
  const url = "/fixtures/quant/blocks.gguf";
  const good = await load(url);
  assert.equal(good.ok, true, `${good.code}: ${good.message}`);
  assert.equal(good.tensors, 15);
  const digest = createHash("sha256").update(readFileSync(join(WWW, "..", "tests", url))).digest("hex");
  const bad = await load(url, { sha256: "0".repeat(64) });
  assert.equal(bad.ok, false);
  assert.equal(bad.name, "PocketLMError");
  assert.equal(bad.code, "integrity");
  assert.match(bad.message, /sha256/);
  const cached = await page.evaluate(() => globalThis.pocketlm.listCachedModels());
  assert.ok(!cached.some((u) => u.endsWith(url)), JSON.stringify(cached));
  const right = await load(url, { sha256: digest });
  assert.equal(right.ok, true, `${right.code}: ${right.message}`);
});

test("a 404, a file that is not a model, and a truncated model reject with typed errors", async () => {
  const missing = await load("/models/no-such-model.gguf");
  assert.equal(missing.code, "http");
  assert.match(missing.message, /404/);
  const corrupt = await load("/repo/Cargo.toml");
  assert.equal(corrupt.code, "bad_magic");
  const truncated = await page.evaluate(async () => {
    const bytes = new Uint8Array(await (await fetch("/fixtures/quant/blocks.gguf")).arrayBuffer());
    try {
      // Half the file: the header is whole, the tensor data is not.
      await globalThis.pocketlm.gpu.loadWeights(bytes.subarray(0, bytes.length >> 1));
      return { code: "resolved" };
    } catch (e) {
      return { code: e.code, message: e.message };
    }
  });
  assert.ok(["file_truncated", "tensor_out_of_bounds"].includes(truncated.code), JSON.stringify(truncated));
});

test("aborting stops the download, and the next load succeeds", async () => {
  const aborted = await load(MODEL, { cache: false, abortAfter: 8 * MIB });
  assert.equal(aborted.ok, false);
  assert.equal(aborted.code, "aborted");
  assert.ok(aborted.events.at(-1).bytesDone < 98362432);
  const again = await load("/fixtures/quant/blocks.gguf", { cache: false });
  assert.equal(again.ok, true, `${again.code}: ${again.message}`);
});

test("bytes from JavaScript load without a URL, and the cache can be cleared", async () => {
  const r = await load({ fetchBytes: "/fixtures/quant/blocks.gguf" });
  assert.equal(r.ok, true, `${r.code}: ${r.message}`);
  assert.equal(r.tensors, 15);
  const cleared = await page.evaluate(() => globalThis.pocketlm.clearModelCache());
  assert.equal(cleared, true);
  const cached = await page.evaluate(() => globalThis.pocketlm.listCachedModels());
  assert.deepEqual(cached, []);
});

test("a split GGUF model loads from the URL of any split, a sharded checkpoint from its index (with its folder's files)", async () => {
  const split = await load("/fixtures/formats/split-00002-of-00003.gguf", { concurrency: 2 });
  assert.equal(split.ok, true, `${split.code}: ${split.message}`);
  const files = new Set(split.events.map((e) => e.fileIndex));
  assert.deepEqual([...files].sort(), [0, 1, 2]);
  const last = split.events.at(-1);
  assert.equal(last.files, 3);
  assert.equal(last.allDone, last.allTotal);
  for (const n of [1, 2, 3]) {
    assert.equal(server.requests.get(`/fixtures/formats/split-0000${n}-of-00003.gguf`), 1);
  }
  const sharded = await load("/fixtures/formats/sharded/model.safetensors.index.json");
  assert.equal(sharded.ok, true, `${sharded.code}: ${sharded.message}`);
  // (The index stands for its folder: its config and tokenizer files come too.)
  assert.deepEqual(sharded.companions, ["config.json", "tokenizer_config.json"]);
  assert.deepEqual([...new Set(sharded.events.map((e) => e.fileIndex))].sort(), [0, 1]);
  assert.match(sharded.summary, /safetensors/);
  const missing = await load(["/fixtures/formats/split-00001-of-00003.gguf", "/fixtures/formats/split-00002-of-00003.gguf"]);
  assert.equal(missing.code, "split_model");
});

test("a model folder URL loads its weights and its config and tokenizer files", async () => {
  const r = await load("/fixtures/formats/sharded/");
  assert.equal(r.ok, true, `${r.code}: ${r.message}`);
  assert.equal(r.tensors, 5);
  assert.deepEqual(r.companions, ["config.json", "tokenizer_config.json"]);
  assert.match(r.config, /LlamaForCausalLM/);
  const bare = await load("/fixtures/formats/");
  assert.equal(bare.ok, false);
  assert.match(bare.message, /config\.json/);
});
