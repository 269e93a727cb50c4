// Typed errors: every failure PocketLM reports is a `PocketLMError` with a stable `code`.

/** Codes raised by the JavaScript layer itself (the engine's own codes are listed in README.md). */
export const JS_CODES = Object.freeze({
  NOT_SUPPORTED: "not_supported",
  INVALID_REQUEST: "invalid_request",
  UNLOADED: "unloaded",
  DEVICE_LOST: "device_lost",
  ABORTED: "aborted",
  WORKER: "worker",
});

export class PocketLMError extends Error {
  /**
   * @param {string} code a stable machine-readable code, e.g. "http", "integrity", "device_lost"
   * @param {string} message what went wrong and what to do about it
   * @param {{cause?: unknown}} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = "PocketLMError";
    this.code = code;
  }
}

/** Any thrown value as a `PocketLMError` (the engine's errors keep their code and message). */
export function toPocketLMError(e, fallbackCode = "internal") {
  if (e instanceof PocketLMError) return e;
  if (e && typeof e === "object" && e.name === "PocketLMError" && typeof e.code === "string") {
    return new PocketLMError(e.code, String(e.message));
  }
  if (e && typeof e === "object" && e.name === "AbortError") {
    return new PocketLMError("aborted", "the operation was aborted");
  }
  const message = e instanceof Error ? e.message : String(e);
  return new PocketLMError(fallbackCode, message, { cause: e });
}

/** A plain object that survives postMessage. */
export function serializeError(e) {
  const err = toPocketLMError(e);
  return { name: err.name, code: err.code, message: err.message };
}

export function deserializeError(o) {
  return new PocketLMError(o?.code ?? "internal", o?.message ?? "unknown error");
}
