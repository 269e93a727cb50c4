// One thread of the CPU backend in the threaded build (pkg-mt/): the engine's worker starts it
// with the compiled module, the shared memory and a handle of its CPU pool. It instantiates the
// module on that memory, says it is ready, and works for the pool (blocking this worker) until
// the engine frees the pool; then it ends.
import { initSync, cpuThreadRun } from "../pkg-mt/pocketlm.js";

self.onmessage = ({ data }) => {
  let wasm;
  try {
    wasm = initSync({ module: data.module, memory: data.memory });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
    self.close();
    return;
  }
  self.postMessage({ ready: true });
  try {
    cpuThreadRun(data.handle);
  } finally {
    wasm.__wbindgen_thread_destroy?.();
    self.close();
  }
};
