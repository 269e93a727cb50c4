//! The fuzz targets' entry points (fuzz/fuzz_targets/*.rs), shared with the regression tests
//! that replay every input the fuzzers found (tests/fuzz_regressions.rs), so a committed crash
//! runs through exactly the code the fuzzer ran. Each entry takes arbitrary bytes and may return
//! any typed error, but must not panic, hang or allocate without bound; what it asserts are the
//! invariants of a successful result.

use crate::formats::gguf::{GgufTensor, MetaArray, MetaValue};
use crate::quant::DType;

/// A GGUF v3 file with `metadata` and no tensors: for building hostile metadata in tests and
/// fuzz targets.
pub fn gguf_bytes(metadata: &[(&str, MetaValue)]) -> Vec<u8> {
    gguf_header_bytes(metadata, &[], 32)
}

/// A GGUF v3 header with `metadata` and `tensors` (their offsets as given), padded to
/// `alignment` (which the metadata must state when it is not 32): a model file's header with
/// some of its metadata changed, say ([`hostile_headers`]).
pub fn gguf_header_bytes(
    metadata: &[(&str, MetaValue)],
    tensors: &[GgufTensor],
    alignment: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_str(&mut out, key);
        out.extend_from_slice(&value_type(value).to_le_bytes());
        write_value(&mut out, value);
    }
    for t in tensors {
        write_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    if !tensors.is_empty() {
        out.resize(out.len().next_multiple_of(alignment.max(1)), 0);
    }
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn array_type(a: &MetaArray) -> u32 {
    match a {
        MetaArray::U8(_) => 0,
        MetaArray::I8(_) => 1,
        MetaArray::U16(_) => 2,
        MetaArray::I16(_) => 3,
        MetaArray::U32(_) => 4,
        MetaArray::I32(_) => 5,
        MetaArray::F32(_) => 6,
        MetaArray::Bool(_) => 7,
        MetaArray::String(_) => 8,
        MetaArray::Array(_) => 9,
        MetaArray::U64(_) => 10,
        MetaArray::I64(_) => 11,
        MetaArray::F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => write_str(out, s),
        MetaValue::Array(a) => write_array(out, a),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&array_type(a).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    fn each<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: fn(T) -> [u8; N]) {
        for &x in v {
            out.extend_from_slice(&f(x));
        }
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each(out, v, i8::to_le_bytes),
        MetaArray::U16(v) => each(out, v, u16::to_le_bytes),
        MetaArray::I16(v) => each(out, v, i16::to_le_bytes),
        MetaArray::U32(v) => each(out, v, u32::to_le_bytes),
        MetaArray::I32(v) => each(out, v, i32::to_le_bytes),
        MetaArray::F32(v) => each(out, v, f32::to_le_bytes),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| write_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
        MetaArray::U64(v) => each(out, v, u64::to_le_bytes),
        MetaArray::I64(v) => each(out, v, i64::to_le_bytes),
        MetaArray::F64(v) => each(out, v, f64::to_le_bytes),
    }
}

use crate::formats::GgufHeader;
use crate::text::chat::{ChatMessage, ChatTemplate, MAX_TEMPLATE_OUTPUT_BYTES};
use crate::text::Tokenizer;
use tokenizers::Model;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name, for the regression tests to dispatch on.
pub const TARGETS: &[(&str, Target)] = &[
    ("tokenizer_json", tokenizer_json),
    ("gguf_vocab", gguf_vocab),
    ("chat_template", chat_template),
    ("openai_request", openai_request),
    #[cfg(not(target_arch = "wasm32"))]
    ("cpu_model", cpu_model),
];

/// Text from the fuzzer's bytes for a tokenizer to encode.
fn sample_text(data: &[u8]) -> String {
    String::from_utf8_lossy(&data[..data.len().min(512)]).into_owned()
}

/// What a built tokenizer must do with any text: what `encode` gives, `decode` and the
/// streaming decoder take back.
fn exercise_tokenizer(tok: &Tokenizer, text: &str) {
    for ids in [tok.encode(text, true), tok.encode_plain(text, false)] {
        let Ok(ids) = ids else { continue };
        if let Err(e) = tok.decode(&ids, false) {
            panic!("encode gave {ids:?}, which decode refuses: {e}");
        }
        let mut stream = tok.decode_stream(true);
        for &id in &ids {
            stream.push(id).expect("an id encode gave streams");
        }
        let _ = stream.flush();
    }
}

/// `tokenizer.json` bytes into [`Tokenizer::from_json`].
pub fn tokenizer_json(data: &[u8]) {
    if let Ok(tok) = Tokenizer::from_json(data) {
        let text = sample_text(data);
        exercise_tokenizer(&tok, &text);
        let _ = tok.to_json();
        if let Some(ours) = tok.own_bpe() {
            // The file's BPE as our BPE runs it and as the `tokenizers` crate reads it: the same
            // pieces.
            let theirs = tokenizers::Tokenizer::from_bytes(data)
                .expect("a tokenizer.json our BPE reads, the crate reads");
            assert_eq!(
                ours.tokenize(&text).ok(),
                theirs.get_model().tokenize(&text).ok(),
                "{text:?}"
            );
        }
    }
}

/// A GGUF vocabulary made from the fuzzer's bytes (through a real GGUF file and its parser)
/// into [`Tokenizer::from_gguf`]. Byte 0 picks the model (`gpt2` / `llama` / `bert`), byte 1 the
/// pre-tokenizer, byte 2 the special-token ids; the rest, split at 0xFF, are the tokens, each
/// token's first byte its type and score; `gpt2` merges pair neighbouring tokens.
pub fn gguf_vocab(data: &[u8]) {
    const PRES: &[&str] = &[
        "default",
        "llama-bpe",
        "gpt-2",
        "smollm",
        "qwen2",
        "qwen35",
        "dbrx",
        "bogus",
    ];
    if data.len() < 3 {
        return;
    }
    let (head, rest) = data.split_at(3);
    let model = ["gpt2", "llama", "bert"][usize::from(head[0]) % 3];
    let pre = PRES[head[1] as usize % PRES.len()];
    let pieces: Vec<&[u8]> = rest.split(|&b| b == 0xFF).take(2048).collect();
    let tokens: Vec<String> = pieces
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let types: Vec<i32> = pieces
        .iter()
        .map(|p| p.first().map_or(1, |&b| i32::from(b % 7)))
        .collect();
    let scores: Vec<f32> = pieces
        .iter()
        .map(|p| p.first().map_or(0.0, |&b| -f32::from(b)))
        .collect();
    let merges: Vec<String> = tokens
        .windows(2)
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect();
    let id = |shift: u8| MetaValue::I64(i64::from(head[2] >> shift & 0x0F) - 1);
    let mut meta = vec![
        ("tokenizer.ggml.model", MetaValue::String(model.into())),
        ("tokenizer.ggml.pre", MetaValue::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaArray::I32(types)),
        ),
        (
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(scores)),
        ),
        (
            "tokenizer.ggml.merges",
            MetaValue::Array(MetaArray::String(merges)),
        ),
        ("tokenizer.ggml.bos_token_id", id(0)),
        ("tokenizer.ggml.eos_token_id", id(4)),
    ];
    if head[1] & 0x80 != 0 {
        meta.push(("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false)));
    }
    let bytes = gguf_bytes(&meta);
    let header = GgufHeader::parse_file(&bytes, "fuzz.gguf").expect("a GGUF file we wrote parses");
    if let Ok(tok) = Tokenizer::from_gguf(&header.metadata) {
        let text = sample_text(rest);
        exercise_tokenizer(&tok, &text);
        if let Some(ours) = tok.own_bpe() {
            // PocketLM's BPE gives the pieces of the `tokenizers` crate's BPE (with the merges
            // derived from the scores for SentencePiece), which is what `to_json` writes: on the
            // text as it is and as SentencePiece's normalizer hands it over.
            let bpe = ours
                .to_bpe()
                .expect("a GGUF vocabulary's merges build a BPE");
            let normalized = format!("\u{2581}{}", text.replace(' ', "\u{2581}"));
            for t in [&text, &normalized] {
                assert_eq!(ours.tokenize(t).ok(), bpe.tokenize(t).ok(), "{t:?}");
            }
        }
    }
}

/// The templates of tests/fixtures/templates, which the fuzzer renders with arbitrary messages.
const TEMPLATES: &[&str] = &[
    include_str!("../tests/fixtures/templates/gemma3.jinja"),
    include_str!("../tests/fixtures/templates/llama3.jinja"),
    include_str!("../tests/fixtures/templates/mistral.jinja"),
    include_str!("../tests/fixtures/templates/phi3.jinja"),
    include_str!("../tests/fixtures/templates/phi4-mini.jinja"),
    include_str!("../tests/fixtures/templates/python-compat.jinja"),
    include_str!("../tests/fixtures/templates/qwen2.5.jinja"),
    include_str!("../tests/fixtures/templates/qwen3.jinja"),
    include_str!("../tests/fixtures/templates/smollm2.jinja"),
    include_str!("../tests/fixtures/templates/smollm3.jinja"),
];

/// A chat template rendered with messages from the fuzzer's bytes. Byte 0 picks one of
/// [`TEMPLATES`], or (past them) takes the template's source from the bytes up to the first
/// 0x00. The rest, split at 0x01, are messages (each one's first byte picks its role); a part
/// that is a JSON object is taken as the extra template variables instead.
pub fn chat_template(data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let source: String = match TEMPLATES.get(pick as usize % 16) {
        Some(t) => (*t).to_string(),
        None => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let (src, after) = rest.split_at(end);
            rest = after.get(1..).unwrap_or_default();
            String::from_utf8_lossy(src).into_owned()
        }
    };
    let Ok(template) = ChatTemplate::new("fuzz", &source, "<s>", "</s>") else {
        return;
    };
    const ROLES: &[&str] = &["system", "user", "assistant", "tool", "user", "assistant"];
    let mut messages = Vec::new();
    let mut extra = serde_json::Value::Null;
    for part in rest.split(|&b| b == 1).take(64) {
        let text = String::from_utf8_lossy(part);
        if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&text) {
            extra = v;
            continue;
        }
        let (role, content) = match part.split_first() {
            Some((&r, c)) if (r as usize) < ROLES.len() => {
                (ROLES[r as usize].to_string(), String::from_utf8_lossy(c))
            }
            Some((_, c)) => ("custom".to_string(), String::from_utf8_lossy(c)),
            None => ("user".to_string(), text),
        };
        messages.push(ChatMessage::new(role, content));
    }
    for add_generation_prompt in [false, true] {
        match template.render_with_at(&messages, add_generation_prompt, &extra, 1_721_952_000) {
            Ok(text) => assert!(text.len() <= MAX_TEMPLATE_OUTPUT_BYTES),
            Err(e) => assert!(
                matches!(
                    e.code(),
                    "chat_template" | "chat_template_rejected" | "invalid_request"
                ),
                "untyped template failure: {e}"
            ),
        }
    }
}

/// A chat-completion request as JSON text into [`crate::request::parse_request_json`]: a
/// request it accepts is one the engine can run.
pub fn openai_request(data: &[u8]) {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    match crate::request::parse_request_json(json) {
        Ok((options, prompt)) => {
            assert!(options.max_tokens.is_none_or(|n| n >= 1));
            options
                .sampling
                .validate()
                .expect("accepted sampling is valid");
            if let crate::request::Prompt::Chat(messages, kwargs, _) = prompt {
                assert!(!messages.is_empty() && messages.iter().all(|m| !m.role.is_empty()));
                assert!(kwargs.is_null() || kwargs.is_object());
            }
        }
        Err(e) => assert!(
            matches!(e.code(), "invalid_request" | "invalid_sampling_params"),
            "untyped request failure: {e}"
        ),
    }
}

/// The most bytes of tensor data [`run_model`] puts behind a header: the tiny models' weights
/// fit many times over; a header asking for more is skipped, not run.
#[cfg(not(target_arch = "wasm32"))]
const MODEL_MAX_DATA: u64 = 8 << 20;

/// What [`run_cpu_model`] or [`run_gpu_model`] got to do with a model file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelRun {
    /// Prompts that generated (0 to 2).
    pub generated: usize,
    /// Texts embedded (0 or 1).
    pub embedded: usize,
}

impl std::ops::AddAssign for ModelRun {
    fn add_assign(&mut self, other: ModelRun) {
        self.generated += other.generated;
        self.embedded += other.embedded;
    }
}

/// The fuzz target [`run_cpu_model`] is.
#[cfg(not(target_arch = "wasm32"))]
pub fn cpu_model(data: &[u8]) {
    run_cpu_model(data);
}

/// A whole model file run on the CPU backend, as the package runs one where there is no usable
/// WebGPU: `data` is a GGUF file's header (the seeds are the tiny models' headers: their
/// architectures, hyperparameters, vocabularies and tensor tables), followed here by tensor
/// data of pseudo-random bytes (so some float weights are NaN or infinite) up to what the
/// header's tensors span. The file is loaded from memory with the checks the package makes
/// before a download, then, like `PocketLM.load`, becomes an embedder (an encoder model) or a
/// generator, which embeds a text, or prompts with a text and a chat turn and generates a few
/// greedy tokens. Any step may refuse with a typed error; none may panic, and what runs must
/// keep its invariants (token ids inside the vocabulary, embeddings of the model's width).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_cpu_model(data: &[u8]) -> ModelRun {
    let cpu = crate::cpu::CpuContext::new(Some(1));
    pollster::block_on(run_model(&cpu, data))
}

/// [`run_cpu_model`] on WebGPU: the same file, load and runs through `ctx`'s kernels (whose
/// shaders are specialized by the model's sizes).
#[cfg(not(target_arch = "wasm32"))]
pub fn run_gpu_model(ctx: &crate::gpu::GpuContext, data: &[u8]) -> ModelRun {
    pollster::block_on(run_model(ctx, data))
}

/// The model file a header stands for: the header, its padding, and `end` bytes of
/// splitmix64 of the position (the same bytes for the same header, every run).
#[cfg(not(target_arch = "wasm32"))]
fn model_file(data: &[u8], header_len: u64, end: u64) -> Vec<u8> {
    let mut file = data[..data.len().min(header_len as usize)].to_vec();
    file.resize(header_len as usize, 0);
    file.extend((0..end.div_ceil(8)).flat_map(|i| {
        let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }));
    file.truncate((header_len + end) as usize);
    file
}

/// A device the fuzzed models run on: the CPU backend or WebGPU, each building the engine or
/// the embedder its own way.
#[cfg(not(target_arch = "wasm32"))]
trait RunDevice: crate::load::LoadTarget + Sync
where
    for<'d> &'d Self: Into<crate::engine::Device<'d>>,
{
    async fn engine(
        &self,
        loaded: crate::load::LoadedModelFiles<Self::Tensor>,
        options: &crate::engine::EngineOptions,
    ) -> crate::error::Result<crate::engine::Engine>;
    async fn embedder(
        &self,
        loaded: &mut crate::load::LoadedModelFiles<Self::Tensor>,
    ) -> crate::error::Result<crate::model::encoder::Embedder>;
}

#[cfg(not(target_arch = "wasm32"))]
impl RunDevice for crate::cpu::CpuContext {
    async fn engine(
        &self,
        loaded: crate::load::LoadedModelFiles<Self::Tensor>,
        options: &crate::engine::EngineOptions,
    ) -> crate::error::Result<crate::engine::Engine> {
        crate::engine::Engine::new_cpu(self, loaded, options)
    }
    async fn embedder(
        &self,
        loaded: &mut crate::load::LoadedModelFiles<Self::Tensor>,
    ) -> crate::error::Result<crate::model::encoder::Embedder> {
        crate::model::encoder::Embedder::from_loaded_cpu(loaded, "fuzz")
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl RunDevice for crate::gpu::GpuContext {
    async fn engine(
        &self,
        loaded: crate::load::LoadedModelFiles<Self::Tensor>,
        options: &crate::engine::EngineOptions,
    ) -> crate::error::Result<crate::engine::Engine> {
        crate::engine::Engine::new(self, loaded, options).await
    }
    async fn embedder(
        &self,
        loaded: &mut crate::load::LoadedModelFiles<Self::Tensor>,
    ) -> crate::error::Result<crate::model::encoder::Embedder> {
        crate::model::encoder::Embedder::from_loaded(self, loaded, "fuzz").await
    }
}

/// [`run_cpu_model`] on any device.
#[cfg(not(target_arch = "wasm32"))]
async fn run_model<D: RunDevice>(device: &D, data: &[u8]) -> ModelRun
where
    for<'d> &'d D: Into<crate::engine::Device<'d>>,
{
    use crate::engine::{check_lone_header, EngineOptions, Flow, GenerateOptions};
    use crate::formats::Parsed;
    use crate::load::{load_model, LoadOptions, MemorySource, ModelFile};
    use crate::model::encoder::is_encoder_model;
    use crate::sample::SamplingParams;

    let mut run = ModelRun::default();
    let Ok(Parsed::Complete { header, header_len }) = GgufHeader::parse(data, None, "fuzz.gguf")
    else {
        return run;
    };
    let end = header
        .tensors
        .iter()
        .map(|t| t.offset.saturating_add(t.bytes))
        .max()
        .unwrap_or(0);
    // The padding after the header need not be in `data`; more than that is not a header.
    if end > MODEL_MAX_DATA || header_len > data.len() as u64 + header.alignment {
        return run;
    }
    let check = check_lone_header;
    let opts = LoadOptions {
        check_header: Some(&check as &crate::load::HeaderCheck),
        ..Default::default()
    };
    let files = vec![ModelFile {
        source: MemorySource::new("fuzz.gguf", model_file(data, header_len, end)),
        sha256: None,
    }];
    let Ok(mut loaded) = load_model(device, files, None, 1, opts).await else {
        return run;
    };
    if is_encoder_model(&loaded) {
        let Ok(embedder) = device.embedder(&mut loaded).await else {
            return run;
        };
        let width = embedder.encoder.config().dimensions();
        if let Ok(out) = embedder.embed_texts(device, &["Hello, world"], true).await {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].vector.len(), width);
            run.embedded += 1;
        }
        return run;
    }
    let options = EngineOptions {
        context: Some(64),
        ..Default::default()
    };
    let Ok(mut engine) = device.engine(loaded, &options).await else {
        return run;
    };
    let vocab = engine.config().vocab;
    let generate = GenerateOptions {
        sampling: SamplingParams::greedy(),
        max_tokens: Some(3),
        ignore_eos: true,
        ..Default::default()
    };
    let user = ChatMessage {
        role: "user".into(),
        content: "Hello".into(),
        ..Default::default()
    };
    let prompts = [
        engine.text_prompt("The capital of France is"),
        engine.chat_prompt(&[user]),
    ];
    for prompt in prompts.into_iter().flatten() {
        if prompt.is_empty() || prompt.len() >= engine.context() {
            continue;
        }
        assert!(prompt.iter().all(|&t| (t as usize) < vocab), "{prompt:?}");
        let mut go_on = |_: crate::engine::TokenEvent<'_>| Flow::Continue;
        if let Ok(g) = engine
            .generate(device, &prompt, &generate, &mut go_on)
            .await
        {
            assert!(
                !g.tokens.is_empty() && g.tokens.len() <= 3,
                "{:?}",
                g.tokens
            );
            assert!(
                g.tokens.iter().all(|&t| (t as usize) < vocab),
                "{:?}",
                g.tokens
            );
            run.generated += 1;
        }
    }
    engine.destroy();
    run
}

/// Hostile versions of a GGUF model's header, each with one thing changed, for
/// [`run_cpu_model`] and [`run_gpu_model`]: every metadata value (but the vocabulary's tables)
/// removed or set to the edges of its type (zero, one, small odd numbers, the type's extremes,
/// negative, NaN and infinite floats, the other boolean, empty and unknown strings), and with
/// `tensors`, every tensor removed, given every other weight format, or given other dimensions
/// (transposed, doubled, shortened, zero, a row more, a dimension fewer or more), the data
/// offsets laid out again for the new sizes.
pub fn hostile_headers(file: &[u8], tensors: bool) -> crate::error::Result<Vec<(String, Vec<u8>)>> {
    let header = GgufHeader::parse_file(file, "fuzz.gguf")?;
    let meta: Vec<(&str, MetaValue)> = header
        .metadata
        .iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let align = header.alignment as usize;
    let mut out = Vec::new();
    for (i, (key, value)) in meta.iter().enumerate() {
        if key.starts_with("tokenizer.ggml.") && !key.ends_with("_id") {
            continue;
        }
        let mut m = meta.clone();
        m.remove(i);
        out.push((
            format!("{key} removed"),
            gguf_header_bytes(&m, &header.tensors, align),
        ));
        for edge in edges(value) {
            let mut m = meta.clone();
            m[i].1 = edge.clone();
            let bytes = gguf_header_bytes(&m, &header.tensors, align);
            out.push((format!("{key} = {edge:?}"), bytes));
        }
    }
    if !tensors {
        return Ok(out);
    }
    let mut tables: Vec<(String, Vec<GgufTensor>)> = Vec::new();
    for (i, t) in header.tensors.iter().enumerate() {
        let mut table = header.tensors.clone();
        table.remove(i);
        tables.push((format!("{} removed", t.name), table));
        for d in DType::ALL {
            if d.ggml_id() != t.ggml_type {
                let mut table = header.tensors.clone();
                table[i].ggml_type = d.ggml_id();
                tables.push((format!("{} as {d:?}", t.name), table));
            }
        }
        let dims = &t.dims;
        let mut shapes = vec![dims.iter().rev().copied().collect::<Vec<u64>>()];
        shapes.push([vec![dims[0].saturating_mul(2)], dims[1..].to_vec()].concat());
        shapes.push([vec![dims[0].saturating_sub(32).max(1)], dims[1..].to_vec()].concat());
        shapes.push([vec![0], dims[1..].to_vec()].concat());
        shapes.push([dims.as_slice(), &[1]].concat());
        if dims.len() > 1 {
            shapes.push([&dims[..1], &[dims[1] + 1], &dims[2..]].concat());
            shapes.push(dims[..dims.len() - 1].to_vec());
        }
        for shape in shapes {
            let mut table = header.tensors.clone();
            table[i].dims = shape.clone();
            tables.push((format!("{} of {shape:?}", t.name), table));
        }
    }
    for (what, mut table) in tables {
        let mut offset = 0u64;
        for t in &mut table {
            t.offset = offset;
            let n = t.dims.iter().product::<u64>();
            let bytes = DType::from_ggml_id(t.ggml_type).map_or(4 * n, |d| {
                n.div_ceil(d.block_size() as u64) * d.block_bytes() as u64
            });
            offset += bytes.next_multiple_of(header.alignment);
        }
        out.push((what, gguf_header_bytes(&meta, &table, align)));
    }
    Ok(out)
}

/// What running every [`hostile_headers`] variant of a file gave.
#[derive(Debug, Default)]
pub struct HostileRuns {
    pub cases: usize,
    /// The runs' generations and embeddings, summed.
    pub total: ModelRun,
    /// The variants that panicked, by what was changed.
    pub panics: Vec<String>,
}

/// Runs `run` ([`run_cpu_model`], or [`run_gpu_model`] on a context) on every
/// [`hostile_headers`] variant of `file`, catching and counting panics.
pub fn run_hostile_headers(
    file: &[u8],
    tensors: bool,
    run: &dyn Fn(&[u8]) -> ModelRun,
) -> HostileRuns {
    let mut runs = HostileRuns::default();
    for (what, header) in hostile_headers(file, tensors).expect("a GGUF file") {
        runs.cases += 1;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&header))) {
            Ok(r) => runs.total += r,
            Err(_) => runs.panics.push(what),
        }
    }
    runs
}

/// Hostile versions of a model's `config.json`, each with one value changed: every key at the
/// top level and one level down (`rope_scaling`, a multimodal model's `text_config`) removed,
/// set to null or to the edges of its kind (zero, one, small odd numbers, negative, huge;
/// tiny, huge and negative floats; the other boolean; empty and unknown strings), for the
/// safetensors route into [`crate::model::ModelConfig::from_hf_json`] and the model built
/// from it.
pub fn hostile_configs(config_json: &str) -> crate::error::Result<Vec<(String, String)>> {
    use serde_json::{json, Value};
    let config: Value = serde_json::from_str(config_json)
        .map_err(|e| crate::error::Error::InvalidRequest(format!("config.json: {e}")))?;
    let Some(top) = config.as_object() else {
        return Ok(Vec::new());
    };
    // JSON pointers to every value at the top level and one level down.
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    let mut paths: Vec<(String, String, String)> = Vec::new();
    for (key, value) in top {
        paths.push((String::new(), key.clone(), key.clone()));
        if let Some(inner) = value.as_object() {
            let parent = format!("/{}", esc(key));
            paths.extend(
                inner
                    .keys()
                    .map(|k| (parent.clone(), k.clone(), format!("{key}.{k}"))),
            );
        }
    }
    let mut out = Vec::new();
    for (parent, key, name) in paths {
        let pointer = format!("{parent}/{}", esc(&key));
        let mut values = match &config.pointer(&pointer) {
            Some(Value::Number(n)) if n.is_f64() => {
                [0.0, -1.0, 0.5, 1e-30, 1e30].map(|f| json!(f)).to_vec()
            }
            Some(Value::Number(_)) => [0, 1, 2, 3, 7, 33, -1, 4096, 1 << 31, i64::MAX]
                .map(|i| json!(i))
                .to_vec(),
            Some(Value::Bool(b)) => vec![json!(!b)],
            Some(Value::String(_)) => vec![json!(""), json!("bogus")],
            Some(Value::Array(_) | Value::Object(_)) => vec![json!([]), json!({})],
            Some(Value::Null) | None => vec![json!(0), json!(1.5), json!("bogus")],
        };
        values.push(Value::Null);
        for value in values {
            let label = format!("{name} = {value}");
            let mut c = config.clone();
            if let Some(v) = c.pointer_mut(&pointer) {
                *v = value;
            }
            out.push((label, c.to_string()));
        }
        let mut c = config.clone();
        if let Some(o) = c.pointer_mut(&parent).and_then(Value::as_object_mut) {
            o.remove(&key);
        }
        out.push((format!("{name} removed"), c.to_string()));
    }
    Ok(out)
}

/// The values [`hostile_headers`] gives a metadata entry of `value`'s type.
fn edges(value: &MetaValue) -> Vec<MetaValue> {
    use MetaValue as V;
    match value {
        V::U8(_) => [0, 1, 2, u8::MAX].map(V::U8).to_vec(),
        V::I8(_) => [0, 1, -1, i8::MIN].map(V::I8).to_vec(),
        V::U16(_) => [0, 1, 3, u16::MAX].map(V::U16).to_vec(),
        V::I16(_) => [0, 1, -1, i16::MIN].map(V::I16).to_vec(),
        V::U32(_) => [0, 1, 2, 3, 5, 7, 33, 255, 65535, 1 << 20, u32::MAX]
            .map(V::U32)
            .to_vec(),
        V::I32(_) => [0, 1, 2, 3, -1, -2, 33, 65535, i32::MAX, i32::MIN]
            .map(V::I32)
            .to_vec(),
        V::U64(_) => [0, 1, 2, 3, 33, 1 << 20, u64::MAX].map(V::U64).to_vec(),
        V::I64(_) => [0, 1, -1, 2, 33, i64::MAX, i64::MIN].map(V::I64).to_vec(),
        V::F32(_) => [
            0.0,
            -1.0,
            0.5,
            1e-30,
            1e30,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]
        .map(V::F32)
        .to_vec(),
        V::F64(_) => [0.0, -1.0, f64::NAN, f64::INFINITY].map(V::F64).to_vec(),
        V::Bool(b) => vec![V::Bool(!b)],
        V::String(_) => vec![V::String(String::new()), V::String("bogus".into())],
        V::Array(_) => Vec::new(),
    }
}
