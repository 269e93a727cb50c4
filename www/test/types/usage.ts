// The whole public API of `pocketlm` and `pocketlm/engine`, as an app written in TypeScript uses it.
// Never run: test/types.test.mjs type-checks it (`tsc --noEmit --strict`) against src/*.d.ts. The
// `@ts-expect-error` lines are mistakes the types must reject.
import PocketLMDefault, { PocketLM, PocketLMError } from "pocketlm";
import type {
  CachedFile,
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatMessage,
  Completion,
  CompletionChunk,
  CompletionRequest,
  FinishReason,
  LoadOptions,
  LoadProgress,
  MemoryUsage,
  ModelCache,
  ModelInfo,
  ModelSource,
  PocketLMErrorCode,
  SamplingOptions,
  StorageEstimate,
  Stream,
  SupportReport,
  TextPart,
  Timings,
  Tool,
  ToolCall,
  Usage,
} from "pocketlm";
import {
  Engine,
  PocketLMError as EnginePocketLMError,
  cache as engineCache,
  clearModelCache,
  createHandler,
  initWasm,
  listCachedModels,
  memoryUsage,
  supportReport,
} from "pocketlm/engine";
import type { EngineRequest, Generation } from "pocketlm/engine";

declare const out: { textContent: string };
declare const file: File;
declare const files: FileList;
declare const stream: ReadableStream<Uint8Array>;

export async function support(): Promise<string | null> {
  const yes: boolean = await PocketLM.isSupported();
  const report: SupportReport = await PocketLM.supportReport();
  if (!yes || !report.supported) return report.reason;
  const fallback: boolean | undefined = report.adapter?.isFallbackAdapter;
  const maxBuffer: number | undefined = report.limits?.maxBufferSize;
  const features: string[] = report.features ?? [];
  const backend: "webgpu" | "cpu" | null = report.backend;
  const why: string | null = report.backendReason;
  return `${fallback} ${maxBuffer} ${features.join(",")} ${backend} ${why}`;
}

export async function load(): Promise<PocketLM> {
  const controller = new AbortController();
  const progress: LoadProgress[] = [];
  const options: LoadOptions = {
    onProgress: (p) => {
      progress.push(p);
      const phase: "download" | "load" = p.phase;
      const share: number | null = p.allTotal === null ? null : p.allDone / p.allTotal;
      out.textContent = `${phase} ${p.file} ${p.fileIndex + 1}/${p.files} ${p.bytesDone}/${p.bytesTotal ?? "?"} ${share}`;
    },
    signal: controller.signal,
    integrity: "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    cache: true,
    context: 2048,
    kvDtype: "f16",
    backend: "auto",
    profile: "auto",
    concurrency: 4,
    worker: true,
  };
  const lm = await PocketLM.load("https://example.com/model.gguf", options);
  // Every kind of source, and the other values of each option.
  const sources: ModelSource[] = [
    new URL("https://example.com/model.gguf"),
    ["https://example.com/a-00001-of-00002.gguf", new URL("https://example.com/a-00002-of-00002.gguf")],
    file,
    files,
    new ArrayBuffer(8),
    new Uint8Array(8),
    stream,
  ];
  for (const source of sources) await PocketLM.load(source, { worker: false, cache: false, kvDtype: "f32", profile: "baseline" });
  await PocketLM.load("model.gguf", { integrity: ["0".repeat(64), null], profile: "full", backend: "webgpu" });
  const onCpu = await PocketLM.load("model.gguf", { backend: "cpu", threads: 4, relaxedSimd: false, fullWindowCache: true });
  const relaxed: boolean | null = onCpu.info.relaxedSimd;
  const relaxedHere: boolean = (await PocketLM.supportReport()).relaxedSimd;
  const threads: number | null = onCpu.info.threads;
  const embedder = await PocketLM.load("https://example.com/all-MiniLM-L6-v2/", { backend: "webgpu" });
  const kind: "chat" | "embedding" = embedder.info.kind;
  const vectors: number[][] = (await embedder.embeddings.create({ input: ["a", "b"], dimensions: 128 })).data.map((d) => d.embedding);
  const packed: string = (await embedder.embeddings.create({ input: [[101, 102]], encoding_format: "base64" })).data[0]?.embedding ?? "";
  const used: number = (await embedder.embeddings.create({ input: "a", truncate: false })).usage.prompt_tokens;
  out.textContent = `${kind} ${vectors.length} ${packed} ${used}`;
  const threadsNote: string | null = onCpu.info.threadsNote;
  const where: "webgpu" | "cpu" = onCpu.info.backend;
  const profile: "full" | "baseline" | null = onCpu.info.profile;
  const device: string | null = onCpu.info.device;
  out.textContent = `${where} ${profile} ${device} ${onCpu.info.backendReason} ${threads} ${threadsNote} ${relaxed} ${relaxedHere}`;
  await PocketLM.load("model.gguf", { worker: new Worker(new URL("pocketlm/worker", import.meta.url), { type: "module" }) });
  await PocketLMDefault.load("model.gguf");
  // @ts-expect-error kvDtype is "f16" or "f32"
  await PocketLM.load("model.gguf", { kvDtype: "q8_0" });
  // @ts-expect-error profile is "auto", "full" or "baseline"
  await PocketLM.load("model.gguf", { profile: "fast" });
  // @ts-expect-error backend is "auto", "webgpu" or "cpu"
  await PocketLM.load("model.gguf", { backend: "gpu" });
  // @ts-expect-error a number is not a model source
  await PocketLM.load(42);
  // @ts-expect-error the constructor is private: PocketLM.load() makes them
  new PocketLM();
  return lm;
}

export async function chat(lm: PocketLM): Promise<string> {
  const info: ModelInfo = lm.info;
  const state: "ready" | "unloaded" | "lost" | "crashed" = lm.state;
  const parts: TextPart[] = [{ type: "text", text: "Hello" }];
  const messages: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: parts },
    { role: "tool-like-custom-role", content: "custom roles are strings too" },
  ];
  const controller = new AbortController();
  const sampling: SamplingOptions = {
    max_tokens: 64,
    max_completion_tokens: 64,
    temperature: 0.7,
    top_p: 0.9,
    top_k: 40,
    min_p: 0.05,
    seed: 1,
    stop: ["\n\n", "User:"],
    frequency_penalty: 0.1,
    presence_penalty: 0.1,
    repetition_penalty: 1.1,
    signal: controller.signal,
    n: 1,
    model: "ignored",
  };
  const request: ChatCompletionRequest = { ...sampling, messages, chat_template_kwargs: { enable_thinking: false } };

  const reply: ChatCompletion = await lm.chat.completions.create({ ...request, stream: false });
  const content: string = reply.choices[0].message.content ?? "";
  const finish: FinishReason = reply.choices[0].finish_reason;
  const usage: Usage = reply.usage;
  const cached: number = usage.prompt_tokens_details.cached_tokens + usage.total_tokens;
  const timings: Timings = reply.pocketlm;
  const speed: number | null = timings.tokens_per_second;

  const chunks: Stream<ChatCompletionChunk> = await lm.chat.completions.create({ ...request, stream: true });
  let streamed = "";
  for await (const chunk of chunks) {
    streamed += chunk.choices[0]?.delta.content ?? "";
    const id: number | undefined = chunk.choices[0]?.token_id;
    const done: FinishReason | null = chunk.choices[0]?.finish_reason ?? null;
    if (done) streamed += `${chunk.usage?.completion_tokens} ${chunk.pocketlm?.decode_ms} ${id}`;
  }
  chunks.controller.abort();
  const whole: string = await (await lm.chat.completions.create({ messages, stream: true })).text();
  const either: ChatCompletion | Stream<ChatCompletionChunk> = await lm.chat.completions.create({ messages, stream: Math.random() > 0.5 });
  // @ts-expect-error a chat request needs messages
  await lm.chat.completions.create({ prompt: "no messages" });
  // @ts-expect-error only n: 1
  await lm.chat.completions.create({ messages, n: 2 });
  // @ts-expect-error a streamed reply has no choices of its own
  (await lm.chat.completions.create({ messages, stream: true })).choices;
  const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
  const json: ChatCompletion = await lm.chat.completions.create({
    messages,
    response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
  });
  await lm.chat.completions.create({ messages, response_format: { type: "json_object", schema: JSON.stringify(schema) } });
  await lm.chat.completions.create({ messages, response_format: { type: "grammar", grammar: 'root ::= "yes" | "no"' } });
  await lm.completions.create({ prompt: "Code:", response_format: { type: "regex", pattern: "[A-Z]{2}[0-9]{3}" } });
  const masks: number | undefined = json.pocketlm.grammar_masks?.max_ms;
  const weather: Tool = { type: "function", function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } } };
  const called: ChatCompletion = await lm.chat.completions.create({ messages, tools: [weather], tool_choice: "required" });
  const calls: ToolCall[] = called.choices[0].message.tool_calls ?? [];
  const [call] = calls;
  if (call === undefined) throw new Error("no call");
  const args: unknown = JSON.parse(call.function.arguments);
  await lm.chat.completions.create({
    messages: [...messages, { role: "assistant", content: null, tool_calls: calls }, { role: "tool", tool_call_id: call.id, content: "rain" }],
    tools: [weather],
    tool_choice: { type: "function", function: { name: "weather" } },
  });
  for await (const chunk of await lm.chat.completions.create({ messages, tools: [weather], stream: true })) {
    const name: string | undefined = chunk.choices[0]?.delta.tool_calls?.[0]?.function.name;
    out.textContent += `${name} ${String(args)}`;
  }
  const scored: ChatCompletion = await lm.chat.completions.create({ messages, logprobs: true, top_logprobs: 3, logit_bias: { "50256": -100 } });
  const first: number | undefined = scored.choices[0].logprobs?.content[0]?.top_logprobs[0]?.logprob;
  const legacy: Completion = await lm.completions.create({ prompt: "x", logprobs: 2 });
  out.textContent += `${first} ${legacy.choices[0].logprobs?.token_logprobs[0]}`;
  // @ts-expect-error tool_choice is a string or a named function
  await lm.chat.completions.create({ messages, tools: [weather], tool_choice: "sometimes" });
  // @ts-expect-error a regex format needs its pattern
  await lm.completions.create({ prompt: "x", response_format: { type: "regex" } });
  return `${info.name} ${state} ${content} ${finish} ${cached} ${speed} ${streamed} ${whole} ${"id" in either} ${masks}`;
}

export async function complete(lm: PocketLM): Promise<number[]> {
  const request: CompletionRequest = { prompt: "Once upon a time", max_tokens: 16, temperature: 0 };
  const plain: Completion = await lm.completions.create({ ...request, stream: false });
  const text: string = plain.choices[0].text;
  const pieces: Stream<CompletionChunk> = await lm.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  for await (const piece of pieces) out.textContent += piece.choices[0]?.text ?? `${piece.usage?.total_tokens}`;
  const more: string = await lm.complete(text, { max_tokens: 8, stop: "." });
  const ids: number[] = await lm.tokenize(more, true);
  const memory: MemoryUsage = await lm.memoryUsage();
  const here: MemoryUsage = await PocketLM.memoryUsage();
  const heap: number | null = memory.jsHeapBytes;
  out.textContent = `${memory.wasmBytes} ${memory.gpuBuffers} ${memory.gpuBytes} ${heap} ${here.gpuBuffers}`;
  return ids;
}

export function events(lm: PocketLM): void {
  lm.addEventListener("error", (event) => {
    const error: PocketLMError = event.error;
    out.textContent = `${error.code}: ${error.message}`;
  });
  lm.addEventListener("unload", (event: Event) => void event.type, { once: true });
  lm.addEventListener("other", null);
  void lm._simulateDeviceLoss();
  void lm.unload();
}

export async function cache(): Promise<number> {
  const store: ModelCache = PocketLM.cache;
  const has: boolean = await store.has("model.gguf");
  const deleted: boolean = await store.delete(new URL("https://example.com/model.gguf"));
  const list: CachedFile[] = await store.list();
  const partial = list.filter((f) => !f.complete).map((f) => `${f.url} ${f.bytes}/${f.total ?? "?"}`);
  const cleared: boolean = await store.clear();
  const estimate: StorageEstimate = await store.estimate();
  const persisted: boolean = (await store.persist()) || (await store.persisted());
  const urls: string[] = await PocketLM.cachedModels();
  const any: boolean = await PocketLM.clearCache();
  out.textContent = `${has} ${deleted} ${partial} ${cleared} ${persisted} ${urls} ${any}`;
  return estimate.available ?? estimate.quota ?? estimate.usage ?? 0;
}

export async function errors(lm: PocketLM): Promise<string> {
  try {
    await lm.chat.completions.create({ messages: [] });
    return "";
  } catch (e) {
    if (!(e instanceof PocketLMError)) throw e;
    const known: PocketLMErrorCode | string = e.code;
    const name: "PocketLMError" = e.name;
    if (e.code === "quota") return `${e.bytesNeeded} ${e.bytesAvailable ?? "unknown"}`;
    const mine = new PocketLMError("invalid_request", "made here", { cause: e, data: { field: "messages", index: 0, ok: false, none: null } });
    const code: PocketLMErrorCode = "context_overflow";
    // @ts-expect-error not a code
    const wrong: PocketLMErrorCode = "no_such_code";
    return `${known} ${name} ${mine.code} ${code} ${wrong} ${e instanceof EnginePocketLMError}`;
  }
}

export async function engine(): Promise<void> {
  await initWasm();
  await initWasm(new URL("https://cdn.example/pocketlm/pkg/pocketlm_bg.wasm"));
  await initWasm(new Uint8Array(8));
  const report: SupportReport = await supportReport();
  const memory: MemoryUsage = await memoryUsage();
  const urls: string[] = await listCachedModels();
  const cleared: boolean = await clearModelCache();
  const same: ModelCache = engineCache;
  const e = await Engine.load("model.gguf", {
    wasm: "https://cdn.example/pocketlm/pkg/pocketlm_bg.wasm",
    onDeviceLost: (error: PocketLMError) => void error.code,
    onProgress: (p: LoadProgress) => void p.phase,
    context: 512,
    kvDtype: "f32",
    profile: "baseline",
    cache: false,
  });
  // @ts-expect-error the engine runs where it is: no worker option
  await Engine.load("model.gguf", { worker: true });
  const info: ModelInfo = e.info();
  const state: "ready" | "unloaded" | "lost" = e.state;
  const request: EngineRequest = { messages: [{ role: "user", content: "Hi" }], max_tokens: 8, stop: ["\n"], temperature: 0 };
  const tokens: number[] = [];
  const result: Generation = await e.generate(request, { onToken: (_text, id) => tokens.push(id), signal: new AbortController().signal });
  const finish: "stop" | "length" | "abort" = result.finishReason;
  const ids: number[] = e.tokenize(result.text, false);
  e.simulateDeviceLoss();
  await e.unload();
  const handle = createHandler((reply) => postMessage(reply));
  await handle({ id: 1, op: "memory" });
  out.textContent = `${report.supported} ${memory.gpuBytes} ${urls} ${cleared} ${same === PocketLM.cache} ${info.eos} ${state} ${finish} ${ids} ${result.fullRowReads}`;
}
