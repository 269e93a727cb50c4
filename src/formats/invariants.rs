//! The invariant the parsers' fuzz targets and regression tests check: a file parsed whole (its
//! size known) and as a stream of growing prefixes (its size unknown, fetching what the parser
//! asks for) gets the same verdict, and neither panics. Shared by `fuzz/` and `tests/formats.rs`;
//! it asserts, so it is for tests.

use std::fmt::Debug;

use crate::error::Result;
use crate::formats::{next_fetch_len, Parsed};

/// Parses `data` both ways with `parse(prefix, file_size)` and asserts the verdicts agree: the
/// same header (`same`), or the same error code. `size_blind` lists the codes only the whole-file
/// parse can give (problems past the end, which a stream of unknown size cannot see yet).
/// Returns the streamed header.
pub fn check_streaming_agrees<T: Debug>(
    data: &[u8],
    parse: impl Fn(&[u8], Option<u64>) -> Result<Parsed<T>>,
    size_blind: &[&str],
    same: impl Fn(&T, &T) -> bool,
) -> Option<T> {
    let whole = parse(data, Some(data.len() as u64));
    if let Ok(parsed) = &whole {
        assert!(
            matches!(parsed, Parsed::Complete { .. }),
            "NeedMore with the size known"
        );
    }
    let mut have = 0usize;
    let mut steps = 0;
    let streamed = loop {
        match parse(&data[..have], None) {
            Ok(Parsed::NeedMore { at_least }) => {
                assert!(at_least > have, "NeedMore({at_least}) with {have} bytes");
                if at_least > data.len() {
                    if have < data.len() {
                        // Everything there is, before concluding the file is short.
                        have = data.len();
                        continue;
                    }
                    let e = whole
                        .as_ref()
                        .expect_err("streaming needs more than the file");
                    assert_eq!(e.code(), "file_truncated", "{e}");
                    break None;
                }
                // Exactly what is asked for a while (every boundary), then geometric growth, as a
                // loader fetches (so a long header does not take quadratic time).
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
            assert!(same(header, s), "whole {header:?} / streamed {s:?}")
        }
        (Ok(_), None) => panic!("whole file parsed, streaming did not"),
        (Err(e), Some(_)) => assert!(size_blind.contains(&e.code()), "{e}"),
        _ => {}
    }
    streamed
}
