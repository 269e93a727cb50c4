//! The inner loops of PocketLM's CPU backend: GGML block dequantization ([`blocks`]) and the
//! dot products, norms, RoPE, activations and attention of one row or one head ([`ops`]), and the
//! integer dot products of decode over activations quantized to 16 bits ([`idot`]).
//!
//! A crate of its own so that it is compiled with optimizations even in debug builds (see the
//! workspace's `[profile.dev.package.pocketlm-cpu]`): the tests run real models through these
//! loops, and unoptimized they are a hundred times slower. Most of it is plain safe Rust over
//! slices whose sums run in eight independent f32 lanes, which the compiler maps to SIMD; the
//! hottest loops (the f32 micro-kernel of several rows, decode's integer dot products) are
//! written with intrinsics: SSE2 or AVX2 with FMA and F16C (detected at run time) natively,
//! SIMD128 in wasm. Code that a constant of this crate holds (a closure) is compiled where the
//! constant is used, so the kernels are named functions.

pub mod blocks;
pub mod idot;
pub mod ops;
