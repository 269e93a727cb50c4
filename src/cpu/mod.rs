//! The CPU backend: the same model description ([`crate::model::ModelConfig`]) run by kernels
//! written in Rust, for machines and browsers without a usable WebGPU (no adapter, or only a
//! software one such as SwiftShader or lavapipe, which is far slower than plain CPU code).
//!
//! - Weights stay in host memory as the file stores them ([`HostTensor`]); every matrix product
//!   dequantizes one block at a time inside the dot products ([`kernels`]), so a Q4 model takes
//!   the memory of its file, not a float copy.
//! - Activations, norms, RoPE and attention are f32, the same arithmetic as the GPU kernels'
//!   exact path, so greedy output equals transformers' on the same tests; the KV cache is f16
//!   by default (half the memory, as on the GPU: [`kernels::kv_f16`]) or f32.
//! - Work is split by output rows over a small thread pool ([`Pool`]): one thread per core
//!   natively; one thread in wasm.

pub mod decoder;
pub mod encoder;
pub mod kernels;
mod pool;
mod tensor;

pub use decoder::CpuDecoder;
pub use encoder::CpuEncoder;
#[cfg(all(threaded, target_arch = "wasm32"))]
pub use pool::run_worker;
pub use pool::Pool;
pub use tensor::{HostSink, HostTensor};

use crate::error::Result;
use crate::load::{LoadOptions, LoadTarget, TensorPlan};

/// The most bytes of weights this build can hold: wasm32 addresses 4 GiB in all, of which the
/// runtime, the KV cache and the activations need some.
pub fn max_model_bytes() -> u64 {
    if cfg!(target_pointer_width = "32") {
        (4u64 << 30) - (256 << 20)
    } else {
        u64::MAX
    }
}

/// Lets the host's event loop run between CPU steps, which otherwise run to their end without
/// yielding: in a browser worker, messages (an abort, the next request) are then handled
/// during a generation. Through a `MessageChannel` message, which nested timeouts' 4 ms clamp
/// does not delay; natively nothing.
pub async fn yield_now() {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let promise = js_sys::Promise::new(&mut |resolve, _reject| {
            let get = |o: &wasm_bindgen::JsValue, k: &str| js_sys::Reflect::get(o, &k.into());
            let posted = (|| {
                let ctor = get(&js_sys::global(), "MessageChannel")
                    .ok()?
                    .dyn_into::<js_sys::Function>()
                    .ok()?;
                let channel = js_sys::Reflect::construct(&ctor, &js_sys::Array::new()).ok()?;
                let (port1, port2) = (get(&channel, "port1").ok()?, get(&channel, "port2").ok()?);
                js_sys::Reflect::set(&port1, &"onmessage".into(), &resolve).ok()?;
                let post = get(&port2, "postMessage")
                    .ok()?
                    .dyn_into::<js_sys::Function>()
                    .ok()?;
                post.call1(&port2, &wasm_bindgen::JsValue::NULL).ok()
            })();
            if posted.is_none() {
                // No MessageChannel: resolve at once (a microtask, which still ends the step).
                let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            }
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}

/// The CPU backend's device: its thread pool.
#[derive(Debug)]
pub struct CpuContext {
    pool: Pool,
}

impl Default for CpuContext {
    fn default() -> Self {
        Self::new(None)
    }
}

impl CpuContext {
    /// A context with `threads` threads (the caller's included), or one per core.
    pub fn new(threads: Option<usize>) -> Self {
        CpuContext {
            pool: Pool::new(threads.unwrap_or_else(Pool::cores)),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A description for reports: the backend and its threads.
    pub fn describe(&self) -> String {
        let simd = match (kernels::RELAXED_SIMD, kernels::SIMD) {
            (true, _) => ", relaxed SIMD",
            (false, true) => ", SIMD",
            (false, false) => "",
        };
        let threads = self.threads();
        let plural = if threads == 1 { "" } else { "s" };
        format!("CPU ({threads} thread{plural}{simd})")
    }
}

impl LoadTarget for CpuContext {
    type Tensor = HostTensor;
    type Sink<'a> = HostSink;

    fn sink(&self, plans: Vec<TensorPlan>, _opts: &LoadOptions<'_>) -> Result<HostSink> {
        HostSink::new(plans)
    }

    fn check_health(&self) -> Result<()> {
        Ok(())
    }
}
