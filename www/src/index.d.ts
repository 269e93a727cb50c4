// Types of the `pocketlm` package.

/** Every error PocketLM reports. `code` is stable (see README.md for the list). */
export class PocketLMError extends Error {
  constructor(code: PocketLMErrorCode | string, message: string, options?: { cause?: unknown; data?: Record<string, string | number | boolean | null> });
  readonly name: "PocketLMError";
  readonly code: PocketLMErrorCode | string;
  /** code "quota": the bytes the load still had to store. */
  readonly bytesNeeded?: number;
  /** code "quota": the bytes free for this origin (quota − usage), or null where the browser
   * refused a write while its estimate said there was room. */
  readonly bytesAvailable?: number | null;
}

export type PocketLMErrorCode =
  // raised in JavaScript
  | "invalid_request" | "unloaded" | "device_lost" | "aborted" | "worker" | "wasm_load" | "internal" | "quota" | "not_supported"
  // GPU and device
  | "no_adapter" | "device_request" | "profile_unavailable" | "unknown_profile" | "too_large" | "out_of_memory" | "shader_compile"
  | "gpu" | "readback" | "shape_mismatch" | "unsupported_dtype" | "invalid_tensor"
  // downloading and reading model files
  | "http" | "io" | "integrity" | "file_truncated" | "bad_magic" | "unsupported_format_version" | "header_limit"
  | "invalid_header" | "duplicate_name" | "unknown_tensor_type" | "tensor_out_of_bounds" | "tensor_layout"
  | "missing_metadata" | "metadata_type" | "split_model" | "shard_index"
  // the model
  | "unsupported_architecture" | "config" | "tokenizer" | "vocab_mismatch" | "chat_template"
  | "chat_template_rejected" | "missing_chat_template"
  // generation
  | "invalid_sampling_params" | "no_candidates" | "context_overflow";

export interface SupportReport {
  /** Whether PocketLM runs here (on WebGPU, or on the CPU backend: WebAssembly is enough). */
  supported: boolean;
  /** Why not, in words; null when supported. */
  reason: string | null;
  /** The backend `backend: "auto"` picks here: WebGPU on a hardware adapter, the CPU backend when
   * there is no adapter or only a software one (SwiftShader, llvmpipe, a fallback adapter). */
  backend: "webgpu" | "cpu" | null;
  /** Why that backend, in words. */
  backendReason: string | null;
  /** Whether this browser's WebAssembly has relaxed SIMD, so that the CPU backend loads its
   * relaxed-SIMD build (fused multiply-adds in prefill and batch products). */
  relaxedSimd: boolean;
  adapter?: { vendor: string; architecture: string; description: string; isFallbackAdapter: boolean };
  features?: string[];
  limits?: { maxBufferSize: number; maxStorageBufferBindingSize: number };
}

export interface LoadProgress {
  /** "download": bytes arriving from the network into the cache; "load": the engine reading the
   * model (from the cache, or from the source given) onto the GPU. */
  phase: "download" | "load";
  /** The file being downloaded (its URL or name). */
  file: string;
  fileIndex: number;
  files: number;
  bytesDone: number;
  bytesTotal: number | null;
  /** Bytes of all files together. */
  allDone: number;
  allTotal: number | null;
}

export type ModelSource = string | URL | Array<string | URL> | Blob | File | FileList | ArrayBuffer | ArrayBufferView | ReadableStream<Uint8Array>;

export interface LoadOptions {
  onProgress?: (progress: LoadProgress) => void;
  signal?: AbortSignal;
  /** "sha256-<base64>" (Subresource Integrity form) or 64 hex digits; an array with one per file
   * (null: not checked). A mismatch rejects with code "integrity" and drops the cached copy. */
  integrity?: string | Array<string | null>;
  /** Keep downloaded files in the Cache API so that a second load makes no request (default true).
   * Files are checked against the quota before the download, resume where a previous download
   * stopped, and are served only once complete. */
  cache?: boolean;
  /** Positions in the KV cache (default: the model's own, up to 4096). */
  context?: number;
  /** The KV cache's element type on either backend, default "f16" (half the memory of "f32"). */
  kvDtype?: "f16" | "f32";
  /** true: sliding-window layers (Gemma 2 and 3, Mistral, Phi-3) keep every position of the
   * context in the KV cache. Default false: each keeps a ring of its window and one step (128
   * positions), which takes a fraction of the memory; a prompt that parts from the cached
   * tokens more than 128 positions before the previous reply's end (a long reply regenerated,
   * say) is then prefilled from its start instead of from where it parts. */
  fullWindowCache?: boolean;
  /** Where the model runs (default "auto": WebGPU on a hardware adapter, the CPU backend —
   * WebAssembly SIMD — when there is no adapter or only a software one). */
  backend?: "auto" | "webgpu" | "cpu";
  /** GPU feature profile (default "auto"). */
  profile?: "auto" | "full" | "baseline";
  /** The CPU backend's threads, the engine's own included (default: one per logical core, at most
   * 16). Threads need a cross-origin isolated page; elsewhere one thread runs and
   * `info.threadsNote` says why. */
  threads?: number;
  /** false: the CPU backend runs its SIMD128 build even where the browser has relaxed SIMD
   * (default true: the relaxed-SIMD build there, faster prefill; not in a service worker, which
   * cannot import it). Relaxed SIMD's fused
   * multiply-add rounds once on CPUs with FMA and twice on others, so its sums may differ in the
   * last bits from one CPU to another; the SIMD128 build's are the same on every CPU. The first
   * load in a JavaScript realm decides for that realm (each `worker: true` load has its own). */
  relaxedSimd?: boolean;
  /** Files downloaded at once (default 4). */
  concurrency?: number;
  /** true (default where Worker exists): run the engine in a module Web Worker made by the package
   * (a same-origin blob: worker importing src/worker.js when the package comes from another origin;
   * a CSP that refuses blob: workers then rejects with code "worker"); false: in this realm (inside
   * a worker or an extension's service worker); or a Worker you started on `pocketlm/worker`. */
  worker?: boolean | Worker;
}

/** A model file in PocketLM's cache. */
export interface CachedFile {
  url: string;
  /** Bytes held: the whole file when complete, so far when a download was cut short. */
  bytes: number;
  /** false: a download that stopped before the end (the next load resumes it; never served). */
  complete: boolean;
  /** The file's size, for an incomplete download (null when the server did not say). */
  total?: number | null;
}

export interface StorageEstimate {
  /** Bytes this origin uses (all storage, not only PocketLM's). */
  usage: number | null;
  quota: number | null;
  /** quota − usage. Chromium reports a fixed quota to pages, so writes may be refused earlier. */
  available: number | null;
}

/** The model files this origin keeps (Cache API), and its storage. URLs may be relative. */
export interface ModelCache {
  /** Whether a complete, length-checked copy of the file is cached (a load would not download it). */
  has(url: string | URL): Promise<boolean>;
  /** Deletes the file's cached copy and any partial download of it; resolves to whether there was one. */
  delete(url: string | URL): Promise<boolean>;
  /** The complete files, and the downloads in progress, with their sizes. */
  list(): Promise<CachedFile[]>;
  /** Deletes every model file, partial downloads too; resolves to whether there were any. */
  clear(): Promise<boolean>;
  /** `navigator.storage.estimate()`. */
  estimate(): Promise<StorageEstimate>;
  /** `navigator.storage.persist()`: asks the browser not to evict this origin's storage; resolves to
   * whether it will not. Pages only (code "not_supported" in workers). */
  persist(): Promise<boolean>;
  /** `navigator.storage.persisted()`. */
  persisted(): Promise<boolean>;
}

export interface EmbeddingCreateParams {
  /** One text, several, one input's token ids, or several inputs' token ids. */
  input: string | string[] | number[] | number[][];
  /** Keep the first `dimensions` values (Matryoshka), normalized again where the model normalizes. */
  dimensions?: number;
  /** "float" (default): arrays of numbers; "base64": the base64 of little-endian float32 bytes. */
  encoding_format?: "float" | "base64";
  /** Inputs longer than the model's `maxTokens` are cut (default true); false rejects them with
   * code "context_overflow". */
  truncate?: boolean;
  signal?: AbortSignal;
}

export interface CreateEmbeddingResponse<E = number[] | string> {
  object: "list";
  data: Array<{ object: "embedding"; index: number; embedding: E }>;
  model: string;
  usage: { prompt_tokens: number; total_tokens: number };
}

export interface ModelInfo {
  name: string;
  architecture: string;
  /** "chat" (a decoder: chat and completions) or "embedding" (a sentence-embedding encoder:
   * `embeddings.create`). An embedding model's info has
   * `dimensions`, `maxTokens`, `pooling` and `normalized` instead of the chat fields. */
  kind: "chat" | "embedding";
  /** Embedding models: the vector's length. */
  dimensions?: number;
  /** Embedding models: the longest input in tokens (special tokens included). */
  maxTokens?: number;
  /** Embedding models: how token vectors become one. */
  pooling?: "mean" | "cls" | "last";
  /** Embedding models: whether vectors are L2-normalized. */
  normalized?: boolean;
  /** Where the model runs, and why (`backend: "auto"`'s choice, or "asked for"). */
  backend: "webgpu" | "cpu";
  backendReason: string;
  /** The CPU backend's description ("CPU (4 threads, relaxed SIMD)"); null on WebGPU. */
  device: string | null;
  /** Whether the CPU backend runs its relaxed-SIMD build; null on WebGPU. */
  relaxedSimd: boolean | null;
  /** The CPU backend's threads (the engine's own included); null on WebGPU. More than one needs a
   * cross-origin isolated page (COOP/COEP), where the package loads its threaded build. */
  threads: number | null;
  /** Why fewer threads run than were asked for (e.g. the page is not cross-origin isolated), or
   * null. */
  threadsNote: string | null;
  vocab: number;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  context: number;
  trainedContext: number;
  weightBytes: number;
  kvBytes: number;
  chatTemplate: boolean;
  eos: number[];
  /** The model's own sampling defaults (from its generation_config.json or GGUF
   * `general.sampling.*`), as request fields; a request that leaves a field out gets these. */
  samplingDefaults: { temperature?: number; top_k?: number; top_p?: number; min_p?: number; repetition_penalty?: number };
  /** The WebGPU device profile; null on the CPU backend. */
  profile: "full" | "baseline" | null;
}

export type TextPart = { type: "text"; text: string };

export interface ChatMessage {
  /** `developer` is given to the template as `system`. */
  role: "system" | "developer" | "user" | "assistant" | "tool" | (string & {});
  /** May be null on an assistant turn that only calls tools. */
  content: string | TextPart[] | null;
  /** An assistant turn's calls, as a reply gave them (`arguments` as JSON text). */
  tool_calls?: ToolCall[];
  /** A tool turn: the call it answers. */
  tool_call_id?: string;
  name?: string;
}

/** A function the model may call: `parameters` is its arguments' JSON schema. */
export interface Tool {
  type: "function";
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

/** A call in a reply: `arguments` is JSON text. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** `auto` (the default with tools), `none`, `required` (one or more calls), or a named function;
 * `required` and a named function constrain the reply to a call whose arguments follow the
 * function's schema. */
export type ToolChoice = "none" | "auto" | "required" | { type: "function"; function: { name: string } };

export interface SamplingOptions {
  max_tokens?: number;
  /** Alias of max_tokens. */
  max_completion_tokens?: number;
  /** Default 1; 0 is greedy. */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  stop?: string | string[];
  frequency_penalty?: number;
  presence_penalty?: number;
  repetition_penalty?: number;
  /** What the reply must be; decoding is constrained so that it always parses (see
   * {@link ResponseFormat}). A schema or grammar that cannot be used rejects with
   * `invalid_request`. */
  response_format?: ResponseFormat;
  /** Added to these tokens' logits (token id → bias in [-100, 100]) on the GPU. */
  logit_bias?: Record<string, number>;
  /** Chat: `true` to get each token's log probability (with `top_logprobs` alternatives, 0–20);
   * completions: the number of alternatives (0–20). */
  logprobs?: boolean | number;
  top_logprobs?: number;
  /** Stops the generation within one token; finish_reason is then "abort". */
  signal?: AbortSignal;
  /** Streaming: `{include_usage: true}` gives every chunk `usage: null` and adds one last chunk
   * with no choices that carries the usage, as OpenAI does; without it the finishing chunk carries
   * the usage. */
  stream_options?: { include_usage?: boolean } | null;
  /** Only 1. */
  n?: 1;
  /** Accepted and ignored (the loaded model answers). */
  model?: string;
}

/** The reply's format. OpenAI's `text`, `json_object` and `json_schema`; WebLLM's
 * `json_object` with `schema` (the schema as JSON text); and PocketLM's `grammar` (a Lark grammar
 * as llguidance reads it, or a GBNF one as llama.cpp reads it, with `root ::= …`) and `regex`
 * (the whole reply matches). JSON replies are written on one line with `", "` and `": "`. */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object"; schema?: string | Record<string, unknown> }
  | { type: "json_schema"; json_schema: { name?: string; description?: string; schema: Record<string, unknown> | boolean; strict?: boolean | null } }
  | { type: "grammar"; grammar: string }
  | { type: "regex"; pattern: string };

/** A token's log probability (natural log, under the logits the draw saw: after penalties, the
 * logit bias and a grammar's mask, before temperature) and its most likely alternatives. */
export interface TokenLogprob {
  token: string;
  logprob: number;
  /** The token's UTF-8 bytes (a token may hold part of a character). */
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

export interface ChatLogprobs {
  content: TokenLogprob[];
  refusal: null;
}

/** The legacy completions' form. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** `tool_calls`: the reply is one or more calls (chat with tools). */
export type FinishReason = "stop" | "length" | "abort" | "tool_calls";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** Memory of one JavaScript realm (a page or a worker) as PocketLM sees it. */
export interface MemoryUsage {
  /** Bytes of wasm linear memory: its high-water mark (it never shrinks). */
  wasmBytes: number;
  /** GPU buffers PocketLM holds in this realm, over every device, counted by its own allocator. */
  gpuBuffers: number;
  gpuBytes: number;
  /** The JS heap in use where the browser reports it (Chromium's `performance.memory`), else null. */
  jsHeapBytes: number | null;
}

/** PocketLM's own numbers about a generation. */
export interface Timings {
  token_ids: number[];
  prefill_ms: number;
  decode_ms: number;
  cached_tokens: number;
  /** Draws that read the whole row of logits back instead of sampling on the GPU. */
  full_row_reads: number;
  /** Draws from a top-k above 64 or a top-p / min-p set larger than the GPU's 64 candidates,
   * made on the GPU. */
  nucleus_draws: number;
  /** With a response format: its token masks' count and host time (mean and worst, ms). */
  grammar_masks: { count: number; mean_ms: number; max_ms: number } | null;
  /** With tools: why the reply's call text did not parse (the raw text is then the content). */
  tool_call_error: string | null;
  tokens_per_second: number | null;
}

/** The OpenAI SDK's second argument of `create`: its `signal` aborts like the body's. */
export interface RequestOptions {
  signal?: AbortSignal;
}

export interface ChatCompletionRequest extends SamplingOptions {
  messages: ChatMessage[];
  stream?: boolean;
  /** Extra chat-template variables, e.g. `{ enable_thinking: false }` for Qwen3 and SmolLM3. */
  chat_template_kwargs?: Record<string, unknown>;
  /** Functions the model may call, given to its chat template the way the model expects. */
  tools?: Tool[];
  tool_choice?: ToolChoice;
  parallel_tool_calls?: boolean;
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  system_fingerprint: null;
  choices: [{ index: 0; message: { role: "assistant"; content: string | null; refusal: null; tool_calls?: ToolCall[] }; logprobs: ChatLogprobs | null; finish_reason: FinishReason }];
  usage: Usage;
  pocketlm: Timings;
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  system_fingerprint: null;
  /** One choice; none on the usage chunk of `stream_options: {include_usage: true}`. */
  choices: { index: 0; delta: { role?: "assistant"; content?: string; tool_calls?: (ToolCall & { index: number })[] }; logprobs: ChatLogprobs | null; finish_reason: FinishReason | null; token_id?: number }[];
  /** On the finishing chunk, or (with `stream_options.include_usage`) null on every chunk but the
   * last, which has no choices. */
  usage?: Usage | null;
  pocketlm?: Timings;
}

export interface CompletionRequest extends SamplingOptions {
  prompt: string;
  stream?: boolean;
}

export interface Completion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  system_fingerprint: null;
  choices: [CompletionChoice];
  usage: Usage;
  pocketlm: Timings;
}

export interface CompletionChoice {
  index: 0;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: FinishReason | null;
  token_id?: number;
}

/** A piece of a streamed completion (OpenAI names it `Completion` too). */
export interface CompletionChunk {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  system_fingerprint: null;
  /** One choice; none on the usage chunk of `stream_options: {include_usage: true}`. */
  choices: CompletionChoice[];
  /** As in {@link ChatCompletionChunk}. */
  usage?: Usage | null;
  pocketlm?: Timings;
}

export interface Stream<T> extends AsyncIterable<T> {
  /** Aborting it stops the generation (as the request's signal would). */
  controller: AbortController;
  /** The whole text, once the stream ends. */
  text(): Promise<string>;
}

export class PocketLM extends EventTarget {
  private constructor();
  static isSupported(): Promise<boolean>;
  static supportReport(): Promise<SupportReport>;
  /** This realm's memory as PocketLM sees it (models loaded with `worker: false` run here). */
  static memoryUsage(): Promise<MemoryUsage>;
  static load(source: ModelSource, options?: LoadOptions): Promise<PocketLM>;
  /** The model files this origin keeps, and its storage. */
  static readonly cache: ModelCache;
  /** The URLs of the complete cached files (`cache.list()` has their sizes). */
  static cachedModels(): Promise<string[]>;
  static clearCache(): Promise<boolean>;

  readonly info: ModelInfo;
  readonly state: "ready" | "unloaded" | "lost" | "crashed";
  readonly chat: {
    readonly completions: {
      create(request: ChatCompletionRequest & { stream: true }, options?: RequestOptions): Promise<Stream<ChatCompletionChunk>>;
      create(request: ChatCompletionRequest & { stream?: false }, options?: RequestOptions): Promise<ChatCompletion>;
      create(request: ChatCompletionRequest, options?: RequestOptions): Promise<ChatCompletion | Stream<ChatCompletionChunk>>;
    };
  };
  readonly completions: {
    create(request: CompletionRequest & { stream: true }, options?: RequestOptions): Promise<Stream<CompletionChunk>>;
    create(request: CompletionRequest & { stream?: false }, options?: RequestOptions): Promise<Completion>;
    create(request: CompletionRequest, options?: RequestOptions): Promise<Completion | Stream<CompletionChunk>>;
  };
  /** OpenAI's embeddings, with a sentence-embedding model (`info.kind === "embedding"`); a chat
   * model rejects with code "invalid_request", and an embedding model's chat methods likewise. */
  readonly embeddings: {
    create(request: EmbeddingCreateParams & { encoding_format: "base64" }, options?: RequestOptions): Promise<CreateEmbeddingResponse<string>>;
    create(request: EmbeddingCreateParams & { encoding_format?: "float" }, options?: RequestOptions): Promise<CreateEmbeddingResponse<number[]>>;
    create(request: EmbeddingCreateParams, options?: RequestOptions): Promise<CreateEmbeddingResponse<number[] | string>>;
  };
  /** Plain text completion, no chat template. */
  complete(prompt: string, options?: SamplingOptions): Promise<string>;
  tokenize(text: string, addSpecial?: boolean): Promise<number[]>;
  /** The memory of the realm running this model (its worker, or the page with `worker: false`). */
  memoryUsage(): Promise<MemoryUsage>;
  /** Frees the GPU memory and the worker; later calls reject with code "unloaded". */
  unload(): Promise<void>;
  /** Test hook: destroys the GPU device as a lost device would be. */
  _simulateDeviceLoss(): Promise<void>;

  addEventListener(type: "error", listener: (event: ErrorEvent & { error: PocketLMError }) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: "unload", listener: (event: Event) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

export default PocketLM;
