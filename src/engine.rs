//! A model ready to talk: weights and KV cache on the GPU, its tokenizer and chat template, the
//! step graphs, and the generation loop — prefill, then one token per step through the sampler
//! and the stop conditions, streamed as text. The same code runs natively and in wasm.
//!
//! **Prefix reuse.** The engine remembers which tokens' keys and values are in the KV cache. A new
//! prompt that starts with them (the next turn of a chat: the conversation so far, then the new
//! message) prefills only what follows.
//!
//! **What is read back.** Sampling runs on the GPU ([`SamplingPlan`]): penalties are applied to
//! the logits there, greedy is an argmax, plain temperature sampling a Gumbel-max draw, and
//! truncation (top-k, top-p, min-p) a Gumbel-max draw among the tokens it keeps, which radix
//! selects by count and by softmax mass find without sorting ([`crate::kernels::Nucleus`],
//! counted in [`Generation::nucleus_draws`]): 8 bytes read back. Log probabilities add the
//! best [`CANDIDATES`] logits and the row's softmax statistics (520 bytes), and the whole row
//! for a token outside them (counted in [`Generation::full_row_reads`]). With
//! [`GenerateOptions::gpu_nucleus`] off (and on the CPU backend) the candidates decide a
//! truncated draw on the CPU where they can, and the whole row where they cannot.
//!
//! **Host and GPU overlapped.** With penalties off (and no grammar or log probabilities), the
//! next step's input needs nothing from the host: each decode step copies its picked id into the
//! token ids of the graph the next step runs on, and the next step is submitted before this one
//! is read back, so the host records step N+1 while the GPU runs step N. A stop the host sees
//! in token N (stop string, end of turn, the callback) wastes the step run ahead; its token is
//! never shown and its KV row lies past the cached prefix. Nothing runs ahead past `max_tokens`
//! or the context. The tokens are the sequential path's ([`GenerateOptions::pipeline`]).

use std::collections::BTreeMap;

use crate::cpu::{CpuContext, CpuDecoder, HostTensor};
use crate::error::{Error, Result};
use crate::formats::ModelFiles;
use crate::gpu::{DType, GpuContext};
use crate::kernels::{self, KvCache};
use crate::load::LoadedModelFiles;
use crate::model::{Decoder, Graph, ModelConfig, PendingPick, Readout, StepInput, StepOutput};
use crate::sample::{
    logprobs_from_candidates, logprobs_from_row, Draw, Sampler, SamplingDefaults, SamplingParams,
    SamplingPlan, StopCriteria, StopReason, StopStream, TokenLogprobs, MAX_TOP_LOGPROBS,
};
use crate::text::tools::{self, ToolRequest, ToolSyntax};
use crate::text::{
    ChatMessage, ChatTemplate, Constraint, GrammarVocab, MaskStats, ResponseFormat, Tokenizer,
};

/// How many of the best logits the GPU selects per step for the sampler.
pub const CANDIDATES: usize = 64;

/// The context used when the caller does not choose: the model's own, up to this many positions.
pub const DEFAULT_CONTEXT: usize = 4096;

/// The largest prefill step; longer prompts are prefilled in steps of this many tokens.
pub const PREFILL_CHUNK: usize = 128;

/// The step sizes WebGPU has graphs for: powers of two up to [`PREFILL_CHUNK`]. A step's linear
/// layers are sized for its graph (attention and the KV-cache writes take the step's own tokens),
/// so a prompt is cut into the largest steps that fit it exactly (37 tokens: 32 + 4 + 1), except
/// where one larger graph costs its GEMM no more than those steps do (see [`plan_step`]); the
/// steps before the last do not wait for the GPU. The CPU backend has no graphs and takes any
/// step up to [`PREFILL_CHUNK`]: a prompt runs in as few steps as it can (37 tokens: one), and
/// every step reads each weight once for all its rows.
const STEP_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, PREFILL_CHUNK];

/// Step graphs cover the sequence up to 256, 1024, 4096, … positions (at most the context), built
/// when first needed: attention launches work for every position a graph covers, so a short chat
/// in a long context does not pay for the whole context.
const FIRST_SPAN: usize = 256;

/// How to set up an [`Engine`].
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Positions in the KV cache (prompt plus reply). `None`: the model's trained context, at
    /// most [`DEFAULT_CONTEXT`].
    pub context: Option<usize>,
    /// The KV cache's element type on WebGPU; `None`: f16 (on both profiles).
    pub kv_dtype: Option<DType>,
    /// Sliding-window layers keep every position of the context instead of a ring of their
    /// window and a step ([`crate::model::kv_slots`]): more memory, and a cached prefix is
    /// always reusable (with the ring, a prompt that parts from the cached tokens more than
    /// [`PREFILL_CHUNK`] positions before the previous generation's end is prefilled from the
    /// start: a regenerated long reply, say).
    pub full_window_cache: bool,
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    /// The most tokens to generate; `None`: until a stop condition or the context is full.
    pub max_tokens: Option<usize>,
    /// Strings that end the reply (not included in it).
    pub stop: Vec<String>,
    /// Go on past end-of-turn tokens (benchmarks: a fixed number of tokens).
    pub ignore_eos: bool,
    /// Overlap the host and the GPU where the next step's input does not need the host (any
    /// sampling drawn on the GPU, penalties off): each decode step is submitted before the
    /// previous one is read back, its token copied into the step's input on the GPU. The output
    /// is the same either way; off, every step waits for the previous one's token (for
    /// comparisons and benchmarks). Default: on.
    pub pipeline: bool,
    /// Draw truncated samples (top-k, top-p, min-p) on the GPU ([`crate::kernels::Nucleus`]);
    /// off, the GPU's [`CANDIDATES`] decide the draw on the CPU where they can and the whole
    /// row read back where they cannot, and such steps do not overlap (for comparisons and
    /// benchmarks). Both draw from the same distribution, not the same token for a seed.
    /// Default: on.
    pub gpu_nucleus: bool,
    /// What the reply must be (JSON under a schema, a grammar, a regex); `None`: free text.
    pub response_format: Option<ResponseFormat>,
    /// Report each token's log probability and this many alternatives (at most
    /// [`MAX_TOP_LOGPROBS`]); `None`: none. Greedy and temperature-only steps then also read
    /// the GPU's candidates (520 bytes instead of 8) and do not overlap host and GPU.
    pub logprobs: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            sampling: SamplingParams::default(),
            max_tokens: Some(256),
            stop: Vec::new(),
            ignore_eos: false,
            pipeline: true,
            gpu_nucleus: true,
            response_format: None,
            logprobs: None,
        }
    }
}

/// Why a generation ended, in OpenAI's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop string appeared.
    Stop,
    /// `max_tokens` were generated, or the context is full.
    Length,
    /// The caller stopped it.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// One generated token, as it is streamed.
#[derive(Clone, Debug)]
pub struct TokenEvent<'a> {
    pub token: u32,
    /// The text that may be shown now (possibly empty: a character split across tokens, or text
    /// held back because it could be the start of a stop string).
    pub text: &'a str,
    /// The token's log probabilities, when the generation asked for them.
    pub logprobs: Option<&'a TokenLogprobs>,
}

/// Whether to go on after a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What a generation produced, with its counts and timings.
#[derive(Clone, Debug)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the previous generation.
    pub cached_tokens: usize,
    /// Time to the first token (prefill and its sampling), milliseconds.
    pub prefill_ms: f64,
    /// Time of the remaining tokens, milliseconds.
    pub decode_ms: f64,
    /// Tokens whose draw (or log probabilities) read the whole row of logits back: on WebGPU,
    /// log probabilities of a token outside the [`CANDIDATES`]; on the CPU backend, every
    /// draw the candidates do not decide.
    pub full_row_reads: usize,
    /// Tokens drawn on the GPU from what top-k, top-p and min-p keep
    /// ([`crate::kernels::Nucleus`]): every truncated draw on WebGPU, except where log
    /// probabilities were asked and the candidates decided it.
    pub nucleus_draws: usize,
    /// With a response format: the host time of its token masks (computed while the GPU runs
    /// each step's forward pass).
    pub masks: Option<MaskStats>,
    /// With `logprobs` asked for: each token's log probability and alternatives, in order.
    pub logprobs: Vec<TokenLogprobs>,
}

impl Generation {
    /// Generated tokens per second after the first.
    pub fn decode_tokens_per_s(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1);
        if n == 0 || self.decode_ms <= 0.0 {
            0.0
        } else {
            n as f64 * 1000.0 / self.decode_ms
        }
    }
}

/// Milliseconds since an arbitrary start, natively and in wasm.
pub fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
    }
}

/// Where an engine's model runs, as its caller holds it: `&gpu` or `&cpu` both convert.
#[derive(Clone, Copy)]
pub enum Device<'a> {
    Gpu(&'a GpuContext),
    Cpu(&'a CpuContext),
}

impl<'a> From<&'a GpuContext> for Device<'a> {
    fn from(ctx: &'a GpuContext) -> Self {
        Device::Gpu(ctx)
    }
}

impl<'a> From<&'a CpuContext> for Device<'a> {
    fn from(cpu: &'a CpuContext) -> Self {
        Device::Cpu(cpu)
    }
}

/// The forward pass of an engine: the GPU decoder with its step graphs built so far, for (step
/// size, positions covered), or the CPU decoder.
enum Backend {
    Gpu {
        model: Box<Decoder>,
        graphs: Vec<Graph>,
    },
    Cpu(Box<CpuDecoder>),
}

/// The backend and the device of a step must match.
fn wrong_device(backend: &str) -> Error {
    Error::InvalidRequest(format!(
        "this model was loaded for the {backend} backend; generate with the same device"
    ))
}

/// What a model's files say beyond its weights: its configuration, tokenizer, chat template,
/// end-of-turn ids and sampling defaults.
struct Description {
    name: String,
    config: ModelConfig,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    eos: Vec<u32>,
    defaults: SamplingDefaults,
    context: usize,
}

impl Description {
    fn read(
        files: &ModelFiles,
        companions: &BTreeMap<String, String>,
        options: &EngineOptions,
    ) -> Result<Description> {
        // The model's own name where it has one (GGUF `general.name`), else its format.
        let name = files
            .gguf_metadata()
            .and_then(|m| m.string("general.name").ok().map(str::to_string))
            .unwrap_or_else(|| {
                let summary = files.summary().to_string();
                summary
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
        let mut extra_eos = Vec::new();
        let mut defaults = SamplingDefaults::default();
        let (config, tokenizer, template) = match files.gguf_metadata() {
            Some(meta) => {
                defaults = SamplingDefaults::from_gguf(meta);
                let config = ModelConfig::from_gguf(meta, files)?;
                let tokenizer = Tokenizer::from_gguf(meta)?;
                let template = optional_template(ChatTemplate::from_gguf(meta))?;
                (config, tokenizer, template)
            }
            None => {
                let text = |f: &str| companions.get(f).map(String::as_str);
                let config_json = text("config.json").ok_or_else(|| Error::Config {
                    source_name: name.clone(),
                    detail: "a safetensors model needs its config.json".into(),
                })?;
                let config = ModelConfig::from_hf_json(config_json, "config.json")?;
                let tokenizer =
                    Tokenizer::from_json_str(text("tokenizer.json").ok_or_else(|| {
                        Error::Tokenizer {
                            detail: format!("'{name}' came without a tokenizer.json"),
                        }
                    })?)?;
                let template = optional_template(ChatTemplate::from_hf_folder(text))?;
                for f in ["config.json", "generation_config.json"] {
                    if let Some(json) = text(f) {
                        extra_eos.extend(eos_ids_of_json(json));
                    }
                }
                if let Some(json) = text("generation_config.json") {
                    defaults = SamplingDefaults::from_generation_config(json);
                }
                (config, tokenizer, template)
            }
        };
        if tokenizer.vocab_size() > config.vocab {
            return Err(Error::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: config.vocab,
            });
        }
        let context = match options.context {
            Some(n) if n < 2 => {
                return Err(Error::InvalidRequest(
                    "the context must hold at least 2 positions".into(),
                ))
            }
            Some(n) => n,
            None => config.max_positions.clamp(2, DEFAULT_CONTEXT),
        };
        let mut eos = tokenizer.eos();
        eos.extend(extra_eos);
        eos.sort_unstable();
        eos.dedup();
        Ok(Description {
            name,
            config,
            tokenizer,
            template,
            eos,
            defaults,
            context,
        })
    }
}

/// A loaded model with everything generation needs.
pub struct Engine {
    backend: Backend,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    /// The step sizes that fit the context: [`STEP_SIZES`] on WebGPU, every size up to
    /// [`PREFILL_CHUNK`] on the CPU backend.
    sizes: Vec<usize>,
    /// Rows of the prefill GEMM's tiles where steps of more than
    /// [`kernels::SMALL_M_MAX_ROWS`] tokens run it (WebGPU with the kernels made for GPUs):
    /// a step may then take a larger graph than its tokens (see [`plan_step`]).
    gemm_tile: Option<usize>,
    /// The tokens whose keys and values are in the KV cache, at positions 0.. in order.
    cached: Vec<u32>,
    /// The highest end of a step since the cache was last filled from position 0: sliding-window
    /// layers keep a ring of positions, which a later prompt may find overwritten there
    /// (`kv_reusable`).
    written: usize,
    eos: Vec<u32>,
    name: String,
    /// The vocabulary as constrained decoding needs it, built on the first constrained request.
    grammar: Option<GrammarVocab>,
    /// The model's own sampling defaults (`generation_config.json`, GGUF `general.sampling.*`).
    defaults: SamplingDefaults,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("context", &self.context())
            .field("cached_tokens", &self.cached.len())
            .finish()
    }
}

impl Engine {
    /// Builds an engine from a model in GPU memory: its configuration, tokenizer and chat template
    /// come from the GGUF metadata, or from the companion files of a safetensors checkpoint
    /// (`config.json`, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`, and
    /// `chat_template.jinja` or `chat_template.json` where the template is kept there).
    pub async fn new(
        ctx: &GpuContext,
        loaded: LoadedModelFiles,
        options: &EngineOptions,
    ) -> Result<Engine> {
        let d = Description::read(&loaded.files, &loaded.companions, options)?;
        let kv_dtype = options
            .kv_dtype
            .unwrap_or_else(|| KvCache::default_dtype(ctx));
        let context = d.context;
        let model = Decoder::with_max_step(
            ctx,
            d.config.clone(),
            loaded.tensors,
            context,
            kv_dtype,
            ring_step(options),
        )
        .await?;
        // The decode step of short sequences, built now so loading compiles its kernels.
        let first = model
            .graph_with(ctx, 1, span_for(1, context), CANDIDATES, false)
            .await?;
        let backend = Backend::Gpu {
            model: Box::new(model),
            graphs: vec![first],
        };
        let gemm_tile = (!ctx.capabilities().cpu).then_some(kernels::MATMUL_TILE_ROWS);
        Ok(Engine::with_backend(backend, d, gemm_tile))
    }

    /// Builds an engine whose model runs on the CPU backend, from its tensors in host memory
    /// (a load into a [`CpuContext`]); otherwise as [`Engine::new`] (the KV cache f16 unless
    /// `options.kv_dtype` says f32).
    pub fn new_cpu(
        _cpu: &CpuContext,
        loaded: LoadedModelFiles<HostTensor>,
        options: &EngineOptions,
    ) -> Result<Engine> {
        let d = Description::read(&loaded.files, &loaded.companions, options)?;
        let model = CpuDecoder::with_max_step(
            d.config.clone(),
            loaded.tensors,
            d.context,
            options.kv_dtype.unwrap_or(DType::F16),
            ring_step(options),
        )?;
        Ok(Engine::with_backend(Backend::Cpu(Box::new(model)), d, None))
    }

    fn with_backend(backend: Backend, d: Description, gemm_tile: Option<usize>) -> Engine {
        let sizes: Vec<usize> = match backend {
            Backend::Cpu(_) => (1..=PREFILL_CHUNK).collect(),
            Backend::Gpu { .. } => STEP_SIZES.to_vec(),
        };
        let sizes = sizes.into_iter().filter(|&s| s < d.context).collect();
        Engine {
            backend,
            tokenizer: d.tokenizer,
            template: d.template,
            sizes,
            gemm_tile,
            cached: Vec::new(),
            written: 0,
            eos: d.eos,
            name: d.name,
            grammar: None,
            defaults: d.defaults,
        }
    }

    /// Which backend runs the model: `"webgpu"` or `"cpu"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Gpu { .. } => "webgpu",
            Backend::Cpu(_) => "cpu",
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match &self.backend {
            Backend::Gpu { model, .. } => &model.config,
            Backend::Cpu(model) => &model.config,
        }
    }

    /// Decode dispatches per layer (see [`Decoder`]); empty on the CPU backend.
    pub fn dispatches_per_layer(&self) -> Vec<usize> {
        match &self.backend {
            Backend::Gpu { model, .. } => model.dispatches_per_layer(),
            Backend::Cpu(_) => Vec::new(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The model's description (its file and format).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Positions in the KV cache: prompt plus reply.
    pub fn context(&self) -> usize {
        match &self.backend {
            Backend::Gpu { model, .. } => model.context(),
            Backend::Cpu(model) => model.context(),
        }
    }

    /// Memory of the weights, and of the KV cache (with the RoPE table), in bytes: GPU memory,
    /// or host memory on the CPU backend (its KV cache as filled so far).
    pub fn gpu_bytes(&self) -> (u64, u64) {
        match &self.backend {
            Backend::Gpu { model, .. } => model.gpu_bytes(),
            Backend::Cpu(model) => model.host_bytes(),
        }
    }

    /// The token ids that end a turn.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    /// Tokens whose KV entries the next generation may reuse.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// The dispatches of a decode step of a sequence up to 256 positions long, in order, the
    /// selection of candidates included (for profiling).
    pub fn decode_dispatches(&self) -> Vec<crate::gpu::Dispatch> {
        match &self.backend {
            Backend::Gpu { graphs, .. } => graphs[0].all_dispatches(),
            Backend::Cpu(_) => Vec::new(),
        }
    }

    /// The dispatches of the built graph that runs prefill steps of `tokens` tokens (the one
    /// for the longest sequence, where several are built), in order; none where no such graph
    /// is built yet, or on the CPU backend (for profiling).
    pub fn step_dispatches(&self, tokens: usize) -> Vec<crate::gpu::Dispatch> {
        let Backend::Gpu { graphs, .. } = &self.backend else {
            return Vec::new();
        };
        let n = graph_size(&self.sizes, tokens);
        graphs
            .iter()
            .filter(|g| g.step.max_tokens() == n)
            .max_by_key(|g| g.step.max_positions())
            .map(|g| g.all_dispatches())
            .unwrap_or_default()
    }

    /// Forgets the KV cache's contents: the next prompt is prefilled from the start.
    pub fn reset(&mut self) {
        self.cached.clear();
    }

    /// Frees the GPU memory of the weights and the KV cache; the engine is unusable afterwards.
    pub fn destroy(&mut self) {
        self.cached.clear();
        match &mut self.backend {
            Backend::Gpu { model, .. } => model.destroy(),
            Backend::Cpu(model) => model.clear_cache(),
        }
    }

    /// The token ids of a conversation rendered with the model's chat template, ending with the
    /// header of the assistant's turn. Special tokens in the rendered text are recognised; no
    /// BOS is added beyond what the template writes (as transformers' `apply_chat_template`).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.chat_prompt_with(messages, &serde_json::Value::Null)
    }

    /// [`Engine::chat_prompt`] with extra template variables (`chat_template_kwargs`, e.g.
    /// `{"enable_thinking": false}` for Qwen3 and SmolLM3), a JSON object or null.
    pub fn chat_prompt_with(
        &self,
        messages: &[ChatMessage],
        kwargs: &serde_json::Value,
    ) -> Result<Vec<u32>> {
        Ok(self.chat_prompt_tools(messages, kwargs, None)?.0)
    }

    /// [`Engine::chat_prompt_with`] with a request's tools, given to the template the way its
    /// model expects them (see [`crate::text::tools`]). Also returns the reply's format when
    /// the tool choice requires a call (the call syntax around the functions' schemas).
    pub fn chat_prompt_tools(
        &self,
        messages: &[ChatMessage],
        kwargs: &serde_json::Value,
        tools: Option<&ToolRequest>,
    ) -> Result<(Vec<u32>, Option<ResponseFormat>)> {
        if messages.is_empty() {
            return Err(Error::InvalidRequest("the message list is empty".into()));
        }
        let template = self
            .template
            .as_ref()
            .ok_or_else(|| Error::MissingChatTemplate {
                source_name: self.name.clone(),
                detail: String::new(),
            })?;
        let syntax = template.tool_syntax();
        let (messages, extra, definitions) = tools::prepare(syntax, messages, tools, kwargs)?;
        let text = template.render_tools(&messages, true, &extra, definitions.as_ref())?;
        let format = match tools {
            Some(t) => tools::required_format(syntax, t, |text| self.tokenizer.special_id(text))?,
            None => None,
        };
        Ok((self.tokenizer.encode(&text, false)?, format))
    }

    /// How this model writes tool calls (from its chat template; none: taught the Hermes way).
    pub fn tool_syntax(&self) -> ToolSyntax {
        self.template
            .as_ref()
            .map_or(ToolSyntax::Taught, ChatTemplate::tool_syntax)
    }

    /// A reply's text and tool calls, read from its tokens with special tokens written out (a
    /// call may open with one); end-of-turn tokens are left out.
    pub fn parse_tool_reply(&self, tokens: &[u32]) -> Result<tools::ParsedReply> {
        let body: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| !self.eos.contains(t))
            .collect();
        let text = self.tokenizer.decode(&body, false)?;
        Ok(tools::parse_reply(self.tool_syntax(), &text))
    }

    /// The tokens of each step a prompt of `tokens` tokens is prefilled in (from an empty
    /// cache), in order: on WebGPU mostly the largest of [`STEP_SIZES`] that fits what is left
    /// each time ([`plan_step`] says when a step takes fewer tokens than its graph's size,
    /// [`graph_size`]), on the CPU backend steps of [`PREFILL_CHUNK`] and one of the rest.
    pub fn prefill_steps(&self, tokens: usize) -> Vec<usize> {
        let mut steps = Vec::new();
        let mut left = tokens;
        while left > 0 {
            let n = self.next_step(left);
            steps.push(n);
            left -= n;
        }
        steps
    }

    /// How many of `remaining` prompt tokens the next step takes.
    fn next_step(&self, remaining: usize) -> usize {
        plan_step(&self.sizes, self.gemm_tile, remaining)
    }

    /// The token ids of a plain-text prompt, with BOS as the model defines.
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, true)
    }

    /// Generates a reply to `prompt` (token ids), calling `on_token` after every token with the
    /// text that may be shown; `on_token` returning [`Flow::Stop`] ends the generation with
    /// [`FinishReason::Abort`] (the engine stays usable).
    ///
    /// `device` is the context the model was loaded for: a [`GpuContext`] or a [`CpuContext`].
    pub async fn generate<'d>(
        &mut self,
        device: impl Into<Device<'d>>,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> Flow,
    ) -> Result<Generation> {
        let result = self
            .generate_inner(device.into(), prompt, options, on_token)
            .await;
        if result.is_err() {
            // A failed step may have left the cache half-written.
            self.cached.clear();
        }
        result
    }

    async fn generate_inner(
        &mut self,
        device: Device<'_>,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> Flow,
    ) -> Result<Generation> {
        let context = self.context();
        if prompt.is_empty() {
            return Err(Error::InvalidRequest("the prompt is empty".into()));
        }
        if prompt.len() >= context {
            return Err(Error::ContextOverflow {
                prompt_tokens: prompt.len(),
                context,
            });
        }
        if options.max_tokens == Some(0) {
            return Err(Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let gpu = match (&self.backend, device) {
            (Backend::Gpu { .. }, Device::Gpu(ctx)) => Some(ctx),
            (Backend::Cpu(_), Device::Cpu(_)) => None,
            (Backend::Gpu { .. }, Device::Cpu(_)) => return Err(wrong_device("WebGPU")),
            (Backend::Cpu(_), Device::Gpu(_)) => return Err(wrong_device("CPU")),
        };
        let vocab = self.config().vocab;
        if let Some(&(t, _)) = options
            .sampling
            .logit_bias
            .iter()
            .find(|(t, _)| *t as usize >= vocab)
        {
            return Err(Error::InvalidRequest(format!(
                "logit_bias: token {t} is outside the model's vocabulary of {vocab}"
            )));
        }
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let mut stop = StopStream::new(StopCriteria {
            eos_ids: if options.ignore_eos {
                Vec::new()
            } else {
                self.eos.clone()
            },
            stop_strings: options.stop.clone(),
            max_tokens: options.max_tokens,
        })?;
        sampler.accept(prompt);
        let plan = sampler.params().plan(CANDIDATES, vocab);
        let mut constraint = match &options.response_format {
            Some(format) => Some(self.grammar_vocab()?.constraint(format)?),
            None => None,
        };
        let mut full_row_reads = 0;
        let mut nucleus_draws = 0;

        let start = now_ms();
        // Reuse the cached prefix; at least the last prompt token is run again, for its logits.
        // A sliding-window layer's ring may no longer hold the window before it: then start
        // over.
        let mut reuse = common_prefix(&self.cached, prompt).min(prompt.len() - 1);
        let reusable = match &self.backend {
            Backend::Gpu { model, .. } => model.kv_reusable(reuse, self.written),
            Backend::Cpu(model) => model.kv_reusable(reuse, self.written),
        };
        if !reusable {
            reuse = 0;
        }
        if reuse == 0 {
            self.written = 0;
        }
        self.cached.truncate(reuse);
        let mut pos = reuse;
        let mut token = 0;
        // The log probabilities of `token`, when asked for.
        let mut token_lp: Option<TokenLogprobs> = None;
        let want_lp = options.logprobs.map(|n| n.min(MAX_TOP_LOGPROBS));
        while pos < prompt.len() {
            let n = self.next_step(prompt.len() - pos);
            let chunk = &prompt[pos..pos + n];
            if pos + n == prompt.len() {
                let pick = self
                    .step_and_pick(
                        device,
                        chunk,
                        pos,
                        &mut sampler,
                        plan,
                        constraint.as_mut(),
                        (want_lp, options.gpu_nucleus),
                    )
                    .await?;
                token = pick.token;
                token_lp = pick.logprobs;
                full_row_reads += usize::from(pick.full_row);
                nucleus_draws += usize::from(pick.nucleus);
            } else {
                self.run_step(device, chunk, pos, Readout::Nothing, None)
                    .await?;
            }
            self.cached.extend_from_slice(chunk);
            pos += n;
        }

        // Greedy, plain temperature and (with the GPU's nucleus) truncated picks need nothing
        // from the host to start the next step, so each decode step is submitted before the
        // previous one is read back (see `submit_pick`); penalties need the window with the
        // previous token, and candidates or whole rows finish the draw on the CPU: those wait
        // for every token.
        let truncating = matches!(plan, SamplingPlan::Candidates | SamplingPlan::FullRow);
        let pipelined = options.pipeline
            && gpu.is_some()
            && (!truncating || options.gpu_nucleus)
            && !sampler.params().penalties_on()
            && constraint.is_none()
            && want_lp.is_none();
        // Whether, with the step at `at` submitted and `shown` tokens shown, the step after it
        // may be needed: it is submitted ahead only then, so that running into the context or
        // `max_tokens` wastes nothing (a stop string, end of turn or abort wastes one step).
        let ahead_ok = |at: usize, shown: usize| {
            at + 1 < context && options.max_tokens.is_none_or(|m| shown + 1 < m)
        };
        // The step at `pos` when it was submitted ahead of the token before it being read.
        let mut ahead: Option<PendingPick<'_>> = None;

        let mut detok = self.tokenizer.decode_stream(true);
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut logprobs = Vec::new();
        let mut first_token_at = None;
        let finish_reason = loop {
            first_token_at.get_or_insert_with(now_ms);
            tokens.push(token);
            if let Some(lp) = token_lp.take() {
                logprobs.push(lp);
            }
            let piece = if self.eos.contains(&token) && !options.ignore_eos {
                String::new()
            } else {
                detok.push(token)?
            };
            let mut step = stop.push(token, &piece);
            if step.stop.is_some() && !matches!(step.stop, Some(StopReason::Eos(_))) {
                // Bytes of a character the tokens so far leave unfinished.
                step.text.push_str(&detok.flush()?);
            }
            text.push_str(&step.text);
            let flow = on_token(TokenEvent {
                token,
                text: &step.text,
                // Every token has its entry when they are asked for.
                logprobs: want_lp.and(logprobs.last()),
            });
            match step.stop {
                Some(StopReason::MaxTokens) => break FinishReason::Length,
                Some(_) => break FinishReason::Stop,
                None => {}
            }
            if flow == Flow::Stop {
                break FinishReason::Abort;
            }
            // A grammar that allows nothing more ends the reply as an end of turn would.
            let finished = match constraint.as_mut() {
                Some(c) => {
                    c.accept(token)?;
                    c.is_done()
                }
                None => false,
            };
            if pos >= context || finished {
                // Show what was held back and end.
                let mut rest = stop.finish();
                rest.push_str(&detok.flush()?);
                if !rest.is_empty() {
                    text.push_str(&rest);
                    on_token(TokenEvent {
                        token,
                        text: &rest,
                        logprobs: None,
                    });
                }
                break if finished {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                };
            }
            let next = if let (true, Some(ctx)) = (pipelined, gpu) {
                let shown = tokens.len();
                let current = match ahead.take() {
                    Some(p) => p,
                    None => {
                        let input = StepInput::Host(std::slice::from_ref(&token));
                        let feed = ahead_ok(pos, shown);
                        self.submit_pick(ctx, input, pos, feed, &mut sampler, plan)
                            .await?
                    }
                };
                if ahead_ok(pos, shown) {
                    let feed = ahead_ok(pos + 1, shown + 1);
                    let p = self
                        .submit_pick(ctx, StepInput::Gpu, pos + 1, feed, &mut sampler, plan)
                        .await?;
                    ahead = Some(p);
                }
                nucleus_draws += usize::from(truncating);
                sampler.accept_picked(current.token().await?)
            } else {
                let pick = self
                    .step_and_pick(
                        device,
                        &[token],
                        pos,
                        &mut sampler,
                        plan,
                        constraint.as_mut(),
                        (want_lp, options.gpu_nucleus),
                    )
                    .await?;
                full_row_reads += usize::from(pick.full_row);
                nucleus_draws += usize::from(pick.nucleus);
                token_lp = pick.logprobs;
                pick.token
            };
            self.cached.push(token);
            token = next;
            pos += 1;
        };
        // A step submitted ahead of a stop: wait for it (its staging buffer goes back to the
        // ring, its errors surface) and drop its token, which is never shown. Its KV row lies
        // past `cached`, so the next prompt overwrites it.
        if let Some(p) = ahead.take() {
            p.token().await?;
        }
        let first = first_token_at.unwrap_or(start);
        Ok(Generation {
            text,
            tokens,
            finish_reason,
            prompt_tokens: prompt.len(),
            cached_tokens: reuse,
            prefill_ms: first - start,
            decode_ms: now_ms() - first,
            full_row_reads,
            nucleus_draws,
            masks: constraint.map(|c| c.stats),
            logprobs,
        })
    }

    /// Runs a step of `tokens` at `pos` on graph `g` and picks the next token under `plan`:
    /// on the GPU, or from its candidates, or (when they do not decide the draw) from the whole
    /// row, read back after the step. With a `constraint`, only a token its grammar allows
    /// (the mask computed while the GPU runs the forward pass). Returns the token and whether
    /// the whole row was read.
    #[allow(clippy::too_many_arguments)]
    async fn step_and_pick(
        &mut self,
        device: Device<'_>,
        tokens: &[u32],
        pos: usize,
        sampler: &mut Sampler,
        plan: SamplingPlan,
        constraint: Option<&mut Constraint>,
        (logprobs, gpu_nucleus): (Option<usize>, bool),
    ) -> Result<Pick> {
        let penalties = sampler.penalty_list();
        // A truncating draw runs on the GPU (the nucleus); off, the candidates decide it where
        // they can and the row read back where they cannot.
        let gpu_nucleus = gpu_nucleus && matches!(device, Device::Gpu(_));
        let (nucleus, draw) = gpu_pick(sampler, plan, gpu_nucleus, self.config().vocab);
        let readout = Readout::Sample {
            plan,
            draw,
            penalties: &penalties,
            biases: &sampler.params().logit_bias,
            with_candidates: logprobs.is_some(),
            nucleus,
        };
        let (out, g) = self
            .run_step(device, tokens, pos, readout, constraint)
            .await?;
        let vocab = self.config().vocab;
        // The token, and what its log probabilities can come from.
        let (token, mut row, seen) = match out {
            StepOutput::Token(t) => (sampler.accept_picked(t), None, None),
            StepOutput::TokenAndCandidates {
                token,
                candidates,
                stats,
            } => (
                sampler.accept_picked(token),
                None,
                Some((candidates, stats)),
            ),
            StepOutput::Candidates { candidates, stats } => {
                match sampler.sample_gpu_candidates(&candidates, stats, vocab)? {
                    Some(t) => (t, None, Some((candidates, stats))),
                    None => {
                        let row = self.read_logits(device, g, tokens.len()).await?;
                        (sampler.sample_penalized_logits(&row)?, Some(row), None)
                    }
                }
            }
            StepOutput::Logits(row) => (sampler.sample_penalized_logits(&row)?, Some(row), None),
            StepOutput::Nothing => {
                return Err(Error::Readback("a sampling step read nothing back".into()))
            }
        };
        let logprobs = match logprobs {
            None => None,
            Some(top) => {
                let known = seen.as_ref().and_then(|(candidates, stats)| {
                    logprobs_from_candidates(token, candidates, *stats, top)
                });
                match known {
                    Some(lp) => Some(lp),
                    None => {
                        // A token drawn from outside the candidates: its logit is in the row.
                        if row.is_none() {
                            row = Some(self.read_logits(device, g, tokens.len()).await?);
                        }
                        row.as_deref().map(|r| logprobs_from_row(token, r, top))
                    }
                }
            }
        };
        Ok(Pick {
            token,
            full_row: row.is_some(),
            // A nucleus readout always gives the token the GPU drew.
            nucleus: nucleus.is_some(),
            logprobs,
        })
    }

    /// Submits the decode step of one token at `pos` (from the host, or already on the GPU)
    /// whose token the GPU picks under `plan` (greedy or Gumbel, penalties off), without waiting
    /// for it; with `feed`, the pick is also copied into the token ids of the graph the step at
    /// `pos + 1` runs on (a different graph when `pos + 1` starts a longer span), so that step
    /// can be submitted before this one is read back.
    async fn submit_pick<'c>(
        &mut self,
        ctx: &'c GpuContext,
        input: StepInput<'_>,
        pos: usize,
        feed: bool,
        sampler: &mut Sampler,
        plan: SamplingPlan,
    ) -> Result<PendingPick<'c>> {
        let context = self.context();
        self.written = self.written.max(pos + 1);
        let Backend::Gpu { model, graphs } = &mut self.backend else {
            return Err(wrong_device("CPU"));
        };
        let g = graph_for(model, graphs, ctx, 1, pos + 1, context).await?;
        let feed = if feed {
            let next = graph_for(model, graphs, ctx, 1, pos + 2, context).await?;
            Some(graphs[next].ids().clone())
        } else {
            None
        };
        // A truncating plan draws from the nucleus (the pipeline runs one only with
        // `gpu_nucleus`).
        let (nucleus, draw) = gpu_pick(sampler, plan, true, model.config.vocab);
        if nucleus.is_some() {
            model.prepare_nucleus(ctx, &mut graphs[g]).await?;
        }
        model.submit_pick(
            ctx,
            &mut graphs[g],
            input,
            pos,
            (plan, nucleus),
            draw,
            &sampler.params().logit_bias,
            feed.as_ref(),
        )
    }

    /// The model's sampling defaults: what a request that leaves a sampling field out gets
    /// (apply them to a request with [`SamplingDefaults::apply`] before parsing it).
    pub fn sampling_defaults(&self) -> &SamplingDefaults {
        &self.defaults
    }

    /// The vocabulary for constrained decoding, indexed on first use (a few hundred
    /// milliseconds for a large vocabulary) and kept.
    pub fn grammar_vocab(&mut self) -> Result<GrammarVocab> {
        if let Some(g) = &self.grammar {
            return Ok(g.clone());
        }
        let g = GrammarVocab::new(&self.tokenizer, self.config().vocab, &self.eos)?;
        self.grammar = Some(g.clone());
        Ok(g)
    }

    /// Runs a step of `tokens` at `pos` on the backend (with `constraint`, the pick restricted to
    /// what its grammar allows) and returns what `readout` asks, with the index of the GPU graph
    /// it ran on.
    async fn run_step(
        &mut self,
        device: Device<'_>,
        tokens: &[u32],
        pos: usize,
        readout: Readout<'_>,
        constraint: Option<&mut Constraint>,
    ) -> Result<(StepOutput, usize)> {
        let context = self.context();
        self.written = self.written.max(pos + tokens.len());
        let rows = graph_size(&self.sizes, tokens.len());
        match (&mut self.backend, device) {
            (Backend::Gpu { model, graphs }, Device::Gpu(ctx)) => {
                let end = pos + tokens.len();
                let g = graph_for(model, graphs, ctx, rows, end, context).await?;
                let graph = &mut graphs[g];
                let out = match constraint {
                    Some(c) => {
                        model
                            .step_masked(ctx, graph, tokens, pos, readout, || c.mask())
                            .await?
                    }
                    None => model.step(ctx, graph, tokens, pos, readout).await?,
                };
                Ok((out, g))
            }
            (Backend::Cpu(model), Device::Cpu(cpu)) => {
                let mask = constraint.map(|c| c.mask()).transpose()?;
                let out = model.step(cpu, tokens, pos, readout, mask)?;
                crate::cpu::yield_now().await;
                Ok((out, 0))
            }
            (Backend::Gpu { .. }, _) => Err(wrong_device("WebGPU")),
            (Backend::Cpu(_), _) => Err(wrong_device("CPU")),
        }
    }

    /// The row of logits the last step (of `n` tokens, on graph `g`) picked from.
    async fn read_logits(&self, device: Device<'_>, g: usize, n: usize) -> Result<Vec<f32>> {
        match (&self.backend, device) {
            (Backend::Gpu { model, graphs }, Device::Gpu(ctx)) => {
                model.read_logits(ctx, &graphs[g], n).await
            }
            (Backend::Cpu(model), _) => Ok(model.last_logits()),
            (Backend::Gpu { .. }, _) => Err(wrong_device("WebGPU")),
        }
    }
}

/// The size of the graph a WebGPU step of `n` tokens runs on, of the step sizes `sizes`
/// (ascending): the smallest that holds them (`n` itself for an exact step).
fn graph_size(sizes: &[usize], n: usize) -> usize {
    sizes.iter().copied().find(|&s| s >= n).unwrap_or(n)
}

/// How many of `remaining` prompt tokens the next prefill step takes, with the step sizes
/// `sizes` (ascending); its graph is their [`graph_size`]. The largest size that fits the
/// tokens, each step an exact one; but where steps of more than [`kernels::SMALL_M_MAX_ROWS`]
/// tokens run the GEMM in tiles of `gemm_tile` rows (a step of 32 tokens computes a whole tile of
/// 64 rows, as one of 64 does), all of them, in the smallest size above `remaining`, when its
/// GEMM computes no more tiles than the exact steps' GEMMs together: 40 tokens take one step of
/// the 64-token graph instead of 32 + 8 (one tile either way, and one pass over the weights
/// instead of two), 100 one of 128 instead of 64 + 32 + 4 (two tiles either way, one pass
/// instead of three); 20 stay 16 + 4, whose 16-token step decodes each weight once for its rows
/// and computes no tile. Attention and the KV-cache writes take the step's own tokens, not its
/// graph's size.
fn plan_step(sizes: &[usize], gemm_tile: Option<usize>, remaining: usize) -> usize {
    let exact = |left: usize| sizes.iter().copied().rfind(|&s| s <= left).unwrap_or(1);
    let first = exact(remaining);
    let Some(tile) = gemm_tile.filter(|_| first < remaining) else {
        return first;
    };
    let tiles = |s: usize| {
        if s > kernels::SMALL_M_MAX_ROWS {
            s.div_ceil(tile)
        } else {
            0
        }
    };
    // The larger graph, where the context leaves one and it runs the GEMM.
    let padded = Some(graph_size(sizes, remaining)).filter(|&p| p > remaining && tiles(p) > 0);
    if let Some(padded) = padded {
        let mut split_tiles = 0;
        let mut left = remaining;
        while left > 0 {
            let s = exact(left);
            split_tiles += tiles(s);
            left -= s;
        }
        if tiles(padded) <= split_tiles {
            return remaining;
        }
    }
    first
}

/// How the GPU picks a step's token under `plan`: for a truncating plan with `gpu_nucleus`, what
/// the sampler's top-k (0: off), top-p and min-p keep, for [`crate::kernels::Nucleus`]; and the
/// step's draw, keyed as a Gumbel draw when the nucleus or Gumbel picks.
fn gpu_pick(
    sampler: &mut Sampler,
    plan: SamplingPlan,
    gpu_nucleus: bool,
    vocab: usize,
) -> (Option<(usize, f32, f32)>, Draw) {
    let truncating = matches!(plan, SamplingPlan::Candidates | SamplingPlan::FullRow);
    let nucleus = (gpu_nucleus && truncating).then(|| {
        let p = sampler.params();
        let top_k = if p.top_k < vocab { p.top_k } else { 0 };
        (top_k, p.top_p, p.min_p)
    });
    let keyed = if nucleus.is_some() {
        SamplingPlan::Gumbel
    } else {
        plan
    };
    (nucleus, sampler.gpu_draw(keyed))
}

/// The graph of size `n` (steps of at most `n` tokens) for a step ending at position `end`
/// (exclusive): the one covering the fewest positions, built on first use.
async fn graph_for(
    model: &Decoder,
    graphs: &mut Vec<Graph>,
    ctx: &GpuContext,
    n: usize,
    end: usize,
    context: usize,
) -> Result<usize> {
    let span = span_for(end, context);
    let found = graphs
        .iter()
        .position(|g| g.step.max_tokens() == n && g.step.max_positions() == span);
    if let Some(i) = found {
        return Ok(i);
    }
    let g = model.graph_with(ctx, n, span, CANDIDATES, false).await?;
    graphs.push(g);
    Ok(graphs.len() - 1)
}

/// A step's pick.
struct Pick {
    token: u32,
    /// Whether the whole row of logits was read back.
    full_row: bool,
    /// Whether the token was drawn from the nucleus on the GPU.
    nucleus: bool,
    logprobs: Option<TokenLogprobs>,
}

/// The positions a graph for a sequence of `end` positions covers: [`FIRST_SPAN`] × 4ᵏ, at most
/// the context.
fn span_for(end: usize, context: usize) -> usize {
    let mut span = FIRST_SPAN;
    while span < end {
        span *= 4;
    }
    span.min(context)
}

/// The step bound a decoder's rings are sized for: the engine's longest step, or none (every
/// position kept) with [`EngineOptions::full_window_cache`].
fn ring_step(options: &EngineOptions) -> Option<usize> {
    (!options.full_window_cache).then_some(PREFILL_CHUNK)
}

/// How many leading tokens two sequences share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// What a load for an engine checks in the header of a model's only file before its weights
/// ([`crate::load::LoadOptions::check_header`]): that a GGUF model's configuration and its
/// tokenizer's kind are ones PocketLM runs.
pub fn check_header(header: &crate::load::FileHeader) -> Result<()> {
    match header {
        crate::load::FileHeader::Gguf(h) => {
            ModelConfig::check_gguf_header(h)?;
            Tokenizer::check_gguf(&h.metadata)
        }
        crate::load::FileHeader::Safetensors(_) => Ok(()),
    }
}

/// [`check_header`] for a model given as a file alone, without a folder's companion files: a
/// safetensors file does not say what its model is (its `config.json` does), so it cannot run
/// alone, and says so from its header rather than after its download.
pub fn check_lone_header(header: &crate::load::FileHeader) -> Result<()> {
    match header {
        crate::load::FileHeader::Safetensors(h) => Err(Error::Config {
            source_name: h.file.clone(),
            detail: "a safetensors file cannot run alone: what its model is stands in the \
                     config.json beside it, so load the model's folder (its URL ending in '/', \
                     or its directory)"
                .into(),
        }),
        gguf => check_header(gguf),
    }
}

/// What a load for an engine checks in a model folder's companion files before its weights
/// ([`crate::load::LoadOptions::check_companions`]): that a decoder's `config.json` is one
/// PocketLM runs (an embedding model's folder is described elsewhere and passes, and so does
/// a folder without one, which the engine reports).
pub fn check_companions(companions: &std::collections::BTreeMap<String, String>) -> Result<()> {
    match companions.get("config.json") {
        Some(json) if !crate::model::encoder::is_encoder(companions) => {
            ModelConfig::from_hf_json(json, "config.json").map(|_| ())
        }
        _ => Ok(()),
    }
}

/// A model without a chat template still runs plain prompts; any other error stands.
fn optional_template(t: Result<ChatTemplate>) -> Result<Option<ChatTemplate>> {
    match t {
        Ok(t) => Ok(Some(t)),
        Err(Error::MissingChatTemplate { .. }) | Err(Error::MissingMetadata { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `eos_token_id` of a `config.json` or `generation_config.json`: a number or a list.
fn eos_ids_of_json(json: &str) -> Vec<u32> {
    let v: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    match &v["eos_token_id"] {
        serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|n| n.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_ids_come_as_a_number_or_a_list() {
        assert_eq!(eos_ids_of_json(r#"{"eos_token_id": 2}"#), vec![2]);
        assert_eq!(
            eos_ids_of_json(r#"{"eos_token_id": [128001, 128009]}"#),
            vec![128001, 128009]
        );
        assert!(eos_ids_of_json(r#"{"bos_token_id": 1}"#).is_empty());
        assert!(eos_ids_of_json("not json").is_empty());
    }

    #[test]
    fn spans_grow_by_four_and_stop_at_the_context() {
        assert_eq!(span_for(1, 4096), 256);
        assert_eq!(span_for(256, 4096), 256);
        assert_eq!(span_for(257, 4096), 1024);
        assert_eq!(span_for(1500, 4096), 4096);
        assert_eq!(span_for(10, 64), 64);
        assert_eq!(span_for(5000, 8192), 8192);
    }

    /// Every prompt length up to three chunks, planned step by step as the engine does.
    fn plan(sizes: &[usize], gemm_tile: Option<usize>, tokens: usize) -> Vec<(usize, usize)> {
        let mut steps = Vec::new();
        let mut left = tokens;
        while left > 0 {
            let n = plan_step(sizes, gemm_tile, left);
            let step = (graph_size(sizes, n), n);
            assert!(
                step.1 >= 1 && step.1 <= step.0 && step.1 <= left,
                "{tokens}: {step:?}"
            );
            assert!(sizes.contains(&step.0) || step.0 == 1, "{tokens}: {step:?}");
            steps.push(step);
            left -= step.1;
        }
        steps
    }

    #[test]
    fn webgpu_steps_take_a_larger_graph_only_where_its_gemm_computes_no_more_tiles() {
        let tile = Some(kernels::MATMUL_TILE_ROWS);
        let exact = |n: usize| vec![(n, n)];
        // The kernels for CPU adapters: exact steps, the largest that fits each time.
        assert_eq!(plan(&STEP_SIZES, None, 100), [(64, 64), (32, 32), (4, 4)]);
        assert_eq!(plan(&STEP_SIZES, None, 40), [(32, 32), (8, 8)]);
        // Up to 32 tokens as before: a 16-token step computes no GEMM tile.
        assert_eq!(plan(&STEP_SIZES, tile, 20), [(16, 16), (4, 4)]);
        assert_eq!(plan(&STEP_SIZES, tile, 31).len(), 5);
        assert_eq!(plan(&STEP_SIZES, tile, 32), exact(32));
        // 33..63: one tile, as the 32-token step of 32 + … computes.
        for n in 33..64 {
            assert_eq!(plan(&STEP_SIZES, tile, n), [(64, n)]);
        }
        // 65..95 keep 64 + the rest (two tiles would be one more); 96..127 take two tiles, as
        // 64 + 32 + … compute.
        assert_eq!(plan(&STEP_SIZES, tile, 80), [(64, 64), (16, 16)]);
        assert_eq!(plan(&STEP_SIZES, tile, 95)[0], (64, 64));
        for n in 96..128 {
            assert_eq!(plan(&STEP_SIZES, tile, n), [(128, n)]);
        }
        // Longer prompts: chunks of 128, then the rest by the same rule.
        assert_eq!(
            plan(&STEP_SIZES, tile, 300),
            [(128, 128), (128, 128), (64, 44)]
        );
        // Only the sizes the context leaves.
        assert_eq!(plan(&STEP_SIZES[..6], tile, 40), [(32, 32), (8, 8)]);
        // No step ever computes more tiles than the exact steps would.
        let tiles = |steps: &[(usize, usize)]| -> usize {
            steps
                .iter()
                .filter(|s| s.0 > kernels::SMALL_M_MAX_ROWS)
                .map(|s| s.0.div_ceil(kernels::MATMUL_TILE_ROWS))
                .sum()
        };
        for n in 1..=3 * PREFILL_CHUNK {
            let padded = plan(&STEP_SIZES, tile, n);
            let exact = plan(&STEP_SIZES, None, n);
            assert!(
                tiles(&padded) <= tiles(&exact),
                "{n}: {padded:?} against {exact:?}"
            );
            assert!(
                padded.len() <= exact.len(),
                "{n}: {padded:?} against {exact:?}"
            );
        }
    }

    #[test]
    fn common_prefix_counts_shared_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
