// The model files PocketLM keeps in the browser's storage (Cache API), and how they get there.
//
// A file is downloaded into pieces of 8 MiB, each an entry of the cache the engine reads
// ("pocketlm-weights-v1", the name src/load/browser.rs uses) under a key of its own, while what
// is known of the download (its size, validators and pieces) is kept in a separate cache
// ("pocketlm-partial-v1"): a download cut short (network error, abort, closed tab) resumes with
// an HTTP Range request where the server honours one, and starts over cleanly where it does not.
// Only a complete file, its length checked, is committed: an entry under its URL that lists its
// pieces (the engine reads them in order), written last, so a half-written file is never served.
// The file's bytes are written once and never copied. Before any body is read, the bytes still
// to download are compared with what `navigator.storage.estimate()` says is free, and a load that
// cannot fit rejects with code "quota".
import { PocketLMError } from "./errors.js";

/** The Cache API bucket of complete model files (shared with the wasm engine). */
export const WEIGHTS_CACHE = "pocketlm-weights-v1";
/** The Cache API bucket of what is known of downloads in progress (their pieces are in WEIGHTS_CACHE). */
export const PARTIAL_CACHE = "pocketlm-partial-v1";
/** Bytes held in memory before they are written as one piece of a download. */
const PIECE_BYTES = 8 << 20;
/** The length of a committed file, checked before it is served. */
const SIZE_HEADER = "x-pocketlm-bytes";
/** Marks a committed file stored as pieces (its entry lists them: JSON `{keys, sizes}`). */
const PIECES_HEADER = "x-pocketlm-pieces";
/** Keys of PocketLM's own entries, which are not files: a download's pieces and what is known of it. */
const OWN_KEYS = "https://pocketlm.invalid/";
const PARTIAL_KEYS = `${OWN_KEYS}partial/`;
const PIECE_KEYS = `${OWN_KEYS}pieces/`;

const cacheStorage = () => (typeof caches === "object" && caches !== null ? caches : null);

function mib(bytes) {
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(2)} GiB` : `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

const ioError = (url, detail, cause) => new PocketLMError("io", `reading '${url}' failed: ${detail}`, cause === undefined ? undefined : { cause });
const httpError = (url, status) => new PocketLMError("http", `downloading '${url}' failed with HTTP status ${status}`);
const abortError = () => new PocketLMError("aborted", "the load was aborted");
const isAbort = (e, signal) => signal?.aborted || e?.name === "AbortError";
const isQuota = (e) => e?.name === "QuotaExceededError" || e?.code === 22;

/** `navigator.storage.estimate()` with `available` (quota − usage); null fields where unknown. */
export async function estimate() {
  const storage = globalThis.navigator?.storage;
  if (typeof storage?.estimate !== "function") {
    throw new PocketLMError("not_supported", "this context has no navigator.storage.estimate() (it needs a secure context: https:// or localhost)");
  }
  let e;
  try {
    e = await storage.estimate();
  } catch (err) {
    throw new PocketLMError("io", `navigator.storage.estimate() failed: ${err?.message ?? err}`, { cause: err });
  }
  const usage = Number.isFinite(e?.usage) ? e.usage : null;
  const quota = Number.isFinite(e?.quota) ? e.quota : null;
  return { usage, quota, available: usage !== null && quota !== null ? Math.max(0, quota - usage) : null };
}

/** Asks the browser to keep this origin's storage under storage pressure; resolves to whether it will. */
export async function persist() {
  const storage = globalThis.navigator?.storage;
  if (typeof storage?.persist !== "function") {
    throw new PocketLMError("not_supported", "navigator.storage.persist() is not available here (it exists on pages in a secure context, not in workers)");
  }
  try {
    return Boolean(await storage.persist());
  } catch (err) {
    throw new PocketLMError("io", `navigator.storage.persist() failed: ${err?.message ?? err}`, { cause: err });
  }
}

/** Whether this origin's storage is persistent. */
export async function persisted() {
  const storage = globalThis.navigator?.storage;
  if (typeof storage?.persisted !== "function") return false;
  try {
    return Boolean(await storage.persisted());
  } catch {
    return false;
  }
}

/** A "quota" error: `what` needs `needed` bytes and `available` are free. */
export function quotaError(what, needed, available, cause) {
  const free = available === null ? "the browser refused to store more" : `${mib(available)} is available`;
  return new PocketLMError(
    "quota",
    `${what} needs ${mib(needed)} more of this site's storage, and ${free}: free some with PocketLM.cache.delete(url), ` +
      `ask for more room with PocketLM.cache.persist(), or load with {cache: false} to stream the model without keeping it`,
    { cause, data: { bytesNeeded: needed, bytesAvailable: available } },
  );
}

/** A "quota" error for a write the browser refused. Its estimate may not say so (Chromium reports
 * a fixed quota to pages), so `bytesAvailable` is only given where it is below what was needed. */
async function refused(what, needed, cause) {
  const free = await estimate().then((x) => x.available, () => null);
  return quotaError(what, needed, free !== null && free < needed ? free : null, cause);
}

async function open(name) {
  const cs = cacheStorage();
  if (!cs) return null;
  try {
    return await cs.open(name);
  } catch {
    return null; // e.g. an opaque origin, or storage disabled
  }
}

const partialPrefix = (url) => `${PARTIAL_KEYS}${encodeURIComponent(url)}/`;
const metaKey = (url) => `${partialPrefix(url)}meta`;
const piecePrefix = (url) => `${PIECE_KEYS}${encodeURIComponent(url)}/`;
const pieceKey = (url, i) => `${piecePrefix(url)}${i}`;

/** The size a committed response says it has (null: it does not say, or cannot be trusted). */
function declaredSize(response) {
  const own = response.headers.get(SIZE_HEADER);
  if (own !== null) return Number(own);
  const encoding = response.headers.get("content-encoding");
  if (encoding && encoding !== "identity") return null; // the length is the encoded one
  const length = response.headers.get("content-length");
  return length === null ? null : Number(length);
}

/**
 * The committed copy of `url`, checked: its body has the length it was committed with. A copy
 * that does not (cut short by an older writer, or damaged) is deleted and reported as absent.
 * Resolves to `{bytes}` or null.
 */
export async function verifiedEntry(url, weights) {
  weights ??= await open(WEIGHTS_CACHE);
  if (!weights) return null;
  const hit = await weights.match(url);
  if (!hit) return null;
  const declared = declaredSize(hit);
  let ok;
  if (hit.headers.has(PIECES_HEADER)) {
    const list = await pieceList(hit);
    ok = list !== null && declared === sum(list.sizes);
    if (ok) {
      const sizes = await Promise.all(list.keys.map((k) => pieceSize(weights, k)));
      ok = sizes.every((size, i) => size === list.sizes[i]);
    }
  } else {
    const size = (await hit.blob()).size; // backed by the cache's own file: nothing is read
    ok = declared === null || declared === size;
    if (ok) return { bytes: size };
  }
  if (!ok) {
    await deleteEntry(weights, url);
    return null;
  }
  return { bytes: declared };
}

/** A committed file's list of pieces `{keys, sizes}`, or null where it is unreadable. */
async function pieceList(hit) {
  try {
    const list = await hit.clone().json();
    const good = Array.isArray(list.keys) && Array.isArray(list.sizes) && list.keys.length === list.sizes.length;
    return good && list.keys.every((k) => typeof k === "string" && k.startsWith(PIECE_KEYS)) && list.sizes.every(Number.isSafeInteger) ? list : null;
  } catch {
    return null;
  }
}

/** The bytes of the entry `key`, or null where there is none. */
async function pieceBytes(cache, key) {
  const r = await cache.match(key);
  return r ? new Uint8Array(await r.arrayBuffer()) : null;
}

/** The size of the entry `key` (its body is backed by the cache's own file: nothing is read), or null. */
async function pieceSize(cache, key) {
  const r = await cache.match(key);
  return r ? (await r.blob()).size : null;
}

/** Deletes the committed file `url` (its pieces too); resolves to whether there was one. */
async function deleteEntry(weights, url) {
  const hit = await weights.match(url);
  if (!hit) return false;
  const list = hit.headers.has(PIECES_HEADER) ? await pieceList(hit) : null;
  await weights.delete(url); // first: from here on the pieces are not served
  if (list) await Promise.all(list.keys.map((k) => weights.delete(k)));
  return true;
}

/** The body of the committed file `url` as a Response (its pieces in order), or null. */
async function entryResponse(weights, url) {
  const hit = await weights.match(url);
  if (!hit || !hit.headers.has(PIECES_HEADER)) return hit ?? null;
  const list = await pieceList(hit);
  if (!list) return null;
  let i = 0;
  return new Response(
    new ReadableStream({
      async pull(controller) {
        if (i === list.keys.length) return controller.close();
        const bytes = await pieceBytes(weights, list.keys[i++]);
        if (!bytes) return controller.error(new Error(`piece ${i - 1} of the cached copy is missing`));
        controller.enqueue(bytes);
      },
    }),
  );
}

/** A download in progress: `{url, total, etag, lastModified, pieces: [bytes...]}`, with the pieces
 * (in `weights`) checked (the longest run that is all there), or null. */
async function readPartial(partial, weights, url) {
  const r = await partial.match(metaKey(url));
  if (!r) return null;
  let meta;
  try {
    meta = await r.json();
  } catch {
    await dropPartial(url, partial, weights);
    return null;
  }
  const pieces = [];
  for (let i = 0; i < (meta.pieces ?? []).length; i++) {
    if ((await pieceSize(weights, pieceKey(url, i))) !== meta.pieces[i]) break;
    pieces.push(meta.pieces[i]);
  }
  return { ...meta, url, pieces };
}

async function writeMeta(partial, meta) {
  await partial.put(metaKey(meta.url), new Response(JSON.stringify(meta), { headers: { "content-type": "application/json" } }));
}

/** Deletes what the partial cache holds of `url`: its download's meta, and the pieces an earlier
 * version of PocketLM kept beside it. Resolves to whether there was anything. */
async function dropMeta(partial, url) {
  const own = partialPrefix(url);
  const keys = (await partial.keys()).filter((k) => k.url.startsWith(own));
  await Promise.all(keys.map((k) => partial.delete(k)));
  return keys.length > 0;
}

/** Deletes what a download of `url` left behind (its pieces, unless a committed copy of `url` is
 * made of them); resolves to whether there was anything. */
export async function dropPartial(url, partial, weights) {
  partial ??= await open(PARTIAL_CACHE);
  weights ??= await open(WEIGHTS_CACHE);
  if (!partial || !weights) return false;
  const dropped = await dropMeta(partial, url);
  if ((await weights.match(url))?.headers.has(PIECES_HEADER)) return dropped;
  const prefix = piecePrefix(url);
  const keys = (await weights.keys()).filter((k) => k.url.startsWith(prefix));
  await Promise.all(keys.map((k) => weights.delete(k)));
  return dropped || keys.length > 0;
}

const sum = (a) => a.reduce((s, x) => s + x, 0);

/** Every model file: committed ones `{url, bytes, complete: true}`, downloads in progress
 * `{url, bytes, total, complete: false}` (bytes held so far). */
export async function list() {
  const out = [];
  const weights = await open(WEIGHTS_CACHE);
  if (weights) {
    for (const request of await weights.keys()) {
      if (request.url.startsWith(OWN_KEYS)) continue; // a piece
      const e = await verifiedEntry(request.url, weights);
      if (e) out.push({ url: request.url, bytes: e.bytes, complete: true });
    }
  }
  const partial = await open(PARTIAL_CACHE);
  if (partial) {
    for (const request of await partial.keys()) {
      if (!request.url.endsWith("/meta")) continue;
      const url = decodeURIComponent(request.url.slice(PARTIAL_KEYS.length, -"/meta".length));
      const meta = await readPartial(partial, weights, url);
      if (meta) out.push({ url, bytes: sum(meta.pieces), total: meta.total ?? null, complete: false });
    }
  }
  return out;
}

/** Whether a complete, checked copy of `url` is cached. */
export async function has(url) {
  return (await verifiedEntry(url)) !== null;
}

/** Deletes `url`'s cached copy and any partial download of it; resolves to whether there was one. */
export async function remove(url) {
  const weights = await open(WEIGHTS_CACHE);
  const a = weights ? await deleteEntry(weights, url) : false;
  const b = await dropPartial(url, undefined, weights ?? undefined);
  return a || b;
}

/** Deletes every model file of this origin, partial downloads too; resolves to whether there were any. */
export async function clear() {
  const cs = cacheStorage();
  if (!cs) return false;
  const [a, b] = await Promise.all([cs.delete(WEIGHTS_CACHE), cs.delete(PARTIAL_CACHE)]);
  return a || b;
}

/** The URLs of a split GGUF from the URL of any split ("…-00002-of-00003.gguf"), as the engine
 * finds them; any other URL alone. */
export function splitNames(url) {
  const matches = [...url.matchAll(/-(\d+)-of-(\d+)(?=\.gguf)/g)];
  const m = matches.at(-1);
  if (!m) return [url];
  const no = Number(m[1]);
  const count = Number(m[2]);
  if (!(count >= 1 && no >= 1 && no <= count && count <= 9999)) return [url];
  const start = m.index + 1;
  const width = m[1].length;
  return Array.from({ length: count }, (_, k) => `${url.slice(0, start)}${String(k + 1).padStart(width, "0")}${url.slice(start + m[1].length)}`);
}

function contentLength(response) {
  const encoding = response.headers.get("content-encoding");
  if (encoding && encoding !== "identity") return null;
  const v = response.headers.get("content-length");
  return v === null || !/^\d+$/.test(v) ? null : Number(v);
}

/** The size of `url` from a HEAD request, or null when the server does not say. */
async function probeSize(url, signal) {
  try {
    const r = await fetch(url, { method: "HEAD", signal, cache: "no-store" });
    if (r.status === 404 || r.status === 410) throw httpError(url, r.status);
    return r.ok ? contentLength(r) : null;
  } catch (e) {
    if (e instanceof PocketLMError) throw e;
    if (isAbort(e, signal)) throw abortError();
    return null; // the GET will tell
  }
}

/**
 * Makes sure the engine finds complete copies of the weight files of `source` (a URL or an array
 * of URLs) in the cache: checks the quota, downloads what is missing with resumption, and commits
 * each file whole. `onProgress` gets the engine's progress shape with `phase: "download"`.
 * Folders and safetensors indexes are resolved as the engine does. Does nothing where there is no
 * Cache API.
 */
export async function prepare(source, options = {}) {
  await (await start(source, options)).done;
}

/**
 * Starts what `prepare` does and resolves once the download (if any) has begun: to `{done}`, the
 * promise of the whole job, and, with `stream: true` where the model is one file (its URL; not a
 * folder or an index) that is not cached yet and whose size the server says, `{stream, total, cancelStream}`: a ReadableStream
 * of the file's bytes as they arrive (after those of a partial download it resumes), so that the
 * engine loads while the file downloads and is stored, instead of reading it back from the
 * cache afterwards. The download waits for the stream's reader (a few chunks are buffered);
 * `cancelStream()` releases it (the download then goes on into the cache alone). A failed
 * download errors the stream. `abort()` stops the job as `signal` would (`done` rejects with code
 * "aborted"; what was downloaded stays as a partial download until removed).
 */
export async function start(source, { signal: given, onProgress, concurrency = 4, stream: wantStream = false } = {}) {
  const none = { done: Promise.resolve(), stream: null, total: null, cancelStream() {}, abort() {} };
  if (!cacheStorage()) return none;
  const weights = await open(WEIGHTS_CACHE);
  const partial = await open(PARTIAL_CACHE);
  if (!weights || !partial) return none;
  // The job stops on the caller's signal, or on its own `abort()` (the engine refused the file).
  const stop = new AbortController();
  if (given?.aborted) stop.abort(given.reason);
  else given?.addEventListener("abort", () => stop.abort(given.reason), { once: true });
  const signal = stop.signal;
  const ctx = { weights, partial, signal, tee: null };
  let urls;
  if (Array.isArray(source)) urls = source;
  else if (source.endsWith("/") || source.endsWith(".index.json")) urls = await resolveIndex(ctx, source);
  else urls = splitNames(source);
  if (!urls) return none; // the engine reports what is wrong with the folder

  const missing = [];
  for (const url of urls) {
    if (!(await verifiedEntry(url, weights))) missing.push({ url, have: 0, total: null });
  }
  if (missing.length === 0) return none;
  for (const m of missing) {
    const p = await readPartial(partial, weights, m.url);
    m.have = p ? sum(p.pieces) : 0;
  }
  // Sizes before any body is read: a load that cannot fit says so now.
  await Promise.all(missing.map(async (m) => (m.total = await probeSize(m.url, signal))));
  if (signal?.aborted) throw abortError();
  await checkQuota(missing, missing.length === 1 ? `'${missing[0].url}'` : `the model's ${missing.length} files`);

  const progress = { files: missing.length, allDone: sum(missing.map((m) => m.have)), allTotal: missing.every((m) => m.total !== null) ? sum(missing.map((m) => m.total)) : null };
  let next = 0;
  const worker = async () => {
    while (next < missing.length) {
      const index = next++;
      await download(ctx, missing[index], missing, (bytesDone, bytesTotal, delta) => {
        progress.allDone += delta;
        onProgress?.({ phase: "download", file: missing[index].url, fileIndex: index, files: progress.files, bytesDone, bytesTotal, allDone: progress.allDone, allTotal: progress.allTotal });
      });
    }
  };
  // The model is the file at `source` itself (not a folder's or an index's files, which the
  // engine reads from their URLs, nor splits or an array).
  const oneFile = urls.length === 1 && urls[0] === source;
  if (wantStream && oneFile && missing[0].total !== null) ctx.tee = teeStream();
  const done = Promise.all(Array.from({ length: Math.min(concurrency, missing.length) }, worker)).then(() => {});
  const abort = () => stop.abort();
  const tee = ctx.tee;
  if (!tee) return { ...none, done, abort };
  done.then(
    () => tee.close(),
    (e) => tee.error(e),
  );
  return { done, stream: tee.stream, total: missing[0].total, cancelStream: () => tee.cancel(), abort };
}

/** A ReadableStream fed by a download: `push(bytes)` resolves once the reader has room (16
 * chunks are buffered), at once after `cancel()` or the reader's cancel. */
function teeStream() {
  let controller;
  let wake = null;
  let open = true;
  const release = () => {
    wake?.();
    wake = null;
  };
  const stream = new ReadableStream(
    {
      start(c) {
        controller = c;
      },
      pull: release,
      cancel() {
        open = false;
        release();
      },
    },
    new CountQueuingStrategy({ highWaterMark: 16 }),
  );
  return {
    stream,
    async push(bytes) {
      if (!open) return;
      controller.enqueue(bytes);
      while (open && controller.desiredSize <= 0) await new Promise((resolve) => (wake = resolve));
    },
    close() {
      if (open) controller.close();
      open = false;
    },
    error(e) {
      if (open) controller.error(e);
      open = false;
    },
    cancel() {
      open = false;
      release();
    },
  };
}

/** Compares the bytes still to download (of the files whose size is known) with the free storage. */
async function checkQuota(files, what) {
  const needed = sum(files.filter((m) => m.total !== null && !m.done).map((m) => Math.max(0, m.total - m.have)));
  if (needed === 0) return;
  let free;
  try {
    free = (await estimate()).available;
  } catch {
    return; // no estimate here: the writes will tell
  }
  if (free !== null && needed > free) throw quotaError(what, needed, free);
}

/** The weight URLs of a folder (index.json, or model.safetensors) or of an index file; small
 * files are committed to the cache as the engine would. Null when the engine should decide. */
async function resolveIndex(ctx, source) {
  const folder = source.endsWith("/");
  const indexUrl = folder ? `${source}model.safetensors.index.json` : source;
  if (!(await verifiedEntry(indexUrl, ctx.weights))) {
    try {
      await download(ctx, { url: indexUrl, have: 0, total: null }, [], () => {});
    } catch (e) {
      if (folder && e?.code === "http" && / 404$/.test(e.message)) return [`${source}model.safetensors`];
      // Offline, a folder without an index whose model.safetensors is cached (a 404 is never cached).
      if (folder && e?.code !== "http" && (await verifiedEntry(`${source}model.safetensors`, ctx.weights))) return [`${source}model.safetensors`];
      throw e;
    }
  }
  try {
    const index = await (await entryResponse(ctx.weights, indexUrl)).json();
    const base = indexUrl.slice(0, indexUrl.lastIndexOf("/") + 1);
    return [...new Set(Object.values(index.weight_map ?? {}))].filter((f) => typeof f === "string").map((f) => `${base}${f}`);
  } catch {
    return null;
  }
}

/** Downloads one file (resuming what a previous attempt kept) and commits it. `report(bytesDone,
 * bytesTotal, newBytes)` as bytes arrive. A write the browser refuses is a "quota" error. */
async function download(ctx, file, all, report) {
  try {
    return await downloadFile(ctx, file, all, report);
  } catch (e) {
    if (!isQuota(e)) throw e;
    const held = (await readPartial(ctx.partial, ctx.weights, file.url).catch(() => null))?.pieces ?? [];
    throw await refused(`'${file.url}'`, file.total !== null ? Math.max(1, file.total - sum(held)) : 1, e);
  }
}

async function downloadFile(ctx, file, all, report) {
  const { partial, weights, signal } = ctx;
  const { url } = file;
  let meta = await readPartial(partial, weights, url);
  // (Pieces without a download that knows them: left by one that stopped before it said so.)
  if (!meta) await dropPartial(url, partial, weights);
  meta ??= { url, total: null, etag: null, lastModified: null, pieces: [] };
  let have = sum(meta.pieces);
  let response;
  try {
    response = await fetch(url, { signal, cache: "no-store", headers: have > 0 ? { range: `bytes=${have}-` } : {} });
  } catch (e) {
    if (isAbort(e, signal)) throw abortError();
    throw ioError(url, e?.message ?? String(e), e);
  }
  const etag = response.headers.get("etag");
  const lastModified = response.headers.get("last-modified");
  if (have > 0 && response.status === 206 && resumes(response, meta, have, etag, lastModified)) {
    // The server sent the rest.
  } else if (have > 0 && (response.status === 206 || response.status === 416)) {
    // Not the rest of the same file (it changed, or the range is off): start over.
    await response.body?.cancel().catch(() => {});
    await dropPartial(url, partial, weights);
    return downloadFile(ctx, file, all, report);
  } else if (response.ok) {
    if (have > 0) {
      // The server ignores Range: it sends the whole file again, from its first byte.
      await dropPartial(url, partial, weights);
      report(0, null, -have);
      have = 0;
    }
    meta = { url, total: contentLength(response), etag, lastModified, pieces: [] };
  } else {
    await response.body?.cancel().catch(() => {});
    throw httpError(url, response.status);
  }
  file.have = have;
  if (meta.total !== null && file.total !== meta.total) {
    // The HEAD request did not say (or said otherwise): check again with what the GET says.
    file.total = meta.total;
    try {
      await checkQuota(all.length > 0 ? all : [file], `'${url}'`);
    } catch (e) {
      await response.body?.cancel().catch(() => {});
      throw e;
    }
  }
  meta.etag ??= etag;
  meta.lastModified ??= lastModified;
  await writeMeta(partial, meta);

  // The body, in pieces of PIECE_BYTES; what arrived before a failure is kept as a last piece.
  const reader = response.body.getReader();
  let held = [];
  let heldBytes = 0;
  const flush = async () => {
    if (heldBytes === 0) return;
    const piece = new Blob(held);
    held = [];
    heldBytes = 0;
    try {
      await weights.put(pieceKey(url, meta.pieces.length), new Response(piece));
    } catch (e) {
      if (isQuota(e)) throw await refused(`'${url}'`, meta.total !== null ? meta.total - sum(meta.pieces) : piece.size, e);
      throw ioError(url, `its downloaded bytes could not be stored: ${e?.message ?? e}`, e);
    }
    meta.pieces.push(piece.size);
    await writeMeta(partial, meta);
  };
  await readBody();
  await commit(ctx, meta);
  file.done = true;

  /** The body into pieces (and the engine's stream), from where a resumed download's pieces end. */
  async function readBody() {
    report(have, meta.total, 0);
    if (ctx.tee) {
      // The engine's stream starts with the bytes a resumed download has.
      for (let i = 0; i < meta.pieces.length; i++) {
        const bytes = await pieceBytes(weights, pieceKey(url, i));
        if (!bytes || bytes.byteLength !== meta.pieces[i]) {
          reader.cancel().catch(() => {});
          throw ioError(url, `piece ${i} of its partial download is missing; load it again`);
        }
        await ctx.tee.push(bytes);
      }
    }
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        const kept = have;
        await flush().catch(() => {});
        if (meta.pieces.length === 0) await dropPartial(url, partial, weights).catch(() => {});
        if (isAbort(e, signal)) throw abortError();
        const of = meta.total !== null ? ` of ${meta.total}` : "";
        throw ioError(url, `the download stopped after ${kept}${of} bytes (${e?.message ?? e}); load it again to resume from there`, e);
      }
      if (chunk.done) break;
      const bytes = chunk.value;
      held.push(bytes);
      heldBytes += bytes.byteLength;
      have += bytes.byteLength;
      report(have, meta.total, bytes.byteLength);
      await ctx.tee?.push(bytes); // (the engine's stream, where there is one)
      if (heldBytes >= PIECE_BYTES) {
        try {
          await flush();
        } catch (e) {
          reader.cancel().catch(() => {});
          throw e;
        }
      }
      if (signal?.aborted) {
        reader.cancel().catch(() => {});
        await flush().catch(() => {});
        throw abortError();
      }
    }
    await flush();
    if (meta.total !== null && have !== meta.total) {
      if (have > meta.total) await dropPartial(url, partial, weights);
      throw ioError(url, `the server sent ${have} bytes of ${meta.total}; load it again to resume`);
    }
  }
}

/** The headers of the entry of a committed file of `total` bytes in `count` pieces. */
function entryHeaders(meta, total, count) {
  const headers = { "content-type": "application/json", [SIZE_HEADER]: String(total), [PIECES_HEADER]: String(count) };
  if (meta.etag) headers.etag = meta.etag;
  if (meta.lastModified) headers["last-modified"] = meta.lastModified;
  return headers;
}

/** Whether a 206 response carries the rest of the file a partial download started. */
function resumes(response, meta, have, etag, lastModified) {
  if (meta.etag && etag && meta.etag !== etag) return false;
  if (!meta.etag && meta.lastModified && lastModified && meta.lastModified !== lastModified) return false;
  const range = response.headers.get("content-range");
  if (range !== null) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range.trim());
    if (!m || Number(m[1]) !== have) return false;
    const total = m[3] === "*" ? null : Number(m[3]);
    if (meta.total !== null && total !== null && total !== meta.total) return false;
    if (total !== null && Number(m[2]) !== total - 1) return false;
    meta.total ??= total;
    return true;
  }
  // (Content-Range unreadable: a cross-origin server that does not expose it.) The length must fit.
  return meta.total !== null && contentLength(response) === meta.total - have;
}

/** Commits a complete download: its entry, which lists its pieces, written after them (so no
 * file is served before all of it is stored), then checked. */
async function commit(ctx, meta) {
  const { weights, partial } = ctx;
  const { url } = meta;
  const keys = meta.pieces.map((_, i) => pieceKey(url, i));
  const list = JSON.stringify({ keys, sizes: meta.pieces });
  try {
    await weights.put(url, new Response(list, { headers: entryHeaders(meta, sum(meta.pieces), keys.length) }));
  } catch (e) {
    await dropPartial(url, partial, weights).catch(() => {});
    if (isQuota(e)) throw await refused(`'${url}'`, list.length, e);
    throw ioError(url, `it could not be stored in the cache: ${e?.message ?? e}`, e);
  }
  await dropMeta(partial, url).catch(() => {}); // the pieces are the committed file's now
  if (!(await verifiedEntry(url, weights))) {
    throw ioError(url, "its cached copy did not keep the bytes written: load it again");
  }
}
