// The CPU backend in a real headless Chromium: this machine's only WebGPU adapter is SwiftShader
// (software), so `backend: "auto"` takes the CPU backend and says why; SmolLM2's greedy output
// equals transformers' and the native CLI's CPU backend token for token, and so does Gemma 3's
// (K-quants and a 262k-token Q8_0 embedding) on the same page; a generation can be
// aborted within a token (the wasm engine yields between steps); "webgpu" asked for by name
// still runs WebGPU. A page that is not cross-origin isolated runs one thread and says why; an
// isolated one (COOP/COEP) loads the threaded build, whose threads are Web Workers on shared
// memory, and its greedy output is the same. Both packages' builds run: relaxed SIMD, which
// Chromium has and the package therefore loads by default, and SIMD128 (`relaxedSimd: false`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const MODEL_FILE = join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf");
const MODEL = "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const TOKENS = 24;
const ISOLATED = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
let server, browser, page;

before(async () => {
  assert.ok(existsSync(MODEL_FILE), "run scripts/fetch-model.sh");
  server = await serve({ "/": WWW, "/models/": join(ROOT, "models") });
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

const run = (fn, arg) => evaluate(page, fn, arg);

test("auto picks the CPU backend on a software adapter and says why", async () => {
  const r = value(
    await run(async (url) => {
      const { PocketLM } = globalThis.pocketlm;
      const t0 = performance.now();
      globalThis.lm = await PocketLM.load(url, { context: 256 });
      return { ms: performance.now() - t0, info: lm.info, report: await PocketLM.supportReport(), cores: navigator.hardwareConcurrency, isolated: crossOriginIsolated };
    }, MODEL),
  );
  assert.equal(r.isolated, false);
  console.log(`load on the CPU backend: ${(r.ms / 1000).toFixed(1)} s; ${r.info.device}; ${r.info.backendReason}`);
  assert.equal(r.info.backend, "cpu");
  assert.equal(r.report.backend, "cpu");
  assert.match(r.info.backendReason, /software/);
  // Chromium has relaxed SIMD: the package loads that build by default.
  assert.equal(r.report.relaxedSimd, true);
  assert.equal(r.info.relaxedSimd, true);
  assert.match(r.info.device, /^CPU \(1 thread, relaxed SIMD\)/);
  assert.equal(r.info.threads, 1);
  // Threads were asked for (one per core by default) but the page is not isolated: a note, no error.
  if (r.cores > 1) assert.match(r.info.threadsNote, /one thread: the page is not cross-origin isolated/);
  assert.equal(r.info.profile, null);
  assert.equal(r.info.layers, 30);
  assert.ok(r.info.weightBytes > 90e6 && r.info.weightBytes < 100e6, `${r.info.weightBytes} bytes of weights`);
});

test("greedy output on the CPU backend equals transformers' token for token", async () => {
  const fixture = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "smollm2", "greedy.json"), "utf8"));
  for (const c of fixture.cases) {
    const r = value(await run(([prompt, n]) => lm.completions.create({ prompt, max_tokens: n, temperature: 0 }), [c.prompt, TOKENS]));
    assert.equal(r.usage.prompt_tokens, c.input_ids.length);
    assert.deepEqual(r.pocketlm.token_ids, c.generated_ids.slice(0, TOKENS), `prompt ${JSON.stringify(c.prompt)}`);
    console.log(`${JSON.stringify(c.prompt)}: ${r.pocketlm.tokens_per_second?.toFixed(2)} tokens/s, prefill ${r.pocketlm.prefill_ms.toFixed(0)} ms`);
  }
});

test("relaxedSimd: false runs the SIMD128 build, with the same greedy output", async () => {
  const fixture = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "smollm2", "greedy.json"), "utf8"));
  const r = value(
    await run(
      async ([url, prompts, n]) => {
        const plain = await globalThis.pocketlm.PocketLM.load(url, { context: 256, relaxedSimd: false });
        const outputs = [];
        for (const prompt of prompts) outputs.push(await plain.completions.create({ prompt, max_tokens: n, temperature: 0 }));
        const info = plain.info;
        await plain.unload();
        return { info, outputs };
      },
      [MODEL, fixture.cases.map((c) => c.prompt), TOKENS],
    ),
  );
  assert.equal(r.info.relaxedSimd, false);
  assert.match(r.info.device, /^CPU \(1 thread, SIMD\)/);
  fixture.cases.forEach((c, i) => {
    assert.deepEqual(r.outputs[i].pocketlm.token_ids, c.generated_ids.slice(0, TOKENS), `prompt ${JSON.stringify(c.prompt)}`);
    console.log(`SIMD128 build, ${JSON.stringify(c.prompt)}: prefill ${r.outputs[i].pocketlm.prefill_ms.toFixed(0)} ms`);
  });
});

test("a chat on the CPU backend equals the native CLI's CPU backend", async () => {
  const question = "What is the capital of France?";
  const r = value(await run((q) => lm.chat.completions.create({ messages: [{ role: "user", content: q }], max_tokens: 16, temperature: 0 }), question));
  const bin = process.env.POCKETLM_BIN ?? resolve(ROOT, "target", "debug", "pocketlm");
  assert.ok(existsSync(bin), `no CLI at ${bin}: cargo build --bin pocketlm, or set POCKETLM_BIN`);
  const args = ["--backend", "cpu", "run", MODEL_FILE, question, "--chat", "--temperature", "0", "--max-tokens", "16", "--json"];
  const out = spawnSync(bin, args, { encoding: "utf8", timeout: 600_000 });
  assert.equal(out.status, 0, `${bin} ${args.join(" ")} failed: ${(out.stderr ?? "").trim()}`);
  const cli = JSON.parse(out.stdout.trim().split("\n").at(-1));
  assert.deepEqual(r.pocketlm.token_ids, cli.tokens, "the browser and the CLI differ");
  assert.equal(r.choices[0].message.content, cli.text);
});

test("Gemma 3 270M Q4_K_M (Q4_K, Q6_K, Q5_0 and Q8_0 mixed) on the CPU backend equals transformers' greedy output", async () => {
  assert.ok(existsSync(join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")), "run scripts/fetch-gemma3.sh");
  const fixture = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "gemma3", "greedy.json"), "utf8"));
  const r = value(
    await run(
      async ([url, prompts, n]) => {
        const gemma = await globalThis.pocketlm.PocketLM.load(url, { backend: "cpu", context: 128 });
        const outputs = [];
        for (const prompt of prompts) outputs.push(await gemma.completions.create({ prompt, max_tokens: n, temperature: 0 }));
        await gemma.unload();
        return outputs;
      },
      ["/models/gemma-3-270m-q4_k_m.gguf", fixture.cases.map((c) => c.prompt), TOKENS],
    ),
  );
  fixture.cases.forEach((c, i) => {
    assert.equal(r[i].usage.prompt_tokens, c.input_ids.length);
    assert.deepEqual(r[i].pocketlm.token_ids, c.generated_ids.slice(0, TOKENS), `prompt ${JSON.stringify(c.prompt)}`);
    console.log(`Gemma 3, ${JSON.stringify(c.prompt)}: ${r[i].pocketlm.tokens_per_second?.toFixed(2)} tokens/s`);
  });
});

test("a generation on the CPU backend aborts within a token while the page stays responsive", async () => {
  const r = value(
    await run(async () => {
      let ticks = 0;
      const timer = setInterval(() => (ticks += 1), 10);
      const controller = new AbortController();
      const stream = await lm.chat.completions.create({
        messages: [{ role: "user", content: "Tell me a long story about a dragon." }],
        stream: true,
        max_tokens: 200,
        temperature: 0,
        signal: controller.signal,
      });
      let tokens = 0;
      let last;
      for await (const c of stream) {
        if (c.choices[0].delta.content) tokens += 1;
        if (tokens === 2) controller.abort();
        last = c;
      }
      clearInterval(timer);
      return { tokens, finish: last.choices[0].finish_reason, ticks };
    }),
  );
  assert.equal(r.finish, "abort");
  assert.ok(r.tokens <= 4, `${r.tokens} tokens after the abort`);
  assert.ok(r.ticks > 0, "the page's timers did not run");
});

test("webgpu asked for by name runs on WebGPU", async () => {
  const r = value(
    await run(async (url) => {
      const other = await globalThis.pocketlm.PocketLM.load(url, { backend: "webgpu", context: 64, worker: false });
      const info = other.info;
      const reply = await other.complete("The capital of France is", { max_tokens: 1, temperature: 0 });
      await other.unload();
      return { info, reply };
    }, MODEL),
  );
  assert.equal(r.info.backend, "webgpu");
  assert.match(r.info.profile, /full|baseline/);
  assert.equal(r.reply, " Paris");
});

test("an isolated page runs the threaded build: threads on shared memory, the same greedy output", async () => {
  const isolated = await serve({ "/": WWW, "/models/": join(ROOT, "models") }, { headers: () => ISOLATED });
  const tab = await browser.newPage();
  try {
    tab.on("pageerror", (e) => console.error("[isolated page]", e.message));
    await tab.goto(`${isolated.url}/test/package.html`);
    await tab.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 60_000 });
    const fixture = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "smollm2", "greedy.json"), "utf8"));
    const r = value(
      await evaluate(
        tab,
        async ([url, cases, n]) => {
          const { PocketLM } = globalThis.pocketlm;
          const generate = async (options) => {
            const lm = await PocketLM.load(url, { context: 256, threads: 2, ...options });
            const info = lm.info;
            const outputs = [];
            for (const prompt of cases) outputs.push(await lm.completions.create({ prompt, max_tokens: n, temperature: 0 }));
            await lm.unload();
            return { info, outputs };
          };
          const { info, outputs } = await generate({});
          // The threads end with the model; a second load starts new ones (here the threaded
          // SIMD128 build's).
          const plain = await generate({ relaxedSimd: false });
          return { isolated: crossOriginIsolated, info, outputs, plain };
        },
        [MODEL, fixture.cases.map((c) => c.prompt), TOKENS],
      ),
    );
    assert.equal(r.isolated, true);
    assert.equal(r.info.backend, "cpu");
    assert.equal(r.info.threads, 2, r.info.threadsNote);
    assert.equal(r.info.threadsNote, null);
    assert.match(r.info.device, /^CPU \(2 threads, relaxed SIMD\)/);
    assert.equal(r.plain.info.threads, 2, r.plain.info.threadsNote);
    assert.match(r.plain.info.device, /^CPU \(2 threads, SIMD\)/);
    assert.equal(r.plain.info.relaxedSimd, false);
    for (const [build, outputs] of [["relaxed SIMD", r.outputs], ["SIMD128", r.plain.outputs]]) {
      fixture.cases.forEach((c, i) => {
        assert.deepEqual(outputs[i].pocketlm.token_ids, c.generated_ids.slice(0, TOKENS), `${build}, prompt ${JSON.stringify(c.prompt)}`);
        console.log(`2 threads, ${build}, ${JSON.stringify(c.prompt)}: ${outputs[i].pocketlm.tokens_per_second?.toFixed(2)} tokens/s, prefill ${outputs[i].pocketlm.prefill_ms.toFixed(0)} ms`);
      });
    }
  } finally {
    await tab.close();
    await isolated.close();
  }
});
