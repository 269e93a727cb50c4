// The examples under a strict Content-Security-Policy (script-src 'self' 'wasm-unsafe-eval'):
// the offline PWA, served with that CSP header, answers, then answers again from its caches with
// the server gone; the MV3 extension (loaded unpacked, its manifest declaring that CSP) answers
// in its side panel page, and keeps answering when Chrome stops the extension's service worker;
// the semantic-search page indexes its 200 notes with all-MiniLM-L6-v2, ranks them by meaning
// (a screenshot lands in test-results/search.png), and searches again offline.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { mkdirSync } from "node:fs";
import { serve } from "./server.mjs";
import { launch } from "./browser.mjs";
import { vendorExamples } from "../scripts/vendor-examples.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODELS = join(WWW, "..", "models");
const MODEL = "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
export const CSP = "script-src 'self' 'wasm-unsafe-eval'; object-src 'none'";

before(() => vendorExamples());

/** Collects CSP violations in a page (they would show up as console errors too). */
function watchViolations(page) {
  const violations = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !/inline script/i.test(m.text())) console.error("[page]", m.text());
    if (/Content Security Policy/i.test(m.text())) violations.push(m.text());
  });
  page.on("pageerror", (e) => console.error("[page]", e.message));
  return violations;
}

/** Whether an inline script runs (a strict CSP refuses it; eval from Playwright bypasses CSP). */
async function inlineScriptRuns(page) {
  return page.evaluate(async () => {
    const s = document.createElement("script");
    s.textContent = "window.__inlineRan = true";
    document.head.append(s);
    await new Promise((ok) => setTimeout(ok, 50));
    return window.__inlineRan === true;
  });
}

async function ask(page) {
  await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 300_000 });
  await page.click("#send");
  await page.waitForSelector("#out[data-done]", { timeout: 300_000 });
  return page.textContent("#out");
}

test("the offline PWA answers under a strict CSP, and again with the server gone", async () => {
  let server = await serve({ "/": WWW, "/models/": MODELS }, { headers: () => ({ "content-security-policy": CSP }) });
  const port = Number(new URL(server.url).port);
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const violations = watchViolations(page);
    const url = `${server.url}/examples/pwa/?temperature=0&max_tokens=1`;
    await page.goto(url);
    // The CSP is in force: an inline script is refused.
    assert.equal(await inlineScriptRuns(page), false, "the CSP is not in force");
    const first = await ask(page);
    assert.ok(first.trim().length > 0, "empty reply");
    assert.doesNotMatch(first, /^\[/, first);
    await page.evaluate(() => navigator.serviceWorker.ready);
    const cached = await page.evaluate(async () => {
      const cache = await caches.open("pocketlm-pwa-v2");
      return (await cache.keys()).map((r) => new URL(r.url).pathname);
    });
    // Chromium has relaxed SIMD: the service worker keeps that build only, and the page runs it.
    assert.ok(cached.some((p) => p.endsWith("/pkg/pocketlm_relaxed_bg.wasm")), JSON.stringify(cached));
    assert.ok(!cached.some((p) => p.endsWith("/pkg/pocketlm_bg.wasm")), JSON.stringify(cached));
    assert.ok(cached.some((p) => p.endsWith("/src/worker.js")), JSON.stringify(cached));

    // Offline: no server at all. The service worker serves the app and the wasm, PocketLM's cache the model.
    await server.close();
    server = null;
    await page.reload();
    const second = await ask(page);
    assert.equal(second, first);
    assert.deepEqual(violations.filter((v) => !/inline script/i.test(v)), []); // (but the probe)
    console.log(`PWA reply, online and offline: ${JSON.stringify(first)} (port ${port})`);
  } finally {
    await browser.close();
    await server?.close();
  }
});

test("the MV3 extension's side panel answers under its manifest's CSP, also after its service worker is stopped", async () => {
  const server = await serve({ "/models/": MODELS });
  const extension = join(WWW, "examples", "extension");
  const browser = await launch({ extension });
  try {
    let [worker] = browser.serviceWorkers();
    worker ??= await browser.waitForEvent("serviceworker", { timeout: 30_000 });
    const id = new URL(worker.url()).host;
    const page = await browser.newPage();
    const violations = watchViolations(page);
    const model = `${server.url}${MODEL}`;
    await page.goto(`chrome-extension://${id}/sidepanel.html?temperature=0&max_tokens=1&model=${encodeURIComponent(model)}`);
    assert.equal(await inlineScriptRuns(page), false, "the CSP is not in force");
    await page.click("#load");
    const reply = await ask(page);
    assert.ok(reply.trim().length > 0, "empty reply");
    assert.doesNotMatch(reply, /^\[/, reply);
    assert.match(await page.textContent("#status"), /^ready/);

    // Chrome stops an idle extension service worker; here it is stopped at once (CDP).
    const background = () => page.evaluate(() => chrome.runtime.sendMessage({ type: "background" }));
    const first = await background();
    const cdp = await browser.newCDPSession(page);
    const stopped = new Promise((resolve) =>
      cdp.on("ServiceWorker.workerVersionUpdated", ({ versions }) => {
        if (versions.some((v) => v.scriptURL === worker.url() && v.runningStatus === "stopped")) resolve();
      }),
    );
    await cdp.send("ServiceWorker.enable");
    await cdp.send("ServiceWorker.stopAllWorkers");
    await stopped;
    await cdp.detach();
    // The model lives in the side panel: it answers again, the same greedy reply.
    const again = await ask(page);
    assert.equal(again, reply);
    assert.match(await page.textContent("#status"), /^ready/);
    // The next event starts a fresh service worker, which works as the first did.
    const second = await background();
    assert.ok(first?.id && second?.id, JSON.stringify({ first, second }));
    assert.notEqual(second.id, first.id, "the service worker was not restarted");
    // And a load after the restart comes from PocketLM's cache in the extension's origin.
    const requests = server.requests.get(MODEL);
    await page.click("#load");
    await page.waitForFunction(() => !document.getElementById("load").disabled, null, { timeout: 300_000 });
    assert.match(await page.textContent("#status"), /^ready/);
    assert.equal(server.requests.get(MODEL), requests, "the model was downloaded again");
    assert.equal(await ask(page), reply);
    assert.deepEqual(violations.filter((v) => !/inline script/i.test(v)), []); // (but the probe)
    console.log(`extension reply: ${JSON.stringify(reply)}, again after its service worker was stopped`);
  } finally {
    await browser.close();
    await server.close();
  }
});

/** Submits `query` on the search page and returns the ranked results' texts and scores. */
async function search(page, query) {
  const done = Number((await page.getAttribute("#results", "data-done")) ?? 0);
  await page.fill("#query", query);
  await page.click("#go");
  await page.waitForFunction((n) => Number(document.getElementById("results").dataset.done ?? 0) > n, done, { timeout: 120_000 });
  return page.$$eval("#results li", (items) => items.map((li) => ({ score: Number(li.firstChild.textContent), text: li.lastChild.textContent })));
}

test("the semantic-search page ranks notes by meaning under a strict CSP, and again offline", async () => {
  let server = await serve({ "/": WWW, "/models/": MODELS }, { headers: () => ({ "content-security-policy": CSP }) });
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const violations = watchViolations(page);
    await page.goto(`${server.url}/examples/search/`);
    assert.equal(await inlineScriptRuns(page), false, "the CSP is not in force");
    await page.waitForSelector("#status[data-ready]", { timeout: 300_000 });
    console.log(await page.textContent("#status"));
    const queries = {
      "my puppy will not obey": /teaching a dog to sit/,
      "which computer should a software developer buy": /choosing a laptop for programming/,
      "stars and long exposures": /photographing the night sky/,
    };
    for (const [query, want] of Object.entries(queries)) {
      const results = await search(page, query);
      assert.equal(results.length, 5);
      assert.match(results[0].text, want, `${query}: ${JSON.stringify(results)}`);
      assert.ok(results.every((r, i) => i === 0 || r.score <= results[i - 1].score), "ranked by score");
    }
    mkdirSync(join(WWW, "test-results"), { recursive: true });
    await page.screenshot({ path: join(WWW, "test-results", "search.png"), fullPage: true });
    await page.evaluate(() => navigator.serviceWorker.ready);

    // Offline: the service worker serves the page, notes and wasm, PocketLM's cache the model.
    await server.close();
    server = null;
    await page.reload();
    await page.waitForFunction(() => document.getElementById("status").dataset.ready || /failed/.test(document.getElementById("status").textContent), null, { timeout: 300_000 });
    assert.equal(await page.getAttribute("#status", "data-ready"), "true", await page.textContent("#status"));
    const again = await search(page, "my puppy will not obey");
    assert.match(again[0].text, /teaching a dog to sit/);
    assert.deepEqual(violations.filter((v) => !/inline script/i.test(v)), []);
  } finally {
    await browser.close();
    await server?.close();
  }
});
