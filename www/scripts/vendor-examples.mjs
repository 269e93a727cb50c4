#!/usr/bin/env node
// Copies the package (src/ and pkg/) into examples/{pwa,extension,search}/vendor/pocketlm/, as an app
// would ship it: an extension can only load files inside its folder, and a PWA's service worker
// only controls PocketLM's Web Worker when the worker's URL lies inside its scope.
import { cpSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const PKG = ["pocketlm.js", "pocketlm_bg.wasm", "pocketlm_relaxed.js", "pocketlm_relaxed_bg.wasm"];

export function vendorExamples() {
  for (const f of PKG) {
    if (!existsSync(join(WWW, "pkg", f))) throw new Error(`www/pkg/${f} is missing: run make wasm first`);
  }
  for (const example of ["pwa", "extension", "search"]) {
    const dest = join(WWW, "examples", example, "vendor", "pocketlm");
    rmSync(dest, { recursive: true, force: true });
    mkdirSync(join(dest, "pkg"), { recursive: true });
    cpSync(join(WWW, "src"), join(dest, "src"), { recursive: true, filter: (p) => !p.endsWith(".d.ts") });
    for (const f of PKG) cpSync(join(WWW, "pkg", f), join(dest, "pkg", f));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  vendorExamples();
  console.log("copied src/ and pkg/ into examples/{pwa,extension,search}/vendor/pocketlm");
}
