//! The real all-MiniLM-L6-v2 (scripts/fetch-minilm.sh) against sentence-transformers
//! (tests/fixtures/minilm/reference.json, scripts/make_minilm_reference.py): the tokenizer gives
//! the same ids for every sentence (accents, CJK, an emoji, an empty text, and a text cut at the
//! model's 256 tokens), and the embeddings are within cosine distance 1e-5. An empty text is
//! refused as a request (there is nothing to embed); its ids (`[CLS] [SEP]`) given as token ids
//! still embed like sentence-transformers' empty string, and ids outside the vocabulary are refused.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::PathBuf;

use common::{cosine_distance, ctx, fixture_json, numbers, token_ids};
use pocketlm::load::{load_directory, LoadOptions};
use pocketlm::model::{EmbedInput, Embedder};

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join(".complete").is_file(),
        "{} is missing: run scripts/fetch-minilm.sh",
        dir.display()
    );
    let mut model =
        pollster::block_on(load_directory(ctx(), &dir, 2, LoadOptions::default())).unwrap();
    let embedder =
        pollster::block_on(Embedder::from_loaded(ctx(), &mut model, "all-MiniLM-L6-v2")).unwrap();
    let reference = fixture_json("minilm/reference.json");
    assert_eq!(
        embedder.encoder.config().max_tokens,
        reference["max_seq_length"].as_u64().unwrap() as usize
    );
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for (i, s) in sentences.iter().enumerate() {
        let (ids, cut) = embedder.tokenize(s, true).unwrap();
        assert_eq!(
            ids,
            token_ids(&reference["input_ids"][i]),
            "sentence {i}: {s:?}"
        );
        assert_eq!(cut, ids.len() == 256, "sentence {i}");
    }
    // The long one is refused when it may not be cut.
    let long = sentences.last().unwrap();
    let e = embedder.tokenize(long, false).unwrap_err();
    assert_eq!(e.code(), "context_overflow");

    let e = pollster::block_on(embedder.embed_texts(ctx(), &["a", ""], true)).unwrap_err();
    assert_eq!(e.code(), "invalid_request");
    assert!(e.to_string().contains("input 1 is an empty string"), "{e}");
    let e = pollster::block_on(embedder.embed_inputs(
        ctx(),
        &[EmbedInput::Ids(vec![101, 30522, 102])],
        true,
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("token id 30522 (position 1) is outside the vocabulary of 30522"),
        "{e}"
    );

    let inputs: Vec<EmbedInput<'_>> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| match *s {
            "" => EmbedInput::Ids(token_ids(&reference["input_ids"][i])),
            s => EmbedInput::Text(s.into()),
        })
        .collect();
    let embeddings = pollster::block_on(embedder.embed_inputs(ctx(), &inputs, true)).unwrap();
    for (i, e) in embeddings.iter().enumerate() {
        let want = numbers(&reference["embeddings"][i]);
        assert_eq!(e.vector.len(), 384);
        let distance = cosine_distance(&e.vector, &want);
        println!(
            "sentence {i} ({} tokens): cosine distance {distance:.2e}",
            e.tokens
        );
        assert!(
            distance < 1e-5,
            "sentence {i} {:?}: cosine distance {distance:e}",
            sentences[i]
        );
    }
    // Similar sentences are nearer than unrelated ones.
    let cos = |a: usize, b: usize| -> f32 {
        embeddings[a]
            .vector
            .iter()
            .zip(&embeddings[b].vector)
            .map(|(x, y)| x * y)
            .sum()
    };
    assert!(cos(1, 2) > cos(1, 3), "{} vs {}", cos(1, 2), cos(1, 3));
}
