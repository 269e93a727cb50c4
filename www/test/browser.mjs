// Headless Chromium with WebGPU, driven by Playwright (Debian's chromium; no browser download).
import { chromium } from "playwright-core";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

// `extension`: the folder of an unpacked extension to load (MV3; works in the new headless mode).
export async function launch({ extension } = {}) {
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
  if (extension) {
    args.push(
      `--disable-extensions-except=${extension}`,
      `--load-extension=${extension}`,
      "--disable-features=DisableLoadExtensionCommandLineSwitch",
    );
  }
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    ignoreDefaultArgs: extension ? ["--disable-extensions"] : [],
  });
}
