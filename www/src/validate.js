// Turns requests into the engine's shape (OpenAI's content parts joined, the package's own
// fields taken out) and checks load options. The engine checks the request's fields itself
// (src/request.rs), so every rule gives the same error code from JavaScript and natively.
import { PocketLMError } from "./errors.js";

const invalid = (message) => new PocketLMError("invalid_request", message);

function show(v) {
  try {
    const s = JSON.stringify(v);
    if (s !== undefined) return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    /* fall through */
  }
  return String(v);
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * OpenAI-style messages → `[{role, content}]` with string contents. A content may be a string or
 * an array of text parts (`[{type: "text", text}]`), which are joined.
 */
export function validateMessages(messages) {
  if (!Array.isArray(messages)) {
    throw invalid(`messages must be an array of {role, content}, not ${show(messages)}`);
  }
  if (messages.length === 0) throw invalid("messages is empty: give at least one {role, content}");
  return messages.map((m, i) => {
    if (!isObject(m)) throw invalid(`messages[${i}] must be an object {role, content}, not ${show(m)}`);
    if (typeof m.role !== "string" || m.role === "") {
      throw invalid(`messages[${i}].role must be a non-empty string such as "system", "user" or "assistant", not ${show(m.role)}`);
    }
    let content = m.content;
    if (Array.isArray(content)) {
      content = content
        .map((part, j) => {
          if (typeof part === "string") return part;
          if (isObject(part) && part.type === "text" && typeof part.text === "string") return part.text;
          throw invalid(`messages[${i}].content[${j}] must be a text part {type: "text", text}, not ${show(part)} (only text is supported)`);
        })
        .join("");
    }
    // An assistant turn that only calls tools has no content.
    if ((content === null || content === undefined) && Array.isArray(m.tool_calls)) content = "";
    if (typeof content !== "string") {
      throw invalid(`messages[${i}].content must be a string, not ${show(m.content)}`);
    }
    const out = { role: m.role, content };
    // Tool calls and results go to the engine as they are; it checks them.
    for (const k of ["tool_calls", "tool_call_id", "name"]) if (m[k] !== undefined && m[k] !== null) out[k] = m[k];
    return out;
  });
}

function integer(o, name, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const v = o[name];
  if (v === undefined || v === null) return undefined;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw invalid(`${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, not ${show(v)}`);
  }
  return v;
}

/** The signal is the package's own (it never crosses into the engine); every other request
 * field is checked by the engine (src/request.rs), once, with the same codes as natively. */
function checkSignal(o) {
  if (o.signal !== undefined && o.signal !== null && !(typeof o.signal === "object" && "aborted" in o.signal && typeof o.signal.addEventListener === "function")) {
    throw invalid(`signal must be an AbortSignal, not ${show(o.signal)}`);
  }
}

/** Fields the package handles itself; the engine never sees them. */
const PACKAGE_FIELDS = new Set(["messages", "prompt", "stream", "signal"]);

/** Every other field goes to the engine as it is, so that one it does not implement (tools,
 * logprobs, …) or does not know is refused there by name (src/request.rs) instead of dropped. */
function passOn(request, out) {
  for (const [k, v] of Object.entries(request)) {
    if (!PACKAGE_FIELDS.has(k) && !(k in out) && v !== undefined) out[k] = v;
  }
  return out;
}

/** A chat completion request → the engine's request (without the signal). */
export function chatRequest(request) {
  if (!isObject(request)) throw invalid(`the request must be an object {messages, ...}, not ${show(request)}`);
  if (request.messages === undefined) throw invalid("the request needs messages: [{role, content}, ...]");
  if (request.stream !== undefined && typeof request.stream !== "boolean") throw invalid(`stream must be a boolean, not ${show(request.stream)}`);
  checkSignal(request);
  const out = { messages: validateMessages(request.messages) };
  const kwargs = request.chat_template_kwargs;
  if (kwargs !== undefined && kwargs !== null) {
    if (!isObject(kwargs)) {
      throw invalid(`chat_template_kwargs must be an object such as {enable_thinking: false}, not ${show(kwargs)}`);
    }
    out.chat_template_kwargs = kwargs;
  }
  return passOn(request, out);
}

/** A plain text completion request → the engine's request (without the signal). */
export function completionRequest(request) {
  if (!isObject(request)) throw invalid(`the request must be an object {prompt, ...}, not ${show(request)}`);
  if (typeof request.prompt !== "string") throw invalid(`prompt must be a string, not ${show(request.prompt)}`);
  if (request.stream !== undefined && typeof request.stream !== "boolean") throw invalid(`stream must be a boolean, not ${show(request.stream)}`);
  checkSignal(request);
  return passOn(request, { prompt: request.prompt });
}

/** An embeddings request (OpenAI's `{input, dimensions?, encoding_format?}`, plus `truncate`) →
 * `{inputs, options, format}`: `inputs` an array of strings or of token-id arrays. The engine
 * checks each input against the model (empty strings, ids outside the vocabulary, dimensions). */
export function embeddingRequest(request) {
  if (!isObject(request)) throw invalid(`the request must be an object {input, ...}, not ${show(request)}`);
  const { input } = request;
  let inputs;
  if (typeof input === "string") inputs = [input];
  else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "number")) inputs = [input];
  else if (Array.isArray(input)) inputs = input;
  else throw invalid(`input must be a string, an array of strings, an array of token ids or an array of arrays of token ids, not ${show(input)}`);
  // The package encodes base64 itself; each input, `dimensions` and `truncate` are checked by
  // the engine (src/web.rs, `EmbeddingModel::embed`), once, with the model's numbers.
  const format = request.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") throw invalid(`encoding_format must be "float" or "base64", not ${show(format)}`);
  const options = {};
  for (const name of ["dimensions", "truncate"]) {
    if (request[name] !== undefined && request[name] !== null) options[name] = request[name];
  }
  return { inputs, options, format };
}

function base64ToHex(b64) {
  const normal = b64.replace(/-/g, "+").replace(/_/g, "/");
  let bin;
  try {
    bin = atob(normal);
  } catch {
    return null;
  }
  return Array.from(bin, (c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
}

/** One integrity value → 64 lowercase hex digits. Accepts SRI ("sha256-<base64>", possibly one of
 * several space-separated hashes) and plain hex. */
function oneIntegrity(value, where) {
  if (typeof value !== "string") throw invalid(`${where} must be a string ("sha256-<base64>" or 64 hex digits), not ${show(value)}`);
  const v = value.trim();
  if (/^[0-9a-fA-F]{64}$/.test(v)) return v.toLowerCase();
  const tokens = v.split(/\s+/);
  const sha = tokens.find((t) => t.startsWith("sha256-"));
  if (sha) {
    const hex = base64ToHex(sha.slice("sha256-".length).split("?")[0]);
    if (hex && hex.length === 64) return hex;
    throw invalid(`${where}: ${show(sha)} is not a sha256 digest in base64 (44 characters)`);
  }
  if (tokens.some((t) => /^sha(384|512)-/.test(t))) {
    throw invalid(`${where}: only sha256 is supported; give "sha256-<base64>" or 64 hex digits`);
  }
  throw invalid(`${where} must be "sha256-<base64>" or 64 hex digits, not ${show(value)}`);
}

/** `integrity` (a string, or an array with one per file, null for unchecked) → what the engine takes. */
export function integrityToHex(integrity) {
  if (integrity === undefined || integrity === null) return undefined;
  if (Array.isArray(integrity)) {
    return integrity.map((v, i) => (v === null || v === undefined ? null : oneIntegrity(v, `integrity[${i}]`)));
  }
  return oneIntegrity(integrity, "integrity");
}

/** Checks the model source and turns URLs into absolute ones (relative to `base`). */
export function normalizeSource(source, base) {
  const abs = (u) => {
    try {
      return new URL(String(u), base).href;
    } catch {
      throw invalid(`${show(String(u))} is not a valid URL`);
    }
  };
  if (typeof source === "string" || source instanceof URL) return abs(source);
  if (Array.isArray(source) && source.length > 0 && source.every((u) => typeof u === "string" || u instanceof URL)) {
    return source.map(abs);
  }
  if (typeof FileList !== "undefined" && source instanceof FileList) {
    if (source.length !== 1) throw invalid(`give one model file (got ${source.length}); models of several files load from their URLs`);
    return source[0];
  }
  if (Array.isArray(source) && source.length === 1 && typeof Blob !== "undefined" && source[0] instanceof Blob) return source[0];
  if (typeof Blob !== "undefined" && source instanceof Blob) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    if (source instanceof Uint8Array) return source;
    if (source instanceof ArrayBuffer) return new Uint8Array(source);
    return new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
  }
  if (typeof ReadableStream !== "undefined" && source instanceof ReadableStream) return source;
  throw invalid(
    `the model must be a URL (or an array of the URLs of one model's files), a File or Blob, an ArrayBuffer or Uint8Array, or a ReadableStream, not ${show(source)}`,
  );
}

/** Load options → what the engine takes. */
export function loadOptions(options = {}) {
  if (!isObject(options)) throw invalid(`load options must be an object, not ${show(options)}`);
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") throw invalid("onProgress must be a function");
  if (options.cache !== undefined && typeof options.cache !== "boolean") throw invalid(`cache must be a boolean, not ${show(options.cache)}`);
  const out = {};
  // (`sha256` is the engine's name: what a worker receives from the page.)
  const sha256 = integrityToHex(options.integrity ?? options.sha256);
  if (sha256 !== undefined) out.sha256 = sha256;
  if (options.cache !== undefined) out.cache = options.cache;
  const context = integer(options, "context", { min: 1 });
  if (context !== undefined) out.context = context;
  const concurrency = integer(options, "concurrency", { min: 1 });
  if (concurrency !== undefined) out.concurrency = concurrency;
  if (options.kvDtype !== undefined) {
    if (options.kvDtype !== "f16" && options.kvDtype !== "f32") throw invalid(`kvDtype must be "f16" or "f32", not ${show(options.kvDtype)}`);
    out.kvDtype = options.kvDtype;
  }
  if (options.backend !== undefined) {
    if (!["auto", "webgpu", "cpu"].includes(options.backend)) throw invalid(`backend must be "auto", "webgpu" or "cpu", not ${show(options.backend)}`);
    out.backend = options.backend;
  }
  if (options.fullWindowCache !== undefined) {
    if (typeof options.fullWindowCache !== "boolean") throw invalid(`fullWindowCache must be a boolean, not ${show(options.fullWindowCache)}`);
    out.fullWindowCache = options.fullWindowCache;
  }
  if (options.relaxedSimd !== undefined) {
    if (typeof options.relaxedSimd !== "boolean") throw invalid(`relaxedSimd must be a boolean, not ${show(options.relaxedSimd)}`);
    out.relaxedSimd = options.relaxedSimd;
  }
  const threads = integer(options, "threads", { min: 1, max: 256 });
  if (threads !== undefined) out.threads = threads;
  if (options.profile !== undefined) {
    if (!["auto", "full", "baseline"].includes(options.profile)) throw invalid(`profile must be "auto", "full" or "baseline", not ${show(options.profile)}`);
    out.profile = options.profile;
  }
  return out;
}
