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
        out.contains("GGUF") && out.contains("tensors:      15"),
        "{out}"
    );
    for dtype in [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
        "iq4_xs", "f16", "bf16", "f32",
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

/// `random-weights`: a model's header alone (what a benchmark machine without the weights is
/// given) becomes a file of the original's size, header and tensors with other weights, which
/// loads and generates like the original.
#[test]
fn random_weights_rebuild_a_model_from_its_header() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("random-weights");
    std::fs::create_dir_all(&dir).unwrap();
    let original = "tests/fixtures/models/tiny-llama.gguf";
    let header = dir.join("tiny-llama.header.gguf");
    let copy = dir.join("tiny-llama.random.gguf");
    let (header, copy) = (header.to_str().unwrap(), copy.to_str().unwrap());
    let (ok, _, err) = pocketlm(&["random-weights", original, header, "--header-only"]);
    assert!(ok, "{err}");
    let (ok, _, err) = pocketlm(&["random-weights", header, copy, "--seed", "7"]);
    assert!(ok, "{err}");
    let (orig, h, c) = (
        std::fs::read(original).unwrap(),
        std::fs::read(header).unwrap(),
        std::fs::read(copy).unwrap(),
    );
    assert!(h.len() < orig.len() / 4 && orig.starts_with(&h) && c.starts_with(&h));
    assert_eq!(c.len(), orig.len());
    assert_ne!(c, orig);
    // The same model as `info` sees it, all but the file name on the first line.
    let describe = |file: &str| {
        let (ok, out, err) = pocketlm(&["info", file]);
        assert!(ok, "{err}");
        out.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(describe(copy), describe(original));
    // The header alone is not a model, and the copy generates.
    let (ok, _, err) = pocketlm(&["info", header]);
    assert!(!ok && err.contains("past the end of the file"), "{err}");
    let (ok, out, err) = pocketlm(&[
        "--backend",
        "cpu",
        "run",
        copy,
        "hello",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--json",
    ]);
    assert!(ok && out.contains("\"completion_tokens\":4"), "{out}{err}");
    let (ok, _, err) = pocketlm(&["random-weights", "Cargo.toml", copy]);
    assert!(!ok && err.contains("not a GGUF file"), "{err}");
}

/// A one-thread HTTP server on 127.0.0.1 serving `body` at `/model.gguf` (404 elsewhere) for
/// `requests` requests.
fn serve(body: Vec<u8>, requests: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let found = request.starts_with("GET /model.gguf ");
            let (status, body) = if found {
                ("200 OK", body.as_slice())
            } else {
                ("404 Not Found", &b"not found"[..])
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://{addr}")
}

#[test]
fn info_reads_a_model_over_http() {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant/blocks.gguf"),
    )
    .unwrap();
    let base = serve(body, 2);
    let (ok, out, err) = pocketlm(&["info", &format!("{base}/model.gguf")]);
    assert!(ok, "{err}");
    assert!(out.contains("pocketlm-quant-fixtures"), "{out}");
    let (ok, _, err) = pocketlm(&["info", &format!("{base}/missing.gguf")]);
    assert!(!ok);
    assert!(err.contains("HTTP status 404"), "{err}");
}

#[test]
fn info_describes_a_model_folder() {
    let (ok, out, err) = pocketlm(&["info", "tests/fixtures/formats/sharded"]);
    assert!(ok, "{err}");
    let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(folded.contains("safetensors (2 files)"), "{out}");
    assert!(folded.contains("tensors: 5"), "{out}");
    assert!(out.contains("LlamaForCausalLM"), "{out}");
}
