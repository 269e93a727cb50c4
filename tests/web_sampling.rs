//! Seeded sampling in wasm gives the same tokens as natively (tests/sampling.rs).
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::*;

#[path = "common/seeded.rs"]
mod seeded;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn seeded_sampling_gives_the_native_tokens() {
    let a = seeded::tokens(42);
    assert_eq!(a[..12], seeded::GOLDEN);
    assert_ne!(a, seeded::tokens(43));
}
