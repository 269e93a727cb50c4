//! Arbitrary bytes into the GGUF header parser: as a whole file (size known) and as a stream of
//! growing prefixes (size unknown), which must agree; then everything built on a parsed header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pocketlm::formats::invariants::check_streaming_agrees;
use pocketlm::formats::{merge_splits, split_names, GgufHeader};

fuzz_target!(|data: &[u8]| {
    // With the size unknown, tensors past the end cannot be seen.
    let streamed = check_streaming_agrees(
        data,
        |p, size| GgufHeader::parse(p, size, "fuzz.gguf"),
        &["tensor_out_of_bounds"],
        |a, b| a.tensors == b.tensors && a.data_offset == b.data_offset,
    );

    if let Some(h) = streamed {
        for (k, v) in h.metadata.iter() {
            let _ = format!("{k} = {v} ({})", v.describe());
        }
        let _ = h.data_end();
        let _ = h.tensor_infos(0);
        if let Ok(model) = merge_splits(vec![h.clone(), h.clone()]) {
            panic!("two copies of one file merged: {:?}", model.files);
        }
        if let Ok(model) = h.into_model_files() {
            let _ = model.summary().to_string();
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if s.len() < 200 {
            if let Ok(names) = split_names(s) {
                assert!(!names.is_empty() && names.len() <= 9_999);
            }
        }
    }
});
