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
};

// `mounts` maps URL prefixes to folders, e.g. { "/": www, "/models/": models }; the longest
// matching prefix wins.
export async function serve(mounts) {
  if (typeof mounts === "string") mounts = { "/": mounts };
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const requests = new Map();
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
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
      });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, requests, close: () => new Promise((ok) => server.close(ok)) };
}
