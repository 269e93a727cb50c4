//! Arbitrary bytes into the safetensors header parser (whole file and growing prefixes, which
//! must agree) and into the sharded-checkpoint index parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pocketlm::formats::{
    merge_shards, next_fetch_len, Parsed, SafetensorsHeader, SafetensorsIndex,
};

fuzz_target!(|data: &[u8]| {
    let whole = SafetensorsHeader::parse(data, Some(data.len() as u64), "fuzz.safetensors");
    if let Ok(parsed) = &whole {
        assert!(
            matches!(parsed, Parsed::Complete { .. }),
            "NeedMore with the size known"
        );
    }

    let mut have = 0usize;
    let mut steps = 0;
    let streamed = loop {
        match SafetensorsHeader::parse(&data[..have], None, "fuzz.safetensors") {
            Ok(Parsed::NeedMore { at_least }) => {
                assert!(at_least > have, "NeedMore({at_least}) with {have} bytes");
                if at_least > data.len() {
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
            Ok(Parsed::Complete { header, .. }) => break Some(header),
            Err(e) => {
                let w = whole
                    .as_ref()
                    .expect_err("streaming failed, whole file parsed");
                assert_eq!(e.code(), w.code(), "{e} / {w}");
                break None;
            }
        }
    };
    match (&whole, &streamed) {
        (Ok(Parsed::Complete { header, .. }), Some(s)) => assert_eq!(header.tensors, s.tensors),
        (Ok(_), None) => panic!("whole file parsed, streaming did not"),
        // With the size unknown, the data's extent cannot be checked.
        (Err(e), Some(_)) => assert!(
            ["tensor_out_of_bounds", "invalid_header"].contains(&e.code()),
            "{e}"
        ),
        _ => {}
    }
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
