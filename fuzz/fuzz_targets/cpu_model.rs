//! A whole GGUF model (the fuzzer's bytes as its header, pseudo-random tensor data behind it)
//! loaded and run on the CPU backend: generation or embedding. The entry point is shared with
//! tests/fuzz_regressions.rs (`pocketlm::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pocketlm::fuzzing::cpu_model(data));
