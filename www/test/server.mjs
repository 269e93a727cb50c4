// A static file server on 127.0.0.1 for the browser tests, counting GET requests per path and
// logging every request. It honours single `Range: bytes=N-[M]` requests (206, with
// Content-Range) unless told not to, and can cut a response short to play a broken download.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".css": "text/css",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".webmanifest": "application/manifest+json",
};

// `mounts` maps URL prefixes to folders, e.g. { "/": www, "/models/": models }; the longest
// matching prefix wins. `options.port` (default: any free port), `options.host` (default
// 127.0.0.1), `options.headers(path)` → extra response headers (e.g. a Content-Security-Policy),
// `options.ranges(path)` → false to ignore Range headers (the whole file, 200), `options.cut(path,
// entry)` → a byte count after which the response body stops and the connection is dropped (the
// Content-Length still announces the whole body), `options.stall(path, entry)` → a byte count
// after which the body stops but the connection stays open (a download that never ends).
// `requests` counts GETs per path; `log` holds {method, path, range, status, cut, stall} for
// every request.
export async function serve(mounts, options = {}) {
  if (typeof mounts === "string") mounts = { "/": mounts };
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const requests = new Map();
  const log = [];
  const server = createServer(async (req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (path.endsWith("/")) path += "index.html";
    if (req.method === "GET") requests.set(path, (requests.get(path) ?? 0) + 1);
    const entry = { method: req.method, path, range: req.headers.range ?? null, status: 0, cut: null };
    log.push(entry);
    const prefix = prefixes.find((p) => path.startsWith(p));
    if (path.includes("..") || prefix === undefined) {
      entry.status = 400;
      res.writeHead(400).end();
      return;
    }
    let file;
    try {
      file = await readFile(join(mounts[prefix], path.slice(prefix.length)));
    } catch {
      entry.status = 404;
      res.writeHead(404).end("not found");
      return;
    }
    const headers = {
      "content-type": TYPES[extname(path)] ?? "application/octet-stream",
      "cache-control": "no-cache",
      ...(options.headers?.(path) ?? {}),
    };
    let body = file;
    let status = 200;
    const ranges = options.ranges?.(path) ?? true;
    if (ranges) headers["accept-ranges"] = "bytes";
    const m = ranges && req.headers.range ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range) : null;
    if (m) {
      const start = Number(m[1]);
      const end = m[2] === "" ? file.length - 1 : Math.min(Number(m[2]), file.length - 1);
      if (start >= file.length || end < start) {
        entry.status = 416;
        res.writeHead(416, { "content-range": `bytes */${file.length}` }).end();
        return;
      }
      body = file.subarray(start, end + 1);
      status = 206;
      headers["content-range"] = `bytes ${start}-${end}/${file.length}`;
    }
    headers["content-length"] = body.length;
    entry.status = status;
    res.writeHead(status, headers);
    const stall = req.method === "GET" ? options.stall?.(path, entry) : undefined;
    if (stall !== undefined && stall !== null && stall < body.length) {
      entry.stall = stall;
      // The rest never comes: the connection stays open until the client or close() ends it.
      res.write(body.subarray(0, stall));
      return;
    }
    const cut = req.method === "GET" ? options.cut?.(path, entry) : undefined;
    if (cut !== undefined && cut !== null && cut < body.length) {
      entry.cut = cut;
      // (The bytes sent reach the client before the connection drops.)
      res.write(body.subarray(0, cut), () => setTimeout(() => res.destroy(), 200));
      return;
    }
    res.end(req.method === "HEAD" ? undefined : body);
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port ?? 0, host, ok);
  });
  const { port } = server.address();
  return {
    url: `http://${host}:${port}`,
    requests,
    log,
    close: () => {
      server.closeAllConnections?.();
      return new Promise((ok) => server.close(ok));
    },
  };
}
