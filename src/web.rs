//! The JavaScript face of PocketLM (wasm-bindgen). This is the only file that knows about JS.
//! Every fallible export returns a promise that rejects with an `Error` whose `name` is
//! `"PocketLMError"`, whose `code` is [`Error::code`] and whose message says what went wrong;
//! nothing panics across the boundary.

use std::rc::Rc;

use js_sys::{Float32Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::error::Error;
use crate::gpu::{DType, GpuContext, ProfileRequest};
use crate::{kernels, selfcheck};

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

    /// "full" or "baseline".
    #[wasm_bindgen(getter)]
    pub fn profile(&self) -> String {
        self.ctx.profile().name().to_string()
    }

    /// Runs every kernel against its CPU reference; resolves to the report, rejects if any fails.
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
