// The search page's service worker (as the PWA's): keeps the page, its notes and PocketLM's code
// and wasm in a cache at install and answers those from it first. The model is cached by PocketLM itself (Cache API, same origin)
// on its first download and read from there offline, so it is not stored twice.
// The package must lie inside this worker's scope (here ./vendor/): PocketLM's Web Worker is
// controlled by the service worker whose scope holds the worker's URL.
import { wasmFiles } from "./vendor/pocketlm/src/simd.js";

const CACHE = "pocketlm-search-v2";
const SHELL = [
  "./",
  "./index.html",
  "./app.js",
  "./notes.json",
  // The package, copied here by `node scripts/vendor-examples.mjs` (npm: node_modules/pocketlm).
  "./vendor/pocketlm/src/index.js",
  "./vendor/pocketlm/src/engine.js",
  "./vendor/pocketlm/src/worker.js",
  "./vendor/pocketlm/src/errors.js",
  "./vendor/pocketlm/src/validate.js",
  "./vendor/pocketlm/src/storage.js",
  "./vendor/pocketlm/src/simd.js",
  // Of the package's two wasm builds, the one this browser runs (relaxed SIMD or not).
  ...wasmFiles().map((f) => `./vendor/pocketlm/pkg/${f}`),
];
const SHELL_URLS = new Set(SHELL.map((p) => new URL(p, self.location.href).href));

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("pocketlm-search-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  url.search = "";
  if (!SHELL_URLS.has(url.href)) return; // the model and everything else: PocketLM's own cache, or the network
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const cached = await cache.match(url.href);
      if (cached) {
        // Cache first; refresh it in the background when online.
        event.waitUntil(fetch(request).then((r) => r.ok && cache.put(url.href, r)).catch(() => {}));
        return cached;
      }
      return fetch(request);
    })(),
  );
});
