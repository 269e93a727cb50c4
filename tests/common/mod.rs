//! Shared by the native GPU test files: one GPU context per test binary, chosen by the
//! environment (see tests/gpu_kernels.rs), and error assertions.
#![allow(dead_code)]

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
