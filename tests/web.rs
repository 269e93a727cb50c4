//! The kernels and the JS bindings in a real browser (headless Chromium's WebGPU), run by
//! `wasm-bindgen-test-runner`. Tolerances are those of `pocketlm::reference` (see
//! tests/gpu_kernels.rs for the statement of each bound). The standard cases on this browser's
//! default kernel family run through the JS binding's `selfCheck()` in the npm package's kernels
//! page (www/test/kernels.test.mjs), which rejects on any failed case, so they are not repeated
//! here.
#![cfg(target_arch = "wasm32")]

use js_sys::{Float32Array, Reflect};
use pocketlm::gpu::{DType, GpuContext, ProfileRequest};
use pocketlm::reference::Rng;
use pocketlm::selfcheck::{run_case, run_standard, Case, LinearKernel};
use pocketlm::web::Gpu;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

#[path = "common/quant_fixtures.rs"]
mod quant_fixtures;

wasm_bindgen_test_configure!(run_in_browser);

async fn context() -> GpuContext {
    let ctx = GpuContext::new(ProfileRequest::Auto)
        .await
        .unwrap_or_else(|e| panic!("the browser must expose WebGPU: {e}"));
    web_sys::console::log_1(&format!("WebGPU in the browser:\n{}", ctx.report()).into());
    ctx
}

/// The kernels made for GPUs, as Tint compiles them for a hardware adapter: this browser's CPU
/// adapter runs the other family unless asked.
#[wasm_bindgen_test]
async fn gpu_kernel_family_matches_reference_in_browser() {
    let ctx = context().await.with_cpu_kernels(false);
    for o in run_standard(&ctx).await.unwrap() {
        assert!(o.passed(), "{o}");
    }
}

#[wasm_bindgen_test]
async fn random_shapes_match_reference_in_browser() {
    let ctx = context().await;
    let mut rng = Rng::new(0xB20_55E2);
    for i in 0..36u64 {
        let weights = DType::WEIGHTS[(i as usize / 4) % DType::WEIGHTS.len()];
        let kq = |rng: &mut Rng, max: usize| {
            let q = weights.block_size().max(1);
            if q == 1 {
                rng.range(1, max)
            } else {
                q * rng.range(1, (max / q).max(1))
            }
        };
        let case = match i % 4 {
            0 => Case::Linear {
                kernel: LinearKernel::Matvec,
                m: rng.range(1, 4),
                n: rng.range(1, 300),
                k: kq(&mut rng, 700),
                weights,
            },
            1 => Case::Linear {
                kernel: LinearKernel::Matmul,
                m: rng.range(1, 130),
                n: rng.range(1, 150),
                k: kq(&mut rng, 300),
                weights,
            },
            2 => Case::RmsNorm {
                rows: rng.range(1, 9),
                cols: rng.range(1, 1500),
                eps: 1e-5,
            },
            _ => Case::SwiGlu {
                len: rng.range(1, 5000),
            },
        };
        let o = run_case(&ctx, case, i).await.unwrap();
        assert!(o.passed(), "{o}");
    }
}

async fn gpu() -> Gpu {
    let v = JsFuture::from(Gpu::create(None)).await.expect("Gpu.create");
    Gpu::try_from_js_value(v).expect("Gpu.create resolves to a Gpu")
}

#[wasm_bindgen_test]
async fn js_binding_resolves_with_results() {
    let gpu = gpu().await;
    assert!(gpu.report().contains("profile"));
    // W = [[1, 2, 3], [4, 5, 6]], x = [1, 1, 1] and [1, 0, -1].
    let w = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let x = vec![1.0, 1.0, 1.0, 1.0, 0.0, -1.0];
    let y = JsFuture::from(gpu.linear(w, 2, 3, x)).await.unwrap();
    let y: Float32Array = y.dyn_into().unwrap();
    assert_eq!(y.to_vec(), vec![6.0, 15.0, -2.0, -2.0]);
}

#[wasm_bindgen_test]
async fn js_binding_rejects_with_typed_errors() {
    let gpu = gpu().await;
    let err: JsValue = JsFuture::from(gpu.linear(vec![0.0; 6], 2, 3, vec![0.0; 4]))
        .await
        .expect_err("x of 4 values is not a whole number of rows of 3");
    let err: js_sys::Error = err.dyn_into().expect("rejects with an Error");
    assert_eq!(err.name(), "PocketLMError");
    assert_eq!(
        Reflect::get(&err, &"code".into()).unwrap(),
        "shape_mismatch"
    );
    assert!(String::from(err.message()).contains("rows of 3"));

    let err = JsFuture::from(gpu.linear(vec![0.0; 5], 2, 3, vec![0.0; 3]))
        .await
        .expect_err("5 weights do not fill [2, 3]");
    assert_eq!(
        Reflect::get(&err, &"code".into()).unwrap(),
        "invalid_tensor"
    );

    let err = JsFuture::from(Gpu::create(Some("turbo".into())))
        .await
        .expect_err("unknown profile");
    assert_eq!(
        Reflect::get(&err, &"code".into()).unwrap(),
        "unknown_profile"
    );
}

/// Dequantization in the browser's WebGPU is bit-exact against the Python gguf package.
#[wasm_bindgen_test]
async fn dequantization_matches_gguf_py_in_browser() {
    let ctx = context().await;
    for f in quant_fixtures::load() {
        let table = ctx
            .upload_gguf(f.dtype.name(), &[f.rows, f.cols], f.dtype, &f.bytes)
            .unwrap();
        let ids: Vec<i32> = (0..f.rows as i32).collect();
        let idt = ctx.upload_i32("ids", &[f.rows], &ids).unwrap();
        let out = ctx.zeros("rows", &[f.rows, f.cols], DType::F32).unwrap();
        let d = pocketlm::kernels::embed(&ctx, &table, &idt, &out)
            .await
            .unwrap();
        let mut rec = ctx.recorder();
        rec.dispatch(&d);
        let slot = rec.read(&out);
        let got = rec.submit_and_read().await.unwrap().f32(slot).unwrap();
        if let Some(diff) = quant_fixtures::first_bit_difference(
            f.dtype,
            f.cols,
            &got,
            &f.expected,
            quant_fixtures::Nan::AnyNan,
        ) {
            panic!("GPU vs gguf-py: {diff}");
        }
    }
}
