// Typed errors: every failure PocketLM reports is a `PocketLMError` with a stable `code`.

/** Every code the JavaScript layer raises itself (the engine's own codes are those of `Error::code()`
 * in src/error.rs; README.md lists them all, and test/error-codes.test.mjs checks that the lists
 * agree with each other and with the code). */
export const JS_CODES = Object.freeze({
  NOT_SUPPORTED: "not_supported",
  INVALID_REQUEST: "invalid_request",
  UNLOADED: "unloaded",
  DEVICE_LOST: "device_lost",
  ABORTED: "aborted",
  WORKER: "worker",
  QUOTA: "quota",
  WASM_LOAD: "wasm_load",
  HTTP: "http",
  IO: "io",
  INTERNAL: "internal",
});

export class PocketLMError extends Error {
  /**
   * @param {string} code a stable machine-readable code, e.g. "http", "integrity", "device_lost"
   * @param {string} message what went wrong and what to do about it
   * @param {{cause?: unknown, data?: Record<string, string | number | boolean | null>}} [options]
   *   `data`: facts about the failure kept as properties of the error (e.g. a "quota" error's
   *   `bytesNeeded` and `bytesAvailable`); they survive postMessage.
   */
  constructor(code, message, options) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PocketLMError";
    this.code = code;
    for (const [k, v] of Object.entries(options?.data ?? {})) {
      if (!(k in this)) this[k] = v;
    }
  }
}

/** Any thrown value as a `PocketLMError` (the engine's errors keep their code and message). */
export function toPocketLMError(e, fallbackCode = "internal") {
  if (e instanceof PocketLMError) return e;
  if (e && typeof e === "object" && e.name === "PocketLMError" && typeof e.code === "string") {
    return new PocketLMError(e.code, String(e.message), { data: dataOf(e) });
  }
  if (e && typeof e === "object" && e.name === "AbortError") {
    return new PocketLMError("aborted", "the operation was aborted");
  }
  const message = e instanceof Error ? e.message : String(e);
  return new PocketLMError(fallbackCode, message, { cause: e });
}

/** An error's own facts beyond name, code and message (primitive values only). */
function dataOf(e) {
  const data = {};
  for (const [k, v] of Object.entries(e)) {
    if (k === "name" || k === "code" || k === "message") continue;
    if (v === null || ["string", "number", "boolean"].includes(typeof v)) data[k] = v;
  }
  return data;
}

/** A plain object that survives postMessage. */
export function serializeError(e) {
  const err = toPocketLMError(e);
  return { name: err.name, code: err.code, message: err.message, data: dataOf(err) };
}

export function deserializeError(o) {
  return new PocketLMError(o?.code ?? "internal", o?.message ?? "unknown error", { data: o?.data });
}
