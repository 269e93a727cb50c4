//! One of PocketLM's wasm modules (crates/wasm/*/Cargo.toml says which): the pocketlm crate,
//! with that crate's features, linked as a cdylib. Its exports are pocketlm's: the
//! `#[wasm_bindgen]` items of a dependency are exported from the cdylib that links it.
//! scripts/wasm-package.sh checks that the SIMD128 and relaxed-SIMD modules have the same API.
//! Natively, an empty crate.
//!
//! Why a crate per module: cargo names a cdylib's output after its crate alone, without a hash
//! of the crate's features, so one crate built with other features (relaxed SIMD, the test
//! harnesses) in the same target directory would write the same file, and a build could take
//! the other's file as its own. pocketlm, their dependency, is an rlib, whose outputs carry that
//! hash: the builds share every compiled crate whose features do not differ (for the threaded
//! package, the rebuilt standard library too).

#[cfg(target_arch = "wasm32")]
pub use pocketlm;
