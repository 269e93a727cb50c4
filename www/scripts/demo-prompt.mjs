#!/usr/bin/env node
// `make demo PROMPT="…"`: runs one prompt through the demo page in headless Chromium with greedy
// decoding and prints the answer to the terminal as it streams.
// Usage: node scripts/demo-prompt.mjs "prompt" [max_tokens]   (MODEL=url overrides the model)
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { serve } from "../test/server.mjs";
import { launch } from "../test/browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const prompt = process.argv[2];
const maxTokens = Number(process.argv[3] ?? process.env.MAX_TOKENS ?? 32);
if (!prompt) {
  console.error('usage: node scripts/demo-prompt.mjs "prompt" [max_tokens]');
  process.exit(2);
}

const server = await serve({ "/": WWW, "/models/": join(WWW, "..", "models") });
const browser = await launch();
let code = 0;
try {
  const page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  page.on("pageerror", (e) => console.error("[page]", e.message));
  const done = new Promise((resolve, reject) => {
    page.exposeFunction("__demoEvent", (name, detail) => {
      if (name === "loaded") console.error(`(model loaded in ${detail.seconds.toFixed(1)} s: ${detail.info.name}, ${detail.info.profile} profile)`);
      if (name === "token") process.stdout.write(detail);
      if (name === "done") resolve(detail);
      if (name === "error") reject(new Error(`${detail.code}: ${detail.message}`));
    });
  });
  await page.addInitScript(() => {
    for (const name of ["loaded", "token", "done", "error"]) {
      window.addEventListener(`pocketlm:${name}`, (e) => window.__demoEvent(name, e.detail));
    }
  });
  const model = process.env.MODEL ?? `${server.url}/models/SmolLM2-135M-Instruct.Q4_1.gguf`;
  const query = new URLSearchParams({ model, temperature: "0", max_tokens: String(maxTokens), autoload: "1" });
  await page.goto(`${server.url}/demo/?${query}`);
  await page.waitForFunction(() => !document.getElementById("send").disabled, null, { timeout: 300_000 });
  await page.fill("#prompt", prompt);
  await page.click("#send");
  const result = await done;
  process.stdout.write("\n");
  const rate = result.tokens_per_second ? `, ${result.tokens_per_second.toFixed(2)} tokens/s` : "";
  console.error(`(${result.usage.completion_tokens} tokens, finish_reason ${result.finish_reason}${rate})`);
} catch (e) {
  console.error(`\ndemo failed: ${e.message}`);
  code = 1;
} finally {
  await browser.close();
  await server.close();
}
process.exit(code);
