//! Arbitrary bytes into the safetensors header parser (whole file and growing prefixes, which
//! must agree) and into the sharded-checkpoint index parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pocketlm::formats::invariants::check_streaming_agrees;
use pocketlm::formats::{merge_shards, SafetensorsHeader, SafetensorsIndex};

fuzz_target!(|data: &[u8]| {
    // With the size unknown, the data's extent cannot be checked.
    let streamed = check_streaming_agrees(
        data,
        |p, size| SafetensorsHeader::parse(p, size, "fuzz.safetensors"),
        &["tensor_out_of_bounds", "invalid_header"],
        |a, b| a.tensors == b.tensors,
    );
    if let Some(h) = streamed {
        if let Ok(model) = h.into_model_files() {
            let _ = model.summary().to_string();
        }
    }

    if let Ok(index) = SafetensorsIndex::parse(data, "fuzz.index.json") {
        assert!(!index.shards.is_empty());
        let _ = merge_shards(&index, Vec::new()).expect_err("no shards merged");
    }
});
