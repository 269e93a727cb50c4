// Headless Chromium with WebGPU, driven by Playwright (Debian's chromium; no browser download).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

// `extension`: the folder of an unpacked extension to load (MV3; works in the new headless mode).
// `disableFeatures`: Chromium features to turn off (e.g. "StaticStorageQuota", so that
// navigator.storage.estimate() reports the real quota). `measureMemory`: expose `gc()` and exact
// `performance.memory` figures (for the soak tests). `eagerMemory`: the cross-origin isolated
// page's `performance.measureUserAgentSpecificMemory()` answers at once (not at the next GC,
// which can take 20 s or more): for the bench's memory figures.
export async function launch({ extension, disableFeatures = [], measureMemory = false, eagerMemory = false } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), "pocketlm-chromium-"));
  const args = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
  ];
  if (measureMemory) args.push("--js-flags=--expose-gc", "--enable-precise-memory-info");
  if (eagerMemory) args.push("--enable-blink-features=ForceEagerMeasureMemory");
  const disabled = [...disableFeatures];
  if (extension) {
    args.push(`--disable-extensions-except=${extension}`, `--load-extension=${extension}`);
    disabled.push("DisableLoadExtensionCommandLineSwitch");
  }
  if (disabled.length > 0) args.push(`--disable-features=${disabled.join(",")}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    ignoreDefaultArgs: extension ? ["--disable-extensions"] : [],
  });
  // The profile holds the models the tests cached (hundreds of MB): it goes with the browser.
  const close = context.close.bind(context);
  context.close = async (...options) => {
    try {
      await close(...options);
    } finally {
      await rm(userDataDir, { recursive: true, force: true });
    }
  };
  return context;
}

/** Runs `fn` (its source is sent to the page) in `page` with `arg`: resolves to `{value}`, or to
 * `{error}` holding a rejection's own fields with its name, code, message, stack and whether it is
 * a PocketLMError of the page's `globalThis.pocketlm`. */
export function evaluate(page, fn, arg) {
  return page.evaluate(
    async ([src, arg]) => {
      const f = (0, eval)(`(${src})`);
      try {
        return { value: await f(arg) };
      } catch (e) {
        const PocketLMError = globalThis.pocketlm?.PocketLMError;
        return {
          error: {
            ...e,
            name: e?.name,
            code: e?.code,
            message: e?.message,
            stack: e?.stack,
            isPocketLMError: PocketLMError !== undefined && e instanceof PocketLMError,
          },
        };
      }
    },
    [fn.toString(), arg],
  );
}

/** The value of an `evaluate` result; fails the test with the error it holds. */
export function value(r) {
  assert.equal(r.error, undefined, JSON.stringify(r.error));
  return r.value;
}
