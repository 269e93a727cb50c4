//! PocketLM's wasm module with relaxed SIMD (`www/pkg*/pocketlm_relaxed_bg.wasm`): the pocketlm
//! crate with its `relaxed-simd` feature. Its exports are pocketlm's (`#[wasm_bindgen]` items
//! of a dependency are exported from the cdylib that links it); scripts/wasm-package.sh checks
//! that this module's API is the SIMD128 build's. Natively, an empty crate.

#[cfg(target_arch = "wasm32")]
pub use pocketlm;
