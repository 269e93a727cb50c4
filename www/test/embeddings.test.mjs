// Sentence embeddings through the npm package in a real headless Chromium: the real
// all-MiniLM-L6-v2 (scripts/fetch-minilm.sh) on the browser's WebGPU adapter, through
// `lm.embeddings.create` in the package's worker, against sentence-transformers
// (tests/fixtures/minilm/reference.json) within cosine distance 1e-5; base64 output, Matryoshka
// `dimensions`, token-id inputs, and the bad inputs as typed errors with the numbers; the same on
// the CPU backend (what `auto` picks on this machine); an embedding model and a chat model
// each refusing the other's API; and the tiny random encoders of scripts/make_encoder_fixtures.py
// (nomic-embed-text's architecture from its folder, llama.cpp's GGUF conversions of it and of
// BERT, and Qwen3-Embedding's layout) on both backends against transformers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";
import { cosineDistance } from "./vectors.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const MINILM = join(ROOT, "models", "all-MiniLM-L6-v2");
const reference = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "minilm", "reference.json"), "utf8"));
let server, browser, page;

before(async () => {
  assert.ok(existsSync(join(MINILM, ".complete")), "run scripts/fetch-minilm.sh");
  server = await serve({
    "/": WWW,
    "/models/": join(ROOT, "models"),
    "/fixtures/": join(ROOT, "tests", "fixtures", "models"),
  });
  browser = await launch();
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error("[page]", e.message));
  await page.goto(`${server.url}/test/package.html`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 60_000 });
  const info = value(
    await evaluate(page, async (url) => {
      globalThis.embedder = await globalThis.pocketlm.PocketLM.load(url, { backend: "webgpu" });
      return embedder.info;
    }, "/models/all-MiniLM-L6-v2/"),
  );
  assert.equal(info.kind, "embedding");
  assert.equal(info.dimensions, 384);
  assert.equal(info.maxTokens, 256);
  assert.equal(info.pooling, "mean");
  assert.equal(info.normalized, true);
  assert.equal(info.name, "all-MiniLM-L6-v2");
});

after(async () => {
  await page?.evaluate(() => globalThis.embedder?.unload()).catch(() => {});
  await browser?.close();
  await server?.close();
});

const run = (fn, arg) => evaluate(page, fn, arg);

// The empty sentence is refused as text (below); its ids ([CLS] [SEP]) are given as token ids.
const inputs = reference.sentences.map((s, i) => (s === "" ? reference.input_ids[i] : s));

test("embeddings.create on WebGPU equals sentence-transformers within cosine distance 1e-5", async () => {
  // All but the 256-token sentence, which SwiftShader takes most of a minute over: the native GPU
  // tests check it on both profiles, and the CPU backend's test below in this browser.
  const count = reference.sentences.length - 1;
  assert.equal(reference.input_ids[count].length, 256);
  const input = inputs.slice(0, count);
  const t0 = Date.now();
  const r = value(await run((input) => embedder.embeddings.create({ input }), input));
  console.log(`${input.length} inputs in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.equal(r.object, "list");
  assert.equal(r.model, "all-MiniLM-L6-v2");
  assert.equal(r.data.length, count);
  const tokens = reference.input_ids.slice(0, count).reduce((a, ids) => a + ids.length, 0);
  assert.deepEqual(r.usage, { prompt_tokens: tokens, total_tokens: tokens });
  r.data.forEach((d, i) => {
    assert.equal(d.object, "embedding");
    assert.equal(d.index, i);
    assert.equal(d.embedding.length, 384);
    const distance = cosineDistance(d.embedding, reference.embeddings[i]);
    assert.ok(distance < 1e-5, `sentence ${i} ${JSON.stringify(reference.sentences[i].slice(0, 40))}: cosine distance ${distance}`);
  });
});

test("base64, dimensions and a single string", async () => {
  const r = value(
    await run(async (text) => {
      const float = await embedder.embeddings.create({ input: text });
      const b64 = await embedder.embeddings.create({ input: [text], encoding_format: "base64" });
      const short = await embedder.embeddings.create({ input: text, dimensions: 128 });
      const bytes = Uint8Array.from(atob(b64.data[0].embedding), (c) => c.charCodeAt(0));
      return { float: float.data[0].embedding, decoded: Array.from(new Float32Array(bytes.buffer)), short: short.data[0].embedding, type: typeof b64.data[0].embedding };
    }, reference.sentences[0]),
  );
  assert.equal(r.type, "string");
  assert.deepEqual(r.decoded, r.float);
  assert.equal(r.short.length, 128);
  const norm = Math.hypot(...r.short);
  assert.ok(Math.abs(norm - 1) < 1e-5, `norm ${norm}`);
  // The first 128 values, normalized again.
  const head = Math.hypot(...r.float.slice(0, 128));
  r.short.forEach((v, i) => assert.ok(Math.abs(v - r.float[i] / head) < 1e-6, `value ${i}`));
});

test("bad embedding requests are typed errors with the numbers", async () => {
  const long = reference.sentences.at(-1);
  const r = value(
    await run(async (long) => {
      const attempt = async (request) => {
        try {
          await embedder.embeddings.create(request);
          return null;
        } catch (e) {
          return { code: e.code, message: e.message };
        }
      };
      return {
        empty: await attempt({ input: [] }),
        emptyString: await attempt({ input: ["a", ""] }),
        vocab: await attempt({ input: [[101, 30522, 102]] }),
        dimensions: await attempt({ input: "a", dimensions: 385 }),
        dimensionsType: await attempt({ input: "a", dimensions: "128" }),
        truncateType: await attempt({ input: "a", truncate: "no" }),
        item: await attempt({ input: ["a", [101, 1.5, 102]] }),
        format: await attempt({ input: "a", encoding_format: "int8" }),
        overflow: await attempt({ input: long, truncate: false }),
        chat: await embedder.chat.completions.create({ messages: [{ role: "user", content: "hi" }] }).then(() => null, (e) => ({ code: e.code, message: e.message })),
      };
    }, long),
  );
  assert.equal(r.empty.code, "invalid_request");
  assert.match(r.empty.message, /empty list/);
  assert.equal(r.emptyString.code, "invalid_request");
  assert.match(r.emptyString.message, /input 1 is an empty string/);
  assert.match(r.vocab.message, /token id 30522 \(position 1\) is outside the vocabulary of 30522/);
  assert.match(r.dimensions.message, /dimensions must be an integer from 1 to 384/);
  assert.equal(r.dimensionsType.code, "invalid_request");
  assert.match(r.dimensionsType.message, /dimensions must be an integer from 1 to 384 .*not "128"/);
  assert.equal(r.truncateType.code, "invalid_request");
  assert.match(r.truncateType.message, /truncate must be a boolean, not "no"/);
  assert.equal(r.item.code, "invalid_request");
  assert.match(r.item.message, /input 1 must be a string or an array of token ids/);
  assert.match(r.format.message, /encoding_format/);
  assert.equal(r.overflow.code, "context_overflow");
  assert.match(r.overflow.message, /256/);
  assert.equal(r.chat.code, "invalid_request");
  assert.match(r.chat.message, /all-MiniLM-L6-v2 is a sentence-embedding model/);
});

test("the CPU backend embeds too (auto here), as sentence-transformers; a chat model refuses embeddings", async () => {
  const input = inputs;
  const r = value(
    await run(async (input) => {
      const { PocketLM } = globalThis.pocketlm;
      const onCpu = await PocketLM.load("/models/all-MiniLM-L6-v2/");
      const info = onCpu.info;
      const t0 = performance.now();
      const embedded = await onCpu.embeddings.create({ input });
      const ms = performance.now() - t0;
      await onCpu.unload();
      const chat = await PocketLM.load("/models/SmolLM2-135M-Instruct.Q4_1.gguf", { backend: "cpu", context: 64 });
      const kind = chat.info.kind;
      const refused = await chat.embeddings.create({ input: "a" }).then(() => null, (e) => ({ code: e.code, message: e.message }));
      await chat.unload();
      return { info, embedded, ms, kind, refused };
    }, input),
  );
  assert.equal(r.info.backend, "cpu");
  assert.equal(r.info.kind, "embedding");
  console.log(`CPU backend: ${input.length} inputs in ${(r.ms / 1000).toFixed(2)} s`);
  assert.equal(r.embedded.data.length, reference.sentences.length);
  r.embedded.data.forEach((d, i) => {
    const distance = cosineDistance(d.embedding, reference.embeddings[i]);
    assert.ok(distance < 1e-5, `sentence ${i}: cosine distance ${distance}`);
  });
  assert.equal(r.kind, "chat");
  assert.equal(r.refused.code, "invalid_request");
  assert.match(r.refused.message, /is a chat model: embeddings need a sentence-embedding model/);
});

test("nomic-embed-text, GGUF encoders and decoder-based embedders embed as transformers on both backends", async () => {
  const sources = [
    ["tiny-nomic-bert", "/fixtures/tiny-nomic-bert/"],
    ["tiny-nomic-bert", "/fixtures/tiny-nomic-bert.gguf"],
    ["tiny-bert", "/fixtures/tiny-bert.gguf"],
    ["tiny-qwen3-embedding", "/fixtures/tiny-qwen3-embedding/"],
    // EmbeddingGemma's layout: bidirectional Gemma 3, its Dense modules fetched from the folder.
    ["tiny-embeddinggemma", "/fixtures/tiny-embeddinggemma/"],
  ];
  for (const [name, url] of sources) {
    const ref = JSON.parse(readFileSync(join(ROOT, "tests", "fixtures", "models", name, "reference.json"), "utf8"));
    const input = ref.texts.map((t) => t.text);
    for (const backend of ["webgpu", "cpu"]) {
      const r = value(
        await run(
          async ([url, backend, input]) => {
            const lm = await globalThis.pocketlm.PocketLM.load(url, { backend });
            const info = lm.info;
            const embedded = await lm.embeddings.create({ input });
            await lm.unload();
            return { info, embedded };
          },
          [url, backend, input],
        ),
      );
      assert.equal(r.info.kind, "embedding", url);
      assert.equal(r.info.backend, backend === "webgpu" ? "webgpu" : "cpu", url);
      const tokens = ref.texts.reduce((a, t) => a + t.ids.length, 0);
      assert.equal(r.embedded.usage.prompt_tokens, tokens, `${url}: the same tokens as transformers`);
      r.embedded.data.forEach((d, i) => {
        const distance = cosineDistance(d.embedding, ref.texts[i].embedding);
        assert.ok(distance < 1e-5, `${url} on ${backend}, text ${i}: cosine distance ${distance}`);
      });
      console.log(`${url} on ${backend}: ${input.length} texts within cosine distance 1e-5`);
    }
  }
});
