// One thread of the CPU backend in the threaded build (pkg-mt/): the engine's worker starts it
// with the compiled module (the relaxed-SIMD build's or the SIMD128 one's, whose JavaScript glue
// it imports), the shared memory and a handle of its CPU pool. It instantiates the module on that
// memory, says it is ready, and works for the pool (blocking this worker) until the engine frees
// the pool; then it ends.
self.onmessage = async ({ data }) => {
  let glue, wasm;
  try {
    glue = data.relaxedSimd ? await import("../pkg-mt/pocketlm_relaxed.js") : await import("../pkg-mt/pocketlm.js");
    wasm = glue.initSync({ module: data.module, memory: data.memory });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
    self.close();
    return;
  }
  self.postMessage({ ready: true });
  try {
    glue.cpuThreadRun(data.handle);
  } finally {
    wasm.__wbindgen_thread_destroy?.();
    self.close();
  }
};
