//! PocketLM: small language models on WebGPU, in the browser and natively.
//!
//! The layers, bottom up: [`gpu`] (device negotiation, compiled kernels, tensors, recording work),
//! [`kernels`] (the WGSL kernels' host side), [`reference`] (CPU references the kernels are checked
//! against) and [`selfcheck`]. `web` holds the JavaScript bindings.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod engine;
pub mod error;
pub mod formats;
pub mod gpu;
pub mod kernels;
pub mod load;
pub mod model;
pub mod quant;
pub mod reference;
pub mod sample;
pub mod selfcheck;
pub mod text;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
