//! `pocketlm run`, `chat`, `bench` and `embed` as a user runs them, on tiny model folders (the
//! fixture Llama with a word-level tokenizer and a chat template; the tiny BERT with a
//! word-level tokenizer), on the test's GPU driver and profile.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the CLI with the test's profile, `stdin` as its input; (success, stdout, stderr).
fn pocketlm(args: &[&str], stdin: &str) -> (bool, String, String) {
    pocketlm_on("gpu", args, stdin)
}

/// `pocketlm --backend BACKEND ARGS…` with `stdin`: whether it succeeded, stdout, stderr.
fn pocketlm_on(backend: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let profile = std::env::var("POCKETLM_TEST_PROFILE").unwrap_or_else(|_| "auto".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pocketlm"))
        .args(["--backend", backend])
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pocketlm");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_streams_only_the_reply_to_stdout() {
    let dir = common::tiny_model_folder("cli-run");
    let dir = dir.to_str().unwrap();
    let greedy = ["--temperature", "0", "--max-tokens", "6"];
    let (ok, out, err) = pocketlm(
        &[&["run", dir, "w10 w11 w12", "--json"][..], &greedy].concat(),
        "",
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("stdout is one JSON object");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 6);
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(
        v["prompt_tokens"], 3,
        "three words; this tokenizer.json adds no BOS"
    );
    assert!(err.contains("loaded in"), "{err}");

    // Streamed: stdout is exactly the reply's text and a newline; everything else on stderr.
    let (ok, streamed, err) = pocketlm(&[&["run", dir, "w10 w11 w12"][..], &greedy].concat(), "");
    assert!(ok, "{err}");
    assert_eq!(streamed, format!("{}\n", v["text"].as_str().unwrap()));
    assert!(err.contains("6 generated"), "{err}");

    // Same seed, same reply; sampling options are checked before loading.
    let sampled = ["--temperature", "1.2", "--seed", "11", "--max-tokens", "8"];
    let a = pocketlm(&[&["run", dir, "w20", "--chat"][..], &sampled].concat(), "");
    let b = pocketlm(&[&["run", dir, "w20", "--chat"][..], &sampled].concat(), "");
    assert!(a.0, "{}", a.2);
    assert_eq!(a.1, b.1);
    let (ok, _, err) = pocketlm(&["run", dir, "w20", "--top-p", "1.5"], "");
    assert!(!ok);
    assert!(err.contains("top_p"), "{err}");
}

#[test]
fn run_refuses_a_prompt_longer_than_the_context() {
    let dir = common::tiny_model_folder("cli-overflow");
    let prompt = (10..30)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (ok, out, err) = pocketlm(
        &["run", dir.to_str().unwrap(), &prompt, "--context", "16"],
        "",
    );
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("the prompt is 20 tokens, but the context holds 16"),
        "{err}"
    );
}

#[test]
fn chat_keeps_the_conversation_and_reuses_its_prefix() {
    let dir = common::tiny_model_folder("cli-chat");
    let (ok, out, err) = pocketlm(
        &[
            "chat",
            dir.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            "4",
        ],
        "w10 w11\nw12\n/reset\nw10 w11\n/exit\nw99\n",
    );
    assert!(ok, "{err}");
    let turns: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("prompt tokens"))
        .collect();
    assert_eq!(turns.len(), 3, "three replies before /exit:\n{err}");
    assert!(turns[0].contains("(0 reused)"), "{}", turns[0]);
    assert!(
        !turns[1].contains("(0 reused)"),
        "turn 2 reuses turn 1: {}",
        turns[1]
    );
    assert!(
        turns[2].contains("(0 reused)"),
        "/reset starts over: {}",
        turns[2]
    );
    // The first and the reset turn are the same greedy reply.
    let replies: Vec<&str> = out.lines().collect();
    assert_eq!(replies.len(), 3, "{out}");
    assert_eq!(replies[0], replies[2]);
}

#[test]
fn bench_reports_speed_work_per_token_and_memory() {
    let dir = common::tiny_model_folder("cli-bench");
    let (ok, out, err) = pocketlm(
        &[
            "bench",
            dir.to_str().unwrap(),
            "--prompt-tokens",
            "20",
            "--gen-tokens",
            "5",
            "--context",
            "64",
            "--per-kernel",
        ],
        "",
    );
    assert!(ok, "{err}");
    for row in [
        "prefill",
        "decode",
        "dispatches per decoded token",
        "GPU memory: weights",
        "GPU memory: KV cache",
    ] {
        assert!(out.contains(row), "'{row}' missing:\n{out}");
    }
    // --per-kernel: each shape of the linear layers with the weights it reads, as GB/s and as a
    // fraction of the copy kernel's bandwidth.
    let weights_read = out
        .lines()
        .skip_while(|l| !l.contains("each dispatch timed alone"))
        .filter(|l| l.trim_start().starts_with("grid ") && l.contains(" MB "))
        .count();
    assert!(weights_read > 0, "{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains(" MB "))
            .all(|l| l.contains(" GB/s") && l.ends_with("× copy")),
        "{out}"
    );
    let submits = out
        .lines()
        .find(|l| l.starts_with("submits per decoded token"))
        .unwrap();
    assert!(submits.ends_with(" 1.0"), "one submit per token: {submits}");
    // Host and GPU time per token, the GPU's from timestamp queries over the real graph where
    // the device takes them (lavapipe does, inside a pass too): its dispatches by kind add up to
    // the step's.
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("'{name}' missing:\n{out}"))
    };
    assert!(row("host time per decoded token").contains(" ms "), "{out}");
    assert!(row("host time of the prefill").contains(" ms "), "{out}");
    // --per-kernel times each prefill step's graph too: one table per step the prefill ran.
    let steps = row("prefill ");
    let steps = &steps[steps.find("steps of [").unwrap() + 10..];
    let steps: Vec<&str> = steps[..steps.find(']').unwrap()].split(", ").collect();
    for n in &steps {
        let title = format!("prefill step of {n} tokens, each dispatch timed alone");
        assert!(out.contains(&title), "'{title}' missing:\n{out}");
    }
    let first_number = |l: &str| -> f64 {
        l.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no number in '{l}'"))
    };
    let prefill_dispatches = first_number(row("dispatches of the prefill"));
    assert!(prefill_dispatches > 0.0, "{out}");
    let features = row("adapter features:");
    let gpu = row("GPU time per decoded token");
    if !features.contains("timestamp-query,") && !features.ends_with("timestamp-query") {
        assert!(gpu.contains("not measured"), "{gpu}");
        return;
    }
    assert!(
        gpu.contains("timestamp queries over the real graph"),
        "{gpu}"
    );
    if features.contains("timestamp-query-inside-passes") {
        let dispatches: f64 = row("dispatches per decoded token")
            .split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap();
        // The dispatches by kind of the section whose heading contains `what`.
        let by_kind = |what: &str| -> f64 {
            out.lines()
                .skip_while(|l| !(l.contains("per kind of dispatch") && l.contains(what)))
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .map(|l| {
                    let n = l.split_whitespace().nth(1).unwrap();
                    n.trim_start_matches('×').parse::<f64>().unwrap()
                })
                .sum()
        };
        assert!((by_kind("(per step)") - dispatches).abs() < 0.5, "{out}");
        // The prompt's own GPU time, over the same dispatches the measured prefill ran.
        assert!(
            row("GPU time of the prefill").contains("timestamp queries over the real graph"),
            "{out}"
        );
        assert_eq!(by_kind("(the whole prompt)"), prefill_dispatches, "{out}");
    }
}

/// A copy of the tiny BERT folder with a word-level tokenizer.json of its 128 ids that wraps a
/// text in `<s> … </s>`, as BERT's wraps it in `[CLS] … [SEP]`.
fn tiny_bert_folder(name: &str) -> std::path::PathBuf {
    let files = [
        "config.json",
        "model.safetensors",
        "modules.json",
        "1_Pooling/config.json",
    ];
    let dir = common::fixture_copy("tiny-bert", &files, name);
    let mut tok: serde_json::Value = serde_json::from_str(&common::tiny_tokenizer_json(0)).unwrap();
    tok["post_processor"] = serde_json::json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

#[test]
fn embed_prints_vectors_or_the_openai_response_and_bench_times_it() {
    let dir = tiny_bert_folder("cli-embed");
    let dir = dir.to_str().unwrap();
    let (ok, out, err) = pocketlm(&["embed", dir, "w10 w11", "w12"], "");
    assert!(ok, "{err}");
    let lines: Vec<Vec<f64>> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON array per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        assert_eq!(v.len(), 32);
        let norm: f64 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "normalised: {norm}");
    }
    assert!(
        err.contains("loaded in") && err.contains("2 texts, 7 tokens"),
        "{err}"
    );

    let (ok, out, err) = pocketlm(
        &[
            "embed",
            dir,
            "w10 w11",
            "w12",
            "--json",
            "--dimensions",
            "8",
        ],
        "",
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["object"], "list");
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(
            (d["object"].as_str(), d["index"].as_u64()),
            (Some("embedding"), Some(i as u64))
        );
        let e: Vec<f64> = serde_json::from_value(d["embedding"].clone()).unwrap();
        assert_eq!(e.len(), 8);
        // The first 8 values of the full vector, normalised again.
        let head = &lines[i][..8];
        let n = head.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (a, b) in e.iter().zip(head) {
            assert!((a - b / n).abs() < 1e-6, "{a} vs {}", b / n);
        }
    }

    // `bench` of an embedding model, on each backend: a row per input length and batch size.
    for backend in ["gpu", "cpu"] {
        let args = ["bench", dir, "--prompt-tokens", "20"];
        let (ok, out, err) = pocketlm_on(backend, &args, "");
        assert!(ok, "{backend}: {err}");
        assert!(out.contains("embeddings/s"), "{out}");
        let batches: Vec<&str> = out
            .lines()
            .filter(|l| l.split_whitespace().count() == 5 && l.trim().starts_with(char::is_numeric))
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(batches, ["1", "1", "1", "8", "64"], "{out}");
    }

    // Bad input: typed errors on stderr, a failing exit status.
    let bare = tiny_bert_folder("cli-embed-no-tokenizer");
    std::fs::remove_file(bare.join("tokenizer.json")).unwrap();
    for (args, want) in [
        (vec!["embed", dir, "w10", "--dimensions", "0"], "dimensions"),
        (
            vec!["embed", bare.to_str().unwrap(), "w10"],
            "tokenizer.json",
        ),
        (
            vec!["embed", "tests/fixtures/models/tiny-llama", "w10"],
            "encoder",
        ),
    ] {
        let (ok, _, err) = pocketlm(&args, "");
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }
}

/// `--full-window-cache` keeps every position of the tiny Gemma 3's sliding-window layers (a
/// larger KV cache than their rings) with the same greedy reply, and `--kv-dtype f32` doubles
/// it.
#[test]
fn run_takes_the_kv_cache_options() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/models/tiny-gemma3.gguf"
    );
    let kv_mib = |extra: &[&str]| {
        let args = [
            &[
                "run",
                model,
                "a b c",
                "--temperature",
                "0",
                "--max-tokens",
                "3",
            ][..],
            &["--context", "512"],
            extra,
        ]
        .concat();
        let (ok, out, err) = pocketlm(&args, "");
        assert!(ok, "{extra:?}: {err}");
        let mib: f64 = err
            .split("KV cache ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no KV cache size in: {err}"));
        (mib, out)
    };
    let (ring, reply) = kv_mib(&[]);
    let (full, full_reply) = kv_mib(&["--full-window-cache"]);
    let (f32_full, _) = kv_mib(&["--full-window-cache", "--kv-dtype", "f32"]);
    assert!(ring < full, "ring {ring} MiB, every position {full} MiB");
    assert!(
        (f32_full / full - 2.0).abs() < 0.05,
        "f16 {full} MiB, f32 {f32_full} MiB"
    );
    assert_eq!(reply, full_reply);
    let (ok, _, err) = pocketlm(&["run", model, "a", "--kv-dtype", "q8_0"], "");
    assert!(!ok);
    assert!(err.contains("kv-dtype"), "{err}");
}
