//! The JavaScript face of PocketLM (wasm-bindgen). This is the only file that knows about JS.
//! Every fallible export returns a promise that rejects with an `Error` whose `name` is
//! `"PocketLMError"`, whose `code` is [`Error::code`] and whose message says what went wrong;
//! nothing panics across the boundary.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Float32Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::cpu::CpuContext;
use crate::engine::{
    Device, Engine, EngineOptions, FinishReason, Flow, GenerateOptions, TokenEvent,
};
use crate::error::Error;
use crate::formats::{split_names, SafetensorsIndex};
use crate::gpu::{DType, GpuContext, GpuTensor, ProfileRequest};
use crate::kernels;
use crate::load::browser::LazyDownload;
use crate::load::browser::{self, JsBytesSource, StreamSource};
use crate::load::folder;
use crate::load::{
    load_model, AbortFlag, LoadOptions, LoadTarget, LoadedModelFiles, ModelFile, Progress,
};
use crate::model::encoder::{self, EmbedInput, Embedder, Pooling};
use crate::request::{self, Prompt};
#[cfg(feature = "harness")]
use crate::selfcheck;
use crate::text::tools::{ToolChoice, ToolStream};

/// Converts a PocketLM error into a JS `Error` carrying the message and a stable `code`.
pub fn to_js_error(e: &Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name("PocketLMError");
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

fn reject_on_error<F>(fut: F) -> Promise
where
    F: std::future::Future<Output = Result<JsValue, Error>> + 'static,
{
    future_to_promise(async move { fut.await.map_err(|e| to_js_error(&e)) })
}

#[wasm_bindgen(start)]
fn start() {
    // A panic is a bug; make it visible in the console rather than a bare "unreachable".
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("PocketLM internal error: {info}").into());
    }));
}

fn get(options: &JsValue, key: &str) -> Option<JsValue> {
    if options.is_undefined() || options.is_null() {
        return None;
    }
    js_sys::Reflect::get(options, &key.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// Bytes of wasm linear memory in use by this module (it never shrinks: the high-water mark).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as f64
}

/// Whether this build of the module shares its memory between threads (the package's threaded
/// build, for cross-origin isolated pages): the CPU backend then takes Web Workers as threads.
#[wasm_bindgen(js_name = wasmThreads)]
pub fn wasm_threads() -> bool {
    cfg!(target_feature = "atomics")
}

/// Whether this build of the module uses relaxed SIMD (the package loads it where the browser
/// validates relaxed SIMD, unless the load asks for `relaxedSimd: false`).
#[wasm_bindgen(js_name = wasmRelaxedSimd)]
pub fn wasm_relaxed_simd() -> bool {
    crate::cpu::kernels::RELAXED_SIMD
}

/// This module, compiled: a thread's Web Worker instantiates it on the shared memory
/// (`initSync({module, memory})`).
#[wasm_bindgen(js_name = compiledModule)]
pub fn wasm_module() -> JsValue {
    wasm_bindgen::module()
}

/// Runs on a thread's Web Worker (threaded build): joins the CPU pool behind `handle`
/// (`Cpu.threadHandle()`) and works for it until that `Cpu` is freed. Blocks the worker.
#[wasm_bindgen(js_name = cpuThreadRun)]
pub fn cpu_thread_run(handle: usize) -> std::result::Result<(), JsValue> {
    #[cfg(target_feature = "atomics")]
    if handle != 0 {
        // SAFETY: JavaScript passes each handle from `Cpu.threadHandle` to one thread, once.
        unsafe { crate::cpu::run_worker(handle) };
        return Ok(());
    }
    let _ = handle;
    Err(to_js_error(&Error::InvalidRequest(
        "this build of PocketLM's module has no threads".into(),
    )))
}

/// The GPU buffers PocketLM holds now in this realm, over every device: `{count, bytes}`
/// (tensors, kernel parameters and per-step uniforms; see `pocketlm::gpu::held_buffers`).
#[wasm_bindgen(js_name = gpuBuffers)]
pub fn gpu_buffers() -> JsValue {
    let held = crate::gpu::held_buffers();
    let o = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&o, &"count".into(), &(held.count as f64).into());
    let _ = js_sys::Reflect::set(&o, &"bytes".into(), &(held.bytes as f64).into());
    o.into()
}

/// Throws (a PocketLMError) when a model folder with these companion files (`{"config.json":
/// text, "modules.json": text, …}`) is one PocketLM cannot run, as a load would find once its
/// weights are downloaded: the package asks before it downloads a folder's weights.
#[wasm_bindgen(js_name = checkModelFolder)]
pub fn check_model_folder(companions: JsValue) -> std::result::Result<(), JsValue> {
    let mut files = std::collections::BTreeMap::new();
    if let Some(o) = companions.dyn_ref::<js_sys::Object>() {
        for entry in js_sys::Object::entries(o).iter() {
            let pair = js_sys::Array::from(&entry);
            if let (Some(name), Some(text)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                files.insert(name, text);
            }
        }
    }
    crate::engine::check_companions(&files).map_err(|e| to_js_error(&e))
}

/// The URLs whose model files are in the browser's cache.
#[wasm_bindgen(js_name = listCachedModels)]
pub fn list_cached_models() -> Promise {
    reject_on_error(async {
        let urls = browser::cached_urls().await?;
        Ok(urls
            .into_iter()
            .map(JsValue::from)
            .collect::<js_sys::Array>()
            .into())
    })
}

/// Deletes every cached model file; resolves to whether there was a cache.
#[wasm_bindgen(js_name = clearModelCache)]
pub fn clear_model_cache() -> Promise {
    reject_on_error(async { Ok(browser::clear_cache().await?.into()) })
}

/// Model weights in GPU memory.
#[wasm_bindgen]
pub struct Weights {
    model: LoadedModelFiles,
    summary: String,
}

#[wasm_bindgen]
impl Weights {
    #[wasm_bindgen(getter, js_name = tensorCount)]
    pub fn tensor_count(&self) -> u32 {
        self.model.tensors.len() as u32
    }

    /// Bytes of GPU memory the weights take.
    #[wasm_bindgen(getter, js_name = gpuBytes)]
    pub fn gpu_bytes(&self) -> f64 {
        self.model.gpu_bytes as f64
    }

    /// The names of the text files that came with the weights (`config.json`, `tokenizer.json`, …).
    #[wasm_bindgen(js_name = companionNames)]
    pub fn companion_names(&self) -> Vec<String> {
        self.model.companions.keys().cloned().collect()
    }

    /// The text of one of those files.
    pub fn companion(&self, name: &str) -> Option<String> {
        self.model.companions.get(name).cloned()
    }

    /// The architecture, hyper-parameters, tensor count and formats, as text.
    pub fn summary(&self) -> String {
        self.summary.clone()
    }

    /// Frees the GPU memory now (`free()` does too, and so does garbage collection, later).
    #[wasm_bindgen(js_name = freeGpu)]
    pub fn free_gpu(&mut self) {
        for t in self.model.tensors.values() {
            GpuTensor::destroy(t);
        }
        self.model.tensors.clear();
        self.model.gpu_bytes = 0;
    }
}

impl Drop for Weights {
    // Dropping a buffer does not free GPU memory in the browser until garbage collection.
    fn drop(&mut self) {
        self.free_gpu();
    }
}

/// A WebGPU device negotiated for PocketLM's kernels.
#[wasm_bindgen]
pub struct Gpu {
    ctx: Rc<GpuContext>,
}

#[wasm_bindgen]
impl Gpu {
    /// Opens the GPU. `profile` is "auto" (default), "full" or "baseline".
    /// Resolves to a `Gpu`; rejects with code "no_adapter" when the browser has no WebGPU.
    pub fn create(profile: Option<String>) -> Promise {
        reject_on_error(async move {
            let request: ProfileRequest = profile.as_deref().unwrap_or("auto").parse()?;
            let ctx = GpuContext::new(request).await?;
            Ok(Gpu { ctx: Rc::new(ctx) }.into())
        })
    }

    /// The adapter, profile, features and limits, as text.
    pub fn report(&self) -> String {
        self.ctx.report().to_string()
    }

    /// Loads a model file (GGUF or safetensors) into GPU memory as it downloads.
    ///
    /// `source`: a URL, an array of URLs (the files of one model), a `Uint8Array`/`ArrayBuffer`,
    /// a `Blob`/`File`, or a `ReadableStream`. The URL of any split of a GGUF model
    /// (`…-00001-of-00003.gguf`) loads all its splits; the URL of a `model.safetensors.index.json`
    /// loads its folder (another index, its shards alone); a folder URL (ending in `/`) loads
    /// its weights and its `config.json`,
    /// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and chat template
    /// file (`chat_template.jinja` or `chat_template.json`) where it has them.
    /// `options`: `onProgress({file, fileIndex, files, bytesDone, bytesTotal, allDone, allTotal})`,
    /// `signal` (an `AbortSignal`), `sha256` (64 hex digits, or an array with one per file: a
    /// mismatch rejects and drops the cached copy), `cache` (default true: URLs are kept in the
    /// Cache API and a second load makes no network request), `concurrency` (files downloaded at
    /// once, default 4).
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&self, source: JsValue, options: JsValue) -> Promise {
        let ctx = self.ctx.clone();
        reject_on_error(async move {
            let model = load_from_js(&*ctx, &source, &options, false).await?;
            let summary = model.files.summary().to_string();
            Ok(Weights { model, summary }.into())
        })
    }

    /// Loads a model and makes it ready to generate: the weights (any `source` `loadWeights`
    /// takes) with their tokenizer and chat template, the KV cache and the step graphs.
    /// `options`: those of `loadWeights`, plus `context` (positions in the KV cache, default the
    /// model's own up to 4096) and `kvDtype` ("f16" or "f32"). Resolves to a `Model`.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, source: JsValue, options: JsValue) -> Promise {
        let ctx = self.ctx.clone();
        reject_on_error(async move {
            let opts = engine_options(&options)?;
            let mut loaded = load_from_js(&*ctx, &source, &options, true).await?;
            if encoder::is_encoder_model(&loaded) {
                let name = model_name(&loaded.files.files);
                let bytes = loaded.gpu_bytes;
                let embedder = Embedder::from_loaded(&ctx, &mut loaded, &name).await?;
                return Ok(EmbeddingModel::new(Compute::Gpu(ctx), embedder, bytes).into());
            }
            let engine = Engine::new(&ctx, loaded, &opts).await?;
            Ok(Model::new(Compute::Gpu(ctx), engine).into())
        })
    }

    /// Destroys the GPU device, as a lost device would be (for tests of recovery): every later
    /// call on this `Gpu` and its models rejects with code "device_lost".
    #[wasm_bindgen(js_name = destroyDevice)]
    pub fn destroy_device(&self) {
        self.ctx.device().destroy();
    }

    /// Calls `callback(message)` once when the GPU device is lost (or destroyed), so that a page
    /// learns of it without waiting for its next call to fail.
    #[wasm_bindgen(js_name = onDeviceLost)]
    pub fn on_device_lost(&self, callback: js_sys::Function) {
        // wgpu wants a `Send` callback; a JS function is not, so it waits in a thread-local
        // table (wasm has one thread) and the callback carries only its key.
        thread_local! {
            static CALLBACKS: RefCell<Vec<Option<js_sys::Function>>> = const { RefCell::new(Vec::new()) };
        }
        let key = CALLBACKS.with(|c| {
            let mut c = c.borrow_mut();
            c.push(Some(callback));
            c.len() - 1
        });
        // The context records the loss first, so every later call fails with "device_lost".
        self.ctx.set_lost_notifier(move |message| {
            let f = CALLBACKS.with(|c| c.borrow_mut().get_mut(key).and_then(Option::take));
            if let Some(f) = f {
                let _ = f.call1(&JsValue::NULL, &message.into());
            }
        });
    }

    /// "full" or "baseline".
    #[wasm_bindgen(getter)]
    pub fn profile(&self) -> String {
        self.ctx.profile().name().to_string()
    }

    /// Runs every kernel against its CPU reference; resolves to the report, rejects if any fails.
    /// (Only in builds with the `harness` feature: the test pages', not the shipped package.)
    #[cfg(feature = "harness")]
    #[wasm_bindgen(js_name = selfCheck)]
    pub fn self_check(&self) -> Promise {
        let ctx = self.ctx.clone();
        reject_on_error(async move {
            let outcomes = selfcheck::run_standard(&ctx).await?;
            let lines: Vec<String> = outcomes.iter().map(|o| o.to_string()).collect();
            if outcomes.iter().all(|o| o.passed()) {
                Ok(lines.join("\n").into())
            } else {
                Err(Error::Gpu(format!(
                    "self-check failed:\n{}",
                    lines.join("\n")
                )))
            }
        })
    }

    /// `y = x · Wᵀ` for row-major `weights` of shape [rows, cols] and `x` of one or more rows of
    /// `cols`; resolves to a `Float32Array` of (x rows × `rows`) values.
    pub fn linear(&self, weights: Vec<f32>, rows: u32, cols: u32, x: Vec<f32>) -> Promise {
        let ctx = self.ctx.clone();
        reject_on_error(async move {
            let (rows, cols) = (rows as usize, cols as usize);
            let w = ctx.upload_f32("weights", &[rows, cols], &weights)?;
            if cols == 0 || !x.len().is_multiple_of(cols) {
                return Err(Error::ShapeMismatch {
                    kernel: "linear",
                    detail: format!(
                        "x has {} values, not a whole number of rows of {cols}",
                        x.len()
                    ),
                });
            }
            let m = x.len() / cols;
            let xt = ctx.upload_f32("x", &[m, cols], &x)?;
            let y = ctx.zeros("y", &[m, rows], DType::F32)?;
            let d = kernels::linear(&ctx, &w, &xt, &y).await?;
            let mut rec = ctx.recorder();
            rec.dispatch(&d);
            let slot = rec.read(&y);
            let out = rec.submit_and_read().await?.f32(slot)?;
            Ok(Float32Array::from(out.as_slice()).into())
        })
    }
}

/// The engine options of `loadModel`'s `options`: `context`, `kvDtype` and `fullWindowCache`.
fn engine_options(options: &JsValue) -> Result<EngineOptions, Error> {
    let context = match get(options, "context") {
        Some(v) => Some(positive_int(&v, "context")?),
        None => None,
    };
    let kv_dtype = match get(options, "kvDtype").and_then(|v| v.as_string()) {
        None => None,
        Some(d) if d == "f16" => Some(DType::F16),
        Some(d) if d == "f32" => Some(DType::F32),
        Some(d) => {
            return Err(Error::InvalidRequest(format!(
                "kvDtype must be \"f16\" or \"f32\", not {d:?}"
            )))
        }
    };
    let full_window_cache = match get(options, "fullWindowCache") {
        None => false,
        Some(v) => v.as_bool().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "fullWindowCache must be a boolean, not {}",
                describe(&v)
            ))
        })?,
    };
    Ok(EngineOptions {
        context,
        kv_dtype,
        full_window_cache,
    })
}

/// The CPU backend: the models' kernels in WebAssembly (SIMD128), for browsers without a usable
/// WebGPU adapter.
#[wasm_bindgen]
pub struct Cpu {
    cpu: Rc<CpuContext>,
}

#[wasm_bindgen]
impl Cpu {
    /// The CPU backend of this realm with `threads` threads, the caller's included (default 1).
    /// In the threaded build the other threads are Web Workers that JavaScript starts, each
    /// running `cpuThreadRun(cpu.threadHandle())`; until they have joined, the caller works
    /// alone. Other builds always run one thread.
    pub fn create(threads: Option<u32>) -> Cpu {
        Cpu {
            cpu: Rc::new(CpuContext::new(Some(threads.unwrap_or(1).max(1) as usize))),
        }
    }

    /// A handle for one more thread (threaded build; 0 elsewhere): pass it to `cpuThreadRun`
    /// on a new Web Worker.
    #[wasm_bindgen(js_name = threadHandle)]
    pub fn thread_handle(&self) -> usize {
        self.cpu.pool().worker_handle()
    }

    /// The threads that work now, the caller's included.
    pub fn threads(&self) -> u32 {
        self.cpu.threads() as u32
    }

    /// What runs the models, as text ("CPU (2 threads, SIMD)").
    pub fn describe(&self) -> String {
        self.cpu.describe()
    }

    /// Loads a model into wasm memory and makes it ready to generate on the CPU: any `source`
    /// and `options` `Gpu.loadModel` takes (`kvDtype` too: f16 by default, as on the GPU).
    /// Resolves to a `Model`.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(&self, source: JsValue, options: JsValue) -> Promise {
        let cpu = self.cpu.clone();
        reject_on_error(async move {
            let opts = engine_options(&options)?;
            let mut loaded = load_from_js(&*cpu, &source, &options, true).await?;
            if encoder::is_encoder_model(&loaded) {
                let name = model_name(&loaded.files.files);
                let embedder = Embedder::from_loaded_cpu(&mut loaded, &name)?;
                let bytes = embedder.encoder.host_bytes();
                return Ok(EmbeddingModel::new(Compute::Cpu(cpu), embedder, bytes).into());
            }
            let engine = Engine::new_cpu(&cpu, loaded, &opts)?;
            Ok(Model::new(Compute::Cpu(cpu), engine).into())
        })
    }
}

/// Opens `source` as the kind of thing it is and loads it into `ctx`'s memory (the GPU's, or
/// wasm memory for the CPU backend), wiring progress, abort and integrity. With `runnable`, a
/// model of one GGUF file that cannot run is refused from its header, and a folder from its
/// `config.json`, before their weights.
async fn load_from_js<D: LoadTarget>(
    ctx: &D,
    source: &JsValue,
    options: &JsValue,
    runnable: bool,
) -> Result<LoadedModelFiles<D::Tensor>, Error> {
    let abort = AbortFlag::default();
    let signal = get(options, "signal");
    let _listener = match &signal {
        Some(signal) => Some(watch_abort(signal, &abort)?),
        None => None,
    };
    let on_progress =
        get(options, "onProgress").and_then(|f| f.dyn_into::<js_sys::Function>().ok());
    let mut progress = |p: &Progress| {
        if let Some(f) = &on_progress {
            let o = js_sys::Object::new();
            let num = |v: u64| JsValue::from(v as f64);
            let opt = |v: Option<u64>| v.map_or(JsValue::NULL, num);
            for (k, v) in [
                ("file", JsValue::from(p.file.as_str())),
                ("fileIndex", num(p.file_index as u64)),
                ("files", num(p.files as u64)),
                ("bytesDone", num(p.bytes_done)),
                ("bytesTotal", opt(p.bytes_total)),
                ("allDone", num(p.all_done)),
                ("allTotal", opt(p.all_total)),
            ] {
                let _ = js_sys::Reflect::set(&o, &k.into(), &v);
            }
            let _ = f.call1(&JsValue::NULL, &o);
        }
    };
    // A folder brings the files that say what its weights are; anything else is on its own.
    let folder = source.as_string().as_deref().and_then(folder_of).is_some();
    let check = if folder {
        crate::engine::check_header
    } else {
        crate::engine::check_lone_header
    };
    let check_folder = crate::engine::check_companions;
    let opts = LoadOptions {
        progress: Some(&mut progress),
        abort: abort.clone(),
        check_header: runnable.then_some(&check as &crate::load::HeaderCheck),
        check_companions: runnable.then_some(&check_folder as &crate::load::CompanionsCheck),
        ..Default::default()
    };
    let sha256: Vec<Option<String>> = match get(options, "sha256") {
        Some(v) if js_sys::Array::is_array(&v) => js_sys::Array::from(&v)
            .iter()
            .map(|s| s.as_string())
            .collect(),
        Some(v) => vec![v.as_string()],
        None => Vec::new(),
    };
    let concurrency = get(options, "concurrency")
        .and_then(|v| v.as_f64())
        .map_or(4, |c| c.max(1.0) as usize);
    // URLs: one, several, all the splits of one, or the shards of an index.
    let urls: Option<Vec<String>> = if let Some(url) = source.as_string() {
        Some(vec![url])
    } else if js_sys::Array::is_array(source) {
        Some(
            js_sys::Array::from(source)
                .iter()
                .filter_map(|u| u.as_string())
                .collect(),
        )
    } else {
        None
    };
    if let Some(mut urls) = urls {
        let cache = get(options, "cache")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let mut index = None;
        let mut companions = std::collections::BTreeMap::new();
        let mut module_weights = std::collections::BTreeMap::new();
        if let [url] = urls.as_slice() {
            if let Some(folder_url) = folder_of(url) {
                // A model folder: its weights and the text files that describe the model.
                let plan = plan_folder(folder_url, cache, signal.as_ref()).await?;
                if let Some(check) = opts.check_companions {
                    check(&plan.companions)?;
                }
                urls = plan.weights;
                index = plan.index;
                companions = plan.companions;
                module_weights = plan.module_weights;
            } else if url.ends_with(".index.json") {
                let json = browser::fetch_small(url, cache, signal.as_ref()).await?;
                let parsed = SafetensorsIndex::parse(&json, url)?;
                let base = &url[..url.rfind('/').map_or(0, |i| i + 1)];
                urls = parsed
                    .shards
                    .iter()
                    .map(|s| format!("{base}{}", s.file))
                    .collect();
                index = Some(parsed);
            } else {
                urls = split_names(url)?;
            }
        }
        let mut downloads: Vec<LazyDownload> = urls
            .iter()
            .map(|u| LazyDownload::new(u.clone(), cache, signal.clone()))
            .collect();
        let result = load_model(
            ctx,
            with_sha256(downloads.iter_mut().collect(), &sha256),
            index.as_ref(),
            concurrency,
            opts,
        )
        .await;
        // (A failing file also raises the abort flag to stop the others: ask the result.)
        let aborted = matches!(result, Err(Error::Aborted));
        for d in &mut downloads {
            d.finish(result.is_ok(), aborted).await;
        }
        return result.map(|mut m| {
            m.companions = companions;
            m.module_weights = module_weights;
            m
        });
    }

    if let Some(bytes) = source.dyn_ref::<js_sys::Uint8Array>() {
        let s = JsBytesSource::new("bytes", bytes.clone());
        return load_model(ctx, with_sha256(vec![s], &sha256), None, 1, opts).await;
    }
    if source.is_instance_of::<js_sys::ArrayBuffer>() {
        let s = JsBytesSource::new("bytes", js_sys::Uint8Array::new(source));
        return load_model(ctx, with_sha256(vec![s], &sha256), None, 1, opts).await;
    }
    let is_blob = js_sys::Reflect::get(source, &"arrayBuffer".into())
        .is_ok_and(|f| f.is_function())
        && js_sys::Reflect::get(source, &"size".into()).is_ok_and(|s| s.as_f64().is_some());
    if is_blob {
        let name = get(source, "name")
            .and_then(|n| n.as_string())
            .unwrap_or_else(|| "blob".into());
        let size = get(source, "size")
            .and_then(|s| s.as_f64())
            .map(|s| s as u64);
        let stream = js_sys::Reflect::get(source, &"stream".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
            .and_then(|f| f.call0(source).ok())
            .ok_or_else(|| crate::load::io_error(&name, "this Blob has no stream()"))?;
        let s = StreamSource::new(name, &stream, size)?;
        return load_model(ctx, with_sha256(vec![s], &sha256), None, 1, opts).await;
    }
    if js_sys::Reflect::get(source, &"getReader".into()).is_ok_and(|f| f.is_function()) {
        let s = StreamSource::new("stream", source, None)?;
        return load_model(ctx, with_sha256(vec![s], &sha256), None, 1, opts).await;
    }
    Err(Error::InvalidTensor {
        tensor: "source".into(),
        detail: "expected a URL string or an array of them, a Uint8Array or ArrayBuffer, a Blob \
                 or File, or a ReadableStream"
            .into(),
    })
}

/// The folder URL a model URL stands for: the URL itself when it ends in `/`, and the folder of
/// a checkpoint's `model.safetensors.index.json` (its config and tokenizer files are there).
fn folder_of(url: &str) -> Option<&str> {
    if url.ends_with('/') {
        return Some(url);
    }
    url.strip_suffix(folder::INDEX_FILE)
        .filter(|base| base.ends_with('/'))
}

/// Resolves a model folder URL (ending in `/`): the index and its shards or `model.safetensors`,
/// and the companion files that exist.
async fn plan_folder(
    url: &str,
    cache: bool,
    signal: Option<&JsValue>,
) -> Result<folder::FolderPlan, Error> {
    // A missing file is a 404; anything else is a failure, except offline: once the folder's
    // files are in the cache, a file that cannot be fetched and is not there is one the folder
    // lacks (a 404 is never cached).
    let cached_folder = cache
        && browser::cached_urls()
            .await
            .is_ok_and(|urls| urls.iter().any(|u| u.starts_with(url)));
    let optional = |r: Result<Vec<u8>, Error>| match r {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::Http { status: 404, .. }) => Ok(None),
        Err(Error::Http { .. }) => r.map(Some),
        Err(_) if cached_folder => Ok(None),
        Err(e) => Err(e),
    };
    let index_url = folder::join(url, folder::INDEX_FILE);
    let (weights, index) = match optional(browser::fetch_small(&index_url, cache, signal).await)? {
        Some(json) => {
            let index = SafetensorsIndex::parse(&json, &index_url)?;
            let shards = index
                .shards
                .iter()
                .map(|s| folder::join(url, &s.file))
                .collect();
            (shards, Some(index))
        }
        None => (vec![folder::join(url, folder::SINGLE_FILE)], None),
    };
    // The companion files at once: most are small and several are absent (a 404 each).
    let fetched = futures_util::future::join_all(folder::COMPANION_FILES.into_iter().map(
        |name| async move {
            let file = folder::join(url, name);
            (
                name,
                optional(browser::fetch_small(&file, cache, signal).await),
                file,
            )
        },
    ))
    .await;
    let mut companions = std::collections::BTreeMap::new();
    for (name, fetched, file) in fetched {
        if let Some(bytes) = fetched? {
            let text = String::from_utf8(bytes).map_err(|_| Error::InvalidHeader {
                file,
                detail: "not UTF-8 text".into(),
            })?;
            companions.insert(name.to_string(), text);
        }
    }
    // Each Dense module's config and weights (a missing one is an error, not a 404 to skip).
    let mut module_weights = std::collections::BTreeMap::new();
    for module in folder::dense_module_dirs(&companions, url)? {
        let fetch = |f: String| async move {
            match browser::fetch_small(&folder::join(url, &f), cache, signal).await {
                Err(Error::Http { status: 404, .. }) => Err(folder::missing_module_file(url, &f)),
                other => other,
            }
        };
        let config = format!("{module}/config.json");
        let text = String::from_utf8(fetch(config.clone()).await?).map_err(|_| Error::Config {
            source_name: folder::join(url, &config),
            detail: "not UTF-8 text".into(),
        })?;
        companions.insert(config, text);
        let weights = format!("{module}/{}", folder::MODULE_WEIGHTS);
        module_weights.insert(weights.clone(), fetch(weights).await?);
    }
    let plan = folder::FolderPlan {
        weights,
        index,
        companions,
        module_weights,
    };
    folder::check_companions(url, &plan)?;
    Ok(plan)
}

/// The model's files with their expected sha256 (by position; missing ones are not checked).
fn with_sha256<S>(sources: Vec<S>, sha256: &[Option<String>]) -> Vec<ModelFile<S>> {
    sources
        .into_iter()
        .enumerate()
        .map(|(i, source)| ModelFile {
            source,
            sha256: sha256.get(i).cloned().flatten(),
        })
        .collect()
}

/// Sets `flag` when `signal` aborts (now, if it already has). The returned closure must live as
/// long as the load.
fn watch_abort(signal: &JsValue, flag: &AbortFlag) -> Result<Closure<dyn FnMut()>, Error> {
    if get(signal, "aborted").and_then(|a| a.as_bool()) == Some(true) {
        flag.abort();
    }
    let flag = flag.clone();
    let closure = Closure::<dyn FnMut()>::new(move || flag.abort());
    let add = js_sys::Reflect::get(signal, &"addEventListener".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| crate::load::io_error("signal", "not an AbortSignal"))?;
    let _ = add.call2(signal, &"abort".into(), closure.as_ref());
    Ok(closure)
}

fn positive_int(v: &JsValue, name: &str) -> Result<usize, Error> {
    match v.as_f64() {
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 1e9 => Ok(n as usize),
        _ => Err(Error::InvalidRequest(format!(
            "{name} must be a positive integer, not {}",
            describe(v)
        ))),
    }
}

fn describe(v: &JsValue) -> String {
    js_sys::JSON::stringify(v)
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| format!("{v:?}"))
}

/// A JS value (a request, a list of messages) as JSON for [`crate::request`]. `NaN` and
/// `±Infinity`, which JSON cannot hold, become the strings "NaN", "Infinity" and "-Infinity" so
/// that the parser refuses them by name instead of seeing `null`; what JSON cannot represent at
/// all (a BigInt, a cycle) is an invalid request.
fn to_json(v: &JsValue, what: &str) -> Result<serde_json::Value, Error> {
    let replacer =
        Closure::<dyn FnMut(JsValue, JsValue) -> JsValue>::new(|_key: JsValue, value: JsValue| {
            match value.as_f64() {
                Some(n) if n.is_nan() => JsValue::from_str("NaN"),
                Some(n) if n.is_infinite() => {
                    JsValue::from_str(if n > 0.0 { "Infinity" } else { "-Infinity" })
                }
                _ => value,
            }
        });
    let json = js_sys::JSON::stringify_with_replacer(v, replacer.as_ref())
        .map_err(|e| {
            Error::InvalidRequest(format!("{what} cannot be read as JSON: {}", describe(&e)))
        })?
        .as_string()
        .unwrap_or_else(|| "null".into());
    serde_json::from_str(&json)
        .map_err(|e| Error::InvalidRequest(format!("{what} cannot be read as JSON: {e}")))
}

/// What a model runs on.
#[derive(Clone)]
enum Compute {
    Gpu(Rc<GpuContext>),
    Cpu(Rc<CpuContext>),
}

impl Compute {
    fn device(&self) -> Device<'_> {
        match self {
            Compute::Gpu(ctx) => Device::Gpu(ctx),
            Compute::Cpu(cpu) => Device::Cpu(cpu),
        }
    }

    /// A lost GPU device; the CPU is always there.
    fn check_health(&self) -> Result<(), Error> {
        match self {
            Compute::Gpu(ctx) => ctx.check_health(),
            Compute::Cpu(_) => Ok(()),
        }
    }
}

/// A loaded model, ready to generate.
#[wasm_bindgen]
pub struct Model {
    ctx: Compute,
    engine: Rc<RefCell<Option<Engine>>>,
    busy: Rc<Cell<bool>>,
    /// `unload()` was called during a generation: destroy the engine when it returns.
    unload_pending: Rc<Cell<bool>>,
}

impl Model {
    fn new(ctx: Compute, engine: Engine) -> Model {
        Model {
            ctx,
            engine: Rc::new(RefCell::new(Some(engine))),
            busy: Rc::new(Cell::new(false)),
            unload_pending: Rc::new(Cell::new(false)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Engine) -> Result<T, Error>) -> Result<T, Error> {
        match self.engine.borrow().as_ref() {
            Some(e) => f(e),
            None => Err(Error::Unloaded),
        }
    }
}

#[wasm_bindgen]
impl Model {
    /// "chat" (an `EmbeddingModel` says "embedding").
    pub fn kind(&self) -> String {
        "chat".into()
    }

    /// `{name, architecture, vocab, layers, hidden, heads, kvHeads, headDim, context,
    /// trainedContext, backend ("webgpu" or "cpu"), weightBytes, kvBytes, chatTemplate (bool), eos (token ids),
    /// samplingDefaults (the model's own, as request fields)}`.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        self.with(|e| {
            let c = e.config();
            let (weights, kv) = e.gpu_bytes();
            let o = js_sys::Object::new();
            let set = |k: &str, v: JsValue| {
                let _ = js_sys::Reflect::set(&o, &k.into(), &v);
            };
            set("name", e.name().into());
            set("backend", e.backend().into());
            set(
                "architecture",
                format!("{:?}", c.architecture).to_lowercase().into(),
            );
            for (k, v) in [
                ("vocab", c.vocab),
                ("layers", c.layers),
                ("hidden", c.hidden),
                ("heads", c.heads),
                ("kvHeads", c.kv_heads),
                ("headDim", c.head_dim),
                ("context", e.context()),
                ("trainedContext", c.max_positions),
            ] {
                set(k, (v as f64).into());
            }
            set("weightBytes", (weights as f64).into());
            set("kvBytes", (kv as f64).into());
            set("chatTemplate", e.template().is_some().into());
            let eos: js_sys::Array = e.eos().iter().map(|&t| JsValue::from(t)).collect();
            set("eos", eos.into());
            let defaults = serde_json::Value::Object(e.sampling_defaults().fields().clone());
            let defaults = js_sys::JSON::parse(&defaults.to_string()).unwrap_or(JsValue::NULL);
            set("samplingDefaults", defaults);
            Ok(o.into())
        })
        .map_err(|e| to_js_error(&e))
    }

    /// The token ids of `text` (with BOS as the model defines when `addSpecial`).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, JsValue> {
        self.with(|e| e.tokenizer().encode(text, add_special))
            .map_err(|e| to_js_error(&e))
    }

    /// The text of token ids (special tokens skipped).
    pub fn detokenize(&self, ids: Vec<u32>) -> Result<String, JsValue> {
        self.with(|e| e.tokenizer().decode(&ids, true))
            .map_err(|e| to_js_error(&e))
    }

    /// The prompt text the model's chat template makes of `messages`, ending with the header of
    /// the assistant's turn.
    #[wasm_bindgen(js_name = applyChatTemplate)]
    pub fn apply_chat_template(&self, messages: JsValue) -> Result<String, JsValue> {
        let run = || {
            let messages = request::parse_messages(&to_json(&messages, "messages")?)?;
            self.with(|e| match e.template() {
                Some(t) => t.render(&messages, true),
                None => Err(Error::MissingChatTemplate {
                    source_name: e.name().to_string(),
                    detail: String::new(),
                }),
            })
        };
        run().map_err(|e| to_js_error(&e))
    }

    /// Generates a reply. `request`: `messages` (a chat, through the model's template) or `prompt`
    /// (plain text), and the OpenAI sampling options `max_tokens`, `temperature` (0 = greedy;
    /// default 1), `top_p`, `seed`, `stop`, `frequency_penalty`, `presence_penalty`, plus `top_k`,
    /// `min_p` and `repetition_penalty`; `signal` (an `AbortSignal`) stops it within one token.
    /// `onToken(text, tokenId)` is called after every token with the text that may be shown
    /// (possibly empty); returning `false` stops the generation.
    ///
    /// Resolves to `{text, tokens, finishReason ("stop" | "length" | "abort"), promptTokens,
    /// cachedTokens (prompt tokens reused from the previous generation's KV cache),
    /// completionTokens, prefillMs, decodeMs, fullRowReads, nucleusDraws, masks}` (`masks`: `{count, meanMs,
    /// maxMs}`, the host time of a response format's token masks, when the request had one). One generation runs at a time: a second call
    /// while one runs rejects with code `invalid_request` (the npm package queues requests).
    pub fn generate(&self, request: JsValue, on_token: Option<js_sys::Function>) -> Promise {
        let ctx = self.ctx.clone();
        let engine = self.engine.clone();
        let busy = self.busy.clone();
        let unload_pending = self.unload_pending.clone();
        reject_on_error(async move {
            let mut json = to_json(&request, "the request")?;
            if let Some(e) = engine.borrow().as_ref() {
                e.sampling_defaults().apply(&mut json);
            }
            let (options, prompt) = request::parse_request(&json)?;
            let signal = get(&request, "signal");
            if busy.get() {
                return Err(Error::InvalidRequest(
                    "a generation is already running on this model; wait for it".into(),
                ));
            }
            // Taken out for the generation (a RefCell borrow cannot live across awaits); put
            // back after, whatever happens.
            let mut e = engine.borrow_mut().take().ok_or(Error::Unloaded)?;
            busy.set(true);
            let stop = Stop {
                signal,
                unload_pending: unload_pending.clone(),
            };
            let result = run_generation(&ctx, &mut e, &prompt, &options, &stop, on_token).await;
            busy.set(false);
            if unload_pending.replace(false) {
                e.destroy();
            } else {
                *engine.borrow_mut() = Some(e);
            }
            result
        })
    }

    /// Forgets the KV cache's contents (the next prompt is prefilled from its start).
    pub fn reset(&self) {
        if let Some(e) = self.engine.borrow_mut().as_mut() {
            e.reset();
        }
    }

    /// Frees the model's GPU memory now; later calls reject with code "unloaded". A generation
    /// in progress finishes its current token first.
    pub fn unload(&self) {
        match self.engine.borrow_mut().take() {
            Some(mut e) => e.destroy(),
            None if self.busy.get() => self.unload_pending.set(true),
            None => {}
        }
    }
}

/// A model's name from its files' URLs: the folder of a sentence-transformers model, else the
/// first file's name.
fn model_name(files: &[String]) -> String {
    let first = files.first().map_or("", String::as_str);
    let path = first.split(['?', '#']).next().unwrap_or(first);
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or(path);
    match parts.next() {
        Some(dir) if !dir.is_empty() && !file.ends_with(".gguf") => dir.to_string(),
        _ => file.to_string(),
    }
}

/// A sentence-embedding model: what `Gpu.loadModel` and `Cpu.loadModel` resolve to for an
/// encoder (a sentence-transformers folder). Texts or token ids in, one vector each out.
#[wasm_bindgen]
pub struct EmbeddingModel {
    ctx: Rc<Compute>,
    /// None once unloaded; a request holds its own `Rc` while it runs.
    embedder: Rc<RefCell<Option<Rc<Embedder>>>>,
    weight_bytes: u64,
    busy: Rc<Cell<bool>>,
}

impl EmbeddingModel {
    fn new(ctx: Compute, embedder: Embedder, weight_bytes: u64) -> EmbeddingModel {
        EmbeddingModel {
            ctx: Rc::new(ctx),
            embedder: Rc::new(RefCell::new(Some(Rc::new(embedder)))),
            weight_bytes,
            busy: Rc::new(Cell::new(false)),
        }
    }
}

#[wasm_bindgen]
impl EmbeddingModel {
    /// "embedding" (a `Model` says "chat").
    pub fn kind(&self) -> String {
        "embedding".into()
    }

    /// `{name, architecture ("bert"), kind ("embedding"), backend ("webgpu" or "cpu"), dimensions,
    /// maxTokens (inputs are cut to this), pooling ("mean", "cls" or "last"), normalized, vocab,
    /// layers, hidden, heads, weightBytes}`.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let e = self.embedder.borrow();
        let e = e.as_ref().ok_or_else(|| to_js_error(&Error::Unloaded))?;
        let c = e.encoder.config();
        let pooling = match c.pooling {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last",
        };
        let info = serde_json::json!({
            "name": e.name,
            "architecture": "bert",
            "kind": "embedding",
            "backend": match *self.ctx {
                Compute::Gpu(_) => "webgpu",
                Compute::Cpu(_) => "cpu",
            },
            "dimensions": c.dimensions(),
            "maxTokens": c.max_tokens,
            "pooling": pooling,
            "normalized": c.normalize,
            "vocab": c.vocab,
            "layers": c.layers,
            "hidden": c.hidden,
            "heads": c.heads,
            "weightBytes": self.weight_bytes,
        });
        js_sys::JSON::parse(&info.to_string())
    }

    /// Embeds `inputs` (an array of strings, or of arrays of token ids), each checked before
    /// any runs. `options`: `truncate` (default true: inputs longer than `maxTokens` are cut;
    /// false: they are refused with `context_overflow`) and `dimensions` (Matryoshka: the first
    /// `dimensions` values, normalized again if the model normalizes). Resolves to
    /// `{vectors: Float32Array[], tokens: number[], truncated: number}`.
    pub fn embed(&self, inputs: JsValue, options: JsValue) -> Promise {
        let ctx = self.ctx.clone();
        let embedder = self.embedder.clone();
        let busy = self.busy.clone();
        reject_on_error(async move {
            let present = |name: &str| get(&options, name).filter(|v| !v.is_null());
            let truncate = match present("truncate") {
                None => true,
                Some(v) => v.as_bool().ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "truncate must be a boolean, not {}",
                        describe(&v)
                    ))
                })?,
            };
            let dimensions = present("dimensions");
            if !js_sys::Array::is_array(&inputs) {
                return Err(Error::InvalidRequest(
                    "input must be a string, an array of strings, an array of token ids or an \
                     array of arrays of token ids"
                        .into(),
                ));
            }
            let items = js_sys::Array::from(&inputs);
            if items.length() == 0 {
                return Err(Error::InvalidRequest(
                    "input is an empty list: there is nothing to embed".into(),
                ));
            }
            let inputs = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item.as_string() {
                    Some(text) => Ok(EmbedInput::Text(text.into())),
                    None => token_ids(&item, i).map(EmbedInput::Ids),
                })
                .collect::<Result<Vec<_>, Error>>()?;
            if busy.replace(true) {
                return Err(Error::InvalidRequest(
                    "an embedding request is already running on this model".into(),
                ));
            }
            let _idle = scopeguard(busy);
            let e = embedder.borrow().clone().ok_or(Error::Unloaded)?;
            let width = e.encoder.config().dimensions();
            let normalize = e.encoder.config().normalize;
            let dimensions = match dimensions.map(|v| (v.as_f64(), v)) {
                None => None,
                Some((Some(d), _)) if d.fract() == 0.0 && d >= 1.0 && d <= width as f64 => {
                    Some(d as usize)
                }
                Some((_, v)) => {
                    return Err(Error::InvalidRequest(format!(
                        "dimensions must be an integer from 1 to {width} (this model's \
                         dimensions), not {}",
                        describe(&v)
                    )))
                }
            };
            let embeddings = e.embed_inputs(ctx.device(), &inputs, truncate).await;
            // `unload()` while this ran left the GPU memory to free here.
            if embedder.borrow().is_none() {
                e.destroy();
            }
            let embeddings = embeddings?;
            let vectors = js_sys::Array::new();
            let tokens = js_sys::Array::new();
            let mut truncated = 0;
            for em in &embeddings {
                let v = match dimensions {
                    Some(d) => encoder::shorten(&em.vector, d, normalize)
                        .expect("dimensions checked against the width"),
                    None => em.vector.clone(),
                };
                vectors.push(&Float32Array::from(v.as_slice()));
                tokens.push(&JsValue::from(em.tokens as f64));
                truncated += usize::from(em.truncated);
            }
            let o = js_sys::Object::new();
            let _ = js_sys::Reflect::set(&o, &"vectors".into(), &vectors);
            let _ = js_sys::Reflect::set(&o, &"tokens".into(), &tokens);
            let _ = js_sys::Reflect::set(&o, &"truncated".into(), &JsValue::from(truncated as f64));
            Ok(o.into())
        })
    }

    /// Frees the model's GPU memory (after the request in progress, if one runs); later calls
    /// reject with code "unloaded".
    pub fn unload(&self) {
        let taken = self.embedder.borrow_mut().take();
        if let Some(e) = taken {
            if !self.busy.get() {
                e.destroy();
            }
        }
    }
}

/// Clears a busy flag when dropped (also when the request fails or its promise is dropped).
fn scopeguard(busy: Rc<Cell<bool>>) -> impl Drop {
    struct Idle(Rc<Cell<bool>>);
    impl Drop for Idle {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    Idle(busy)
}

/// Input `index` of an embedding request as token ids (an array of non-negative integers).
fn token_ids(item: &JsValue, index: usize) -> Result<Vec<u32>, Error> {
    let bad = || {
        Error::InvalidRequest(format!(
            "input {index} must be a string or an array of token ids (non-negative integers)"
        ))
    };
    if !js_sys::Array::is_array(item) {
        return Err(bad());
    }
    js_sys::Array::from(item)
        .iter()
        .map(|v| match v.as_f64() {
            Some(x) if x.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&x) => Ok(x as u32),
            _ => Err(bad()),
        })
        .collect()
}

/// A token's log probabilities as the package reads them: `{id, token, bytes, logprob,
/// top: [{id, token, bytes, logprob}]}` (`token` is the token's text, `bytes` its UTF-8 bytes,
/// which may be part of a character).
fn logprobs_js(tokenizer: &crate::text::Tokenizer, lp: &crate::sample::TokenLogprobs) -> JsValue {
    let entry = |id: u32, logprob: f32| {
        let bytes = tokenizer.bytes_of(id);
        serde_json::json!({
            "id": id,
            "token": String::from_utf8_lossy(&bytes),
            "bytes": bytes,
            // JSON has no -inf: a token that cannot come gets OpenAI's floor.
            "logprob": if logprob.is_finite() { logprob.max(-9999.0) } else { -9999.0 },
        })
    };
    let mut v = entry(lp.token, lp.logprob);
    v["top"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

/// What ends a generation from outside: an aborted signal, or `unload()`.
struct Stop {
    signal: Option<JsValue>,
    unload_pending: Rc<Cell<bool>>,
}

impl Stop {
    fn aborted(&self) -> bool {
        self.signal
            .as_ref()
            .and_then(|s| get(s, "aborted"))
            .and_then(|a| a.as_bool())
            == Some(true)
    }

    fn requested(&self) -> bool {
        self.aborted() || self.unload_pending.get()
    }
}

async fn run_generation(
    ctx: &Compute,
    engine: &mut Engine,
    prompt: &Prompt,
    options: &GenerateOptions,
    stop: &Stop,
    on_token: Option<js_sys::Function>,
) -> Result<JsValue, Error> {
    ctx.check_health()?;
    let (ids, tools, required) = match prompt {
        Prompt::Chat(m, kwargs, tools) => {
            let (ids, required) = engine.chat_prompt_tools(m, kwargs, tools.as_ref())?;
            (ids, tools.as_ref(), required)
        }
        Prompt::Text(t) => (engine.text_prompt(t)?, None, None),
    };
    let mut options = options.clone();
    if let Some(format) = required {
        if options.response_format.is_some() {
            return Err(Error::InvalidRequest(
                "response_format and a tool_choice that requires a call cannot be combined".into(),
            ));
        }
        options.response_format = Some(format);
    }
    // With tools the model may call, streamed text stops where a call may start.
    let calling = tools.filter(|t| t.choice != ToolChoice::None);
    let mut tool_stream = calling.map(|_| ToolStream::new(engine.tool_syntax()));
    let tokenizer = engine.tokenizer().clone();
    let mut callback_error = None;
    let mut on = |t: TokenEvent<'_>| {
        let shown = match tool_stream.as_mut() {
            Some(s) => {
                let raw = tokenizer.decode(&[t.token], false).unwrap_or_default();
                s.push(t.text, &raw)
            }
            None => t.text.to_string(),
        };
        let lp = t.logprobs.map(|lp| logprobs_js(&tokenizer, lp));
        if let Some(f) = on_token
            .as_ref()
            .filter(|_| !shown.is_empty() || lp.is_some())
        {
            let lp = lp.unwrap_or(JsValue::UNDEFINED);
            match f.call3(&JsValue::NULL, &shown.as_str().into(), &t.token.into(), &lp) {
                Ok(r) if r.as_bool() == Some(false) => return Flow::Stop,
                Ok(_) => {}
                Err(e) => {
                    callback_error = Some(e);
                    return Flow::Stop;
                }
            }
        }
        if stop.requested() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let g = if stop.aborted() {
        return Err(Error::Aborted);
    } else {
        engine.generate(ctx.device(), &ids, &options, &mut on).await
    };
    if let Some(e) = callback_error {
        return Err(Error::InvalidRequest(format!(
            "onToken threw: {}",
            describe(&e)
        )));
    }
    let g = g.map_err(|e| match ctx.check_health() {
        Err(lost) => lost,
        Ok(()) => e,
    })?;
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = js_sys::Reflect::set(&o, &k.into(), &v);
    };
    set("text", g.text.as_str().into());
    let tokens: js_sys::Array = g.tokens.iter().map(|&t| JsValue::from(t)).collect();
    set("tokens", tokens.into());
    set("finishReason", g.finish_reason.as_str().into());
    if calling.is_some() {
        let reply = engine.parse_tool_reply(&g.tokens)?;
        if !reply.calls.is_empty() {
            let calls: Vec<serde_json::Value> = reply.calls.iter().map(|c| c.to_openai()).collect();
            let calls = serde_json::Value::Array(calls).to_string();
            set(
                "toolCalls",
                js_sys::JSON::parse(&calls).unwrap_or(JsValue::NULL),
            );
            set("text", reply.content.as_str().into());
            if g.finish_reason != FinishReason::Abort {
                set("finishReason", "tool_calls".into());
            }
        }
        if let Some(problem) = &reply.problem {
            set("toolCallError", problem.as_str().into());
        }
    }
    set("promptTokens", (g.prompt_tokens as f64).into());
    set("cachedTokens", (g.cached_tokens as f64).into());
    set("completionTokens", (g.tokens.len() as f64).into());
    set("prefillMs", g.prefill_ms.into());
    set("decodeMs", g.decode_ms.into());
    set("fullRowReads", (g.full_row_reads as f64).into());
    set("nucleusDraws", (g.nucleus_draws as f64).into());
    if !g.logprobs.is_empty() {
        let tokenizer = engine.tokenizer();
        let list: js_sys::Array = g
            .logprobs
            .iter()
            .map(|lp| logprobs_js(tokenizer, lp))
            .collect();
        set("logprobs", list.into());
    }
    if let Some(m) = &g.masks {
        let masks = js_sys::Object::new();
        for (k, v) in [
            ("count", m.count as f64),
            ("meanMs", m.mean_ms()),
            ("maxMs", m.max_ms),
        ] {
            let _ = js_sys::Reflect::set(&masks, &k.into(), &v.into());
        }
        set("masks", masks.into());
    }
    Ok(o.into())
}
