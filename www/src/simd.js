// Which of its two builds of each wasm module (pkg/ and pkg-mt/ hold both) this browser runs.
// pocketlm.js and pocketlm_bg.wasm use WebAssembly SIMD128, which every browser with WebAssembly
// SIMD runs; pocketlm_relaxed.js and pocketlm_relaxed_bg.wasm add relaxed SIMD (fused
// multiply-adds in the CPU backend's prefill and batch products), which Chromium-based browsers
// run and others may not. A module holding an instruction the engine lacks does not validate at
// all, so the choice is made before the module is fetched, from a small module that uses the
// relaxed instruction. A service worker that caches the package for offline use caches the files
// `wasmFiles()` names (see the PWA example).

// (module (func (result v128) (f32x4.relaxed_madd (v128.const …) (v128.const …) (v128.const …))))
const ZERO = new Array(16).fill(0);
const PROBE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
  0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7b, // types: () -> v128
  0x03, 0x02, 0x01, 0x00, // one function of type 0
  0x0a, 0x3d, 0x01, 0x3b, 0x00, // its code: 59 bytes, no locals
  ...[0, 1, 2].flatMap(() => [0xfd, 0x0c, ...ZERO]), // three v128.const
  0xfd, 0x85, 0x02, // f32x4.relaxed_madd
  0x0b, // end
]);

let relaxed = null;

/** Whether this realm's WebAssembly engine validates relaxed SIMD (cached). */
export function relaxedSimd() {
  if (relaxed === null) {
    try {
      relaxed = typeof WebAssembly === "object" && WebAssembly.validate(PROBE);
    } catch {
      relaxed = false;
    }
  }
  return relaxed;
}

/** Whether this realm can import modules at run time (`import()`): a service worker cannot, so
 * an engine running in one (`worker: false` in an extension's background) keeps the SIMD128
 * build, which src/engine.js imports statically. */
export function canImport() {
  return typeof ServiceWorkerGlobalScope === "undefined" || !(globalThis instanceof ServiceWorkerGlobalScope);
}

/** The files, inside pkg/ or pkg-mt/, that a page's engine loads here by default: the SIMD128
 * build's glue (imported statically) and the module it runs, with its glue. */
export function wasmFiles() {
  return relaxedSimd() ? ["pocketlm.js", "pocketlm_relaxed.js", "pocketlm_relaxed_bg.wasm"] : ["pocketlm.js", "pocketlm_bg.wasm"];
}
