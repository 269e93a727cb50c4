// The package imported from another origin, as from a CDN: src/ and pkg/ are served by a second
// server (another port, so another origin, with CORS headers) and the page by the first. With the
// default options the engine runs in a same-origin blob: worker that imports the package's worker
// module by its absolute URL; the .wasm comes from the package's origin, the model and its cache
// belong to the page's. Under a Content-Security-Policy that refuses blob: workers, the load
// rejects with a "worker" error that names the policy, and `worker: false` works there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const TINY = "/fixtures/models/tiny-llama.gguf";
const PROMPT = "Once upon a time";
const TOKENS = 8;
let cdn, site, browser;

before(async () => {
  // The package's origin: only the files a CDN would serve, readable from any origin.
  cdn = await serve({ "/src/": join(WWW, "src"), "/pkg/": join(WWW, "pkg") }, { headers: () => ({ "access-control-allow-origin": "*" }) });
  // The page's origin: the test page and the model, without the package. /csp/ serves the page
  // under a policy that allows the package's origin but no blob: worker, /csp-blob/ adds blob:.
  const policy = `script-src 'self' ${cdn.url} 'wasm-unsafe-eval'; object-src 'none'`;
  site = await serve(
    { "/test/": join(WWW, "test"), "/csp/": join(WWW, "test"), "/csp-blob/": join(WWW, "test"), "/fixtures/": join(ROOT, "tests", "fixtures") },
    {
      headers: (path) =>
        path.startsWith("/csp/")
          ? { "content-security-policy": policy }
          : path.startsWith("/csp-blob/")
            ? { "content-security-policy": `${policy}; worker-src 'self' blob:` }
            : {},
    },
  );
  assert.notEqual(new URL(cdn.url).origin, new URL(site.url).origin);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await cdn?.close();
  await site?.close();
});

async function open(folder) {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && !/Content Security Policy|ERR_FILE_NOT_FOUND/.test(m.text()) && console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page]", e.message));
  await page.goto(`${site.url}/${folder}/cdn.html?pkg=${encodeURIComponent(cdn.url)}`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined || globalThis.importError !== undefined, null, { timeout: 60_000 });
  assert.equal(await page.evaluate(() => globalThis.importError), undefined, "the package did not import from the other origin");
  return page;
}

/** Runs `fn` in `page` (see browser.mjs's `evaluate`). */
const run = (page, fn, arg) => evaluate(page, fn, arg);

/** Loads the tiny model with `options`, generates greedily (plain and streamed) and unloads. */
const session = async ([url, prompt, n, options]) => {
  const { PocketLM } = globalThis.pocketlm;
  const events = [];
  const lm = await PocketLM.load(url, { ...options, onProgress: (p) => events.push(p.phase) });
  const plain = await lm.completions.create({ prompt, max_tokens: n, temperature: 0 });
  let streamed = "";
  for await (const c of await lm.completions.create({ prompt, max_tokens: n, temperature: 0, stream: true })) streamed += c.choices[0].text;
  const cached = await PocketLM.cache.has(url);
  await lm.unload();
  return { text: plain.choices[0].text, ids: plain.pocketlm.token_ids, streamed, cached, events: [...new Set(events)], state: lm.state };
};

let reference;

test("with the default options, the package from another origin runs in a blob: worker", async () => {
  const page = await open("test");
  try {
    const started = page.waitForEvent("worker", { timeout: 60_000 });
    const r = value(await run(page, session, [TINY, PROMPT, TOKENS, {}]));
    const worker = await started;
    // The worker is the page's own (blob: of the page's origin), not the package's URL.
    assert.ok(worker.url().startsWith(`blob:${site.url}/`), worker.url());
    assert.equal(r.state, "unloaded");
    assert.equal(r.ids.length, TOKENS);
    assert.equal(r.streamed, r.text);
    assert.deepEqual(r.events, ["download", "load"]);
    // The worker shares the page's origin: the model went into the page's cache.
    assert.equal(r.cached, true);
    // The worker module, the engine and the .wasm came from the package's origin; the page's origin
    // served the page and the model only (it has no src/ or pkg/ to serve). (Chromium has
    // relaxed SIMD: the package takes that build of the module.)
    for (const path of ["/src/worker.js", "/src/engine.js", "/src/simd.js", "/pkg/pocketlm_relaxed.js", "/pkg/pocketlm_relaxed_bg.wasm"]) {
      assert.ok(cdn.requests.get(path) >= 1, `${path} was not fetched from the package's origin`);
    }
    assert.deepEqual(
      site.log.filter((e) => !e.path.startsWith("/test/") && e.path !== TINY),
      [],
      "the page's origin was asked for something else",
    );
    // unload() ended the worker and revoked its blob: URL.
    const revoked = await page.evaluate((u) => fetch(u).then(() => false, () => true), worker.url());
    assert.equal(revoked, true, "the blob: URL is still live after unload()");
    // The same greedy tokens as the engine in the page itself.
    const local = value(await run(page, session, [TINY, PROMPT, TOKENS, { worker: false }]));
    assert.deepEqual(local.ids, r.ids);
    reference = r;
    console.log(`from ${cdn.url}, in ${worker.url()}: ${JSON.stringify(r.text)}`);
  } finally {
    await page.close();
  }
});

test("a CSP that refuses blob: workers makes the default a 'worker' error that says so; worker: false works there", async () => {
  const page = await open("csp");
  try {
    // The policy is in force: a blob: worker is refused.
    const refused = await page.evaluate(
      () =>
        new Promise((resolve) => {
          try {
            const w = new Worker(URL.createObjectURL(new Blob(["postMessage(0)"], { type: "text/javascript" })));
            w.onmessage = () => resolve(false);
            w.onerror = () => resolve(true);
          } catch {
            resolve(true);
          }
        }),
    );
    assert.equal(refused, true, "the CSP does not refuse blob: workers");
    const r = await run(page, session, [TINY, PROMPT, TOKENS, {}]);
    assert.ok(r.error, "the load did not fail");
    assert.equal(r.error.isPocketLMError, true);
    assert.equal(r.error.code, "worker");
    assert.match(r.error.message, /another origin/);
    assert.match(r.error.message, /Content-Security-Policy refuses blob: workers/);
    assert.match(r.error.message, /worker-src/);
    assert.match(r.error.message, /\{ worker: false \}/);
    assert.ok(r.error.message.includes(`${cdn.url}/src/worker.js`), r.error.message);
    console.log(`under ${"script-src 'self' <cdn>"}: ${r.error.message}`);
    // As the message says, the engine runs in the page with worker: false.
    const local = value(await run(page, session, [TINY, PROMPT, TOKENS, { worker: false }]));
    assert.deepEqual(local.ids, reference.ids);
    assert.equal(local.streamed, local.text);
  } finally {
    await page.close();
  }
});

test("a CSP that allows blob: workers runs the default in one", async () => {
  const page = await open("csp-blob");
  try {
    const started = page.waitForEvent("worker", { timeout: 60_000 });
    const r = value(await run(page, session, [TINY, PROMPT, TOKENS, {}]));
    assert.ok((await started).url().startsWith(`blob:${site.url}/`));
    assert.deepEqual(r.ids, reference.ids);
    assert.equal(r.state, "unloaded");
  } finally {
    await page.close();
  }
});

test("a package origin without the worker module rejects with a 'worker' error naming it, not a hang", async () => {
  // A copy of src/ without worker.js, on a third origin.
  const dir = await mkdtemp(join(tmpdir(), "pocketlm-cdn-"));
  await cp(join(WWW, "src"), join(dir, "src"), { recursive: true, filter: (f) => !f.endsWith("worker.js") });
  const broken = await serve({ "/src/": join(dir, "src"), "/pkg/": join(WWW, "pkg") }, { headers: () => ({ "access-control-allow-origin": "*" }) });
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error("[page]", e.message));
  try {
    await page.goto(`${site.url}/test/cdn.html?pkg=${encodeURIComponent(broken.url)}`);
    await page.waitForFunction(() => globalThis.pocketlm !== undefined || globalThis.importError !== undefined, null, { timeout: 60_000 });
    const requests = site.log.length;
    const r = await run(page, session, [TINY, PROMPT, TOKENS, {}]);
    assert.ok(r.error, "the load did not fail");
    assert.equal(r.error.isPocketLMError, true);
    assert.equal(r.error.code, "worker");
    assert.ok(r.error.message.includes(`could not import ${broken.url}/src/worker.js`), r.error.message);
    assert.equal(broken.requests.get("/src/worker.js"), 1);
    assert.deepEqual(site.log.slice(requests), [], "the model was fetched although the worker never started");
  } finally {
    await page.close();
    await broken.close();
    await rm(dir, { recursive: true, force: true });
  }
});
