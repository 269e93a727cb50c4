// The demo page (www/demo/) in headless Chromium: it loads the default model with a progress
// bar, streams a reply with tokens/s, and a screenshot lands in test-results/demo.png. Its JSON
// mode (a schema box) and tool-call mode run on the tiny model with a byte-level tokenizer (any
// JSON can be written, quickly): the reply parses and follows the schema, and the call shows as
// a bubble; screenshots in test-results/demo-json.png and demo-tool.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { mkdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tinyByteFolder } from "./tiny-bytes.mjs";
import { serve } from "./server.mjs";
import { launch } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
let server, browser, page, folder;

before(async () => {
  folder = await tinyByteFolder();
  server = await serve({ "/": WWW, "/models/": join(WWW, "..", "models"), "/tiny-bytes/": folder });
  browser = await launch();
  page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page]", e.message));
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (folder) await rm(folder, { recursive: true, force: true });
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
  // This machine's WebGPU adapter is a software one: the page says the CPU backend runs it.
  assert.match(await page.textContent("#device"), /runs on the CPU/);

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

test("JSON mode follows the schema box, and tool mode shows the call", { timeout: 600_000 }, async () => {
  const tiny = await browser.newPage({ viewport: { width: 900, height: 900 } });
  tiny.on("pageerror", (e) => console.error("[page]", e.message));
  await tiny.goto(`${server.url}/demo/?model=${encodeURIComponent(`${server.url}/tiny-bytes/`)}&mode=json&temperature=0&max_tokens=200&context=1536`);
  assert.equal(await tiny.isVisible("#schema"), true);
  const schema = {
    type: "object",
    properties: { city: { type: "string", maxLength: 10 }, sunny: { type: "boolean" } },
    required: ["city", "sunny"],
    additionalProperties: false,
  };
  await tiny.fill("#schema", JSON.stringify(schema));
  await tiny.click("#load");
  await tiny.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 300_000 });
  const done = () =>
    tiny.evaluate(
      () =>
        new Promise((resolve) => {
          window.addEventListener("pocketlm:done", (e) => resolve(e.detail), { once: true });
          window.addEventListener("pocketlm:error", (e) => resolve({ error: e.detail }), { once: true });
        }),
    );
  let finished = done();
  await tiny.fill("#prompt", "Weather in Oslo as JSON");
  await tiny.click("#send");
  let result = await finished;
  assert.equal(result.error, undefined, JSON.stringify(result));
  const reply = JSON.parse(await tiny.textContent(".msg.assistant"));
  assert.deepEqual(Object.keys(reply).sort(), ["city", "sunny"]);
  assert.equal(typeof reply.sunny, "boolean");
  mkdirSync(join(WWW, "test-results"), { recursive: true });
  await tiny.screenshot({ path: join(WWW, "test-results", "demo-json.png"), fullPage: true });

  await tiny.click('input[name="mode"][value="tools"]');
  assert.equal(await tiny.isVisible("#tools"), true);
  // The random model writes long strings: bound the city so the call ends within max tokens.
  const tools = JSON.parse(await tiny.inputValue("#tools"));
  tools[0].function.parameters.properties.city.maxLength = 10;
  await tiny.fill("#tools", JSON.stringify(tools));

  await tiny.click("#clear");
  finished = done();
  await tiny.fill("#prompt", "Weather in Oslo?");
  await tiny.click("#send");
  result = await finished;
  assert.equal(result.finish_reason, "tool_calls", JSON.stringify(result));
  const call = await tiny.textContent(".msg.tool-call");
  assert.match(call, /^get_weather\(\{/);
  const args = JSON.parse(call.slice("get_weather(".length, -1));
  assert.ok(["celsius", "fahrenheit"].includes(args.unit), call);
  await tiny.screenshot({ path: join(WWW, "test-results", "demo-tool.png"), fullPage: true });
  await tiny.close();
});
