// The engine in this JavaScript realm: the wasm module, one GPU device and one model, with a queue
// so that generations run one after another. The package's Web Worker runs it; it also runs
// directly inside any worker or an extension's service worker (see README.md), where
// `PocketLM.load(url, { worker: false })` uses it without a second worker.
// The single-thread SIMD128 build, imported statically (a service worker cannot use import());
// the threaded one (pkg-mt/) and the relaxed-SIMD ones (src/simd.js) are imported only where
// they can run, always inside a dedicated worker.
import * as singleThread from "../pkg/pocketlm.js";
import { PocketLMError, toPocketLMError, serializeError } from "./errors.js";
import { embeddingRequest, loadOptions, normalizeSource } from "./validate.js";
import * as storage from "./storage.js";
import { canImport, relaxedSimd } from "./simd.js";

export { PocketLMError };

let wasmReady = null;
/** The module this realm loaded: pkg/pocketlm.js's exports, `memory` and `threaded`. */
let W = null;

/** Why this realm cannot run the threaded build (pkg-mt: shared memory, the CPU backend's threads
 * as Web Workers), or null when it can. */
function threadsUnavailable() {
  if (globalThis.crossOriginIsolated !== true) {
    return "the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp), so WebAssembly threads cannot share memory";
  }
  if (typeof WorkerGlobalScope === "undefined") return "the engine runs on the page's main thread (worker: false), which cannot wait for other threads";
  if (typeof Worker !== "function") return "this realm cannot start Web Workers";
  return null;
}

/** `load(source)` on a model file as `job` (src/storage.js's `start`) downloads and stores it:
 * the engine reads it as a Blob-like object (its URL as the name, the size the server gave) whose
 * stream is the download's. Resolves once the file is also in the cache. When the download fails,
 * its error is the one thrown (it says more than the engine's read of a broken stream); when the
 * engine refuses the file (its header, or a model too large for the device, refused as soon as
 * the header is read), the download stops there and what it stored is dropped, so the refusal
 * comes before the rest of the file is downloaded. */
async function loadWhileStored(job, url, load) {
  const source = { name: url, size: job.total, stream: () => job.stream, arrayBuffer: () => Promise.reject(new Error("read as a stream")) };
  // A download that fails errors the engine's stream: this is set before the engine's error.
  let downloadError = null;
  job.done.catch((err) => (downloadError = err));
  let model;
  try {
    model = await load(source);
  } catch (e) {
    job.cancelStream();
    const failed = downloadError;
    const aborted = toPocketLMError(e).code === "aborted";
    if (!failed && !aborted) job.abort();
    await job.done.catch(() => {});
    if (failed) throw failed;
    if (!aborted) await storage.remove(url).catch(() => {});
    throw e;
  }
  job.cancelStream(); // (the engine may not read a file's last bytes; the cache gets them all)
  try {
    await job.done;
  } catch (e) {
    model.free();
    throw e;
  }
  return model;
}

/** A model folder (its URL, or its index's) is downloaded whole into the cache before the engine
 * reads it: its `config.json` (and `modules.json`, which says whether it is an embedding model)
 * is checked first, so that a model PocketLM cannot run is refused before gigabytes of weights.
 * A file that cannot be fetched is left for the load to report. */
async function checkFolder(src, signal) {
  const base = src.slice(0, src.lastIndexOf("/") + 1);
  const companions = {};
  await Promise.all(
    ["config.json", "modules.json"].map(async (name) => {
      try {
        const response = await fetch(base + name, { signal });
        if (response.ok) companions[name] = await response.text();
      } catch (e) {
        if (signal?.aborted) throw new PocketLMError("aborted", "the load was aborted");
        // (Offline: the load reads it from the cache, or says what is missing.)
      }
    }),
  );
  try {
    W.checkModelFolder(companions);
  } catch (e) {
    throw toPocketLMError(e);
  }
}

/** Loads and instantiates PocketLM's wasm module once per realm. `wasm` (its URL, Response or
 * module) selects the single-thread build's file; by default the realm takes the threaded build
 * (pkg-mt/) where it can run it (`threadsUnavailable`) and `threads` is not 1, else pkg/, and of
 * that folder's two builds the one with relaxed SIMD where the engine validates it and the realm
 * can import it (src/simd.js) and `relaxed` is not false. */
export function initWasm(wasm, threads, relaxed) {
  wasmReady ??= (async () => {
    const threaded = wasm === undefined && threads !== 1 && threadsUnavailable() === null;
    const fast = wasm === undefined && relaxed !== false && relaxedSimd() && canImport();
    // (Each import names its file, so that bundlers see and copy all four.)
    let mod = singleThread;
    if (threaded) mod = fast ? await import("../pkg-mt/pocketlm_relaxed.js") : await import("../pkg-mt/pocketlm.js");
    else if (fast) mod = await import("../pkg/pocketlm_relaxed.js");
    const exports = await mod.default(wasm === undefined ? undefined : { module_or_path: wasm });
    W = { ...mod, memory: exports.memory, threaded: mod.wasmThreads(), relaxedSimd: mod.wasmRelaxedSimd() };
    return W;
  })().catch((e) => {
    wasmReady = null;
    throw new PocketLMError("wasm_load", `could not load PocketLM's WebAssembly module: ${e?.message ?? e}`, { cause: e });
  });
  return wasmReady;
}

/** A Web Worker on `url`; a same-origin blob: worker importing it when `url` is another origin's
 * (a page may start workers only from its own origin). */
function startWorker(url, name) {
  if (url.origin === globalThis.location?.origin) return new Worker(url, { type: "module", name });
  const blob = URL.createObjectURL(new Blob([`import ${JSON.stringify(url.href)};`], { type: "text/javascript" }));
  try {
    return new Worker(blob, { type: "module", name });
  } finally {
    URL.revokeObjectURL(blob);
  }
}

/** Starts the CPU backend's other threads: `threads - 1` Web Workers running src/thread.js on this
 * realm's shared memory, each joining `cpu`'s pool. Resolves when they have joined, to a note when
 * fewer than asked did (null when all did). */
async function startThreads(cpu, threads) {
  const started = await Promise.all(
    Array.from({ length: threads - 1 }, (_, i) => {
      let worker;
      try {
        worker = startWorker(new URL("./thread.js", import.meta.url), `pocketlm-thread-${i + 1}`);
      } catch (e) {
        return `could not start a thread's worker: ${e?.message ?? e}`;
      }
      return new Promise((resolve) => {
        worker.onmessage = ({ data }) => resolve(data.error ? `a thread's worker failed: ${data.error}` : null);
        worker.onerror = (e) => {
          e.preventDefault?.();
          resolve(`a thread's worker failed to start: ${e.message ?? "error"}`);
        };
        worker.postMessage({ module: W.compiledModule(), memory: W.memory, handle: cpu.threadHandle(), relaxedSimd: W.relaxedSimd });
      });
    }),
  );
  // The workers join between two jobs of the pool: wait for them (a few milliseconds).
  const ok = started.filter((r) => r === null).length + 1;
  for (let t = 0; cpu.threads() < ok && t < 500; t++) await new Promise((r) => setTimeout(r, 10));
  const failed = started.find((r) => r !== null);
  return failed ? `${cpu.threads()} of ${threads} threads run: ${failed}` : null;
}

/** The CPU threads to ask for: `threads` when given, else one per logical core (at most 16). */
function defaultThreads(threads) {
  return threads ?? Math.max(1, Math.min(16, globalThis.navigator?.hardwareConcurrency ?? 1));
}

/** This realm's memory as PocketLM sees it: `wasmBytes` (wasm linear memory: its high-water mark,
 * it never shrinks), `gpuBuffers` and `gpuBytes` (the GPU buffers PocketLM holds, over every
 * device of this realm, counted by its own allocator) and `jsHeapBytes` (the JS heap where the
 * browser reports it, Chromium's `performance.memory`; else null). Loads the wasm module if
 * needed. */
export async function memoryUsage() {
  await initWasm();
  const gpu = W.gpuBuffers();
  return {
    wasmBytes: W.wasmMemoryBytes(),
    gpuBuffers: gpu.count,
    gpuBytes: gpu.bytes,
    jsHeapBytes: globalThis.performance?.memory?.usedJSHeapSize ?? null,
  };
}

/** The name of a software WebGPU adapter (one that runs on the CPU, slower than the CPU backend),
 * or null for a hardware one. */
function softwareAdapter(adapter) {
  const info = adapter.info ?? {};
  if (info.isFallbackAdapter ?? adapter.isFallbackAdapter) return "a fallback adapter";
  const text = `${info.vendor ?? ""} ${info.architecture ?? ""} ${info.description ?? ""} ${info.device ?? ""}`.toLowerCase();
  for (const name of ["swiftshader", "llvmpipe", "lavapipe", "microsoft basic render driver"]) {
    if (text.includes(name)) return name;
  }
  return null;
}

/** The WebGPU adapter of this realm, or why there is none. */
async function probeAdapter() {
  const gpu = globalThis.navigator?.gpu;
  if (!gpu) {
    if (globalThis.isSecureContext === false) {
      return { reason: "WebGPU needs a secure context (https:// or http://localhost)" };
    }
    return { reason: "this browser has no WebGPU (navigator.gpu is missing)" };
  }
  try {
    const adapter = await gpu.requestAdapter();
    if (!adapter) return { reason: "WebGPU offers no GPU adapter (the GPU may be blocklisted or WebGPU disabled: see chrome://gpu)" };
    return { adapter };
  } catch (e) {
    return { reason: `WebGPU could not find a GPU adapter: ${e?.message ?? e}` };
  }
}

/** Which backend `backend` ("auto", "webgpu" or "cpu") runs here, and why: `auto` takes WebGPU on
 * a hardware adapter and the CPU backend when there is no adapter or only a software one. */
async function chooseBackend(backend = "auto") {
  if (backend === "webgpu") return { backend, reason: "asked for" };
  if (backend === "cpu") return { backend, reason: "asked for" };
  const { adapter, reason } = await probeAdapter();
  if (!adapter) return { backend: "cpu", reason };
  const software = softwareAdapter(adapter);
  if (software) return { backend: "cpu", reason: `the only WebGPU adapter is a software one (${software}), slower than the CPU backend` };
  return { backend: "webgpu", reason: "a hardware WebGPU adapter" };
}

/** Whether this realm can run PocketLM, on which backend `auto` would pick, and why. Does not load
 * the wasm module. */
export async function supportReport() {
  if (typeof WebAssembly !== "object") return { supported: false, reason: "this browser has no WebAssembly", backend: null, backendReason: null };
  const { adapter, reason } = await probeAdapter();
  if (!adapter) return { supported: true, reason: null, backend: "cpu", backendReason: reason, relaxedSimd: relaxedSimd() };
  const info = adapter.info ?? {};
  const software = softwareAdapter(adapter);
  return {
    supported: true,
    reason: null,
    backend: software ? "cpu" : "webgpu",
    backendReason: software ? `the only WebGPU adapter is a software one (${software}), slower than the CPU backend` : "a hardware WebGPU adapter",
    relaxedSimd: relaxedSimd(),
    adapter: {
      vendor: info.vendor ?? "",
      architecture: info.architecture ?? "",
      description: info.description ?? "",
      isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    },
    features: [...adapter.features],
    limits: {
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    },
  };
}

/** The base64 of a Float32Array's bytes (little-endian, as OpenAI's `encoding_format: "base64"`). */
function base64(v) {
  const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

/** Runs a storage operation; its failures are PocketLMErrors. */
async function storageCall(f) {
  try {
    return await f();
  } catch (e) {
    throw toPocketLMError(e, "io");
  }
}

/** The URLs of the complete model files in PocketLM's cache (Cache API) in this origin. */
export function listCachedModels() {
  return storageCall(async () => (await storage.list()).filter((f) => f.complete).map((f) => f.url));
}

/** Deletes every cached model file of this origin, partial downloads too; resolves to whether
 * there were any. */
export function clearModelCache() {
  return storageCall(() => storage.clear());
}

/**
 * The model files this origin keeps (the Cache API), and its storage. URLs resolve against this
 * realm's location.
 */
export const cache = Object.freeze({
  /** Whether a complete, checked copy of the file at `url` is cached. */
  has: (url) => storageCall(() => storage.has(absolute(url))),
  /** Deletes the cached copy of `url` and any partial download of it; resolves to whether there was one. */
  delete: (url) => storageCall(() => storage.remove(absolute(url))),
  /** `[{url, bytes, complete, total?}]`: complete files, and downloads in progress (`complete:
   * false`, `bytes` held so far of `total`). */
  list: () => storageCall(() => storage.list()),
  /** Deletes every model file, partial downloads too. */
  clear: () => clearModelCache(),
  /** `{usage, quota, available}` in bytes (`navigator.storage.estimate()`). */
  estimate: () => storageCall(() => storage.estimate()),
  /** Asks that this origin's storage be kept under storage pressure (`navigator.storage.persist()`);
   * resolves to whether it will be. */
  persist: () => storageCall(() => storage.persist()),
  /** Whether this origin's storage is persistent (`navigator.storage.persisted()`). */
  persisted: () => storageCall(() => storage.persisted()),
});

function absolute(url) {
  const src = normalizeSource(url, globalThis.document?.baseURI ?? globalThis.location?.href);
  if (typeof src !== "string") throw new PocketLMError("invalid_request", "give the URL of a model file");
  return src;
}

const GPU_FAILURES = new Set(["readback", "gpu", "device_lost"]);

const abortedResult = () => ({
  text: "",
  tokens: [],
  finishReason: "abort",
  promptTokens: 0,
  cachedTokens: 0,
  completionTokens: 0,
  prefillMs: 0,
  decodeMs: 0,
  fullRowReads: 0,
  nucleusDraws: 0,
});

/** One model on one GPU device. */
export class Engine {
  #gpu;
  #cpu = null;
  #model;
  #info;
  #state = "ready";
  #lostMessage = "";
  #lost = null; // resolves when the device is lost
  #queue = Promise.resolve();

  /**
   * Loads a model. `source`: a URL (absolute, or relative to this realm's location), an array of
   * the URLs of one model's files, a File/Blob, an ArrayBuffer/Uint8Array or a ReadableStream.
   * `options`: onProgress, signal, integrity, cache, context, kvDtype, backend, profile,
   * concurrency, wasm, onDeviceLost(error).
   */
  static async load(source, options = {}) {
    const { onProgress, signal, onDeviceLost, wasm } = options;
    const opts = loadOptions({ ...options, onProgress: undefined });
    const src = normalizeSource(source, globalThis.location?.href);
    if (signal?.aborted) throw new PocketLMError("aborted", "the load was aborted");
    const threads = defaultThreads(opts.threads);
    await initWasm(wasm, threads, opts.relaxedSimd);
    if (typeof src === "string" && (src.endsWith("/") || src.endsWith(".index.json")) && opts.cache !== false) {
      await checkFolder(src, signal);
    }
    const choice = await chooseBackend(opts.backend);
    let gpu = null;
    if (choice.backend === "webgpu") {
      try {
        gpu = await W.Gpu.create(opts.profile);
      } catch (e) {
        const err = toPocketLMError(e);
        // `auto` on an adapter the device cannot be opened on: the CPU backend still runs.
        if (opts.backend === "webgpu" || !["no_adapter", "device_request", "profile_unavailable"].includes(err.code)) throw err;
        choice.backend = "cpu";
        choice.reason = `the WebGPU device could not be opened (${err.message})`;
      }
    }
    const engine = new Engine();
    engine.#gpu = gpu;
    let lost;
    engine.#lost = new Promise((resolve) => (lost = resolve));
    gpu?.onDeviceLost((message) => {
      lost();
      if (engine.#state !== "ready") return; // unload() destroys the device on purpose
      engine.#state = "lost";
      engine.#lostMessage = message;
      onDeviceLost?.(engine.#stateError());
    });
    // Into the cache, checked and whole (src/storage.js), and the engine reads it there; a model
    // of one file that is not cached yet is read as it downloads (`job.stream`).
    let job = null;
    try {
      const { profile: _, backend: __, threads: ___, relaxedSimd: ____, ...wasmOptions } = opts;
      if ((typeof src === "string" || Array.isArray(src)) && opts.cache !== false) {
        job = await storage.start(src, { signal, onProgress, concurrency: opts.concurrency, stream: typeof src === "string" });
        if (!job.stream) {
          await job.done;
          job = null;
        }
      }
      const phase = onProgress ? (p) => onProgress({ phase: "load", ...p }) : undefined;
      let threadsNote = null;
      if (!gpu) {
        engine.#cpu = W.Cpu.create(W.threaded ? threads : 1);
        if (threads > 1 && W.threaded) threadsNote = await startThreads(engine.#cpu, threads);
        else if (threads > 1) {
          threadsNote =
            wasm !== undefined
              ? "one thread: a custom wasm module was given (the option selects the single-thread build)"
              : `one thread: ${threadsUnavailable() ?? "this realm loaded the single-thread build first (threads: 1)"}`;
        }
      }
      const device = gpu ?? engine.#cpu;
      const load = (source) => device.loadModel(source, { ...wasmOptions, onProgress: phase, signal });
      engine.#model = job ? await loadWhileStored(job, src, load) : await load(src);
      engine.#info = engine.#model.info();
      engine.#info.kind = engine.#model.kind();
      engine.#info.profile = gpu ? gpu.profile : null;
      engine.#info.backendReason = choice.reason;
      engine.#info.device = gpu ? null : device.describe();
      engine.#info.threads = gpu ? null : device.threads();
      engine.#info.threadsNote = threadsNote;
      engine.#info.relaxedSimd = gpu ? null : W.relaxedSimd;
      return engine;
    } catch (e) {
      engine.#state = "unloaded";
      // (A failure before the engine read the download: it goes on into the cache alone.)
      job?.cancelStream();
      try {
        gpu?.destroyDevice();
        gpu?.free();
        engine.#cpu?.free();
      } catch {
        /* already gone */
      }
      throw engine.#lostMessage ? new PocketLMError("device_lost", `the GPU device was lost while loading (${engine.#lostMessage})`) : toPocketLMError(e);
    }
  }

  /** `{name, architecture, backend, backendReason, device, vocab, layers, hidden, heads, kvHeads,
   * headDim, context, trainedContext, weightBytes, kvBytes, chatTemplate, eos, profile}`. */
  info() {
    return { ...this.#info };
  }

  /** "ready", "unloaded" or "lost". */
  get state() {
    return this.#state;
  }

  #stateError() {
    if (this.#state === "lost") {
      return new PocketLMError("device_lost", `the GPU device was lost (${this.#lostMessage}); load the model again`);
    }
    return new PocketLMError("unloaded", "this model was unloaded; load it again to use it");
  }

  /**
   * Generates (queued behind earlier calls). `request`: the engine's request (`messages` or
   * `prompt`, and the OpenAI sampling names). `onToken(text, tokenId, logprobs)` after every token (`logprobs` when asked for); `signal`
   * stops it within one token with finishReason "abort" (also while it waits in the queue).
   */
  generate(request, { onToken, signal } = {}) {
    if (this.#state !== "ready") return Promise.reject(this.#stateError());
    if (this.#info.kind === "embedding") {
      return Promise.reject(
        new PocketLMError("invalid_request", `${this.#info.name} is a sentence-embedding model: it cannot chat or complete text; use embeddings.create`),
      );
    }
    const run = async () => {
      if (this.#state !== "ready") throw this.#stateError();
      if (signal?.aborted) return abortedResult();
      try {
        return await this.#model.generate({ ...request, signal }, onToken ? (text, token, logprobs) => void onToken(text, token, logprobs) : undefined);
      } catch (e) {
        const err = toPocketLMError(e);
        // A lost device first shows as a failed GPU call; its "lost" news follows a moment later.
        if (GPU_FAILURES.has(err.code) && this.#state === "ready") {
          await Promise.race([this.#lost, new Promise((resolve) => setTimeout(resolve, 250))]);
        }
        if (this.#state === "lost") throw this.#stateError();
        if (err.code === "aborted" && signal?.aborted) return abortedResult();
        throw err;
      }
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /** OpenAI's embeddings (`{input, dimensions?, encoding_format?, truncate?}`) with a
   * sentence-embedding model: `{object: "list", data: [{object: "embedding", index, embedding}],
   * model, usage: {prompt_tokens, total_tokens}}`, each embedding an array of numbers or, with
   * `encoding_format: "base64"`, the base64 of its little-endian float32 bytes. */
  embed(request) {
    if (this.#state !== "ready") return Promise.reject(this.#stateError());
    let parsed;
    try {
      parsed = embeddingRequest(request);
      if (this.#info.kind !== "embedding") {
        throw new PocketLMError(
          "invalid_request",
          `${this.#info.name} is a chat model: embeddings need a sentence-embedding model (a sentence-transformers folder such as all-MiniLM-L6-v2)`,
        );
      }
    } catch (e) {
      return Promise.reject(toPocketLMError(e));
    }
    const run = async () => {
      if (this.#state !== "ready") throw this.#stateError();
      let r;
      try {
        r = await this.#model.embed(parsed.inputs, parsed.options);
      } catch (e) {
        throw toPocketLMError(e);
      }
      const tokens = r.tokens.reduce((a, b) => a + b, 0);
      return {
        object: "list",
        data: r.vectors.map((v, index) => ({ object: "embedding", index, embedding: parsed.format === "base64" ? base64(v) : Array.from(v) })),
        model: this.#info.name,
        usage: { prompt_tokens: tokens, total_tokens: tokens },
      };
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /** The token ids of `text`. */
  tokenize(text, addSpecial = false) {
    if (this.#state !== "ready") throw this.#stateError();
    if (this.#info.kind === "embedding") throw new PocketLMError("invalid_request", `${this.#info.name} is a sentence-embedding model: tokenize is for chat models`);
    return Array.from(this.#model.tokenize(String(text), Boolean(addSpecial)));
  }

  /** Frees the GPU memory and the device. A generation in progress ends after its current token
   * (finishReason "abort"); queued ones reject with code "unloaded". */
  async unload() {
    if (this.#state === "unloaded") return;
    this.#state = "unloaded";
    try {
      this.#model?.unload();
    } catch {
      /* lost devices have nothing left to free */
    }
    await this.#queue;
    for (const f of [() => this.#model?.free(), () => this.#gpu?.destroyDevice(), () => this.#gpu?.free(), () => this.#cpu?.free()]) {
      try {
        f();
      } catch {
        /* already freed */
      }
    }
    this.#model = undefined;
    this.#gpu = undefined;
    this.#cpu = null;
  }

  /** Destroys the GPU device as a lost device would be (for tests of recovery). */
  simulateDeviceLoss() {
    this.#gpu?.destroyDevice();
  }
}

/**
 * The engine's side of the package's message protocol: `handle(message)` runs one request and
 * answers through `post(reply)`. Requests: {id, op: "support" | "load" | "generate" | "embed" | "unload" |
 * "info" | "memory" | "simulateDeviceLoss", ...}, and {op: "abort", target: id}. Replies: {id, type:
 * "progress" | "token" | "done" | "error"}, and {type: "lost", error} when the device is lost.
 */
export function createHandler(post) {
  let engine = null;
  const controllers = new Map();
  const need = () => {
    if (!engine) throw new PocketLMError("unloaded", "no model is loaded");
    return engine;
  };
  return async function handle(m) {
    if (m.op === "abort") {
      controllers.get(m.target)?.abort();
      return;
    }
    const { id } = m;
    const controller = new AbortController();
    controllers.set(id, controller);
    try {
      let value;
      switch (m.op) {
        case "support":
          value = await supportReport();
          break;
        case "load":
          if (engine) throw new PocketLMError("invalid_request", "this engine already holds a model");
          engine = await Engine.load(m.source, {
            ...m.options,
            signal: controller.signal,
            onProgress: m.progress ? (progress) => post({ id, type: "progress", progress: { ...progress } }) : undefined,
            onDeviceLost: (error) => post({ type: "lost", error: serializeError(error) }),
          });
          value = engine.info();
          break;
        case "generate":
          value = await need().generate(m.request, {
            signal: controller.signal,
            onToken: m.stream ? (text, token, logprobs) => post({ id, type: "token", text, token, logprobs }) : undefined,
          });
          break;
        case "embed":
          value = await need().embed(m.request);
          break;
        case "tokenize":
          value = need().tokenize(m.text, m.addSpecial);
          break;
        case "info":
          value = need().info();
          break;
        case "memory":
          value = await memoryUsage();
          break;
        case "unload":
          await engine?.unload();
          break;
        case "simulateDeviceLoss":
          need().simulateDeviceLoss();
          break;
        default:
          throw new PocketLMError("invalid_request", `unknown operation ${JSON.stringify(m.op)}`);
      }
      post({ id, type: "done", value });
    } catch (e) {
      post({ id, type: "error", error: serializeError(e) });
    } finally {
      controllers.delete(id);
    }
  };
}
