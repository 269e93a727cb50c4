#!/usr/bin/env bash
# make fuzz: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 30) each, starting
# from the inputs in tests/fixtures (seeds and earlier findings) plus fuzz/corpus/<target>,
# which keeps what libFuzzer learns between runs (git-ignored). A crash lands in
# fuzz/artifacts/<target>/: fix it, then commit the input under tests/fixtures/fuzz/<target>/
# (tests/fixtures/formats/fuzz/ for the header parsers), where `cargo test` replays it.
# FUZZ_TARGETS="chat_template openai_request" picks targets.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
targets=${FUZZ_TARGETS:-"gguf_header safetensors_header tokenizer_json gguf_vocab chat_template openai_request cpu_model"}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly-only flags (-Zsanitizer); RUSTC_BOOTSTRAP lets the installed
# toolchain, stable or nightly, accept them, so no nightly download is needed.
export RUSTC_BOOTSTRAP=1

# Extra seeds from the test fixtures, per target.
seeds() {
  case $1 in
    gguf_header) ls tests/fixtures/formats/*.gguf tests/fixtures/quant/*.gguf \
                    tests/fixtures/models/*.gguf 2>/dev/null | grep -v presets || true ;;
    safetensors_header) ls tests/fixtures/formats/*.safetensors tests/fixtures/formats/sharded/* 2>/dev/null || true ;;
    # Whole models: the target reads only the header (what -max_len keeps of a seed holds it).
    cpu_model) ls tests/fixtures/models/*.gguf tests/fixtures/gguf/*.gguf 2>/dev/null || true ;;
  esac
}

failed=()
for t in $targets; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  for f in $(seeds "$t"); do
    # Seeds above 1 MiB only slow the fuzzer down.
    [ "$(stat -c %s "$f")" -le 1048576 ] && cp -n "$f" "$corpus/" || true
  done
  dirs=("$PWD/$corpus")
  [ -d "tests/fixtures/fuzz/$t" ] && dirs+=("$PWD/tests/fixtures/fuzz/$t")
  # -max_len: what the target reads (cpu_model reads a header: the tiny models' are under 10 KB).
  max_len=65536
  case $t in
    gguf_header | safetensors_header) dirs+=("$PWD/tests/fixtures/formats/fuzz") ;;
    cpu_model) max_len=16384 ;;
  esac
  echo "== fuzz $t for ${seconds}s =="
  # -timeout: one input may take a few seconds (a template at its fuel limit under ASan);
  # -rss_limit_mb: above what the bounded parsers and templates may use.
  if ! (cd fuzz && cargo fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len="$max_len" \
        -artifact_prefix="$PWD/artifacts/$t/" -print_final_stats=1); then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "make fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/" >&2
  exit 1
fi
echo "make fuzz: no crashes in $targets (${seconds}s each)"
