//! The PocketLM command-line tool.

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::process::ExitCode;

    use std::io::{IsTerminal, Write};

    use clap::{Parser, Subcommand};
    use pocketlm::cpu::CpuContext;
    use pocketlm::engine::{Device, Engine, EngineOptions, Flow, GenerateOptions, Generation};
    use pocketlm::gpu::{DType, GpuContext, ProfileRequest};
    use pocketlm::load::{LoadOptions, Progress};
    use pocketlm::model::{Embedder, EncoderConfig, ModelConfig};
    use pocketlm::request;
    use pocketlm::sample::{SamplingDefaults, SamplingParams};
    use pocketlm::text::{ChatMessage, ResponseFormat, ToolChoice, ToolRequest};
    use pocketlm::{bench, load, selfcheck};

    /// A weight format by its name (`q4_k`, `F16`), for `kernel-bench --formats`.
    fn weight_format(name: &str) -> Result<DType, String> {
        DType::WEIGHTS
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<_> = DType::WEIGHTS.iter().map(|d| d.name()).collect();
                format!("unknown format (known: {})", known.join(", "))
            })
    }

    #[derive(Parser)]
    #[command(name = "pocketlm", version, about = "Small language models on WebGPU")]
    struct Cli {
        /// Device profile: auto (everything the adapter offers), full (f16 + subgroups, or fail),
        /// or baseline (WebGPU defaults, no f16, no subgroups).
        #[arg(long, global = true, default_value = "auto")]
        profile: String,
        /// Where models run: auto (WebGPU on a hardware adapter; the CPU backend when there is
        /// no adapter or only a software one such as lavapipe or SwiftShader), gpu, or cpu.
        #[arg(long, global = true, default_value = "auto")]
        backend: String,
        /// Threads of the CPU backend (default: one per core).
        #[arg(long, global = true)]
        threads: Option<usize>,
        /// The WebGPU backend's kernel family: auto (by adapter type), gpu (the kernels made
        /// for GPUs, also on a CPU adapter) or cpu (those made for CPU adapters). For
        /// benchmarks and checks of one family on any driver.
        #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "gpu", "cpu"])]
        kernels: String,
        /// The prefill GEMM (prompts of more than 16 tokens on the kernels made for GPUs) with
        /// f16 workgroup tiles where the device has shader-f16; off by default (on an NVIDIA
        /// H200, 128-token prefill ran 0.75-0.79x as fast with them). `kernel-bench --rows 128`
        /// times both tiles whatever this says.
        #[arg(long, global = true)]
        f16_tiles: bool,
        /// Split attention over the context in chunks of this many positions on WebGPU,
        /// instead of the default (at least 64, enough chunks to fill a GPU at full context).
        /// For tuning on a GPU: `scripts/device-bench.sh sweep` compares several.
        #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
        attention_chunk: Option<u32>,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Print a model file's architecture, hyper-parameters, tensors and formats (reads only
        /// its header). MODEL is a path, an http(s) URL, or `default`.
        Info { model: String },
        /// Print the GPU adapter, the device profile, features and limits.
        Device,
        /// Write a copy of MODEL (a GGUF file, or the header alone that --header-only writes)
        /// to OUT with random weights in the same formats: it loads and runs as MODEL does, at
        /// the same speed. For timing a model whose weights are not at hand.
        RandomWeights {
            model: String,
            out: std::path::PathBuf,
            /// Write MODEL's header alone (up to its data section): a small file that this
            /// command turns into the whole model elsewhere.
            #[arg(long)]
            header_only: bool,
            /// Seed of the random weights.
            #[arg(long, default_value_t = 0)]
            seed: u64,
        },
        /// Print the device report, then run every kernel against its CPU reference.
        Selfcheck,
        /// Time matvec for every weight format against a plain copy kernel on this device.
        KernelBench {
            /// The matrix is SIZE × SIZE (a multiple of 256).
            #[arg(long, default_value_t = 4096)]
            size: usize,
            /// Calls per timed command buffer.
            #[arg(long, default_value_t = 10)]
            calls: usize,
            /// Only these weight formats, comma-separated (f32,q4_0,q4_k,…); all by default.
            #[arg(long, value_delimiter = ',', value_parser = weight_format)]
            formats: Vec<DType>,
            /// Activation rows: 1 is a decode step, more a prefill step's linear layer (the
            /// kernel the runtime picks for that many rows).
            #[arg(long, default_value_t = 1)]
            rows: usize,
        },
        /// Generate a reply to PROMPT: only the generated text goes to stdout, as it is sampled.
        Run {
            /// A path, an http(s) URL, a model folder, or `default`.
            model: String,
            prompt: String,
            /// Send PROMPT as one user message through the model's chat template.
            #[arg(long)]
            chat: bool,
            /// Print one JSON object (text, token ids, finish reason, counts, timings) at the end
            /// instead of streaming the text.
            #[arg(long)]
            json: bool,
            #[command(flatten)]
            gen: GenArgs,
        },
        /// An interactive multi-turn chat in the terminal (`/reset` starts over, `/exit` or
        /// end of input ends it).
        Chat {
            model: String,
            /// A system message opening the conversation.
            #[arg(long)]
            system: Option<String>,
            #[command(flatten)]
            gen: GenArgs,
        },
        /// Embed each TEXT with a sentence-embedding model (a sentence-transformers folder, such
        /// as all-MiniLM-L6-v2): one line per text holding its vector as a JSON array, or with
        /// --json OpenAI's embeddings response.
        Embed {
            model: String,
            #[arg(required = true)]
            texts: Vec<String>,
            /// Print `{object: "list", data: [{object: "embedding", index, embedding}], model,
            /// usage}` instead.
            #[arg(long)]
            json: bool,
            /// Keep the first N values (Matryoshka truncation), normalised again when the model
            /// normalises.
            #[arg(long, value_name = "N")]
            dimensions: Option<usize>,
            /// Refuse a text longer than the model's input instead of cutting it.
            #[arg(long)]
            no_truncate: bool,
        },
        /// Prefill and decode speed, GPU work per token and GPU memory, as a table; for an
        /// embedding model folder, embeddings/s and tokens/s by input length.
        Bench {
            model: String,
            /// Prompt length to prefill.
            #[arg(long, default_value_t = 128)]
            prompt_tokens: usize,
            /// Tokens to decode (greedy, past end-of-turn tokens).
            #[arg(long, default_value_t = 32)]
            gen_tokens: usize,
            /// Positions in the KV cache.
            #[arg(long)]
            context: Option<usize>,
            /// The KV cache's element type, f16 (default) or f32.
            #[arg(long, value_parser = ["f16", "f32"])]
            kv_dtype: Option<String>,
            /// Also time each kind of dispatch of a decode step, and of each prefill step, on
            /// its own.
            #[arg(long)]
            per_kernel: bool,
            /// Only the prefill and decode speeds and GPU times: none of the comparisons of
            /// sampling settings, pipelining and constrained decoding (for sweeps of a setting).
            #[arg(long)]
            quick: bool,
        },
    }

    /// Generation options of `run` and `chat`. The defaults are llama.cpp's; `--temperature 0`
    /// is greedy.
    #[derive(clap::Args, Clone)]
    struct GenArgs {
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Default: the model's (generation_config.json, GGUF general.sampling.temp), else 0.8.
        #[arg(long)]
        temperature: Option<f32>,
        /// 0 turns top-k off. Default: the model's, else 40.
        #[arg(long)]
        top_k: Option<usize>,
        /// Default: the model's, else 0.95.
        #[arg(long)]
        top_p: Option<f32>,
        /// Default: the model's, else 0.05.
        #[arg(long)]
        min_p: Option<f32>,
        /// Default: the model's, else 1 (off).
        #[arg(long)]
        repeat_penalty: Option<f32>,
        #[arg(long, default_value_t = 0.0)]
        presence_penalty: f32,
        #[arg(long, default_value_t = 0.0)]
        frequency_penalty: f32,
        /// The same seed gives the same reply; none draws one from the clock.
        #[arg(long)]
        seed: Option<u64>,
        /// A string that ends the reply (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Positions in the KV cache (prompt plus reply); default: the model's, up to 4096.
        #[arg(long)]
        context: Option<usize>,
        /// The KV cache's element type, f16 (default: half the memory) or f32.
        #[arg(long, value_parser = ["f16", "f32"])]
        kv_dtype: Option<String>,
        /// Sliding-window layers (Gemma 2 and 3, Mistral, Phi-3) keep every position instead
        /// of a ring of their window and one step: more memory, and a cached prefix is always
        /// reusable.
        #[arg(long)]
        full_window_cache: bool,
        /// Constrain the reply to JSON valid under the JSON schema in FILE.
        #[arg(long, value_name = "FILE", group = "format")]
        json_schema: Option<std::path::PathBuf>,
        /// Constrain the reply to a JSON object.
        #[arg(long, group = "format")]
        json_object: bool,
        /// Constrain the reply to the grammar in FILE (Lark, or GBNF with `root ::= …`).
        #[arg(long, value_name = "FILE", group = "format")]
        grammar: Option<std::path::PathBuf>,
        /// Constrain the reply to text matching the regular expression.
        #[arg(long, value_name = "PATTERN", group = "format")]
        regex: Option<String>,
        /// Functions the model may call (`run --chat`): a JSON file holding OpenAI's `tools`
        /// array. Calls in the reply are printed as JSON lines after it.
        #[arg(long, value_name = "FILE")]
        tools: Option<std::path::PathBuf>,
        /// With --tools: auto (default), none, required, or the name of the function to call.
        #[arg(long, requires = "tools")]
        tool_choice: Option<String>,
    }

    impl GenArgs {
        /// The engine's options from `--context`, `--kv-dtype` and `--full-window-cache`.
        fn engine_options(&self) -> EngineOptions {
            EngineOptions {
                context: self.context,
                kv_dtype: kv_dtype(self.kv_dtype.as_deref()),
                full_window_cache: self.full_window_cache,
            }
        }

        /// The reply's format from `--json-schema`, `--json-object`, `--grammar` or `--regex`.
        fn response_format(&self) -> pocketlm::Result<Option<ResponseFormat>> {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path)
                    .map_err(|e| load::io_error(&path.display().to_string(), e))
            };
            Ok(if let Some(path) = &self.json_schema {
                let schema = serde_json::from_str(&read(path)?).map_err(|e| {
                    pocketlm::Error::InvalidRequest(format!(
                        "{} is not valid JSON: {e}",
                        path.display()
                    ))
                })?;
                Some(ResponseFormat::JsonSchema(schema))
            } else if self.json_object {
                Some(ResponseFormat::JsonObject)
            } else if let Some(path) = &self.grammar {
                Some(ResponseFormat::Grammar(read(path)?))
            } else {
                self.regex.clone().map(ResponseFormat::Regex)
            })
        }

        /// The options of a request to a model with `defaults`: a flag wins, then the model's
        /// default, then llama.cpp's.
        /// The tools of `--tools` and `--tool-choice`, checked as a request's are.
        fn tools(&self) -> pocketlm::Result<Option<ToolRequest>> {
            let Some(path) = &self.tools else {
                return Ok(None);
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| load::io_error(&path.display().to_string(), e))?;
            let tools: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                pocketlm::Error::InvalidRequest(format!(
                    "{} is not valid JSON: {e}",
                    path.display()
                ))
            })?;
            let choice = match self.tool_choice.as_deref() {
                None => serde_json::Value::Null,
                Some(c @ ("auto" | "none" | "required")) => c.into(),
                Some(name) => serde_json::json!({"type": "function", "function": {"name": name}}),
            };
            request::parse_tools(&serde_json::json!({"tools": tools, "tool_choice": choice}))
        }

        fn options(&self, defaults: &SamplingDefaults) -> pocketlm::Result<GenerateOptions> {
            let model = |k: &str| defaults.fields().get(k).and_then(serde_json::Value::as_f64);
            let pick = |flag: Option<f32>, key: &str, fallback: f32| {
                flag.or(model(key).map(|v| v as f32)).unwrap_or(fallback)
            };
            Ok(GenerateOptions {
                sampling: SamplingParams {
                    temperature: pick(self.temperature, "temperature", 0.8),
                    top_k: self
                        .top_k
                        .or(model("top_k").map(|v| v as usize))
                        .unwrap_or(40),
                    top_p: pick(self.top_p, "top_p", 0.95),
                    min_p: pick(self.min_p, "min_p", 0.05),
                    repetition_penalty: pick(self.repeat_penalty, "repetition_penalty", 1.0),
                    presence_penalty: self.presence_penalty,
                    frequency_penalty: self.frequency_penalty,
                    seed: self.seed,
                    ..SamplingParams::default()
                },
                max_tokens: Some(self.max_tokens),
                stop: self.stop.clone(),
                ignore_eos: false,
                pipeline: true,
                gpu_nucleus: true,
                response_format: self.response_format()?,
                logprobs: None,
            })
        }
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match pollster::block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// The default model's file, as scripts/fetch-model.sh puts it.
    const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

    /// Where MODEL points: `default` is the default model in `$POCKETLM_MODELS` (or `models/`).
    fn resolve(model: &str) -> pocketlm::Result<String> {
        if model != "default" {
            return Ok(model.to_string());
        }
        let dir = std::env::var("POCKETLM_MODELS").unwrap_or_else(|_| "models".into());
        let path = std::path::Path::new(&dir).join(DEFAULT_MODEL);
        if path.is_file() {
            Ok(path.display().to_string())
        } else {
            Err(pocketlm::Error::Io {
                source_name: path.display().to_string(),
                detail: "the default model is not there: run scripts/fetch-model.sh (or make \
                         setup), or set POCKETLM_MODELS to its folder"
                    .into(),
            })
        }
    }

    /// For config.json: its model type and architectures.
    fn describe_config(name: &str, text: &str) -> String {
        if name != "config.json" {
            return String::new();
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => format!(
                " (model_type {}, architectures {})",
                v["model_type"], v["architectures"]
            ),
            Err(e) => format!(" (not valid JSON: {e})"),
        }
    }

    /// The `random-weights` command: MODEL's GGUF header read from the start of the file as far
    /// as it goes, then OUT written with it and random weights (or the header alone).
    fn random_weights(
        model: &str,
        out: &std::path::Path,
        header_only: bool,
        seed: u64,
    ) -> pocketlm::Result<ExitCode> {
        use pocketlm::formats::{gguf::GgufHeader, Parsed};
        use std::io::{Read, Write};
        let model = resolve(model)?;
        let mut file = std::fs::File::open(&model).map_err(|e| load::io_error(&model, e))?;
        let mut prefix = Vec::new();
        let header = loop {
            // No file size: a file that ends after the header (--header-only's) is complete.
            match GgufHeader::parse(&prefix, None, &model)? {
                Parsed::Complete { header, .. } => break header,
                Parsed::NeedMore { at_least } => {
                    let want = at_least.max(2 * prefix.len()).max(1 << 20);
                    let have = prefix.len();
                    (&mut file)
                        .take((want - have) as u64)
                        .read_to_end(&mut prefix)
                        .map_err(|e| load::io_error(&model, e))?;
                    if prefix.len() == have {
                        return Err(pocketlm::Error::FileTruncated {
                            file: model,
                            detail: format!("the GGUF header ends past its {have} bytes"),
                        });
                    }
                }
            }
        };
        let write = || -> std::io::Result<u64> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
            if header_only {
                let end = header.data_offset as usize;
                w.write_all(&prefix[..end.min(prefix.len())])?;
                w.write_all(&vec![0; end.saturating_sub(prefix.len())])?;
            } else {
                header.write_random_weights(&prefix, seed, &mut w)?;
            }
            w.flush()?;
            Ok(std::fs::metadata(out)?.len())
        };
        let name = out.display();
        let bytes = match write() {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("error: writing '{name}' failed: {e}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let n = header.tensors.len();
        if header_only {
            println!("{name}: {bytes} bytes, the header of {n} tensors");
        } else {
            println!(
                "{name}: {bytes} bytes, {n} tensors of random weights in the original's formats"
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn info(model: &str) -> pocketlm::Result<ExitCode> {
        let model = resolve(model)?;
        let path = std::path::Path::new(&model);
        if path.is_dir() {
            // A model folder: its weights (every split or shard) and its companion files.
            let plan = load::folder::plan_directory(path)?;
            let mut headers = Vec::new();
            for w in &plan.weights {
                headers.push(load::read_header(&mut load::FileSource::open(w.as_ref())?).await?);
            }
            let files = load::merge_headers(headers, plan.index.as_ref())?;
            println!("{model}\n{}", files.summary());
            for (name, text) in &plan.companions {
                println!(
                    "{name}: {} bytes{}",
                    text.len(),
                    describe_config(name, text)
                );
            }
            match plan.companions.get("config.json") {
                Some(_) if pocketlm::model::encoder::is_encoder(&plan.companions) => {
                    describe_embedder(EncoderConfig::from_folder(
                        &plan.companions,
                        &plan.module_weights,
                        &model,
                    ))
                }
                Some(json) => describe_block(ModelConfig::from_hf_json(json, "config.json")),
                None => println!("block: no config.json"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let header = if model.starts_with("http://") || model.starts_with("https://") {
            load::read_header(&mut load::HttpSource::get(&model)?).await?
        } else {
            load::read_header(&mut load::FileSource::open(path)?).await?
        };
        let files = header.into_model_files()?;
        println!("{model}\n{}", files.summary());
        match files.gguf_metadata() {
            Some(meta) if pocketlm::model::encoder::is_encoder_gguf(meta) => {
                describe_embedder(EncoderConfig::from_any_gguf(meta, &files))
            }
            Some(meta) => describe_block(ModelConfig::from_gguf(meta, &files)),
            None => {}
        }
        Ok(ExitCode::SUCCESS)
    }

    /// An embedding model's description, and its decoder's for a decoder-based one.
    fn describe_embedder(described: pocketlm::Result<(EncoderConfig, Option<ModelConfig>)>) {
        match described {
            Ok((c, decoder)) => {
                if let Some(m) = decoder {
                    describe_block(Ok(m));
                }
                println!("{}", c.describe());
            }
            Err(e) => println!("encoder: {e}"),
        }
    }

    /// The block description the decoder would be built from, or why there is none (`info`
    /// reads headers only, so an unsupported model is still described as far as it goes).
    fn describe_block(config: pocketlm::Result<ModelConfig>) {
        match config {
            Ok(c) => println!("{}", c.describe()),
            Err(e) => println!("block: {e}"),
        }
    }

    /// A load progress bar on stderr: redrawn in place on a terminal, a line per quarter
    /// otherwise (logs).
    struct ProgressBar {
        tty: bool,
        last: i64,
    }

    impl ProgressBar {
        fn new() -> Self {
            ProgressBar {
                tty: std::io::stderr().is_terminal(),
                last: -1,
            }
        }

        fn update(&mut self, p: &Progress) {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let Some(total) = p.all_total.filter(|&t| t > 0) else {
                return;
            };
            let frac = p.all_done as f64 / total as f64;
            let step = if self.tty {
                (frac * 200.0) as i64
            } else {
                (frac * 4.0) as i64
            };
            if step == self.last {
                return;
            }
            self.last = step;
            const WIDTH: usize = 30;
            let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
            let line = format!(
                "loading [{}{}] {:>3.0}%  {:.1} / {:.1} MiB",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                frac * 100.0,
                mib(p.all_done),
                mib(total)
            );
            if self.tty {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
        }

        fn finish(&self) {
            if self.tty && self.last >= 0 {
                eprintln!();
            }
        }
    }

    /// Loads a sentence-embedding model onto `dev`: its spec, when loading began, the embedder.
    async fn load_embedder(
        dev: &Dev,
        model: &str,
    ) -> pocketlm::Result<(String, std::time::Instant, Embedder)> {
        Ok(match dev {
            Dev::Gpu(ctx) => {
                let (spec, start, loaded) = load_with_progress(&**ctx, model).await?;
                let embedder = Embedder::from_loaded(ctx, &mut loaded?, &spec).await?;
                (spec, start, embedder)
            }
            Dev::Cpu(cpu) => {
                let (spec, start, loaded) = load_with_progress(cpu, model).await?;
                let embedder = Embedder::from_loaded_cpu(&mut loaded?, &spec)?;
                (spec, start, embedder)
            }
        })
    }

    /// `pocketlm embed`: loads the embedding model and prints each text's vector.
    async fn embed(
        dev: &Dev,
        model: &str,
        texts: &[String],
        json: bool,
        dimensions: Option<usize>,
        truncate: bool,
    ) -> pocketlm::Result<ExitCode> {
        let (spec, start, embedder) = load_embedder(dev, model).await?;
        let c = embedder.encoder.config();
        eprintln!(
            "{spec}: loaded in {:.1} s on {}: {} layers, {} wide, {:?} pooling{}, inputs up to \
             {} tokens",
            start.elapsed().as_secs_f64(),
            dev.describe(),
            c.layers,
            c.hidden,
            c.pooling,
            if c.normalize { ", normalised" } else { "" },
            c.max_tokens
        );
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let start = std::time::Instant::now();
        let embeddings = embedder.embed_texts(dev.device(), &refs, truncate).await?;
        let elapsed = start.elapsed().as_secs_f64();
        let mut vectors = Vec::with_capacity(embeddings.len());
        for e in &embeddings {
            vectors.push(match dimensions {
                None => e.vector.clone(),
                Some(d) => pocketlm::model::encoder::shorten(&e.vector, d, c.normalize)
                    .ok_or_else(|| {
                        pocketlm::Error::InvalidRequest(format!(
                            "dimensions must be 1 to {}, not {d}",
                            e.vector.len()
                        ))
                    })?,
            });
        }
        let tokens: usize = embeddings.iter().map(|e| e.tokens).sum();
        if json {
            let data: Vec<serde_json::Value> = vectors
                .iter()
                .enumerate()
                .map(
                    |(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}),
                )
                .collect();
            let out = serde_json::json!({
                "object": "list",
                "data": data,
                "model": spec,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            });
            println!("{out}");
        } else {
            for v in &vectors {
                println!("{}", serde_json::Value::from(v.clone()));
            }
        }
        let cut = embeddings.iter().filter(|e| e.truncated).count();
        eprintln!(
            "{} texts, {tokens} tokens in {elapsed:.2} s ({:.1} embeddings/s, {:.0} tokens/s){}",
            embeddings.len(),
            embeddings.len() as f64 / elapsed,
            tokens as f64 / elapsed,
            if cut > 0 {
                format!("; {cut} cut to the model's input length")
            } else {
                String::new()
            }
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Resolves MODEL and loads it with a progress bar on stderr: the resolved spec, when the
    /// load started, and the load's result.
    async fn load_with_progress<D: load::LoadTarget>(
        target: &D,
        model: &str,
    ) -> pocketlm::Result<(
        String,
        std::time::Instant,
        pocketlm::Result<load::LoadedModelFiles<D::Tensor>>,
    )> {
        let spec = resolve(model)?;
        let start = std::time::Instant::now();
        let mut bar = ProgressBar::new();
        let mut on_progress = |p: &Progress| bar.update(p);
        // A directory brings the files that say what its weights are; a file is on its own.
        let check: &load::HeaderCheck = if load::local_folder(&spec).is_some() {
            &pocketlm::engine::check_header
        } else {
            &pocketlm::engine::check_lone_header
        };
        let opts = LoadOptions {
            progress: Some(&mut on_progress),
            check_header: Some(check),
            check_companions: Some(&pocketlm::engine::check_companions),
            ..Default::default()
        };
        let loaded = load::load_native(target, &spec, opts).await;
        bar.finish();
        Ok((spec, start, loaded))
    }

    /// The device models run on, chosen by `--backend`.
    enum Dev {
        Gpu(Box<GpuContext>),
        Cpu(CpuContext),
    }

    impl Dev {
        fn device(&self) -> Device<'_> {
            match self {
                Dev::Gpu(ctx) => Device::Gpu(ctx),
                Dev::Cpu(cpu) => cpu.into(),
            }
        }

        /// What runs the model, for messages.
        fn describe(&self) -> String {
            match self {
                Dev::Gpu(ctx) => format!("{} ({} profile)", ctx.adapter_info().name, ctx.profile()),
                Dev::Cpu(cpu) => cpu.describe(),
            }
        }
    }

    /// The WebGPU context with the kernel family `--kernels` asks for.
    async fn open_gpu(cli: &Cli, request: ProfileRequest) -> pocketlm::Result<GpuContext> {
        let ctx = GpuContext::new(request).await?;
        let ctx = match cli.kernels.as_str() {
            "gpu" => ctx.with_cpu_kernels(false),
            "cpu" => ctx.with_cpu_kernels(true),
            _ => ctx,
        };
        Ok(ctx
            .with_f16_tiles(cli.f16_tiles)
            .with_attention_chunk(cli.attention_chunk))
    }

    /// `--backend`: `gpu` opens the adapter (or fails), `cpu` the CPU backend, and `auto` the
    /// adapter when it is a hardware one, the CPU backend when there is none or it is a
    /// software (CPU) adapter. Says why on stderr when `auto` falls back.
    async fn open_device(cli: &Cli) -> pocketlm::Result<Dev> {
        let request: ProfileRequest = cli.profile.parse()?;
        match cli.backend.as_str() {
            "gpu" | "webgpu" => Ok(Dev::Gpu(Box::new(open_gpu(cli, request).await?))),
            "cpu" => Ok(Dev::Cpu(CpuContext::new(cli.threads))),
            "auto" => match open_gpu(cli, request).await {
                Ok(ctx) if !ctx.is_software_adapter() => Ok(Dev::Gpu(Box::new(ctx))),
                Ok(ctx) => {
                    eprintln!(
                        "[backend: CPU, since the only GPU adapter, {}, is a software one; \
                         --backend gpu uses it anyway]",
                        ctx.adapter_info().name
                    );
                    Ok(Dev::Cpu(CpuContext::new(cli.threads)))
                }
                Err(e) => {
                    eprintln!("[backend: CPU, since WebGPU is not available: {e}]");
                    Ok(Dev::Cpu(CpuContext::new(cli.threads)))
                }
            },
            other => Err(pocketlm::Error::InvalidRequest(format!(
                "unknown backend '{other}': expected auto, gpu or cpu"
            ))),
        }
    }

    /// `--kv-dtype`'s type (clap has checked it is f16 or f32).
    fn kv_dtype(arg: Option<&str>) -> Option<DType> {
        arg.map(|d| match d {
            "f32" => DType::F32,
            _ => DType::F16,
        })
    }

    /// Loads MODEL with a progress bar and makes an engine of it; says what it loaded on stderr.
    async fn open_engine(
        dev: &Dev,
        model: &str,
        options: &EngineOptions,
    ) -> pocketlm::Result<Engine> {
        let (spec, start, engine) = match dev {
            Dev::Gpu(ctx) => {
                let ctx: &GpuContext = ctx;
                let (spec, start, loaded) = load_with_progress(ctx, model).await?;
                (spec, start, Engine::new(ctx, loaded?, options).await?)
            }
            Dev::Cpu(cpu) => {
                let (spec, start, loaded) = load_with_progress(cpu, model).await?;
                (spec, start, Engine::new_cpu(cpu, loaded?, options)?)
            }
        };
        let (weights, kv) = engine.gpu_bytes();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "{spec}: loaded in {:.1} s on {}: weights {:.1} MiB, KV cache {:.1} MiB for {} \
             positions",
            start.elapsed().as_secs_f64(),
            dev.describe(),
            mib(weights),
            mib(kv),
            engine.context()
        );
        Ok(engine)
    }

    /// Streams a reply to stdout as it is sampled.
    async fn reply(
        dev: &Dev,
        engine: &mut Engine,
        prompt: &[u32],
        options: &GenerateOptions,
        stream: bool,
    ) -> pocketlm::Result<Generation> {
        let mut out = std::io::stdout().lock();
        let mut on_token = |t: pocketlm::engine::TokenEvent<'_>| {
            if stream && !t.text.is_empty() {
                // A closed stdout (`| head`) ends the generation.
                if out
                    .write_all(t.text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    return Flow::Stop;
                }
            }
            Flow::Continue
        };
        engine
            .generate(dev.device(), prompt, options, &mut on_token)
            .await
    }

    fn report_speed(g: &Generation) {
        eprintln!(
            "[{} prompt tokens ({} reused), {} generated, {}; first token after {:.0} ms, then \
             {:.1} tokens/s]",
            g.prompt_tokens,
            g.cached_tokens,
            g.tokens.len(),
            g.finish_reason.as_str(),
            g.prefill_ms,
            g.decode_tokens_per_s()
        );
        if g.full_row_reads > 0 {
            eprintln!(
                "[{} of the draws read the whole row of logits back: the sampling settings keep \
                 more tokens than the {} candidates, or log probabilities were asked of a token \
                 outside them]",
                g.full_row_reads,
                pocketlm::engine::CANDIDATES
            );
        }
        if let Some(m) = &g.masks {
            eprintln!(
                "[{} grammar masks: {:.2} ms each on average, {:.2} ms at most]",
                m.count,
                m.mean_ms(),
                m.max_ms
            );
        }
    }

    async fn run_prompt(
        dev: &Dev,
        model: &str,
        prompt: &str,
        chat: bool,
        json: bool,
        gen: &GenArgs,
    ) -> pocketlm::Result<ExitCode> {
        // The flags and files are checked before the model loads, then again with its defaults.
        gen.options(&SamplingDefaults::default())?
            .sampling
            .validate()?;
        let tools = gen.tools()?;
        if tools.is_some() && !chat {
            eprintln!("error: --tools needs --chat (the model's chat template takes them)");
            return Ok(ExitCode::FAILURE);
        }
        let mut engine = open_engine(dev, model, &gen.engine_options()).await?;
        let mut options = gen.options(engine.sampling_defaults())?;
        options.sampling.validate()?;
        let ids = if chat {
            let (ids, required) = engine.chat_prompt_tools(
                &[ChatMessage::user(prompt)],
                &serde_json::Value::Null,
                tools.as_ref(),
            )?;
            if required.is_some() {
                if options.response_format.is_some() {
                    return Err(pocketlm::Error::InvalidRequest(
                        "a format flag and a tool choice that requires a call cannot be combined"
                            .into(),
                    ));
                }
                options.response_format = required;
            }
            ids
        } else {
            engine.text_prompt(prompt)?
        };
        let g = reply(dev, &mut engine, &ids, &options, !json).await?;
        let calls = match tools.as_ref().filter(|t| t.choice != ToolChoice::None) {
            Some(_) => engine.parse_tool_reply(&g.tokens)?,
            None => Default::default(),
        };
        let calls_json: Vec<serde_json::Value> =
            calls.calls.iter().map(|c| c.to_openai()).collect();
        if json {
            let v = serde_json::json!({
                "text": if calls_json.is_empty() { &g.text } else { &calls.content },
                "tokens": g.tokens,
                "finish_reason": if calls_json.is_empty() { g.finish_reason.as_str() } else { "tool_calls" },
                "tool_calls": calls_json,
                "prompt_tokens": g.prompt_tokens,
                "completion_tokens": g.tokens.len(),
                "prefill_ms": g.prefill_ms,
                "decode_ms": g.decode_ms,
            });
            println!("{v}");
        } else {
            println!();
            for c in &calls_json {
                println!("{c}");
            }
        }
        if let Some(problem) = &calls.problem {
            eprintln!("[the reply's tool call did not parse: {problem}]");
        }
        report_speed(&g);
        Ok(ExitCode::SUCCESS)
    }

    async fn chat_loop(
        dev: &Dev,
        model: &str,
        system: Option<String>,
        gen: &GenArgs,
    ) -> pocketlm::Result<ExitCode> {
        // The flags and files are checked before the model loads, then again with its defaults.
        gen.options(&SamplingDefaults::default())?
            .sampling
            .validate()?;
        let mut engine = open_engine(dev, model, &gen.engine_options()).await?;
        let options = gen.options(engine.sampling_defaults())?;
        options.sampling.validate()?;
        let opening: Vec<ChatMessage> = system.into_iter().map(ChatMessage::system).collect();
        let mut history = opening.clone();
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        if interactive {
            eprintln!("Type a message; /reset starts over, /exit (or Ctrl-D) ends.");
        }
        loop {
            if interactive {
                eprint!("> ");
            }
            let mut line = String::new();
            if stdin
                .read_line(&mut line)
                .map_err(|e| load::io_error("stdin", e))?
                == 0
            {
                break;
            }
            let line = line.trim();
            match line {
                "" => continue,
                "/exit" | "/quit" => break,
                "/reset" => {
                    history = opening.clone();
                    engine.reset();
                    eprintln!("(conversation cleared)");
                    continue;
                }
                _ => {}
            }
            history.push(ChatMessage::user(line));
            let ids = match engine.chat_prompt(&history) {
                Ok(ids) => ids,
                Err(e) => {
                    history.pop();
                    eprintln!("error: {e}");
                    continue;
                }
            };
            match reply(dev, &mut engine, &ids, &options, true).await {
                Ok(g) => {
                    println!();
                    report_speed(&g);
                    history.push(ChatMessage::assistant(g.text));
                }
                Err(e) => {
                    // The turn is dropped; the conversation goes on without it.
                    history.pop();
                    println!();
                    eprintln!("error: {e}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Greedy generation of exactly `n` tokens (end of turn does not stop it): what benchmarks run.
    fn greedy_run(n: usize) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(n),
            stop: Vec::new(),
            ignore_eos: true,
            pipeline: true,
            gpu_nucleus: true,
            response_format: None,
            logprobs: None,
        }
    }

    /// A prompt of exactly `n` tokens: ordinary text, repeated as needed.
    fn bench_prompt(engine: &Engine, n: usize) -> pocketlm::Result<Vec<u32>> {
        const TEXT: &str = "The quick brown fox jumps over the lazy dog while the farmer counts \
                            his sheep, one by one, under a sky the colour of ripe apricots. ";
        let piece = engine.text_prompt(TEXT)?;
        Ok(piece.iter().copied().cycle().take(n).collect())
    }

    /// Whether `spec` is a local sentence-embedding model: a folder whose `config.json` is an
    /// encoder's (or whose `modules.json` pools), or a GGUF file of an encoder architecture.
    async fn is_encoder_spec(spec: &str) -> bool {
        let path = std::path::Path::new(spec);
        if path.is_dir() {
            let companions = ["config.json", "modules.json"]
                .into_iter()
                .filter_map(|f| Some((f.to_string(), std::fs::read_to_string(path.join(f)).ok()?)))
                .collect();
            return pocketlm::model::encoder::is_encoder(&companions);
        }
        let Ok(mut file) = load::FileSource::open(path) else {
            return false;
        };
        match load::read_header(&mut file)
            .await
            .map(|h| h.into_model_files())
        {
            Ok(Ok(files)) => files
                .gguf_metadata()
                .is_some_and(pocketlm::model::encoder::is_encoder_gguf),
            _ => false,
        }
    }

    /// `pocketlm bench` of an embedding model on either backend: embeddings/s and tokens/s for
    /// one input of 8, 32 and `long` tokens, then batches of 8 and 64 inputs of 32 tokens
    /// (best of 5 after a warm-up; a batch counts from its first input to its last embedding).
    async fn bench_embeddings(dev: &Dev, model: &str, long: usize) -> pocketlm::Result<ExitCode> {
        let (spec, _, embedder) = load_embedder(dev, model).await?;
        let encoder = &embedder.encoder;
        let max = encoder.config().max_tokens;
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(max);
        let (all, _) = embedder.tokenize(&text, true)?;
        // n tokens ending with the tokenizer's end token; batch inputs start at different words.
        let input = |n: usize, skip: usize| -> Vec<u32> {
            let n = n.clamp(2, all.len());
            let skip = skip % (all.len() - n + 1);
            let mut ids = all[skip..skip + n].to_vec();
            ids[0] = all[0];
            ids[n - 1] = *all.last().expect("a tokenized text");
            ids
        };
        encoder.embed_batch(dev.device(), &[input(8, 0)]).await?;
        println!(
            "\n{spec} on {}: best of 5\n\n{:>8} {:>7} {:>14} {:>12} {:>10}",
            dev.describe(),
            "tokens",
            "batch",
            "embeddings/s",
            "tokens/s",
            "ms"
        );
        let long = long.min(max);
        for (n, batch) in [(8, 1), (32, 1), (long, 1), (32, 8), (32, 64)] {
            let inputs: Vec<Vec<u32>> = (0..batch).map(|i| input(n, i)).collect();
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let start = std::time::Instant::now();
                encoder.embed_batch(dev.device(), &inputs).await?;
                best = best.min(start.elapsed().as_secs_f64());
            }
            let tokens: usize = inputs.iter().map(Vec::len).sum();
            println!(
                "{:>8} {:>7} {:>14.2} {:>12.1} {:>10.1}",
                n.min(all.len()),
                batch,
                batch as f64 / best,
                tokens as f64 / best,
                best * 1e3
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn bench_model(
        dev: &Dev,
        model: &str,
        (prompt_tokens, gen_tokens, options): (usize, usize, &EngineOptions),
        per_kernel: bool,
        quick: bool,
    ) -> pocketlm::Result<ExitCode> {
        if prompt_tokens == 0 || gen_tokens < 2 {
            eprintln!("error: --prompt-tokens must be at least 1 and --gen-tokens at least 2");
            return Ok(ExitCode::FAILURE);
        }
        if is_encoder_spec(&resolve(model)?).await {
            return bench_embeddings(dev, model, prompt_tokens).await;
        }
        let ctx: &GpuContext = match dev {
            Dev::Gpu(ctx) => ctx,
            Dev::Cpu(cpu) => {
                return bench_cpu(dev, cpu, model, (prompt_tokens, gen_tokens, options)).await
            }
        };
        let mut engine = open_engine(dev, model, options).await?;
        let options = greedy_run(gen_tokens);
        // Warm-up: every pipeline compiled and every graph the measured run uses built and run
        // once, by a prompt of its length (a shorter one left the large steps' graphs, and the
        // GEMM's pipelines with them, to be built inside the measured prefill).
        let warm = bench_prompt(&engine, prompt_tokens)?;
        let warm_opts = GenerateOptions {
            max_tokens: Some(2),
            ..options.clone()
        };
        engine
            .generate(ctx, &warm, &warm_opts, &mut |_| Flow::Continue)
            .await?;
        engine.reset();

        let prompt = bench_prompt(&engine, prompt_tokens)?;
        let mut at_first = None;
        let ((s0, d0, _), w0) = (ctx.stats.snapshot(), ctx.stats.waited());
        let stats = || {
            (
                ctx.stats.snapshot(),
                ctx.stats.bytes_read(),
                ctx.stats.waited(),
            )
        };
        let g = engine
            .generate(ctx, &prompt, &options, &mut |_| {
                at_first.get_or_insert_with(stats);
                Flow::Continue
            })
            .await?;
        let ((s1, d1, r1), b1, w1) = at_first.unwrap_or_default();
        let ((s2, d2, r2), b2, w2) = stats();
        // Steps after the first token: each decodes one token.
        let steps = (g.tokens.len() - 1) as f64;
        let (weights, kv) = engine.gpu_bytes();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("{}", ctx.report());
        println!();
        println!("{:<28} {}", "model", engine.name());
        println!(
            "{:<28} {:.1} tokens/s ({} tokens in {:.0} ms, first token included; steps of {:?} \
             tokens)",
            "prefill",
            prompt_tokens as f64 * 1000.0 / g.prefill_ms,
            prompt_tokens,
            g.prefill_ms,
            engine.prefill_steps(prompt_tokens)
        );
        println!(
            "{:<28} {} in {} submits",
            "dispatches of the prefill",
            d1 - d0,
            s1 - s0
        );
        println!(
            "{:<28} {:.2} ms (encoding, submitting, sampling: the prefill's wall time less the \
             waits for the GPU)",
            "host time of the prefill",
            g.prefill_ms - (w1 - w0).as_secs_f64() * 1e3
        );
        println!(
            "{:<28} {:.2} tokens/s ({:.1} ms per token over {} tokens)",
            "decode",
            g.decode_tokens_per_s(),
            g.decode_ms / steps,
            steps
        );
        println!(
            "{:<28} {:.1}",
            "dispatches per decoded token",
            (d2 - d1) as f64 / steps
        );
        let per_layer = engine.dispatches_per_layer();
        let (lo, hi) = (
            per_layer.iter().min().copied().unwrap_or(0),
            per_layer.iter().max().copied().unwrap_or(0),
        );
        println!(
            "{:<28} {} ({} layers, {})",
            "dispatches per layer",
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            },
            per_layer.len(),
            engine.config().architecture.name()
        );
        println!(
            "{:<28} {:.1}",
            "submits per decoded token",
            (s2 - s1) as f64 / steps
        );
        println!(
            "{:<28} {:.1} ({:.0} bytes)",
            "readbacks per decoded token",
            (r2 - r1) as f64 / steps,
            (b2 - b1) as f64 / steps
        );
        println!(
            "{:<28} {:.2} ms (encoding, submitting, sampling: the step's wall time less the \
             waits for the GPU)",
            "host time per decoded token",
            (g.decode_ms - (w2 - w1).as_secs_f64() * 1e3) / steps
        );
        gpu_time(ctx, &mut engine, &prompt, &options).await?;
        println!("{:<28} {:.1} MiB", "GPU memory: weights", mib(weights));
        println!(
            "{:<28} {:.1} MiB ({} positions)",
            "GPU memory: KV cache",
            mib(kv),
            engine.context()
        );
        if !quick {
            sampling_speeds(ctx, &mut engine, &prompt, gen_tokens).await?;
            pipeline_speeds(ctx, &mut engine, &prompt, gen_tokens).await?;
            constrained_speeds(ctx, &mut engine, &prompt, gen_tokens).await?;
        }
        if per_kernel {
            // The KV cache holds the benchmark's sequence, so attention sees a real length.
            let copy = bench::copy_gb_per_s(ctx, 5).await?;
            let times = bench::profile_dispatches(ctx, &engine.decode_dispatches(), 5).await?;
            print_profile("decode step", &times, copy);
            // Each prefill step's graph, as the measured prefill ran it (built by the warm-up),
            // once for steps of the same size.
            let mut steps = engine.prefill_steps(prompt_tokens);
            steps.dedup();
            for n in steps {
                let times = bench::profile_dispatches(ctx, &engine.step_dispatches(n), 5).await?;
                print_profile(&format!("prefill step of {n} tokens"), &times, copy);
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `--per-kernel`'s table for one step: each kind of dispatch timed alone, and its shapes
    /// with the weights they read as GB/s and as a fraction of the copy kernel's `copy` GB/s.
    fn print_profile(what: &str, times: &[bench::DispatchTime], copy: f64) {
        let sum: f64 = times.iter().map(|t| t.total.as_secs_f64()).sum();
        println!(
            "\n{what}, each dispatch timed alone (sum {:.1} ms; weights read as GB/s and as a \
             fraction of the copy kernel's {copy:.1} GB/s):",
            sum * 1e3
        );
        for t in times {
            let ms = t.total.as_secs_f64() * 1e3;
            println!(
                "  {:<24} ×{:<4} {:>9.2} ms {:>5.1}%",
                t.label,
                t.count,
                ms,
                100.0 * ms / (sum * 1e3)
            );
            // Each shape of a kernel that has several or reads weights: which shapes take the
            // time, and how close to the memory's speed.
            if t.shapes.len() > 1 || t.shapes.iter().any(|s| s.weight_bytes > 0) {
                for s in &t.shapes {
                    let mut line = format!(
                        "      grid {:<18} ×{:<4} {:>9.1} µs each",
                        format!("{:?}", s.grid),
                        s.count,
                        s.each.as_secs_f64() * 1e6
                    );
                    if s.weight_bytes > 0 {
                        line += &format!(
                            "  {:>8.2} MB {:>9.1} GB/s {:>6.3}× copy",
                            s.weight_bytes as f64 / 1e6,
                            s.gb_per_s(),
                            s.gb_per_s() / copy
                        );
                    }
                    println!("{line}");
                }
            }
        }
    }

    /// GPU time per decoded token over the real graph: the same generation again with every
    /// decode step's submit timed by timestamp queries (per kind of dispatch where the device
    /// takes timestamps inside a pass). A run of its own, so the timed run's speed above is
    /// untouched by the queries.
    async fn gpu_time(
        ctx: &GpuContext,
        engine: &mut Engine,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> pocketlm::Result<()> {
        use pocketlm::gpu::TimestampSupport;
        let support = ctx.timestamp_support();
        if support == TimestampSupport::None {
            println!(
                "{:<28} not measured: the device takes no timestamps",
                "GPU time per decoded token"
            );
            return Ok(());
        }
        engine.reset();
        let mut on = false;
        engine
            .generate(ctx, prompt, options, &mut |_| {
                // From the first token on: decode steps only.
                if !on {
                    ctx.time_gpu(true);
                    on = true;
                }
                Flow::Continue
            })
            .await?;
        let Some(t) = ctx.time_gpu(false).filter(|t| t.submits > 0) else {
            return Ok(());
        };
        println!(
            "{:<28} {:.3} ms (timestamp queries over the real graph, {} steps)",
            "GPU time per decoded token",
            t.total_ns / t.submits as f64 / 1e6,
            t.submits
        );
        print_per_label(&t, t.submits, "per step");

        // The prompt alone: its steps (and the first token's sampling) timed the same way.
        engine.reset();
        let first_only = GenerateOptions {
            max_tokens: Some(1),
            ..options.clone()
        };
        ctx.time_gpu(true);
        engine
            .generate(ctx, prompt, &first_only, &mut |_| Flow::Continue)
            .await?;
        if let Some(t) = ctx.time_gpu(false).filter(|t| t.submits > 0) {
            println!(
                "{:<28} {:.3} ms (timestamp queries over the real graph, {} tokens in {} \
                 submits)",
                "GPU time of the prefill",
                t.total_ns / 1e6,
                prompt.len(),
                t.submits
            );
            print_per_label(&t, 1, "the whole prompt");
        }
        Ok(())
    }

    /// The per-kind lines of a timed run where the device took timestamps between dispatches
    /// (nothing otherwise): dispatches and milliseconds per `per` submits, and the share of each.
    fn print_per_label(t: &pocketlm::gpu::GpuTimes, per: u64, what: &str) {
        if t.per_label.is_empty() {
            return;
        }
        let per = per.max(1);
        let mut rows: Vec<_> = t.per_label.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let sum: f64 = rows.iter().map(|r| r.1 .1).sum();
        println!("  per kind of dispatch, in the graph ({what}):");
        for (label, (n, ns)) in rows {
            println!(
                "    {:<24} ×{:<5} {:>9.3} ms {:>5.1}%",
                label,
                n / per,
                ns / per as f64 / 1e6,
                100.0 * ns / sum.max(f64::MIN_POSITIVE)
            );
        }
    }

    /// `pocketlm bench --backend cpu`: prefill and greedy decode speed of the CPU backend, with
    /// its threads and then one thread in the same run (their ratio is the threads' gain).
    async fn bench_cpu(
        dev: &Dev,
        cpu: &CpuContext,
        model: &str,
        (prompt_tokens, gen_tokens, options): (usize, usize, &EngineOptions),
    ) -> pocketlm::Result<ExitCode> {
        let mut engine = open_engine(dev, model, options).await?;
        let options = greedy_run(gen_tokens);
        let prompt = bench_prompt(&engine, prompt_tokens)?;
        let one = CpuContext::new(Some(1));
        let mut rows = Vec::new();
        for (label, c) in [("all threads", cpu), ("one thread", &one)] {
            engine.reset();
            let g = engine
                .generate(c, &prompt, &options, &mut |_| Flow::Continue)
                .await?;
            rows.push((label, c.threads(), g));
        }
        let (weights, kv) = engine.gpu_bytes();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("{:<28} {}", "model", engine.name());
        println!("{:<28} {}", "backend", cpu.describe());
        for (label, threads, g) in &rows {
            let steps = (g.tokens.len() - 1).max(1) as f64;
            println!(
                "{:<28} prefill {:.1} tokens/s ({} tokens), decode {:.2} tokens/s ({:.1} ms per \
                 token)",
                format!("{label} ({threads})"),
                prompt_tokens as f64 * 1000.0 / g.prefill_ms,
                prompt_tokens,
                g.decode_tokens_per_s(),
                g.decode_ms / steps
            );
        }
        if let [(_, _, all), (_, _, single)] = rows.as_slice() {
            println!(
                "{:<28} prefill {:.2}×, decode {:.2}×",
                "threads ÷ one thread",
                single.prefill_ms / all.prefill_ms,
                all.decode_tokens_per_s() / single.decode_tokens_per_s()
            );
        }
        println!("{:<28} {:.1} MiB", "host memory: weights", mib(weights));
        println!(
            "{:<28} {:.1} MiB (as filled; {} positions at most)",
            "host memory: KV cache",
            mib(kv),
            engine.context()
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Decode speed under each sampling plan, against the whole row read back and sorted on the
    /// CPU (a top-k of the vocabulary less one: what every sampled token cost before sampling ran
    /// on the GPU), in one run on one prompt; top-p drawn from the row on the CPU and from the
    /// nucleus on the GPU side by side.
    async fn sampling_speeds(
        ctx: &GpuContext,
        engine: &mut Engine,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> pocketlm::Result<()> {
        let vocab = engine.config().vocab;
        let t = |temperature: f32| SamplingParams {
            temperature,
            seed: Some(1),
            ..SamplingParams::default()
        };
        // (name, sampling, whether a draw the candidates do not decide runs on the GPU).
        let settings = [
            (
                "whole row on the CPU",
                SamplingParams {
                    top_k: vocab - 1,
                    ..t(1.0)
                },
                false,
            ),
            ("greedy (argmax)", SamplingParams::greedy(), true),
            ("temperature 1 (Gumbel)", t(1.0), true),
            (
                "top-p 0.9, T 0.8, row on CPU",
                SamplingParams {
                    top_p: 0.9,
                    ..t(0.8)
                },
                false,
            ),
            (
                "top-p 0.9, T 0.8 (GPU)",
                SamplingParams {
                    top_p: 0.9,
                    ..t(0.8)
                },
                true,
            ),
            (
                "top-k vocab-1 (GPU nucleus)",
                SamplingParams {
                    top_k: vocab - 1,
                    ..t(1.0)
                },
                true,
            ),
            (
                "repetition penalty 1.1",
                SamplingParams {
                    repetition_penalty: 1.1,
                    ..t(1.0)
                },
                true,
            ),
        ];
        println!("\ndecode by sampling setting ({gen_tokens} tokens each):");
        let mut base = None;
        for (name, sampling, gpu_nucleus) in settings {
            engine.reset();
            let options = GenerateOptions {
                sampling,
                max_tokens: Some(gen_tokens),
                stop: Vec::new(),
                ignore_eos: true,
                pipeline: true,
                gpu_nucleus,
                response_format: None,
                logprobs: None,
            };
            let b0 = ctx.stats.bytes_read();
            let g = engine
                .generate(ctx, prompt, &options, &mut |_| Flow::Continue)
                .await?;
            let bytes = (ctx.stats.bytes_read() - b0) as f64 / g.tokens.len() as f64;
            let speed = g.decode_tokens_per_s();
            let base = *base.get_or_insert(speed);
            println!(
                "  {name:<28} {speed:>7.2} tokens/s {:>6.2}x {bytes:>9.0} bytes read per token \
                 ({} whole rows, {} nucleus draws)",
                speed / base,
                g.full_row_reads,
                g.nucleus_draws
            );
        }
        Ok(())
    }

    /// Greedy decode speed under a grammar against free greedy decoding step by step (the
    /// loop constrained decoding runs), in one run on one prompt: a regex that allows any text
    /// (the cost of the mask's machinery alone) and a JSON object (a real mask), with the host
    /// time of the masks.
    async fn constrained_speeds(
        ctx: &GpuContext,
        engine: &mut Engine,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> pocketlm::Result<()> {
        // A vocabulary constrained decoding cannot read (WordPiece) has nothing to measure.
        if let Err(e) = engine.grammar_vocab() {
            println!("\nconstrained decoding: not available for this model ({e})");
            return Ok(());
        }
        let settings = [
            ("free, step by step", None),
            (
                "regex (.|\\n)* (any text)",
                Some(ResponseFormat::Regex("(.|\n)*".into())),
            ),
            ("JSON object", Some(ResponseFormat::JsonObject)),
        ];
        println!("\nconstrained decoding, greedy (up to {gen_tokens} tokens each):");
        let mut base = None;
        for (name, response_format) in settings {
            engine.reset();
            let options = GenerateOptions {
                sampling: SamplingParams::greedy(),
                max_tokens: Some(gen_tokens),
                stop: Vec::new(),
                ignore_eos: response_format.is_none(),
                logprobs: None,
                pipeline: false,
                gpu_nucleus: true,
                response_format,
            };
            let g = engine
                .generate(ctx, prompt, &options, &mut |_| Flow::Continue)
                .await?;
            let speed = g.decode_tokens_per_s();
            let base = *base.get_or_insert(speed);
            let masks = g.masks.map_or(String::new(), |m| {
                format!(
                    " masks {:.3} ms mean, {:.3} ms max over {}",
                    m.mean_ms(),
                    m.max_ms,
                    m.count
                )
            });
            println!(
                "  {name:<28} {speed:>7.2} tokens/s {:>6.2}x{masks}",
                speed / base
            );
        }
        Ok(())
    }

    /// Decode speed with the host and the GPU overlapped (each step submitted before the previous
    /// one is read back) against every step waiting for the previous token, for the plans that
    /// overlap (greedy, plain temperature), in one run on one prompt; the tokens must be the same.
    async fn pipeline_speeds(
        ctx: &GpuContext,
        engine: &mut Engine,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> pocketlm::Result<()> {
        let settings = [
            ("greedy (argmax)", SamplingParams::greedy()),
            (
                "temperature 1 (Gumbel)",
                SamplingParams {
                    temperature: 1.0,
                    seed: Some(1),
                    ..SamplingParams::default()
                },
            ),
        ];
        println!("\ndecode pipelined against sequential ({gen_tokens} tokens, best of 2 each):");
        for (name, sampling) in settings {
            // Sequential, then pipelined, twice, on the same prompt (each run after the first
            // prefills only the prompt's last token again); the best run of each counts, so a
            // busy host skews the ratio less.
            let (mut s, mut p) = (0f64, 0f64);
            let mut tokens: Option<Vec<u32>> = None;
            let mut same = true;
            for pipeline in [false, true, false, true] {
                let options = GenerateOptions {
                    sampling: sampling.clone(),
                    max_tokens: Some(gen_tokens),
                    stop: Vec::new(),
                    ignore_eos: true,
                    pipeline,
                    gpu_nucleus: true,
                    response_format: None,
                    logprobs: None,
                };
                let g = engine
                    .generate(ctx, prompt, &options, &mut |_| Flow::Continue)
                    .await?;
                let best = if pipeline { &mut p } else { &mut s };
                *best = best.max(g.decode_tokens_per_s());
                same &= tokens.get_or_insert_with(|| g.tokens.clone()) == &g.tokens;
            }
            println!(
                "  {name:<28} {p:>7.2} tokens/s pipelined {s:>7.2} sequential {:>6.2}x{}",
                p / s,
                if same { "" } else { " (TOKENS DIFFER)" }
            );
        }
        Ok(())
    }

    async fn run(cli: Cli) -> pocketlm::Result<ExitCode> {
        if let Command::Info { model } = &cli.command {
            return info(model).await;
        }
        if let Command::RandomWeights {
            model,
            out,
            header_only,
            seed,
        } = &cli.command
        {
            return random_weights(model, out, *header_only, *seed);
        }
        if matches!(
            cli.command,
            Command::Run { .. }
                | Command::Chat { .. }
                | Command::Bench { .. }
                | Command::Embed { .. }
        ) {
            let dev = open_device(&cli).await?;
            match cli.command {
                Command::Run {
                    model,
                    prompt,
                    chat,
                    json,
                    gen,
                } => return run_prompt(&dev, &model, &prompt, chat, json, &gen).await,
                Command::Chat { model, system, gen } => {
                    return chat_loop(&dev, &model, system, &gen).await
                }
                Command::Bench {
                    model,
                    prompt_tokens,
                    gen_tokens,
                    context,
                    kv_dtype: dtype,
                    per_kernel,
                    quick,
                } => {
                    let options = EngineOptions {
                        context,
                        kv_dtype: kv_dtype(dtype.as_deref()),
                        ..Default::default()
                    };
                    let sizes = (prompt_tokens, gen_tokens, &options);
                    return bench_model(&dev, &model, sizes, per_kernel, quick).await;
                }
                Command::Embed {
                    model,
                    texts,
                    json,
                    dimensions,
                    no_truncate,
                } => return embed(&dev, &model, &texts, json, dimensions, !no_truncate).await,
                _ => unreachable!("matched above"),
            }
        }
        let request: ProfileRequest = cli.profile.parse()?;
        if cli.backend == "cpu" {
            return Err(pocketlm::Error::InvalidRequest(
                "this command runs on the WebGPU backend: leave out --backend cpu".into(),
            ));
        }
        let mut ctx = open_gpu(&cli, request).await?;
        println!("{}", ctx.report());
        match cli.command {
            Command::Info { .. }
            | Command::RandomWeights { .. }
            | Command::Device
            | Command::Run { .. }
            | Command::Chat { .. }
            | Command::Embed { .. }
            | Command::Bench { .. } => Ok(ExitCode::SUCCESS),
            Command::Selfcheck => {
                println!();
                let outcomes = selfcheck::run_standard(&ctx).await?;
                let failed = outcomes.iter().filter(|o| !o.passed()).count();
                for o in &outcomes {
                    println!("{o}");
                }
                println!(
                    "\nself-check on {} ({} profile): {} passed, {} failed",
                    ctx.adapter_info().name,
                    ctx.profile(),
                    outcomes.len() - failed,
                    failed
                );
                Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Command::KernelBench {
                size,
                calls,
                formats,
                rows: m,
            } => {
                if size == 0 || size % 256 != 0 || calls == 0 || m == 0 {
                    eprintln!(
                        "error: --size must be a positive multiple of 256, --calls and --rows \
                         positive"
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let formats = if formats.is_empty() {
                    DType::WEIGHTS.to_vec()
                } else {
                    formats
                };
                let mut rows = bench::kernel_bench(&ctx, size, m, calls, &formats).await?;
                // The GEMM's other tiles (f32 or f16) in the same run, where the device has both.
                let f16 = ctx.capabilities().f16_tiles;
                ctx.set_f16_tiles(true);
                let auto = pocketlm::kernels::LinearKernel::Auto;
                if pocketlm::kernels::uses_f16_tiles(&ctx, auto, m) {
                    ctx.set_f16_tiles(!f16);
                    let more = bench::kernel_bench(&ctx, size, m, calls, &formats).await?;
                    rows.extend(more.into_iter().skip(1));
                }
                ctx.set_f16_tiles(f16);
                let copy = rows[0].gb_per_s();
                println!(
                    "\nlinear layer of a {size}×{size} matrix on {m} activation row(s), {calls} \
                     calls per submit, cycling through copies of the matrix that together \
                     exceed a GPU's cache (best of 3; GB/s of the weights read):\n"
                );
                println!(
                    "{:<22} {:>12} {:>12} {:>10} {:>9} {:>9}",
                    "kernel", "bytes", "µs/call", "GB/s", "× copy", "GFLOP/s"
                );
                for r in &rows {
                    println!(
                        "{:<22} {:>12} {:>12.1} {:>10.2} {:>9.2} {:>9.2}",
                        r.name,
                        r.bytes,
                        r.per_call.as_secs_f64() * 1e6,
                        r.gb_per_s(),
                        r.gb_per_s() / copy,
                        r.flops as f64 / r.per_call.as_secs_f64() / 1e9
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

// The CLI is native-only; the wasm build of the crate is the library.
#[cfg(target_arch = "wasm32")]
fn main() {}
