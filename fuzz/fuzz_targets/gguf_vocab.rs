//! A GGUF vocabulary built from arbitrary bytes, converted into the project's tokenizer.
//! The entry point is shared with tests/fuzz_regressions.rs (`pocketlm::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pocketlm::fuzzing::gguf_vocab(data));
