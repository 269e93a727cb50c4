//! Sentence-embedding encoders (src/model/encoder.rs) against transformers: the tiny random BERT
//! of scripts/make_encoder_fixtures.py (post-LN with biases, exact GELU, position and token-type
//! embeddings, mean pooling, normalisation), from its sentence-transformers folder, on inputs of
//! 1 to 64 tokens (up to its whole context): the last hidden states
//! element by element, and the embeddings within cosine distance 1e-5.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{check_tiny_bert, ctx};
use pocketlm::load::{load_directory, LoadOptions};
use pocketlm::model::encoder::AnyEncoder;
use pocketlm::model::{Encoder, EncoderConfig};

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-bert")
}

fn load() -> Encoder {
    let mut model =
        pollster::block_on(load_directory(ctx(), &folder(), 2, LoadOptions::default())).unwrap();
    let config = EncoderConfig::from_companions(&model.companions, "tiny-bert").unwrap();
    pollster::block_on(Encoder::new(ctx(), config, &mut model.tensors)).unwrap()
}

#[test]
fn tiny_bert_matches_transformers() {
    let encoder = load();
    let c = encoder.config().clone();
    assert!(c.normalize);
    let encoder = AnyEncoder::Gpu(encoder);
    let AnyEncoder::Gpu(gpu) = &encoder else {
        unreachable!()
    };
    check_tiny_bert(
        c.hidden,
        |inputs| pollster::block_on(gpu.hidden_states_packed(ctx(), inputs)).unwrap(),
        |inputs| pollster::block_on(encoder.embed_batch(ctx(), inputs)).unwrap(),
    );
}

#[test]
fn bad_inputs_and_missing_tensors_are_typed_errors() {
    let encoder = load();
    let too_long = vec![5u32; encoder.config().max_positions + 1];
    for (ids, code) in [
        (vec![], "context_overflow"),
        (too_long, "context_overflow"),
        (vec![1, 128], "invalid_request"),
    ] {
        let e = pollster::block_on(encoder.hidden_states(ctx(), &ids)).unwrap_err();
        assert_eq!(e.code(), code, "{e}");
    }
    // The encoder still works.
    assert!(pollster::block_on(encoder.hidden_states(ctx(), &[1, 2, 3])).is_ok());

    let mut model =
        pollster::block_on(load_directory(ctx(), &folder(), 2, LoadOptions::default())).unwrap();
    let config = EncoderConfig::from_companions(&model.companions, "tiny-bert").unwrap();
    model
        .tensors
        .remove("encoder.layer.1.output.dense.bias")
        .unwrap();
    let e = pollster::block_on(Encoder::new(ctx(), config, &mut model.tensors))
        .err()
        .expect("a missing tensor is refused");
    assert_eq!(e.code(), "invalid_tensor");
    assert!(
        e.to_string().contains("encoder.layer.1.output.dense.bias"),
        "{e}"
    );
}
