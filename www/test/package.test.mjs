// The npm package (src/index.js) in a real headless Chromium: SmolLM2 loads from a local server
// into the package's Web Worker and answers through the OpenAI-style API. Token counts are kept
// small: the browser's WebGPU runs on a CPU driver here.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const MODEL_FILE = join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const MODEL = "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
// A CPU driver makes each token slow here (a second or two): enough tokens to prove the point.
const GREEDY_TOKENS = 16;
let server, browser, page;

before(async () => {
  assert.ok(existsSync(MODEL_FILE), "run scripts/fetch-model.sh");
  server = await serve({ "/": WWW, "/models/": join(ROOT, "models"), "/repo/": ROOT });
  browser = await launch();
  page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page]", e.message));
  await page.goto(`${server.url}/test/package.html`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 60_000 });
});

after(async () => {
  await page?.evaluate(() => globalThis.lm?.unload()).catch(() => {});
  await browser?.close();
  await server?.close();
});

/** Runs `fn` in the page (see browser.mjs's `evaluate`). */
const run = (fn, arg) => evaluate(page, fn, arg);

test("isSupported and supportReport say whether and why", async () => {
  const r = value(
    await run(async () => {
      const { PocketLM } = globalThis.pocketlm;
      const yes = await PocketLM.isSupported();
      const report = await PocketLM.supportReport();
      // Without navigator.gpu, the report says why.
      Object.defineProperty(navigator, "gpu", { value: undefined, configurable: true });
      const without = await PocketLM.supportReport();
      const no = await PocketLM.isSupported();
      delete navigator.gpu;
      return { yes, report, without, no, back: await PocketLM.isSupported() };
    }),
  );
  assert.equal(r.yes, true);
  assert.equal(r.report.supported, true);
  assert.equal(r.report.reason, null);
  assert.equal(typeof r.report.adapter.isFallbackAdapter, "boolean");
  // This machine's WebGPU adapter is SwiftShader: `auto` would take the CPU backend, and says why.
  assert.equal(r.report.backend, "cpu");
  assert.match(r.report.backendReason, /software/);
  // Without WebGPU PocketLM still runs, on the CPU backend.
  assert.equal(r.no, true);
  assert.equal(r.without.supported, true);
  assert.equal(r.without.backend, "cpu");
  assert.match(r.without.backendReason, /WebGPU/);
  assert.equal(r.back, true);
});

test("the default model loads into a Web Worker with progress", async () => {
  const before = server.requests.get(MODEL) ?? 0;
  const r = value(
    await run(async (url) => {
      const { PocketLM } = globalThis.pocketlm;
      await PocketLM.clearCache();
      const events = [];
      const t0 = performance.now();
      // WebGPU asked for by name: `auto` would take the CPU backend on this software adapter
      // (test/cpu.test.mjs covers that one).
      globalThis.lm = await PocketLM.load(url, { backend: "webgpu", onProgress: (p) => events.push(p) });
      return { ms: performance.now() - t0, info: lm.info, state: lm.state, events: events.length, last: events.at(-1) };
    }, MODEL),
  );
  console.log(`load from the local server: ${(r.ms / 1000).toFixed(1)} s (${r.events} progress events)`);
  assert.equal(server.requests.get(MODEL), before + 1);
  assert.equal(r.state, "ready");
  assert.equal(r.info.architecture, "llama");
  assert.equal(r.info.backend, "webgpu");
  assert.equal(r.info.layers, 30);
  assert.equal(r.info.chatTemplate, true);
  assert.ok(r.events > 10, `${r.events} progress events`);
  assert.equal(r.last.allDone, 98362432);
  // The engine runs in the package's worker, not in this page.
  const workers = page.workers().map((w) => w.url());
  assert.ok(workers.some((u) => u.endsWith("/src/worker.js")), JSON.stringify(workers));
});

test("greedy output equals the reference token for token", async () => {
  const fixture = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "smollm2", "greedy.json"), "utf8"));
  for (const c of fixture.cases.slice(0, 1)) {
    const r = value(
      await run(
        ([prompt, n]) => lm.completions.create({ prompt, max_tokens: n, temperature: 0 }),
        [c.prompt, GREEDY_TOKENS],
      ),
    );
    assert.equal(r.object, "text_completion");
    assert.equal(r.usage.prompt_tokens, c.input_ids.length, "the prompt tokenizes as transformers does");
    assert.deepEqual(r.pocketlm.token_ids, c.generated_ids.slice(0, GREEDY_TOKENS), `prompt ${JSON.stringify(c.prompt)}`);
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage.completion_tokens, GREEDY_TOKENS);
    console.log(`${JSON.stringify(c.prompt)} → ${JSON.stringify(r.choices[0].text)}: ${r.pocketlm.tokens_per_second?.toFixed(2)} tokens/s, prefill ${r.pocketlm.prefill_ms.toFixed(0)} ms`);
  }
});

// The native CLI, when it is built: the browser's greedy chat reply must equal its output.
function cliReference(prompt, n, profile) {
  // make test-browser sets POCKETLM_BIN (and the Vulkan driver the CLI runs on).
  const bin = process.env.POCKETLM_BIN ?? resolve(ROOT, "target", "debug", "pocketlm");
  assert.ok(existsSync(bin), `no CLI at ${bin}: cargo build --bin pocketlm, or set POCKETLM_BIN`);
  const args = ["--backend", "gpu", "--profile", profile, "run", MODEL_FILE, prompt, "--chat", "--temperature", "0", "--max-tokens", String(n), "--json"];
  // The CLI runs on lavapipe (the browser keeps its own driver).
  const icd = spawnSync(join(ROOT, "scripts", "vulkan-icd.sh"), ["lavapipe"], { encoding: "utf8" });
  assert.equal(icd.status, 0, icd.stderr);
  const out = spawnSync(bin, args, {
    encoding: "utf8",
    timeout: 600_000,
    env: { ...process.env, VK_ICD_FILENAMES: icd.stdout.trim(), XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp" },
  });
  assert.equal(out.status, 0, `${bin} ${args.join(" ")} failed: ${(out.stderr ?? "").trim()}`);
  return JSON.parse(out.stdout.trim().split("\n").at(-1));
}

// One chat, reused below so that the KV cache spares the prefill.
const QUESTION = "What is the capital of France?";

test("a greedy chat streams in OpenAI-shaped chunks and equals the native CLI's output", async () => {
  const r = value(
    await run(
      async ([content, n]) => {
        const stream = await lm.chat.completions.create({ messages: [{ role: "user", content }], stream: true, max_tokens: n, temperature: 0 });
        const chunks = [];
        for await (const c of stream) chunks.push({ c, at: performance.now() });
        return { chunks };
      },
      [QUESTION, GREEDY_TOKENS],
    ),
  );
  const chunks = r.chunks.map((x) => x.c);
  assert.ok(chunks.length > 2, `${chunks.length} chunks`);
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.match(c.id, /^chatcmpl-/);
    assert.equal(c.id, chunks[0].id);
  }
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const last = chunks.at(-1);
  assert.deepEqual(last.choices[0].delta, {});
  const n = last.pocketlm.token_ids.length;
  assert.ok(n > 2 && n <= GREEDY_TOKENS, `${n} tokens`);
  assert.equal(last.usage.completion_tokens, n);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + n);
  // Tokens arrive as they are sampled, not all at the end.
  const contentAt = r.chunks.filter((x) => x.c.choices[0].delta.content).map((x) => x.at);
  assert.ok(contentAt.length >= 2, `${contentAt.length} content chunks`);
  assert.ok(contentAt.at(-1) - contentAt[0] > 50, "all chunks arrived at once");
  const text = chunks.map((c) => c.choices[0].delta.content ?? "").join("");
  console.log(`chat ${JSON.stringify(QUESTION)} → ${JSON.stringify(text)}: ${last.pocketlm.tokens_per_second?.toFixed(3)} tokens/s, prefill ${last.pocketlm.prefill_ms.toFixed(0)} ms for ${last.usage.prompt_tokens} tokens`);

  // The same kernels' profile natively: the browser's adapter decides it.
  const profile = value(await run(() => lm.info.profile));
  const cli = cliReference(QUESTION, GREEDY_TOKENS, profile);
  assert.deepEqual(last.pocketlm.token_ids, cli.tokens, "the browser and the CLI differ");
  assert.equal(text, cli.text);
  assert.equal(last.choices[0].finish_reason, cli.finish_reason);
  assert.equal(last.usage.prompt_tokens, cli.prompt_tokens);
});

test("abort stops within a token, requests queue in order, and the page stays responsive", async () => {
  const r = value(
    await run(async (question) => {
      // Main-thread timers keep firing while the worker generates.
      let ticks = 0;
      let maxGap = 0;
      let lastTick = performance.now();
      const timer = setInterval(() => {
        const now = performance.now();
        maxGap = Math.max(maxGap, now - lastTick);
        lastTick = now;
        ticks += 1;
      }, 10);
      const t0 = performance.now();
      const controller = new AbortController();
      const stream = await lm.chat.completions.create({
        messages: [{ role: "user", content: question }],
        stream: true,
        max_tokens: 100,
        temperature: 0,
        signal: controller.signal,
      });
      let tokens = 0;
      let abortedAt = 0;
      let last;
      for await (const c of stream) {
        if (c.choices[0].delta.content) tokens += 1;
        if (tokens === 1 && !abortedAt) {
          abortedAt = performance.now();
          controller.abort();
        }
        last = c;
      }
      const stopMs = performance.now() - abortedAt;
      // Three requests at once: they run in order; the third is aborted while it waits.
      const order = [];
      const late = new AbortController();
      const ask = (content, signal) =>
        lm.chat.completions
          .create({ messages: [{ role: "user", content }], max_tokens: 1, temperature: 0, signal })
          .then((x) => (order.push(x.usage.completion_tokens > 0 ? "answer" : "aborted"), x));
      const all = Promise.all([ask([{ type: "text", text: question }]), ask(question), ask(question, late.signal)]);
      late.abort();
      const [a, b, c] = await all;
      clearInterval(timer);
      return { last, stopMs, order, a, b, c, ticks, maxGap, ms: performance.now() - t0 };
    }, QUESTION),
  );
  assert.equal(r.last.choices[0].finish_reason, "abort");
  assert.ok(r.last.usage.completion_tokens <= 2, `${r.last.usage.completion_tokens} tokens after an abort at the first`);
  console.log(`abort → end of stream: ${r.stopMs.toFixed(0)} ms`);
  assert.deepEqual(r.order, ["answer", "answer", "aborted"]);
  assert.equal(r.a.object, "chat.completion");
  assert.equal(r.a.choices[0].message.role, "assistant");
  assert.equal(r.a.choices[0].finish_reason, "length");
  assert.equal(r.b.choices[0].finish_reason, "length");
  assert.equal(r.a.usage.completion_tokens, 1);
  assert.equal(r.c.choices[0].finish_reason, "abort");
  assert.equal(r.c.usage.completion_tokens, 0);
  console.log(`during ${r.ms.toFixed(0)} ms of generation: ${r.ticks} timer ticks, longest gap ${r.maxGap.toFixed(0)} ms`);
  assert.ok(r.ticks >= r.ms / 50, `${r.ticks} ticks in ${r.ms} ms`);
  assert.ok(r.maxGap < 500, `the main thread stalled for ${r.maxGap} ms`);
});

test("invalid messages and options, and fields the engine does not implement, reject with invalid_request", async () => {
  const cases = [
    { messages: [] },
    { messages: "hello" },
    { messages: [{ role: "user" }] },
    { messages: [{ content: "hi" }] },
    { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
    { messages: [{ role: "user", content: "hi" }], temperature: -1 },
    { messages: [{ role: "user", content: "hi" }], top_p: 2 },
    { messages: [{ role: "user", content: "hi" }], max_tokens: 0 },
    { messages: [{ role: "user", content: "hi" }], stop: 5 },
    { messages: [{ role: "user", content: "hi" }], seed: 1.5 },
    { messages: [{ role: "user", content: "hi" }], n: 2 },
    // Fields the engine does not implement, or does not know, are refused by name, not dropped;
    // those it implements are checked there.
    { messages: [{ role: "user", content: "hi" }], audio: { voice: "alloy" } },
    { messages: [{ role: "user", content: "hi" }], frobnicate: 1 },
    { messages: [{ role: "user", content: "hi" }], logprobs: "yes" },
    { messages: [{ role: "user", content: "hi" }], tools: [{ type: "function" }] },
    { messages: [{ role: "user", content: "hi" }], tool_choice: "required" },
    { messages: [{ role: "user", content: "hi" }], logit_bias: { 5: 500 } },
    { messages: [{ role: "user", content: "hi" }], response_format: { type: "yaml" } },
    {},
  ];
  // Values out of range get the engine's own code, as natively (src/request.rs checks them once).
  const outOfRange = (request) => request.temperature === -1 || request.top_p === 2;
  for (const request of cases) {
    const r = await run((request) => lm.chat.completions.create(request), request);
    assert.ok(r.error, `${JSON.stringify(request)} was accepted`);
    assert.equal(r.error.name, "PocketLMError");
    assert.equal(r.error.isPocketLMError, true);
    const code = outOfRange(request) ? "invalid_sampling_params" : "invalid_request";
    assert.equal(r.error.code, code, `${JSON.stringify(request)}: ${r.error.message}`);
  }
  for (const options of [{ integrity: "md5-abc" }, { integrity: "sha256-abc" }, { cache: "yes" }, { context: 0 }]) {
    const load = await run((options) => globalThis.pocketlm.PocketLM.load("/x.gguf", options), options);
    assert.equal(load.error?.code, "invalid_request", JSON.stringify(options));
  }
  const source = await run(() => globalThis.pocketlm.PocketLM.load(42));
  assert.equal(source.error?.code, "invalid_request");
});

test("a second load of the same URL makes no request for the weights; SRI integrity is checked", async () => {
  const before = server.requests.get(MODEL) ?? 0;
  const sri = `sha256-${createHash("sha256").update(readFileSync(MODEL_FILE)).digest("base64")}`;
  const r = value(
    await run(
      async ([url, integrity]) => {
        const { PocketLM } = globalThis.pocketlm;
        const t0 = performance.now();
        const second = await PocketLM.load(url, { integrity });
        const ms = performance.now() - t0;
        const info = second.info;
        await second.unload();
        return { ms, info, cached: await PocketLM.cachedModels() };
      },
      [MODEL, sri],
    ),
  );
  console.log(`load from the Cache API: ${(r.ms / 1000).toFixed(1)} s`);
  assert.equal(server.requests.get(MODEL), before, "the weights were fetched again");
  assert.equal(r.info.layers, 30);
  assert.ok(r.cached.some((u) => u.endsWith(MODEL)), JSON.stringify(r.cached));
});

test("a 404, a file that is not a model and an integrity mismatch reject with typed errors", async () => {
  const load = (url, options) => run(([url, options]) => globalThis.pocketlm.PocketLM.load(url, options), [url, options]);
  const missing = await load("/models/no-such-model.gguf", {});
  assert.equal(missing.error?.code, "http", JSON.stringify(missing));
  assert.equal(missing.error.isPocketLMError, true);
  assert.match(missing.error.message, /404/);
  const corrupt = await load("/repo/Cargo.toml", {});
  assert.equal(corrupt.error?.code, "bad_magic", JSON.stringify(corrupt));
  const wrong = `sha256-${Buffer.alloc(32).toString("base64")}`;
  const mismatch = await load(MODEL, { integrity: wrong, cache: false });
  assert.equal(mismatch.error?.code, "integrity", JSON.stringify(mismatch));
  assert.match(mismatch.error.message, /sha256/);
  const aborted = await run(async (url) => {
    const c = new AbortController();
    const p = globalThis.pocketlm.PocketLM.load(url, { cache: false, onProgress: (e) => e.bytesDone > 4e6 && c.abort(), signal: c.signal });
    return p;
  }, MODEL);
  assert.equal(aborted.error?.code, "aborted", JSON.stringify(aborted));
});

test("a lost device fires an error event and rejects; a fresh load works after it", async () => {
  const r = value(
    await run(async (url) => {
      const { PocketLM } = globalThis.pocketlm;
      const doomed = await PocketLM.load(url, { backend: "webgpu" });
      // (The wait before the loss falls in the prefill: a GPU call in flight when the device goes.)
      const event = new Promise((resolve) => doomed.addEventListener("error", (e) => resolve({ type: e.type, code: e.error.code, message: e.error.message })));
      const pending = doomed.chat.completions
        .create({ messages: [{ role: "user", content: "Tell me a story." }], max_tokens: 100, temperature: 0 })
        .then(
          () => ({ resolved: true }),
          (e) => ({ code: e.code, message: e.message }),
        );
      await new Promise((ok) => setTimeout(ok, 300));
      await doomed._simulateDeviceLoss();
      const fired = await event;
      const inFlight = await pending;
      const after = await doomed.complete("Hi", { max_tokens: 1 }).then(
        () => "resolved",
        (e) => e.code,
      );
      const state = doomed.state;
      // A fresh load works, here in this realm without a worker.
      const fresh = await PocketLM.load(url, { worker: false });
      const reply = await fresh.complete("The capital of France is", { max_tokens: 1, temperature: 0 });
      await fresh.unload();
      return { fired, inFlight, after, state, reply };
    }, MODEL),
  );
  assert.equal(r.fired.type, "error");
  assert.equal(r.fired.code, "device_lost");
  assert.equal(r.inFlight.code, "device_lost", JSON.stringify(r.inFlight));
  assert.equal(r.after, "device_lost");
  assert.equal(r.state, "lost");
  assert.equal(r.reply, " Paris");
});

test("unload frees the model and later calls reject with unloaded", async () => {
  const r = value(
    await run(async () => {
      await lm.unload();
      const codes = [];
      for (const call of [
        () => lm.chat.completions.create({ messages: [{ role: "user", content: "hi" }] }),
        () => lm.complete("hi"),
        () => lm.tokenize("hi"),
      ]) {
        codes.push(await call().then(() => "resolved", (e) => `${e.name}:${e.code}`));
      }
      await lm.unload(); // twice is fine
      return { codes, state: lm.state };
    }),
  );
  assert.deepEqual(r.codes, ["PocketLMError:unloaded", "PocketLMError:unloaded", "PocketLMError:unloaded"]);
  assert.equal(r.state, "unloaded");
  // Every PocketLM worker of this page is gone (unload, and the lost one, terminate theirs).
  const alive = () => page.workers().filter((w) => w.url().endsWith("/src/worker.js")).length;
  for (let i = 0; i < 50 && alive() > 0; i++) await new Promise((ok) => setTimeout(ok, 100));
  assert.equal(alive(), 0, "a worker outlived unload()");
});

test("sliding-window layers keep a ring in the KV cache; fullWindowCache keeps every position", async () => {
  // The tiny Gemma 3 (window 5) at 512 positions: its local layers hold 132 (5 + 127).
  const r = value(
    await run(async (url) => {
      const { PocketLM } = globalThis.pocketlm;
      const kv = {};
      for (const full of [false, true]) {
        const lm = await PocketLM.load(url, { backend: "webgpu", context: 512, fullWindowCache: full, cache: false });
        kv[full] = lm.info.kvBytes;
        const reply = await lm.completions.create({ prompt: "a b c", max_tokens: 2, temperature: 0 });
        kv[`${full} tokens`] = reply.pocketlm.token_ids;
        await lm.unload();
      }
      const bad = await PocketLM.load(url, { fullWindowCache: "yes" }).then(
        () => null,
        (e) => ({ code: e.code, message: e.message }),
      );
      return { kv, bad };
    }, "/repo/tests/fixtures/models/tiny-gemma3.gguf"),
  );
  assert.ok(r.kv.false > 0 && r.kv.false < r.kv.true, JSON.stringify(r.kv));
  assert.deepEqual(r.kv["false tokens"], r.kv["true tokens"]);
  assert.equal(r.bad.code, "invalid_request");
  assert.match(r.bad.message, /fullWindowCache must be a boolean/);
  console.log(`tiny Gemma 3 at 512 positions: KV cache ${r.kv.false} bytes with rings, ${r.kv.true} with every position`);
});
