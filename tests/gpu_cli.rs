//! `pocketlm run`, `chat` and `bench` as a user runs them, on a tiny model folder (the fixture
//! Llama with a word-level tokenizer and a chat template), on the test's GPU driver and profile.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the CLI with the test's profile, `stdin` as its input; (success, stdout, stderr).
fn pocketlm(args: &[&str], stdin: &str) -> (bool, String, String) {
    let profile = std::env::var("POCKETLM_TEST_PROFILE").unwrap_or_else(|_| "auto".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_pocketlm"))
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
    let submits = out
        .lines()
        .find(|l| l.starts_with("submits per decoded token"))
        .unwrap();
    assert!(submits.ends_with(" 1.0"), "one submit per token: {submits}");
}
