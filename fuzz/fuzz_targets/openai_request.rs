//! Chat-completion request JSON into the parser the wasm bindings use (`pocketlm::request`).
//! The entry point is shared with tests/fuzz_regressions.rs (`pocketlm::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pocketlm::fuzzing::openai_request(data));
