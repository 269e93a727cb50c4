#!/usr/bin/env node
// Serves www/ (the package, the demo and the examples) and the repository's models/ folder on
// http://127.0.0.1:8080 (PORT and HOST change it), for `make demo`.
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { serve } from "../test/server.mjs";
import { vendorExamples } from "./vendor-examples.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const MODELS = process.env.POCKETLM_MODELS ?? join(WWW, "..", "models");
const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? "127.0.0.1";

export function serveDemo(options = {}) {
  return serve({ "/": WWW, "/models/": MODELS }, { port, host, ...options });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let server;
  try {
    vendorExamples(); // the PWA and the extension hold their own copy of the package
  } catch (e) {
    console.error(`(examples not refreshed: ${e.message})`);
  }
  try {
    server = await serveDemo();
  } catch (e) {
    console.error(`could not serve on ${host}:${port}: ${e.message} (set PORT=… to use another port)`);
    process.exit(1);
  }
  console.log(`PocketLM demo:  ${server.url}/demo/`);
  console.log(`offline PWA:    ${server.url}/examples/pwa/`);
  console.log(`models:         ${server.url}/models/`);
  console.log("Ctrl-C stops the server.");
  process.on("SIGINT", () => server.close().then(() => process.exit(0)));
  process.on("SIGTERM", () => server.close().then(() => process.exit(0)));
}
