// Constrained decoding and the logit bias in a real headless Chromium, through the npm package and its Worker: with
// `response_format`, the tiny random Llama (whose vocabulary is single bytes, all of ASCII up to
// '|') writes replies that parse and follow their schema, grammar or regex, greedy and sampled,
// streamed and not; a schema llguidance cannot use rejects with invalid_request. The same checks
// as tests/gpu_grammar.rs natively, on the browser's WebGPU and the wasm build of llguidance.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { rm } from "node:fs/promises";
import { tinyByteFolder } from "./tiny-bytes.mjs";
import { serve } from "./server.mjs";
import { evaluate, launch, value } from "./browser.mjs";

const WWW = join(dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = join(WWW, "..");
const TINY = "/fixtures/models/tiny-llama.gguf";

let server, browser, page, folder;

before(async () => {
  folder = await tinyByteFolder();
  server = await serve({ "/": WWW, "/fixtures/": join(ROOT, "tests", "fixtures"), "/tiny-bytes/": folder });
  browser = await launch();
  page = await browser.newPage();
  page.on("pageerror", (e) => console.error("[page]", e.message));
  await page.goto(`${server.url}/test/package.html`);
  await page.waitForFunction(() => globalThis.pocketlm !== undefined, null, { timeout: 60_000 });
  await value(
    await evaluate(
      page,
      async (path) => {
        globalThis.lm = await globalThis.pocketlm.PocketLM.load(path, { backend: "webgpu", context: 256 });
      },
      TINY,
    ),
  );
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (folder) await rm(folder, { recursive: true, force: true });
});

/** Runs the requests in the page; each result is the reply's text, finish reason and mask count,
 * or the error's code and message. */
const replies = (requests) =>
  evaluate(
    page,
    async (requests) => {
      const out = [];
      for (const { stream, ...request } of requests) {
        try {
          if (stream) {
            let text = "";
            let finish = null;
            for await (const chunk of await globalThis.lm.completions.create({ ...request, stream: true })) {
              text += chunk.choices[0].text;
              finish = chunk.choices[0].finish_reason ?? finish;
            }
            out.push({ text, finish });
          } else {
            const r = await globalThis.lm.completions.create(request);
            out.push({ text: r.choices[0].text, finish: r.choices[0].finish_reason, masks: r.pocketlm.grammar_masks, tokens: r.usage.completion_tokens });
          }
        } catch (e) {
          out.push({ code: e.code, message: e.message });
        }
      }
      return out;
    },
    requests,
  ).then(value);

const samplings = [
  { temperature: 0 },
  { temperature: 1, seed: 3 },
  { temperature: 0.9, top_k: 8, seed: 5 },
  { temperature: 1.2, top_p: 0.9, seed: 7 },
  { temperature: 0.8, repetition_penalty: 1.3, seed: 9 },
];

const schema = (name, s) => ({ type: "json_schema", json_schema: { name, schema: s, strict: true } });

test("replies under a JSON schema parse and follow it, in every sampling plan", { timeout: 600_000 }, async () => {
  const cases = [
    [schema("flags", { type: "array", items: { type: "boolean" }, minItems: 1, maxItems: 4 }), (v) => Array.isArray(v) && v.length >= 1 && v.length <= 4 && v.every((b) => typeof b === "boolean")],
    [schema("color", { enum: ["red", "green", "blue"] }), (v) => ["red", "green", "blue"].includes(v)],
    [schema("n", { type: "integer", minimum: -50, maximum: 50 }), (v) => Number.isInteger(v) && v >= -50 && v <= 50],
    [{ type: "json_object", schema: JSON.stringify({ type: "array", items: { type: "integer", minimum: 0, maximum: 9 }, maxItems: 3 }) }, (v) => Array.isArray(v) && v.length <= 3 && v.every((n) => Number.isInteger(n) && n >= 0 && n <= 9)],
  ];
  const requests = [];
  for (const [response_format] of cases) {
    for (const s of samplings) requests.push({ prompt: "Answer:", max_tokens: 60, response_format, ...s });
  }
  const got = await replies(requests);
  got.forEach((r, i) => {
    const [, check] = cases[Math.floor(i / samplings.length)];
    const what = `${JSON.stringify(requests[i])} → ${JSON.stringify(r)}`;
    assert.equal(r.finish, "stop", what);
    assert.ok(check(JSON.parse(r.text)), what);
    assert.equal(r.masks.count, r.tokens, what);
  });
});

test("grammars and regexes, streamed or not", { timeout: 300_000 }, async () => {
  const yesNo = ["yes!", "no!"];
  const requests = [
    { prompt: "Q:", max_tokens: 20, response_format: { type: "grammar", grammar: 'root ::= ("yes" | "no") "!"' }, temperature: 0 },
    { prompt: "Q:", max_tokens: 20, response_format: { type: "grammar", grammar: 'start: ("yes" | "no") "!"' }, temperature: 1, seed: 2 },
    { prompt: "Q:", max_tokens: 20, response_format: { type: "regex", pattern: "[a-z]{3}-[0-9]{2}" }, temperature: 1, seed: 4, stream: true },
  ];
  const [gbnf, lark, rx] = await replies(requests);
  assert.ok(yesNo.includes(gbnf.text), JSON.stringify(gbnf));
  assert.ok(yesNo.includes(lark.text), JSON.stringify(lark));
  assert.match(rx.text, /^[a-z]{3}-[0-9]{2}$/, JSON.stringify(rx));
  assert.equal(rx.finish, "stop");
});

test("bad formats reject with invalid_request; the model stays usable", { timeout: 300_000 }, async () => {
  const got = await replies([
    { prompt: "x", response_format: schema("bad", { type: "strnig" }) },
    { prompt: "x", response_format: { type: "yaml" } },
    { prompt: "x", response_format: { type: "grammar", grammar: "root ::= (" } },
    { prompt: "x", response_format: { type: "json_object", schema: "{" } },
    { prompt: "x", max_tokens: 3, temperature: 0 },
  ]);
  for (const r of got.slice(0, 4)) assert.equal(r.code, "invalid_request", JSON.stringify(r));
  assert.match(got[0].message, /JSON schema/);
  assert.match(got[1].message, /yaml/);
  assert.equal(got[4].tokens, 3);
});

test("logit_bias forces and bans tokens on the GPU", { timeout: 300_000 }, async () => {
  const got = await value(
    await evaluate(page, async () => {
      const ids = async (request) => (await globalThis.lm.completions.create({ prompt: "Q:", max_tokens: 5, ...request })).pocketlm.token_ids;
      const free = await ids({ temperature: 0 });
      return {
        free,
        forced: await ids({ temperature: 0.9, seed: 1, logit_bias: { 77: 100 } }),
        banned: await ids({ temperature: 0, logit_bias: { [free[0]]: -100 } }),
      };
    }),
  );
  assert.deepEqual(got.forced, [77, 77, 77, 77, 77]);
  assert.ok(!got.banned.includes(got.free[0]), JSON.stringify(got));
});

test("tool calls: required and named choices give calls, streamed as delta.tool_calls", { timeout: 600_000 }, async () => {
  const got = await value(
    await evaluate(page, async () => {
      const lm = await globalThis.pocketlm.PocketLM.load("/tiny-bytes/", { backend: "webgpu", context: 1536 });
      const fn = (name, properties) => ({ type: "function", function: { name, parameters: { type: "object", properties, required: Object.keys(properties), additionalProperties: false } } });
      const tools = [fn("get_weather", { city: { type: "string", maxLength: 8 } }), fn("add", { a: { type: "integer", minimum: 0, maximum: 9 } })];
      const messages = [{ role: "user", content: "Weather?" }];
      const required = await lm.chat.completions.create({ messages, tools, tool_choice: "required", temperature: 0, max_tokens: 120 });
      const call = required.choices[0].message.tool_calls[0];
      const followUp = await lm.chat.completions.create({
        messages: [...messages, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: call.id, content: "sunny" }],
        tools,
        tool_choice: { type: "function", function: { name: "add" } },
        temperature: 0.8,
        seed: 4,
        max_tokens: 120,
      });
      const chunks = [];
      for await (const c of await lm.chat.completions.create({ messages, tools, tool_choice: { type: "function", function: { name: "add" } }, stream: true, max_tokens: 120 })) {
        chunks.push(c.choices[0]);
      }
      let unknown = null;
      try {
        await lm.chat.completions.create({ messages, tools, tool_choice: { type: "function", function: { name: "nope" } } });
      } catch (e) {
        unknown = e.code;
      }
      await lm.unload();
      return { required: required.choices[0], followUp: followUp.choices[0], chunks, unknown };
    }),
  );
  const { required, followUp, chunks, unknown } = got;
  assert.equal(required.finish_reason, "tool_calls", JSON.stringify(required));
  assert.equal(required.message.content, null);
  const call = required.message.tool_calls[0];
  assert.ok(["get_weather", "add"].includes(call.function.name), JSON.stringify(call));
  assert.equal(typeof JSON.parse(call.function.arguments), "object");
  assert.match(call.id, /^call_/);
  assert.equal(followUp.finish_reason, "tool_calls");
  assert.equal(followUp.message.tool_calls[0].function.name, "add");
  assert.ok(Number.isInteger(JSON.parse(followUp.message.tool_calls[0].function.arguments).a));
  const streamedCalls = chunks.flatMap((c) => c.delta.tool_calls ?? []);
  assert.equal(streamedCalls.length, 1, JSON.stringify(chunks));
  assert.equal(streamedCalls[0].index, 0);
  assert.equal(streamedCalls[0].function.name, "add");
  assert.ok(!chunks.some((c) => (c.delta.content ?? "").includes("<tool_call>")), JSON.stringify(chunks));
  assert.equal(chunks.at(-1).finish_reason, "tool_calls");
  assert.equal(unknown, "invalid_request");
});

test("stream_options.include_usage: usage null on every chunk, then a usage chunk with no choices", { timeout: 300_000 }, async () => {
  const got = await value(
    await evaluate(page, async () => {
      const lm = await globalThis.pocketlm.PocketLM.load("/tiny-bytes/", { backend: "webgpu", context: 256 });
      const out = {};
      for (const include of [true, false]) {
        const chunks = [];
        const body = { messages: [{ role: "user", content: "Hi" }], max_tokens: 5, temperature: 0, stream: true };
        for await (const c of await lm.chat.completions.create(include ? { ...body, stream_options: { include_usage: true } } : body)) chunks.push(c);
        out[include] = chunks;
      }
      await lm.unload();
      return out;
    }),
  );
  const withUsage = got.true;
  const last = withUsage.at(-1);
  assert.deepEqual(last.choices, [], JSON.stringify(last));
  assert.equal(last.usage.completion_tokens, 5);
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 5);
  assert.equal(last.pocketlm.token_ids.length, 5);
  assert.equal(last.id, withUsage[0].id);
  const rest = withUsage.slice(0, -1);
  for (const c of rest) assert.equal(c.usage, null, JSON.stringify(c));
  assert.equal(rest.at(-1).choices[0].finish_reason, "length");
  assert.equal(rest.filter((c) => c.choices[0].finish_reason).length, 1);
  // Without it, the finishing chunk carries the usage and nothing comes after it.
  const plain = got.false;
  assert.equal(plain.at(-1).choices[0].finish_reason, "length");
  assert.equal(plain.at(-1).usage.completion_tokens, 5);
  assert.ok(plain.slice(0, -1).every((c) => !("usage" in c)));
  assert.equal(plain.length, rest.length);
});

test("create(body, {signal}) aborts as body.signal does", { timeout: 300_000 }, async () => {
  const got = await value(
    await evaluate(page, async () => {
      const controller = new AbortController();
      const stream = await globalThis.lm.completions.create({ prompt: "Q:", max_tokens: 200, temperature: 0, stream: true }, { signal: controller.signal });
      let pieces = 0;
      let finish = null;
      for await (const c of stream) {
        if (c.choices[0].text) pieces += 1;
        if (pieces === 1) controller.abort();
        finish = c.choices[0].finish_reason ?? finish;
      }
      return { pieces, finish };
    }),
  );
  assert.equal(got.finish, "abort", JSON.stringify(got));
  assert.ok(got.pieces < 200, JSON.stringify(got));
});

test("logprobs: the chat and the legacy completions forms, streamed and not", { timeout: 300_000 }, async () => {
  const got = await value(
    await evaluate(page, async () => {
      const lm = await globalThis.pocketlm.PocketLM.load("/tiny-bytes/", { backend: "webgpu", context: 256 });
      const messages = [{ role: "user", content: "Hi" }];
      const chat = await lm.chat.completions.create({ messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
      const chunks = [];
      for await (const c of await lm.chat.completions.create({ messages, max_tokens: 6, temperature: 0.9, seed: 2, logprobs: true, stream: true })) {
        chunks.push(c.choices[0]);
      }
      const legacy = await lm.completions.create({ prompt: "ab", max_tokens: 4, temperature: 0, logprobs: 2 });
      await lm.unload();
      return { chat: chat.choices[0], tokens: chat.pocketlm.token_ids, chunks, legacy: legacy.choices[0] };
    }),
  );
  const content = got.chat.logprobs.content;
  assert.equal(content.length, got.tokens.length);
  for (const e of content) {
    assert.ok(e.logprob <= 0, JSON.stringify(e));
    assert.equal(e.top_logprobs.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.equal(e.top_logprobs[0].logprob, e.logprob, JSON.stringify(e));
    assert.deepEqual(e.bytes, [...new TextEncoder().encode(e.token)]);
  }
  const streamed = got.chunks.filter((c) => c.logprobs).flatMap((c) => c.logprobs.content);
  assert.ok(streamed.length >= 1 && streamed.every((e) => e.logprob <= 0 && e.top_logprobs.length === 0), JSON.stringify(got.chunks));
  const l = got.legacy.logprobs;
  assert.equal(l.tokens.length, 4);
  assert.equal(l.token_logprobs.length, 4);
  assert.equal(l.text_offset[0], 0);
  assert.ok(l.top_logprobs.every((o) => Object.keys(o).length >= 1 && Object.keys(o).length <= 2), JSON.stringify(l));
});
