//! Arbitrary bytes into the GGUF header parser: as a whole file (size known) and as a stream of
//! growing prefixes (size unknown), which must agree; then everything built on a parsed header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pocketlm::formats::{merge_splits, next_fetch_len, split_names, GgufHeader, Parsed};

fuzz_target!(|data: &[u8]| {
    let whole = GgufHeader::parse(data, Some(data.len() as u64), "fuzz.gguf");
    if let Ok(parsed) = &whole {
        assert!(
            matches!(parsed, Parsed::Complete { .. }),
            "NeedMore with the size known"
        );
    }

    // The streaming path: fetch exactly what is asked each time (the worst case for re-parsing).
    let mut have = 0usize;
    let mut steps = 0;
    let streamed = loop {
        match GgufHeader::parse(&data[..have], None, "fuzz.gguf") {
            Ok(Parsed::NeedMore { at_least }) => {
                assert!(at_least > have, "NeedMore({at_least}) with {have} bytes");
                if at_least > data.len() {
                    // Then the whole-file parse must call it truncated.
                    if have < data.len() {
                        // Everything there is, before concluding the file is short.
                        have = data.len();
                        continue;
                    }
                    // Then the whole-file parse must call it truncated.
                    let e = whole
                        .as_ref()
                        .expect_err("streaming needs more than the file");
                    assert_eq!(e.code(), "file_truncated", "{e}");
                    break None;
                }
                // Exactly what is asked for a while (every boundary), then geometric growth,
                // as a loader fetches (so a long header does not take quadratic time).
                steps += 1;
                have = if steps < 64 {
                    at_least
                } else {
                    next_fetch_len(have, at_least).min(data.len())
                };
            }
            Ok(Parsed::Complete { header, header_len }) => {
                assert!(header_len >= have as u64 || have == data.len());
                break Some(header);
            }
            Err(e) => {
                // The same bad bytes give the same verdict with the size known.
                let w = whole
                    .as_ref()
                    .expect_err("streaming failed, whole file parsed");
                assert_eq!(e.code(), w.code(), "{e} / {w}");
                break None;
            }
        }
    };
    match (&whole, &streamed) {
        (Ok(Parsed::Complete { header, .. }), Some(s)) => {
            assert_eq!(header.tensors, s.tensors);
            assert_eq!(header.data_offset, s.data_offset);
        }
        (Ok(_), None) => panic!("whole file parsed, streaming did not"),
        // With the size unknown, tensors past the end cannot be seen.
        (Err(e), Some(_)) => assert_eq!(e.code(), "tensor_out_of_bounds", "{e}"),
        _ => {}
    }

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
