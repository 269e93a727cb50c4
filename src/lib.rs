//! PocketLM: small language models on WebGPU, in the browser and natively.
//!
//! The layers, bottom up: [`gpu`] (device negotiation, compiled kernels, tensors, recording work),
//! [`kernels`] (the WGSL kernels' host side), [`model`] (architectures as data and the generic
//! decoder), [`engine`] (generation). `web` holds the JavaScript bindings.
//!
//! The test harnesses, `reference` (CPU references the kernels are checked against), `selfcheck`,
//! `fuzzing` (the fuzz targets' entry points) and the kernels' `check` modules, are behind the `harness` feature (on by default natively,
//! for the tests and the CLI; the shipped wasm is built without it).

#[cfg(all(not(target_arch = "wasm32"), feature = "harness"))]
pub mod bench;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod formats;
#[cfg(feature = "harness")]
pub mod fuzzing;
pub mod gpu;
pub mod kernels;
pub mod load;
pub mod model;
pub mod quant;
#[cfg(feature = "harness")]
pub mod reference;
pub mod request;
pub mod rng;
pub mod sample;
#[cfg(feature = "harness")]
pub mod selfcheck;
pub mod text;

#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
