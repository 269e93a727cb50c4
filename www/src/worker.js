// The module Web Worker that PocketLM.load() starts: the engine runs here, off the main thread,
// and answers the page's requests by postMessage (the protocol is createHandler's, in engine.js).
import { createHandler } from "./engine.js";

const handle = createHandler((reply) => self.postMessage(reply));
self.addEventListener("message", (event) => handle(event.data));
