// The wasm-bindgen build (www/pkg, made by `make wasm`) in a real headless Chromium: the JS glue
// loads, the kernels run on the browser's WebGPU and match their CPU references, and failures
// reach JavaScript as rejected promises carrying a PocketLMError with a code and a message.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { mkdir } from "node:fs/promises";
import { serve } from "./server.mjs";
import { launch } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
let server, browser, page;

before(async () => {
  server = await serve(WWW);
  browser = await launch();
  page = await browser.newPage();
  page.on("console", (m) => m.type() === "error" && console.error("[page]", m.text()));
  await page.goto(`${server.url}/test/kernels.html`);
  await page.waitForFunction(() => globalThis.selfcheck !== undefined, null, { timeout: 240_000 });
});

after(async () => {
  await browser?.close();
  await server?.close();
});

test("every kernel matches its CPU reference on the browser's WebGPU", async () => {
  const result = await page.evaluate(() => globalThis.selfcheck);
  assert.equal(result.ok, true, `${result.name} (${result.code}): ${result.message}`);
  console.log(result.report);
  assert.match(result.report, /profile:\s+(full|baseline)/);
  const lines = result.checks.split("\n");
  assert.ok(lines.length >= 10, result.checks);
  for (const line of lines) assert.match(line, /^ok /, line);
  const artifacts = join(WWW, "test-results");
  await mkdir(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "kernels.png"), fullPage: true });
});

test("a linear layer computed through the JS API", async () => {
  const y = await page.evaluate(async () => {
    const { gpu } = globalThis.pocketlm;
    const out = await gpu.linear(new Float32Array([1, 2, 3, 4, 5, 6]), 2, 3, new Float32Array([1, 1, 1, 1, 0, -1]));
    return Array.from(out);
  });
  assert.deepEqual(y, [6, 15, -2, -2]);
});

test("bad input rejects with a typed PocketLMError", async () => {
  const errors = await page.evaluate(async () => {
    const { Gpu, gpu } = globalThis.pocketlm;
    const capture = async (p) => {
      try {
        await p;
        return null;
      } catch (e) {
        return { isError: e instanceof Error, name: e.name, code: e.code, message: e.message };
      }
    };
    return {
      rows: await capture(gpu.linear(new Float32Array(6), 2, 3, new Float32Array(4))),
      weights: await capture(gpu.linear(new Float32Array(5), 2, 3, new Float32Array(3))),
      profile: await capture(Gpu.create("turbo")),
    };
  });
  for (const e of Object.values(errors)) {
    assert.ok(e, "the promise rejected");
    assert.equal(e.isError, true);
    assert.equal(e.name, "PocketLMError");
  }
  assert.equal(errors.rows.code, "shape_mismatch");
  assert.match(errors.rows.message, /rows of 3/);
  assert.equal(errors.weights.code, "invalid_tensor");
  assert.match(errors.weights.message, /5 were given/);
  assert.equal(errors.profile.code, "unknown_profile");
  assert.match(errors.profile.message, /turbo/);
});
