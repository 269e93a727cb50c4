// The demo page (www/demo/) in headless Chromium: it loads the default model with a progress
// bar, streams a reply with tokens/s, and a screenshot lands in test-results/demo.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { mkdirSync } from "node:fs";
import { serve } from "./server.mjs";
import { launch } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
let server, browser, page;

before(async () => {
  server = await serve({ "/": WWW, "/models/": join(WWW, "..", "models") });
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page]", e.message));
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test("the demo page shows load progress, then streams a reply with tokens/s", async () => {
  await page.goto(`${server.url}/demo/?temperature=0&max_tokens=2`);
  assert.equal(await page.inputValue("#model-url"), `${server.url}/models/SmolLM2-135M-Instruct.Q4_1.gguf`);
  // Record the progress bar's values as the model loads.
  await page.evaluate(() => {
    globalThis.progressSeen = [];
    new MutationObserver(() => progressSeen.push(document.getElementById("progress").value)).observe(document.getElementById("load-status"), {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  await page.click("#load");
  await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 300_000 });
  const progress = await page.evaluate(() => globalThis.progressSeen);
  assert.ok(progress.some((v) => v > 0 && v < 1), `progress values: ${progress.slice(0, 10)}`);
  assert.equal(await page.evaluate(() => document.getElementById("progress").value), 1);
  assert.match(await page.textContent("#load-status"), /^ready/);

  await page.fill("#prompt", "What is the capital of France?");
  await page.click("#send");
  await page.waitForFunction(() => !document.querySelector(".msg.assistant.streaming") && document.querySelector(".msg.assistant"), null, {
    timeout: 300_000,
  });
  const reply = await page.textContent(".msg.assistant");
  assert.ok(reply.trim().length > 0, "empty reply");
  assert.equal(await page.textContent(".msg.user"), "What is the capital of France?");
  assert.match(await page.textContent("#speed"), /tokens\/s · 2 tokens/);
  assert.equal(await page.locator(".msg.error").count(), 0);
  mkdirSync(join(WWW, "test-results"), { recursive: true });
  await page.screenshot({ path: join(WWW, "test-results", "demo.png"), fullPage: true });
  console.log(`demo reply: ${JSON.stringify(reply)}; ${await page.textContent("#speed")}`);
});
