// PocketLM's main-thread API: load a model into a module Web Worker and talk to it with an
// OpenAI-style chat completions API.
//
//   import { PocketLM } from "pocketlm";
//   const lm = await PocketLM.load(url, { onProgress });
//   for await (const chunk of await lm.chat.completions.create({ messages, stream: true }))
//     out.textContent += chunk.choices[0].delta.content ?? "";
import { PocketLMError, deserializeError, toPocketLMError } from "./errors.js";
import { chatRequest, completionRequest, loadOptions, normalizeSource } from "./validate.js";
import { createHandler, supportReport, listCachedModels, clearModelCache, cache, memoryUsage } from "./engine.js";

export { PocketLMError };

const baseURL = () => globalThis.document?.baseURI ?? globalThis.location?.href;
const randomId = () => {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0")).join("").slice(0, 24);
};

/** Request/reply over postMessage (or, in-process, over direct calls) with the engine. */
class Transport {
  #next = 1;
  #pending = new Map();
  #send;
  #close;
  onLost = () => {};
  onCrash = () => {};

  constructor(send, close) {
    this.#send = send;
    this.#close = close;
  }

  /** `startFailure()`: what to say (or a promise of it) when the worker fails without a message:
   * it did not start. */
  static worker(worker, startFailure = () => "the PocketLM worker failed to start (is src/worker.js served, with pkg/ next to src/?)", cleanup = () => {}) {
    const t = new Transport(
      (m, transfer) => worker.postMessage(m, transfer ?? []),
      () => {
        worker.terminate();
        cleanup();
      },
    );
    worker.addEventListener("message", (e) => t.receive(e.data));
    worker.addEventListener("error", (e) => {
      e.preventDefault?.();
      if (e.message) t.onCrash(new PocketLMError("worker", `the PocketLM worker failed: ${e.message}`));
      else Promise.resolve(startFailure()).then((message) => t.onCrash(new PocketLMError("worker", message)));
    });
    worker.addEventListener("messageerror", () => t.onCrash(new PocketLMError("worker", "a message from the PocketLM worker could not be read")));
    return t;
  }

  static local() {
    let t;
    const handle = createHandler((reply) => queueMicrotask(() => t.receive(reply)));
    t = new Transport((m) => void handle(m), () => {});
    return t;
  }

  get pending() {
    return this.#pending.size;
  }

  /** Sends `op` and resolves to its value; `onProgress`/`onToken` get the replies on the way;
   * `signal` sends an abort for it. */
  request(op, payload = {}, { onProgress, onToken, signal, transfer } = {}) {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const onAbort = () => this.#send({ op: "abort", target: id });
      const cleanup = () => signal?.removeEventListener("abort", onAbort);
      this.#pending.set(id, {
        resolve: (v) => (cleanup(), resolve(v)),
        reject: (e) => (cleanup(), reject(e)),
        onProgress,
        onToken,
      });
      this.#send({ id, op, ...payload, progress: Boolean(onProgress), stream: Boolean(onToken) }, transfer);
      if (signal) {
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }

  receive(m) {
    if (m?.type === "lost") {
      this.onLost(deserializeError(m.error));
      return;
    }
    const p = this.#pending.get(m?.id);
    if (!p) return;
    switch (m.type) {
      case "progress":
        try {
          p.onProgress?.(m.progress);
        } catch (e) {
          console.error("PocketLM: onProgress threw", e);
        }
        break;
      case "token":
        p.onToken?.(m.text, m.token, m.logprobs);
        break;
      case "done":
        this.#pending.delete(m.id);
        p.resolve(m.value);
        break;
      case "error":
        this.#pending.delete(m.id);
        p.reject(deserializeError(m.error));
        break;
    }
  }

  /** Rejects everything in flight with `error` and stops the worker. */
  close(error) {
    for (const p of this.#pending.values()) p.reject(error);
    this.#pending.clear();
    this.#close();
  }
}

/** The engine's log probabilities of a token → OpenAI's chat form. */
const chatLogprob = (e) => ({
  token: e.token,
  logprob: e.logprob,
  bytes: e.bytes,
  top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
});

/** The engine's log probabilities of tokens → OpenAI's chat `logprobs`, or the legacy
 * completions' form (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`). */
function logprobsOf(list, kind, offset = 0) {
  if (!list) return null;
  if (kind === "chat") return { content: list.map(chatLogprob), refusal: null };
  const text_offset = [];
  for (const e of list) {
    text_offset.push(offset);
    offset += e.token.length;
  }
  return {
    tokens: list.map((e) => e.token),
    token_logprobs: list.map((e) => e.logprob),
    top_logprobs: list.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

function usageOf(r) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.completionTokens,
    total_tokens: r.promptTokens + r.completionTokens,
    prompt_tokens_details: { cached_tokens: r.cachedTokens },
  };
}

function timingsOf(r) {
  return {
    token_ids: r.tokens,
    prefill_ms: r.prefillMs,
    decode_ms: r.decodeMs,
    cached_tokens: r.cachedTokens,
    full_row_reads: r.fullRowReads,
    nucleus_draws: r.nucleusDraws ?? 0,
    grammar_masks: r.masks ? { count: r.masks.count, mean_ms: r.masks.meanMs, max_ms: r.masks.maxMs } : null,
    tool_call_error: r.toolCallError ?? null,
    tokens_per_second: r.decodeMs > 0 && r.completionTokens > 1 ? ((r.completionTokens - 1) * 1000) / r.decodeMs : null,
  };
}

/**
 * Starts the package's module Web Worker (src/worker.js) and returns its transport. A page may
 * only start a worker from a script of its own origin, so where the package was loaded from
 * another origin (a CDN) the worker is a same-origin blob: module that imports src/worker.js by its
 * absolute URL: the engine, pkg/pocketlm.js and the .wasm then load from the package's origin
 * (with CORS, as the page's own import of the package did), and the worker shares the page's
 * origin and storage. A Content-Security-Policy that refuses blob: workers makes this a "worker"
 * error that says so: the engine is not moved into the page behind the caller's back.
 */
function startWorker() {
  const url = new URL("./worker.js", import.meta.url);
  const here = globalThis.location?.origin;
  if (here === undefined || url.origin === here) {
    let worker;
    try {
      worker = new Worker(url, { type: "module", name: "pocketlm" });
    } catch (e) {
      throw new PocketLMError("worker", `could not start the PocketLM worker: ${e?.message ?? e}`);
    }
    return Transport.worker(worker);
  }
  const blocked = (detail) =>
    `could not start the PocketLM worker: the package comes from another origin (${url.origin}) than this page (${here}), ` +
    `and a page can start workers only from its own origin, so PocketLM starts a blob: worker that imports ${url.href}; ` +
    `this page's Content-Security-Policy refuses blob: workers${detail}. Allow them (add blob: to worker-src, ` +
    `or to script-src when there is no worker-src), serve the package from this page's origin, ` +
    `or pass { worker: false } to run the engine in this page`;
  // The import is dynamic: a worker's static imports are checked against the CSP's worker-src,
  // which would then have to list the package's origin too; a dynamic import is a script
  // (script-src, which lets the page import the package already). Messages that arrive while it
  // runs are held, then handed to src/worker.js's listener in order.
  const failed = `PocketLM's worker could not import ${url.href} (is it served with CORS, with pkg/ next to src/?): `;
  const source = `const held = [];
const hold = (e) => held.push(e);
self.addEventListener("message", hold);
try {
  await import(${JSON.stringify(url.href)});
  self.removeEventListener("message", hold);
  for (const e of held) self.dispatchEvent(new MessageEvent("message", { data: e.data, ports: [...e.ports] }));
} catch (e) {
  self.postMessage({ type: "lost", error: { code: "worker", message: ${JSON.stringify(failed)} + (e?.message ?? e) } });
}
`;
  const blob = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  // A refused worker is reported as a securitypolicyviolation event and an "error" event without
  // a message (Chromium), or as an exception here: either way the error names the policy.
  let violation = null;
  const onViolation = (e) => {
    if (/^blob\b/.test(e.blockedURI ?? "") && /^(worker|child|script)-src/.test(e.effectiveDirective ?? "")) violation = e;
  };
  globalThis.addEventListener?.("securitypolicyviolation", onViolation);
  const cleanup = () => {
    globalThis.removeEventListener?.("securitypolicyviolation", onViolation);
    URL.revokeObjectURL(blob);
  };
  let worker;
  try {
    worker = new Worker(blob, { type: "module", name: "pocketlm" });
  } catch (e) {
    cleanup();
    const csp = e?.name === "SecurityError" || /Content Security Policy/i.test(e?.message ?? "");
    throw new PocketLMError(
      "worker",
      csp ? blocked(` (${e.message})`) : `could not start the PocketLM worker (a blob: worker importing ${url.href}): ${e?.message ?? e}`,
    );
  }
  const startFailure = async () => {
    // (The violation event may come after the error event.)
    if (!violation) await new Promise((resolve) => setTimeout(resolve, 0));
    return violation
      ? blocked(` (${violation.effectiveDirective} in "${violation.originalPolicy}")`)
      : `the PocketLM worker failed to start: it is a blob: worker importing ${url.href}, because the package comes from ` +
          `another origin than this page`;
  };
  return Transport.worker(worker, startFailure, cleanup);
}

const TOKEN = Symbol("PocketLM.constructor");

/** A model running in the browser. An `EventTarget`: "error" (an `ErrorEvent` whose `error` is a
 * `PocketLMError`, e.g. code "device_lost") and "unload". */
export class PocketLM extends EventTarget {
  #t;
  #info;
  #state = "ready";
  #stateError = null;

  /** @internal use PocketLM.load() */
  constructor(token, transport, info) {
    super();
    if (token !== TOKEN) throw new TypeError("use PocketLM.load(model) to create a PocketLM");
    this.#t = transport;
    this.#info = info;
    transport.onLost = (error) => this.#fail(error);
    transport.onCrash = (error) => this.#fail(error);
    // `create(body, {signal})`: the OpenAI SDK's request options, whose signal aborts like body.signal.
    this.chat = Object.freeze({ completions: Object.freeze({ create: (request, options) => this.#create(request, "chat", options) }) });
    this.completions = Object.freeze({ create: (request, options) => this.#create(request, "text", options) });
    this.embeddings = Object.freeze({ create: (request, options) => this.#embed(request, options) });
  }

  /** Resolves to whether this browser can run PocketLM (WebAssembly; WebGPU where it has a
   * hardware adapter, else the CPU backend). */
  static async isSupported() {
    return (await PocketLM.supportReport()).supported;
  }

  /** This realm's memory as PocketLM sees it (models loaded with `worker: false` run here):
   * `{wasmBytes, gpuBuffers, gpuBytes, jsHeapBytes}`. For diagnostics and leak checks. */
  static memoryUsage() {
    return memoryUsage();
  }

  /** `{supported, reason, backend, backendReason, adapter?, features?, limits?}`: `reason` says
   * why not, in words; `backend` is what `backend: "auto"` picks here, and `backendReason` why. */
  static supportReport() {
    return supportReport();
  }

  /** The model files this origin keeps, and its storage: `has(url)`, `delete(url)`, `list()`,
   * `clear()`, `estimate()`, `persist()`, `persisted()`. */
  static cache = cache;

  /** The URLs of the model files cached in this origin (Cache API). */
  static cachedModels() {
    return listCachedModels();
  }

  /** Deletes every cached model file of this origin. */
  static clearCache() {
    return clearModelCache();
  }

  /**
   * Downloads (or reads from the cache) a model and makes it ready on the GPU.
   * @param source a URL (relative ones resolve against the page), the URLs of one model's files,
   *   a File/Blob, an ArrayBuffer/Uint8Array or a ReadableStream
   * @param options onProgress, signal, integrity ("sha256-<base64>" or hex; an array for several
   *   files), cache (default true), context, kvDtype, backend ("auto" (default), "webgpu" or
   *   "cpu"), profile, concurrency, worker (true: a module
   *   Web Worker, the default where workers exist, a blob: one when the package comes from
   *   another origin; false: in this realm; or a Worker running pocketlm/worker)
   */
  static async load(source, options = {}) {
    const opts = loadOptions(options ?? {});
    const src = normalizeSource(source, baseURL());
    const { onProgress, signal } = options ?? {};
    if (signal?.aborted) throw new PocketLMError("aborted", "the load was aborted");
    let worker = options?.worker ?? typeof Worker !== "undefined";
    let transport;
    if (worker === false) {
      transport = Transport.local();
    } else {
      transport = worker === true ? startWorker() : Transport.worker(worker);
    }
    const failed = new Promise((_, reject) => {
      transport.onCrash = reject;
      transport.onLost = reject;
    });
    try {
      const info = await Promise.race([transport.request("load", { source: src, options: opts }, { onProgress, signal }), failed]);
      return new PocketLM(TOKEN, transport, info);
    } catch (e) {
      transport.close(toPocketLMError(e));
      throw toPocketLMError(e);
    }
  }

  /** `{name, architecture, backend, backendReason, device, vocab, layers, hidden, heads, kvHeads,
   * headDim, context, trainedContext, weightBytes, kvBytes, chatTemplate, eos, profile}`. */
  get info() {
    return { ...this.#info };
  }

  /** "ready", "unloaded", "lost" (the GPU device) or "crashed" (the worker). */
  get state() {
    return this.#state;
  }

  #check() {
    if (this.#state !== "ready") throw this.#stateError;
  }

  #fail(error) {
    if (this.#state !== "ready") return;
    this.#state = error.code === "device_lost" ? "lost" : "crashed";
    this.#stateError = error;
    this.#t.close(error);
    const event =
      typeof ErrorEvent === "function" ? new ErrorEvent("error", { error, message: error.message }) : Object.assign(new Event("error"), { error });
    this.dispatchEvent(event);
  }

  /** OpenAI's embeddings with a sentence-embedding model (the engine checks the request). */
  async #embed(request, options) {
    this.#check();
    let body = request;
    if (request !== null && typeof request === "object" && !Array.isArray(request)) {
      const { signal: _, ...rest } = request; // a signal cannot cross into the worker
      body = rest;
    }
    return this.#t.request("embed", { request: body }, { signal: options?.signal ?? request?.signal });
  }

  async #create(request, kind, options) {
    this.#check();
    const req = kind === "chat" ? chatRequest(request) : completionRequest(request);
    const signal = options?.signal ?? request?.signal;
    const meta = {
      id: `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomId()}`,
      created: Math.floor(Date.now() / 1000),
      model: this.#info.name,
    };
    if (request.stream) return this.#stream(req, signal, kind, meta);
    const r = await this.#t.request("generate", { request: req }, { signal });
    const message = { role: "assistant", content: r.toolCalls && r.text === "" ? null : r.text, refusal: null };
    if (r.toolCalls) message.tool_calls = r.toolCalls;
    const logprobs = logprobsOf(r.logprobs, kind);
    const choice =
      kind === "chat"
        ? { index: 0, message, logprobs, finish_reason: r.finishReason }
        : { index: 0, text: r.text, logprobs, finish_reason: r.finishReason };
    return {
      ...meta,
      object: kind === "chat" ? "chat.completion" : "text_completion",
      system_fingerprint: null,
      choices: [choice],
      usage: usageOf(r),
      pocketlm: timingsOf(r),
    };
  }

  #stream(req, signal, kind, meta) {
    const controller = new AbortController();
    const forward = () => controller.abort(signal.reason);
    if (signal?.aborted) controller.abort(signal.reason);
    else signal?.addEventListener("abort", forward, { once: true });
    const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    // OpenAI's stream_options.include_usage: every chunk has usage: null, and one more chunk with
    // no choices carries the usage. Without it, the finishing chunk carries it.
    const includeUsage = req.stream_options?.include_usage === true;
    const chunk = (text, first, finish_reason, extra) => ({
      ...meta,
      object,
      system_fingerprint: null,
      choices: [
        kind === "chat"
          ? { index: 0, delta: finish_reason ? {} : first ? { role: "assistant", content: text } : { content: text }, logprobs: null, finish_reason }
          : { index: 0, text, logprobs: null, finish_reason },
      ],
      ...(includeUsage ? { usage: null } : {}),
      ...extra,
    });
    const chunks = [];
    let first = true;
    let finished = false;
    let failure = null;
    let wake = null;
    const notify = () => {
      wake?.();
      wake = null;
    };
    let streamed = "";
    const onToken = (text, tokenId, logprobs) => {
      if (!text && !logprobs) return;
      const c = chunk(text, first, null);
      c.choices[0].token_id = tokenId;
      if (logprobs) c.choices[0].logprobs = logprobsOf([logprobs], kind, streamed.length);
      streamed += text;
      chunks.push(c);
      first = false;
      notify();
    };
    const done = this.#t
      .request("generate", { request: req }, { signal: controller.signal, onToken })
      .then((r) => {
        if (r.toolCalls) {
          // Text held back while a call might have been starting, then the calls whole.
          const rest = r.text.startsWith(streamed) ? r.text.slice(streamed.length) : "";
          if (rest) onToken(rest);
          const c = chunk("", first, null);
          c.choices[0].delta = { ...(first ? { role: "assistant" } : {}), tool_calls: r.toolCalls.map((call, index) => ({ index, ...call })) };
          chunks.push(c);
          first = false;
        }
        if (first && kind === "chat") chunks.push(chunk("", true, null));
        const totals = { usage: usageOf(r), pocketlm: timingsOf(r) };
        if (includeUsage) {
          chunks.push(chunk("", false, r.finishReason));
          chunks.push({ ...chunk("", false, null, totals), choices: [] });
        } else {
          chunks.push(chunk("", false, r.finishReason, totals));
        }
      })
      .catch((e) => {
        failure = toPocketLMError(e);
      })
      .finally(() => {
        finished = true;
        signal?.removeEventListener("abort", forward);
        notify();
      });
    const iterator = {
      async next() {
        for (;;) {
          if (chunks.length > 0) return { value: chunks.shift(), done: false };
          if (failure) {
            const e = failure;
            failure = null;
            chunks.length = 0;
            throw e;
          }
          if (finished) return { value: undefined, done: true };
          await new Promise((resolve) => (wake = resolve));
        }
      },
      // Leaving a for-await loop early stops the generation.
      async return() {
        controller.abort();
        await done;
        failure = null;
        chunks.length = 0;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return {
      controller,
      [Symbol.asyncIterator]: () => iterator,
      /** The whole text, once the stream ends. */
      async text() {
        let s = "";
        for await (const c of this) s += kind === "chat" ? (c.choices[0].delta.content ?? "") : c.choices[0].text;
        return s;
      },
    };
  }

  /** Plain text completion (no chat template): resolves to the generated text. */
  async complete(prompt, options = {}) {
    const r = await this.completions.create({ ...options, prompt, stream: false });
    return r.choices[0].text;
  }

  /** The memory of the realm running this model (its worker, or this page with `worker: false`):
   * `{wasmBytes, gpuBuffers, gpuBytes, jsHeapBytes}`. For diagnostics and leak checks. */
  async memoryUsage() {
    this.#check();
    return this.#t.request("memory");
  }

  /** The token ids of `text` (no special tokens unless `addSpecial`). */
  async tokenize(text, addSpecial = false) {
    this.#check();
    return this.#t.request("tokenize", { text, addSpecial });
  }

  /** Frees the model's GPU memory and the worker. Later calls reject with code "unloaded". */
  async unload() {
    if (this.#state === "unloaded") return;
    const was = this.#state;
    this.#state = "unloaded";
    this.#stateError = new PocketLMError("unloaded", "this model was unloaded: load it again with PocketLM.load()");
    if (was === "ready") {
      try {
        await this.#t.request("unload");
      } catch {
        /* the worker goes anyway */
      }
    }
    this.#t.close(this.#stateError);
    this.dispatchEvent(new Event("unload"));
  }

  /** Test hook: destroys the GPU device as if it were lost (the "error" event follows). */
  async _simulateDeviceLoss() {
    this.#check();
    await this.#t.request("simulateDeviceLoss");
  }
}

export default PocketLM;
