// A static file server on 127.0.0.1 for the browser tests, counting requests per path.
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
// 127.0.0.1), `options.headers(path)` → extra response headers (e.g. a Content-Security-Policy).
export async function serve(mounts, options = {}) {
  if (typeof mounts === "string") mounts = { "/": mounts };
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const requests = new Map();
  const server = createServer(async (req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (path.endsWith("/")) path += "index.html";
    requests.set(path, (requests.get(path) ?? 0) + 1);
    const prefix = prefixes.find((p) => path.startsWith(p));
    if (path.includes("..") || prefix === undefined) {
      res.writeHead(400).end();
      return;
    }
    try {
      const body = await readFile(join(mounts[prefix], path.slice(prefix.length)));
      res.writeHead(200, {
        "content-type": TYPES[extname(path)] ?? "application/octet-stream",
        "content-length": body.length,
        "cache-control": "no-cache",
        ...(options.headers?.(path) ?? {}),
      });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
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
    close: () => {
      server.closeAllConnections?.();
      return new Promise((ok) => server.close(ok));
    },
  };
}
