//! The command-line tool as a user runs it (no GPU needed for `info`).
#![cfg(not(target_arch = "wasm32"))]

use std::process::Command;

fn pocketlm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pocketlm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run pocketlm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_describes_a_model_file() {
    let (ok, out, err) = pocketlm(&["info", "tests/fixtures/quant/blocks.gguf"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("GGUF") && out.contains("tensors:      9"),
        "{out}"
    );
    for dtype in [
        "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k", "f16", "bf16", "f32",
    ] {
        assert!(out.contains(dtype), "{dtype} missing from:\n{out}");
    }
}

#[test]
fn info_on_the_default_model_prints_its_hyper_parameters() {
    let (ok, out, err) = pocketlm(&["info", "default"]);
    assert!(
        ok,
        "{err} (scripts/fetch-model.sh fetches the default model)"
    );
    // Compared with white space folded: the layout may change, the facts may not.
    let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "architecture: llama",
        "layers: 30",
        "attention heads: 9",
        "key-value heads: 3",
        "vocabulary: 49152",
        "tensors: 272",
        "q4_1 210 tensors",
        "q8_0 1 tensors",
    ] {
        assert!(folded.contains(want), "'{want}' missing from:\n{out}");
    }
}

#[test]
fn info_on_a_bad_file_fails_on_stderr() {
    let (ok, out, err) = pocketlm(&["info", "Cargo.toml"]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("not a model file"), "{err}");
    let (ok, _, err) = pocketlm(&["info", "/nonexistent/model.gguf"]);
    assert!(!ok && err.contains("/nonexistent/model.gguf"), "{err}");
}
