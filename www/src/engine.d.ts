// Types of `pocketlm/engine`: the engine in this realm (inside a worker or a service worker).
import type { CreateEmbeddingResponse, EmbeddingCreateParams, ResponseFormat, Tool, ToolChoice, LoadOptions, MemoryUsage, ModelCache, ModelInfo, ModelSource, PocketLMError, SupportReport } from "./index.js";

export { PocketLMError } from "./index.js";

export function initWasm(wasm?: string | URL | Response | BufferSource | WebAssembly.Module, threads?: number): Promise<unknown>;
export function supportReport(): Promise<SupportReport>;
/** This realm's memory as PocketLM sees it: wasm memory, GPU buffers held, JS heap. */
export function memoryUsage(): Promise<MemoryUsage>;
export function listCachedModels(): Promise<string[]>;
export function clearModelCache(): Promise<boolean>;
/** The model files this origin keeps, and its storage (the same object as `PocketLM.cache`). */
export const cache: ModelCache;

/** The engine's own result (the OpenAI shapes are made by the PocketLM class). */
export interface Generation {
  text: string;
  tokens: number[];
  finishReason: "stop" | "length" | "abort";
  promptTokens: number;
  cachedTokens: number;
  completionTokens: number;
  prefillMs: number;
  decodeMs: number;
  /** Tokens whose draw read the whole row of logits back: on WebGPU only for `logprobs` of a
   * token outside the GPU's 64 candidates; on the CPU backend, draws the candidates do not
   * decide. */
  fullRowReads: number;
  /** Tokens drawn on the GPU from a top-k above 64 or a top-p / min-p set reaching past the 64
   * candidates. */
  nucleusDraws: number;
  /** With a response format: the host time of its token masks (computed while the GPU runs). */
  masks?: { count: number; meanMs: number; maxMs: number };
  /** With `logprobs`: each token's, with `top` alternatives. */
  logprobs?: EngineLogprob[];
  /** With tools: the calls the reply made (`text` is then what came before them). */
  toolCalls?: { id: string; type: "function"; function: { name: string; arguments: string } }[];
  /** With tools: why the reply's call text did not parse. */
  toolCallError?: string;
}

export interface EngineLogprob {
  id: number;
  token: string;
  bytes: number[];
  logprob: number;
  top: { id: number; token: string; bytes: number[]; logprob: number }[];
}

export interface EngineRequest {
  messages?: { role: string; content: string }[];
  prompt?: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  seed?: number;
  stop?: string[];
  frequency_penalty?: number;
  presence_penalty?: number;
  repetition_penalty?: number;
  response_format?: ResponseFormat;
  logit_bias?: Record<string, number>;
  logprobs?: boolean | number;
  top_logprobs?: number;
  tools?: Tool[];
  tool_choice?: ToolChoice;
}

export class Engine {
  static load(
    source: ModelSource,
    options?: Omit<LoadOptions, "worker"> & { wasm?: string | URL; onDeviceLost?: (error: PocketLMError) => void },
  ): Promise<Engine>;
  readonly state: "ready" | "unloaded" | "lost";
  info(): ModelInfo;
  generate(
    request: EngineRequest,
    options?: { onToken?: (text: string, tokenId: number, logprobs?: EngineLogprob) => void; signal?: AbortSignal },
  ): Promise<Generation>;
  /** OpenAI's embeddings with a sentence-embedding model (see PocketLM.embeddings.create). */
  embed(request: Omit<EmbeddingCreateParams, "signal">): Promise<CreateEmbeddingResponse>;
  tokenize(text: string, addSpecial?: boolean): number[];
  unload(): Promise<void>;
  simulateDeviceLoss(): void;
}

/** The engine's side of the package's worker protocol. */
export function createHandler(post: (reply: unknown) => void): (message: unknown) => Promise<void>;
