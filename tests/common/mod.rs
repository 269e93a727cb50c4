//! Shared by the native GPU test files: one GPU context per test binary, chosen by the
//! environment (see tests/gpu_kernels.rs), and error assertions.
#![allow(dead_code)]

pub mod gguf_presets;
pub mod quant_fixtures;

use std::sync::OnceLock;

use pocketlm::gpu::{GpuContext, ProfileRequest};

/// The test binary's GPU context: `POCKETLM_TEST_PROFILE` says which profile to request and
/// `POCKETLM_TEST_ADAPTER` which adapter to insist on. No adapter is a failure, never a skip.
pub fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let request = profile_request();
        let ctx = pollster::block_on(GpuContext::new(request))
            .unwrap_or_else(|e| panic!("GPU tests need a WebGPU adapter: {e}"));
        let name = &ctx.adapter_info().name;
        if let Ok(want) = std::env::var("POCKETLM_TEST_ADAPTER") {
            assert!(
                name.to_lowercase().contains(&want.to_lowercase()),
                "expected an adapter named like '{want}' but got '{name}'; check VK_ICD_FILENAMES \
                 and that scripts/setup.sh installed the driver"
            );
        }
        eprintln!("GPU tests run on:\n{}\n", ctx.report());
        ctx
    })
}

/// A context on the same device request that runs the kernels made for GPUs even on a CPU
/// driver (see `Capabilities::cpu`), so both kernel families are tested on every driver.
pub fn gpu_kernels_ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    kernel_family_ctx(&CTX, false)
}

/// The kernels made for GPUs with the prefill GEMM's f16 tiles
/// ([`GpuContext::with_f16_tiles`]): on a device without `shader-f16` (the baseline profile) the
/// request changes nothing, which this checks too.
pub fn f16_tiles_ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = pollster::block_on(GpuContext::new(profile_request()))
            .unwrap()
            .with_cpu_kernels(false)
            .with_f16_tiles(true);
        let caps = ctx.capabilities();
        assert_eq!(caps.f16_tiles, caps.f16, "f16 tiles wherever shader-f16 is");
        ctx
    })
}

/// Whether `ctx` is [`f16_tiles_ctx`].
pub fn is_f16_tiles_ctx(ctx: &GpuContext) -> bool {
    std::ptr::eq(ctx, f16_tiles_ctx())
}

/// The same for the kernels made for CPU adapters, whatever the adapter is.
pub fn cpu_kernels_ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    kernel_family_ctx(&CTX, true)
}

/// The context in `cell`, made on first use with one kernel family forced; [`ctx`] itself where
/// that is already its family, so both share their compiled pipelines (compiling the CPU-adapter
/// kernels is most of these tests' time on CPU drivers).
fn kernel_family_ctx(cell: &'static OnceLock<GpuContext>, cpu: bool) -> &'static GpuContext {
    if ctx().capabilities().cpu == cpu {
        return ctx();
    }
    cell.get_or_init(|| {
        pollster::block_on(GpuContext::new(profile_request()))
            .unwrap()
            .with_cpu_kernels(cpu)
    })
}

/// [`ctx`], or with `gpu_family` [`gpu_kernels_ctx`].
pub fn family(gpu_family: bool) -> &'static GpuContext {
    if gpu_family {
        gpu_kernels_ctx()
    } else {
        ctx()
    }
}

/// The cases of a grid (weight formats × shapes, say) that this run covers for its `i`-th item:
/// all of them, or with `POCKETLM_TEST_GRID=sparse` only the one at `i` modulo their number, so
/// that over the items every case still runs at least once. `make test` gives the second driver
/// (SwiftShader) the sparse grid: lavapipe runs the same WGSL through the whole grid, and the
/// second driver's compiler is there to catch what the first one's lets through, which needs
/// every format's decoder and every kernel shape compiled, not their product.
pub fn grid<T>(i: usize, cases: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut cases: Vec<T> = cases.into_iter().collect();
    if sparse_grid() && !cases.is_empty() {
        let pick = i % cases.len();
        vec![cases.swap_remove(pick)]
    } else {
        cases
    }
}

/// A property test's number of cases for this run: `n`, or a third of it on a sparse grid's run
/// (see [`grid`]), for properties whose cases each compile a new pipeline.
pub fn cases(n: u32) -> u32 {
    if sparse_grid() {
        n.div_ceil(3)
    } else {
        n
    }
}

/// Whether `POCKETLM_TEST_GRID=sparse` (see [`grid`]).
pub fn sparse_grid() -> bool {
    match std::env::var("POCKETLM_TEST_GRID").as_deref() {
        Ok("sparse") => true,
        Ok("full") | Ok("") | Err(_) => false,
        Ok(other) => panic!("POCKETLM_TEST_GRID is full or sparse, not '{other}'"),
    }
}

/// The profile `POCKETLM_TEST_PROFILE` asks for (auto when unset).
pub fn profile_request() -> ProfileRequest {
    std::env::var("POCKETLM_TEST_PROFILE")
        .unwrap_or_default()
        .parse()
        .expect("POCKETLM_TEST_PROFILE is auto, full or baseline")
}

/// Asserts that `r` failed with the error `code` and a message mentioning `needle`.
pub fn expect_err<T: std::fmt::Debug>(r: pocketlm::Result<T>, code: &str, needle: &str) {
    match r {
        Ok(v) => panic!("expected a {code} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.code(), code, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "message '{msg}' should mention '{needle}'"
            );
        }
    }
}

/// Rows `ids` of `table` as the GPU dequantizes them (through the embedding kernel), as f32.
pub fn gpu_rows(table: &pocketlm::gpu::GpuTensor, ids: &[i32]) -> Vec<f32> {
    let ctx = ctx();
    let idt = ctx.upload_i32("ids", &[ids.len()], ids).unwrap();
    let out = ctx
        .zeros(
            "rows",
            &[ids.len(), table.cols()],
            pocketlm::gpu::DType::F32,
        )
        .unwrap();
    let d = pollster::block_on(pocketlm::kernels::embed(ctx, table, &idt, &out)).unwrap();
    let mut rec = ctx.recorder();
    rec.dispatch(&d);
    let slot = rec.read(&out);
    pollster::block_on(rec.submit_and_read())
        .unwrap()
        .f32(slot)
        .unwrap()
}

/// A word-level tokenizer.json for the tiny fixture Llama (tests/fixtures/models/tiny-llama, 128
/// ids): `<unk>`, `<s>` (BOS, 1), `</s>` (EOS, 2), the chat roles, and words `w6`..`w127`;
/// `extra` more words make it too large for the model.
pub fn tiny_tokenizer_json(extra: usize) -> String {
    const VOCAB: usize = 128;
    let mut words: Vec<String> = ["<unk>", "<s>", "</s>", "user", "assistant", "system"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend((words.len()..VOCAB + extra).map(|i| format!("w{i}")));
    let vocab = vocab_map(&words);
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special_token(0, "<unk>"), special_token(1, "<s>"), special_token(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

/// A tokenizer.json vocabulary: each word's id is its index.
fn vocab_map(words: &[String]) -> serde_json::Map<String, serde_json::Value> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), serde_json::json!(i)))
        .collect()
}

/// A tokenizer.json added token marked special.
fn special_token(id: usize, content: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true})
}

/// A chat template for [`tiny_tokenizer_json`]'s words.
pub fn tiny_template() -> &'static str {
    "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> \
     {% endfor %}{% if add_generation_prompt %}<s> assistant {% endif %}"
}

/// A directory of its own under the temp dir (`pocketlm-NAME-PID`) holding copies of `files`
/// (paths relative to the folder, subfolders made as needed) of the fixture model folder
/// `tests/fixtures/models/FIXTURE`.
pub fn fixture_copy(fixture: &str, files: &[&str], name: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(fixture);
    let dir = std::env::temp_dir().join(format!("pocketlm-{name}-{}", std::process::id()));
    for f in files {
        let to = dir.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), to).unwrap();
    }
    dir
}

/// A copy of the tiny fixture Llama with [`tiny_tokenizer_json`] and a `tokenizer_config.json`
/// holding [`tiny_template`]: a complete model folder, in a directory of its own under the temp dir.
pub fn tiny_model_folder(name: &str) -> std::path::PathBuf {
    let dir = fixture_copy("tiny-llama", &["config.json", "model.safetensors"], name);
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json(0)).unwrap();
    let config = serde_json::json!({"chat_template": tiny_template(), "bos_token": "<s>",
        "eos_token": "</s>"});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

/// A fixture file under tests/fixtures/, parsed as JSON.
pub fn fixture_json(path: &str) -> serde_json::Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A JSON array of token ids.
pub fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of token ids, got {v}"))
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

/// A JSON array of numbers.
pub fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of numbers, got {v}"))
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// A file of little-endian f32 values (reference logits).
pub fn read_f32_file(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A real model file under the repository (`rel`, e.g. "models/x.gguf") in an engine with an
/// f32 KV cache of `context` positions; a missing file fails with `get_it` (how to fetch it).
pub fn real_model_engine(rel: &str, get_it: &str, context: usize) -> pocketlm::engine::Engine {
    real_model_engine_on(ctx(), rel, get_it, context)
}

/// [`real_model_engine`] on `ctx`.
pub fn real_model_engine_on(
    ctx: &GpuContext,
    rel: &str,
    get_it: &str,
    context: usize,
) -> pocketlm::engine::Engine {
    use pocketlm::engine::{Engine, EngineOptions};
    use pocketlm::load::{load_native, LoadOptions};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(path.is_file(), "{} is missing: {get_it}", path.display());
    let loaded = pollster::block_on(load_native(
        ctx,
        path.to_str().unwrap(),
        LoadOptions::default(),
    ))
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let options = EngineOptions {
        context: Some(context),
        kv_dtype: Some(pocketlm::gpu::DType::F32),
        ..Default::default()
    };
    pollster::block_on(Engine::new(ctx, loaded, &options))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Greedy from prompts of one prefill step on the kernels made for GPUs, where a step of more
/// than 16 tokens runs the tiled GEMM: the real model `rel` in
/// [`real_model_engine_on`]`(`[`f16_tiles_ctx`]`, …)`, so with f16 tiles where the device has
/// shader-f16 (the full profile) and f32 tiles elsewhere (the baseline profile). For each of
/// `lengths`, each of the fixture's first `prompts` prompts followed by the first tokens its
/// reference generated, that many tokens in all, which the engine must prefill in one step (32
/// tokens: the 32-token graph; 33 to 63: the 64-token graph, whose GEMM computes the same one
/// tile of 64 rows, its last rows left out of attention and the KV cache); then the prefill's
/// greedy token and one decode step's must be the reference's next two. Cases whose prompt and
/// reference are too short for a length are left out; at least one must be long enough for each.
pub fn assert_gemm_prefill_cases(
    (rel, get_it, context): (&str, &str, usize),
    fixture: &str,
    prompts: usize,
    lengths: &[usize],
) {
    let ctx = f16_tiles_ctx();
    let mut engine = real_model_engine_on(ctx, rel, get_it, context);
    let auto = pocketlm::kernels::LinearKernel::Auto;
    let reference = fixture_json(fixture);
    for &length in lengths {
        assert!(!ctx.capabilities().cpu && length > pocketlm::kernels::SMALL_M_MAX_ROWS);
        assert_eq!(
            engine.prefill_steps(length),
            [length],
            "one step of {length} tokens"
        );
        let f16_tiles = pocketlm::kernels::uses_f16_tiles(ctx, auto, length);
        let mut checked = 0;
        for case in reference["cases"].as_array().unwrap().iter().take(prompts) {
            let generated = token_ids(&case["generated_ids"]);
            let mut prompt = token_ids(&case["input_ids"]);
            let Some(given) = length.checked_sub(prompt.len()) else {
                continue;
            };
            if given + 2 > generated.len() {
                continue;
            }
            prompt.extend(&generated[..given]);
            let g = pollster::block_on(engine.generate(ctx, &prompt, &greedy(2), &mut |_| {
                pocketlm::engine::Flow::Continue
            }))
            .unwrap();
            assert_eq!(
                g.tokens,
                generated[given..given + 2],
                "{} and its first {given} reference tokens, f16 tiles {f16_tiles}",
                case["prompt"],
            );
            checked += 1;
        }
        assert!(
            checked > 0,
            "{fixture}: no case makes a {length}-token prompt"
        );
    }
}

/// Greedy generation of exactly `tokens` tokens (end-of-turn tokens do not stop it, as the
/// references generated past them).
pub fn greedy(tokens: usize) -> pocketlm::engine::GenerateOptions {
    pocketlm::engine::GenerateOptions {
        sampling: pocketlm::sample::SamplingParams::greedy(),
        max_tokens: Some(tokens),
        stop: Vec::new(),
        ignore_eos: true,
        pipeline: true,
        gpu_nucleus: true,
        response_format: None,
        logprobs: None,
    }
}

/// Our greedy tokens against llama.cpp's (which quantizes activations to 8 bits): the sequences
/// may part only at a step where llama.cpp's top-2 logit margin was at most `clear_margin`.
/// Returns how many leading tokens are equal.
pub fn assert_parts_only_where_unclear(
    what: &str,
    got: &[u32],
    llama_cpp: &[u32],
    margins: &[f64],
    clear_margin: f64,
) -> usize {
    let n = got.len().min(llama_cpp.len());
    let same = got
        .iter()
        .zip(llama_cpp)
        .take_while(|(a, b)| a == b)
        .count();
    if same < n {
        assert!(
            margins[same] <= clear_margin,
            "{what}: token {same} is {} where llama.cpp chose {} with a clear margin of {}",
            got[same],
            llama_cpp[same],
            margins[same]
        );
    }
    same
}

/// The tiny Llama of tests/fixtures/models/tiny-llama loaded on `gpu`, with the tiny tokenizer
/// and chat template as companions; `edit` may change them before an engine is built.
pub fn tiny_llama_files(
    gpu: &GpuContext,
    edit: impl FnOnce(&mut pocketlm::load::LoadedModelFiles),
) -> pocketlm::load::LoadedModelFiles {
    use pocketlm::load::{load_directory, LoadOptions};
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let mut m = pollster::block_on(load_directory(gpu, &dir, 2, LoadOptions::default())).unwrap();
    m.companions
        .insert("tokenizer.json".into(), tiny_tokenizer_json(0));
    m.companions.insert(
        "tokenizer_config.json".into(),
        serde_json::json!({"chat_template": tiny_template(), "bos_token": "<s>", "eos_token": "</s>"})
            .to_string(),
    );
    edit(&mut m);
    m
}

/// An engine of `context` positions (f32 KV cache) over `files` on `gpu`.
pub fn tiny_llama_engine(
    gpu: &GpuContext,
    context: usize,
    files: pocketlm::load::LoadedModelFiles,
) -> pocketlm::engine::Engine {
    let options = pocketlm::engine::EngineOptions {
        context: Some(context),
        kv_dtype: Some(pocketlm::gpu::DType::F32),
        ..Default::default()
    };
    pollster::block_on(pocketlm::engine::Engine::new(gpu, files, &options)).unwrap()
}

/// The tokenizer of a GGUF file, reading only as much of the file as its header needs.
pub fn gguf_tokenizer(path: &std::path::Path) -> pocketlm::text::Tokenizer {
    use pocketlm::formats::{GgufHeader, Parsed};
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let size = f.metadata().unwrap().len();
    let mut buf = Vec::new();
    let mut want = 4 << 20;
    loop {
        let have = buf.len() as u64;
        (&mut f)
            .take(want as u64 - have.min(want as u64))
            .read_to_end(&mut buf)
            .unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        match GgufHeader::parse(&buf, Some(size), &name).unwrap() {
            Parsed::Complete { header, .. } => {
                return pocketlm::text::Tokenizer::from_gguf(&header.metadata)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            }
            Parsed::NeedMore { at_least } => want = at_least.max(want * 2),
        }
    }
}

/// JSON schemas for constrained decoding tests whose every valid instance is short, so that any
/// walk through them ends: enums and consts, bounded strings and integers, arrays, `$ref`,
/// `anyOf`, a pattern.
pub fn schemas() -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}),
        serde_json::json!({"type": "object", "properties": {
            "color": {"enum": ["red", "green", "blue"]}, "ok": {"const": true}},
            "required": ["color", "ok"], "additionalProperties": false}),
        serde_json::json!({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 5},
                "minItems": 1, "maxItems": 3}},
            "required": ["tags"], "additionalProperties": false}),
        serde_json::json!({"type": "object",
            "$defs": {"point": {"type": "object", "properties": {
                "x": {"type": "integer", "minimum": -5, "maximum": 5},
                "y": {"type": "integer", "minimum": -5, "maximum": 5}},
                "required": ["x", "y"], "additionalProperties": false}},
            "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
            "required": ["a", "b"], "additionalProperties": false}),
        serde_json::json!({"type": "object", "properties": {
            "v": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                {"type": "null"}, {"type": "boolean"}]},
            "note": {"type": "string", "maxLength": 4}},
            "required": ["v"], "additionalProperties": false}),
        serde_json::json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}),
        serde_json::json!({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4}),
    ]
}

/// Two tools for tool-call tests (`get_weather` with a short city and a unit, `add` of two
/// integers under 100): short arguments, so that every walk through their schemas ends.
pub fn tools() -> Vec<pocketlm::text::tools::Tool> {
    let schema = |props: serde_json::Value, required: serde_json::Value| {
        serde_json::json!({"type": "object", "properties": props, "required": required,
            "additionalProperties": false})
    };
    [
        (
            "get_weather",
            schema(
                serde_json::json!({"city": {"type": "string", "maxLength": 6},
                    "unit": {"enum": ["c", "f"]}}),
                serde_json::json!(["city", "unit"]),
            ),
        ),
        (
            "add",
            schema(
                serde_json::json!({"a": {"type": "integer", "minimum": 0, "maximum": 99},
                    "b": {"type": "integer", "minimum": 0, "maximum": 99}}),
                serde_json::json!(["a", "b"]),
            ),
        ),
    ]
    .into_iter()
    .map(|(name, parameters)| pocketlm::text::tools::Tool {
        name: name.into(),
        definition: serde_json::json!({"type": "function", "function": {"name": name,
            "parameters": parameters}}),
        parameters,
    })
    .collect()
}

/// 1 − cos(a, b), in f64.
pub fn cosine_distance(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, y)| f64::from(x) * y).sum();
    let na = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

/// Checks that `text` is JSON valid under `schema`, by the `jsonschema` crate (not llguidance).
pub fn assert_valid(schema: &serde_json::Value, text: &str, what: &str) {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {text:?} is not JSON: {e}"));
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what}: {text} breaks the schema: {errors:?}"
    );
}

/// A byte-level BPE tokenizer.json for the tiny fixture Llama (128 ids), so that constrained
/// decoding can run on it: `<unk>`, `<s>` (BOS, 1), `</s>` (EOS, 2), the 95 printable ASCII
/// bytes and the newline as single-byte tokens, and 29 longer tokens common in JSON. No merges:
/// encoding gives single bytes; a grammar may pick the longer tokens.
pub fn tiny_byte_tokenizer_json() -> String {
    byte_tokenizer_json(&[])
}

/// [`tiny_byte_tokenizer_json`] with `specials` added after its 128 ids as special tokens (ids
/// 128, 129, …), such as a model's tool-call markers.
pub fn byte_tokenizer_json(specials: &[&str]) -> String {
    let mut words: Vec<String> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // GPT-2's byte alphabet: printable ASCII stands for itself, the space is 'Ġ', '\n' is 'Ċ'.
    words.extend((0x20u8..0x7F).map(|b| {
        if b == b' ' {
            "Ġ".into()
        } else {
            (b as char).to_string()
        }
    }));
    words.push("Ċ".into());
    for w in [
        "{\"", "\":", "\",", "\"}", "Ġ\"", ",Ġ", ":Ġ", "true", "false", "null", "ab", "er", "in",
        "on", "an", "re", "12", "00", "ye", "no", "yes", "[\"", "\"]", "},", "{}", "[]", "Ġ{",
        "red", "blue",
    ] {
        words.push(w.into());
    }
    assert_eq!(words.len(), 128);
    let mut added = vec![
        special_token(0, "<unk>"),
        special_token(1, "<s>"),
        special_token(2, "</s>"),
    ];
    for (i, s) in specials.iter().enumerate() {
        added.push(special_token(128 + i, s));
        words.push(s.to_string());
    }
    let vocab = vocab_map(&words);
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// The cases of a greedy fixture (`smollm2/greedy.json`, `gemma3/greedy.json`) through `engine`
/// on `device`, up to `prompts` of them: the prompt ids equal transformers', and the first
/// `tokens` generated ids (all of them with `None`) too; with `llama_cpp` (a top-2 margin), the
/// ids part from llama.cpp's only at a step where its margin was at most that. Logs each case.
pub fn assert_greedy_cases(
    engine: &mut pocketlm::engine::Engine,
    device: pocketlm::engine::Device<'_>,
    fixture: &str,
    prompts: usize,
    tokens: Option<usize>,
    llama_cpp: Option<f64>,
) {
    let reference = fixture_json(fixture);
    for case in reference["cases"].as_array().unwrap().iter().take(prompts) {
        let text = case["prompt"].as_str().unwrap();
        let prompt = engine.text_prompt(text).unwrap();
        assert_eq!(
            prompt,
            token_ids(&case["input_ids"]),
            "'{text}': prompt ids"
        );
        let all = token_ids(&case["generated_ids"]);
        let want = &all[..tokens.unwrap_or(all.len())];
        let start = std::time::Instant::now();
        let g = pollster::block_on(engine.generate(
            device,
            &prompt,
            &greedy(want.len()),
            &mut |_| pocketlm::engine::Flow::Continue,
        ))
        .unwrap();
        let first_diff = g.tokens.iter().zip(want).position(|(a, b)| a != b);
        assert!(
            first_diff.is_none() && g.tokens.len() == want.len(),
            "'{text}': tokens differ from transformers at {first_diff:?}:\n got  {:?}\n want {want:?}",
            g.tokens
        );
        let llama = llama_cpp.map(|margin| {
            let same = assert_parts_only_where_unclear(
                &format!("'{text}'"),
                &g.tokens,
                &token_ids(&case["llama_cpp_ids"]),
                &numbers(&case["llama_cpp_margins"]),
                margin,
            );
            format!(", the first {same} llama.cpp's")
        });
        eprintln!(
            "'{text}': {} tokens match transformers{} on the {} backend ({:.1} s, {:.2} tokens/s \
             decoding)",
            want.len(),
            llama.unwrap_or_default(),
            engine.backend(),
            start.elapsed().as_secs_f64(),
            g.decode_tokens_per_s()
        );
    }
}

/// Logits against a reference within `tolerance`, naming the worst one (token and id).
pub fn assert_logits_close(what: &str, got: &[f32], want: &[f32], vocab: usize, tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}: logits");
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if e > worst || e.is_nan() {
            worst = e;
            at = i;
        }
    }
    assert!(
        worst <= tolerance,
        "{what}: logit {} of token {} is {} vs transformers {} (|err| {worst:e})",
        at % vocab,
        at / vocab,
        got[at],
        want[at]
    );
    eprintln!(
        "{what}: max |logit error| {worst:e} over {} logits",
        got.len()
    );
}

/// The tiny random models of scripts/make_fixtures.py that scripts/convert_fixtures_to_gguf.py
/// also converts with llama.cpp's converter (`tests/fixtures/models/NAME.gguf`); tiny-mistral
/// has no GGUF (llama.cpp's files do not record its window).
pub const TINY_GGUF_FIXTURES: [&str; 13] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen2-bf16",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-phi3",
    "tiny-smollm3",
    "tiny-qwen3-yarn",
    "tiny-granite",
    "tiny-olmo2",
    // Vision-language models run on text: their vision encoders are not loaded.
    "tiny-qwen2.5-vl",
    "tiny-qwen3-vl",
];

/// What a tiny embedding model's GGUF conversion (`NAME.gguf`, by llama.cpp's converter) holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TinyGguf {
    /// The model and its WordPiece vocabulary: texts are checked too.
    WithVocab,
    /// The model with a placeholder vocabulary (scripts/convert_fixtures_to_gguf.py): token ids
    /// only.
    IdsOnly,
}

/// The tiny random embedding models of scripts/make_encoder_fixtures.py, each a
/// sentence-transformers folder and llama.cpp's GGUF conversion of it: BERT, nomic-embed-text,
/// and a decoder-based embedder (Qwen3-Embedding's layout, which runs inputs one at a time
/// rather than packed).
pub const TINY_EMBEDDERS: [(&str, TinyGguf); 4] = [
    ("tiny-bert", TinyGguf::WithVocab),
    ("tiny-nomic-bert", TinyGguf::WithVocab),
    ("tiny-qwen3-embedding", TinyGguf::IdsOnly),
    ("tiny-embeddinggemma", TinyGguf::IdsOnly),
];

/// The tiny random embedding model `name` (one of [`TINY_EMBEDDERS`]) against transformers, for
/// a model on either backend given as `hidden` (the packed last hidden states of some inputs, `[tokens,
/// width]`) and `embed` (the embeddings of many inputs, in as many passes as they need):
/// - each input alone, its hidden states within 1e-5 (LayerNorm outputs are O(1); summation
///   orders differ from PyTorch's, about 1e-6 here) and its embedding, unit length, within
///   cosine distance 1e-5;
/// - all inputs packed in one pass: the same rows, each input seeing only its own tokens;
/// - with `pass_budget` (the tokens one pass packs), more inputs than one pass packs, each
///   embedding as the reference's; else the inputs twice over, in one call.
pub fn check_tiny_encoder(
    name: &str,
    width: usize,
    hidden: impl Fn(&[&[u32]]) -> Vec<f32>,
    embed: impl Fn(&[Vec<u32>]) -> Vec<Vec<f32>>,
    pass_budget: Option<usize>,
) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name);
    let reference = fixture_json(&format!("models/{name}/reference.json"));
    let want_rows = read_f32_file(&dir.join("hidden.f32"));
    let inputs: Vec<Vec<u32>> = reference["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(token_ids)
        .collect();
    let want_embedding = |i: usize| numbers(&reference["embeddings"][i]);
    let worst = |got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max)
    };
    let check_embedding = |what: &str, e: &[f32], i: usize| {
        let norm = e.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        assert!((norm - 1.0).abs() < 1e-6, "{what}: |e|² = {norm}");
        let distance = cosine_distance(e, &want_embedding(i));
        assert!(distance < 1e-5, "{what}: cosine distance {distance:e}");
        distance
    };
    let mut at = 0;
    for (i, ids) in inputs.iter().enumerate() {
        let n = ids.len();
        let want = &want_rows[at..at + n * width];
        at += n * width;
        let err = worst(&hidden(&[ids]), want);
        assert!(
            err < 1e-5,
            "{name}: input {i} ({n} tokens): max |error| {err}"
        );
        let distance = check_embedding(
            &format!("input {i}"),
            &embed(std::slice::from_ref(ids))[0],
            i,
        );
        println!(
            "{name}: input {i} ({n} tokens): max |error| {err:e}, cosine distance {distance:e}"
        );
    }
    assert_eq!(at, want_rows.len(), "every reference row was compared");

    let refs: Vec<&[u32]> = inputs.iter().map(Vec::as_slice).collect();
    let err = worst(&hidden(&refs), &want_rows);
    assert!(
        err < 1e-5,
        "{name}: {} inputs packed: max |error| {err}",
        inputs.len()
    );

    let per_round: usize = inputs.iter().map(Vec::len).sum();
    let rounds = match pass_budget {
        Some(budget) => budget / per_round + 2,
        None => 2,
    };
    let many: Vec<Vec<u32>> = (0..rounds).flat_map(|_| inputs.iter().cloned()).collect();
    let embeddings = embed(&many);
    assert_eq!(embeddings.len(), many.len());
    for (j, e) in embeddings.iter().enumerate() {
        check_embedding(&format!("input {j} of {}", many.len()), e, j % inputs.len());
    }
}

/// The tiny encoder `name`'s reference sentences through a whole embedder: `tokenize` must give
/// transformers' ids (`[CLS] … [SEP]`, lowercased WordPiece) and `embed` (all texts in one
/// call) embeddings within cosine distance 1e-5 of transformers'.
pub fn check_tiny_encoder_texts(
    name: &str,
    tokenize: impl Fn(&str) -> Vec<u32>,
    embed: impl Fn(&[&str]) -> Vec<Vec<f32>>,
) {
    let reference = fixture_json(&format!("models/{name}/reference.json"));
    let cases = reference["texts"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    for (case, text) in cases.iter().zip(&texts) {
        assert_eq!(tokenize(text), token_ids(&case["ids"]), "{name}: {text:?}");
    }
    let got = embed(&texts);
    assert_eq!(got.len(), texts.len());
    for ((case, text), e) in cases.iter().zip(&texts).zip(&got) {
        let distance = cosine_distance(e, &numbers(&case["embedding"]));
        assert!(
            distance < 1e-5,
            "{name}: {text:?}: cosine distance {distance:e}"
        );
    }
}

/// Both checks of the tiny embedding model `name` on an embedder loaded on `dev`: its hidden
/// states and embeddings ([`check_tiny_encoder`], over several passes with `passes`) and, with
/// `texts`, its sentences, tokenizer included ([`check_tiny_encoder_texts`]).
pub fn check_tiny_embedder(
    name: &str,
    embedder: &pocketlm::model::Embedder,
    dev: pocketlm::engine::Device<'_>,
    texts: bool,
    passes: bool,
) {
    let encoder = &embedder.encoder;
    assert!(encoder.config().normalize, "{name}");
    check_tiny_encoder(
        name,
        encoder.config().hidden,
        |inputs| pollster::block_on(encoder.hidden_states(dev, inputs)).unwrap(),
        |inputs| pollster::block_on(encoder.embed_batch(dev, inputs)).unwrap(),
        passes.then(|| encoder.pass_budget()),
    );
    if !texts {
        return;
    }
    check_tiny_encoder_texts(
        name,
        |text| embedder.tokenize(text, true).unwrap().0,
        |texts| {
            pollster::block_on(embedder.embed_texts(dev, texts, true))
                .unwrap()
                .into_iter()
                .map(|e| e.vector)
                .collect()
        },
    );
}

/// Fails listing every place where a kernel compiled on `ctx` so far indexes an array in
/// function or private memory at run time (see [`run_time_indexed_arrays`]).
pub fn assert_no_run_time_indexed_arrays(ctx: &GpuContext) {
    let found: Vec<String> = ctx
        .compiled_sources()
        .iter()
        .flat_map(|(name, entry, src)| run_time_indexed_arrays(name, entry, src))
        .collect();
    assert!(
        found.is_empty(),
        "arrays indexed at run time:\n{}",
        found.join("\n")
    );
}

/// Where a compiled kernel indexes an array in function or private memory with a value known
/// only at run time (in its entry point or a function the entry point calls): `kernel: function:
/// what` per place. Drivers may keep such an array in memory instead of registers (on an NVIDIA
/// H200 a 4096 × 4096 Q4_0 decode matvec took 62 µs with its sums in one and 31 µs with them in
/// vectors named by literals), so the kernels made for GPUs index arrays of their own only with
/// constants (loops marked `// unroll`, see `pocketlm::gpu::unroll`), or select from them with
/// constants.
pub fn run_time_indexed_arrays(name: &str, entry: &str, source: &str) -> Vec<String> {
    use wgpu::naga::{self, AddressSpace, Expression, TypeInner};
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    // Whether an expression's value is known when the shader is compiled: literals, constants,
    // and arithmetic on them (an unrolled loop's `let i = 2u;` is its literal: `i * ROWS + r`
    // is such arithmetic, which every compiler folds).
    fn known(f: &naga::Function, h: naga::Handle<Expression>) -> bool {
        match f.expressions[h] {
            Expression::Literal(_) | Expression::Constant(_) | Expression::ZeroValue(_) => true,
            Expression::Binary { left, right, .. } => known(f, left) && known(f, right),
            Expression::Unary { expr, .. } | Expression::As { expr, .. } => known(f, expr),
            Expression::Math {
                arg,
                arg1,
                arg2,
                arg3,
                ..
            } => {
                known(f, arg)
                    && [arg1, arg2, arg3]
                        .into_iter()
                        .flatten()
                        .all(|a| known(f, a))
            }
            Expression::Select {
                condition,
                accept,
                reject,
            } => known(f, condition) && known(f, accept) && known(f, reject),
            _ => false,
        }
    }
    let mut found = Vec::new();
    let mut check = |fname: &str, f: &naga::Function, fi: &naga::valid::FunctionInfo| {
        for (_, e) in f.expressions.iter() {
            let Expression::Access { base, index } = *e else {
                continue;
            };
            if known(f, index) {
                continue;
            }
            let what = match *fi[base].ty.inner_with(&module.types) {
                TypeInner::Pointer { base, space } => match (&module.types[base].inner, space) {
                    (TypeInner::Array { .. }, AddressSpace::Function) => "a function-memory array",
                    (TypeInner::Array { .. }, AddressSpace::Private) => "a private array",
                    _ => continue,
                },
                // Indexed as a value, an array is copied to function memory first.
                TypeInner::Array { .. } => "an array value",
                _ => continue,
            };
            found.push(format!("{name}: {fname}: {what}"));
        }
    };
    fn calls(block: &wgpu::naga::Block, out: &mut Vec<wgpu::naga::Handle<wgpu::naga::Function>>) {
        use wgpu::naga::Statement as S;
        for st in block.iter() {
            match st {
                S::Call { function, .. } => out.push(*function),
                S::Block(b) => calls(b, out),
                S::If { accept, reject, .. } => {
                    calls(accept, out);
                    calls(reject, out);
                }
                S::Switch { cases, .. } => cases.iter().for_each(|c| calls(&c.body, out)),
                S::Loop {
                    body, continuing, ..
                } => {
                    calls(body, out);
                    calls(continuing, out);
                }
                _ => {}
            }
        }
    }
    let (i, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == entry)
        .unwrap_or_else(|| panic!("{name}: no entry point {entry}"));
    check(&ep.name, &ep.function, info.get_entry_point(i));
    let mut todo = Vec::new();
    calls(&ep.function.body, &mut todo);
    let mut seen = std::collections::HashSet::new();
    while let Some(h) = todo.pop() {
        if seen.insert(h) {
            let f = &module.functions[h];
            check(f.name.as_deref().unwrap_or("?"), f, &info[h]);
            calls(&f.body, &mut todo);
        }
    }
    found.sort();
    found.dedup();
    found
}
