//! Chat templates (the real ones and arbitrary source, under the fuel, value and output limits)
//! rendered with arbitrary messages.
//! The entry point is shared with tests/fuzz_regressions.rs (`pocketlm::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pocketlm::fuzzing::chat_template(data));
