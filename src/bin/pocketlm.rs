//! The PocketLM command-line tool.

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::process::ExitCode;

    use clap::{Parser, Subcommand};
    use pocketlm::gpu::{GpuContext, ProfileRequest};
    use pocketlm::{bench, load, selfcheck};

    #[derive(Parser)]
    #[command(name = "pocketlm", version, about = "Small language models on WebGPU")]
    struct Cli {
        /// Device profile: auto (everything the adapter offers), full (f16 + subgroups, or fail),
        /// or baseline (WebGPU defaults, no f16, no subgroups).
        #[arg(long, global = true, default_value = "auto")]
        profile: String,
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
        },
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
            return Ok(ExitCode::SUCCESS);
        }
        let header = if model.starts_with("http://") || model.starts_with("https://") {
            load::read_header(&mut load::HttpSource::get(&model)?).await?
        } else {
            load::read_header(&mut load::FileSource::open(path)?).await?
        };
        println!("{model}\n{}", header.into_model_files()?.summary());
        Ok(ExitCode::SUCCESS)
    }

    async fn run(cli: Cli) -> pocketlm::Result<ExitCode> {
        if let Command::Info { model } = &cli.command {
            return info(model).await;
        }
        let request: ProfileRequest = cli.profile.parse()?;
        let ctx = GpuContext::new(request).await?;
        println!("{}", ctx.report());
        match cli.command {
            Command::Info { .. } | Command::Device => Ok(ExitCode::SUCCESS),
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
            Command::KernelBench { size, calls } => {
                if size == 0 || size % 256 != 0 || calls == 0 {
                    eprintln!(
                        "error: --size must be a positive multiple of 256 and --calls positive"
                    );
                    return Ok(ExitCode::FAILURE);
                }
                let rows = bench::kernel_bench(&ctx, size, calls).await?;
                let copy = rows[0].gb_per_s();
                println!(
                    "\nmatvec on a {size}×{size} matrix, {calls} calls per submit (best of 3):\n"
                );
                println!(
                    "{:<22} {:>12} {:>12} {:>10} {:>9}",
                    "kernel", "bytes", "µs/call", "GB/s", "× copy"
                );
                for r in &rows {
                    println!(
                        "{:<22} {:>12} {:>12.1} {:>10.2} {:>9.2}",
                        r.name,
                        r.bytes,
                        r.per_call.as_secs_f64() * 1e6,
                        r.gb_per_s(),
                        r.gb_per_s() / copy
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
