//! Arbitrary bytes as a `tokenizer.json`; a tokenizer that loads must decode what it encodes.
//! The entry point is shared with tests/fuzz_regressions.rs (`pocketlm::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pocketlm::fuzzing::tokenizer_json(data));
