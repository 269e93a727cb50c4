#!/usr/bin/env bash
# One wasm package folder (www/pkg or www/pkg-mt) from its two cargo builds of the same source:
# OUT/pocketlm.js with OUT/pocketlm_bg.wasm (SIMD128), and OUT/pocketlm_relaxed.js with
# OUT/pocketlm_relaxed_bg.wasm (SIMD128 and relaxed SIMD); www/src/engine.js imports one pair
# (www/src/simd.js says which). Each build needs its own JavaScript glue: wasm-bindgen numbers
# the module's closure adapters in the order it meets them, which differs between the builds.
# Their API must be the same, so their .d.ts files are compared, and the relaxed one is dropped.
# The modules' internal exports there (InitOutput) name closure adapters by a hash of the crate's
# build, which the relaxed build's feature changes: they are compared without it, in any order.
#
# Usage: scripts/wasm-package.sh OUT PLAIN.wasm RELAXED.wasm PROFILE [extra wasm-opt flags…]
# PROFILE release runs wasm-opt (www/node_modules/.bin/wasm-opt, npm's binaryen) on both files.
set -euo pipefail
out=$1 plain=$2 relaxed=$3 profile=$4
shift 4
wasm_opt=www/node_modules/.bin/wasm-opt
# The features rustc enables for wasm32, and the builds' own.
opt_flags=(-O1 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
  --enable-mutable-globals --enable-reference-types --enable-multivalue "$@")

rm -f "$out"/.stamp-*
wasm-bindgen --target web --out-dir "$out" --out-name pocketlm "$plain"
wasm-bindgen --target web --out-dir "$out" --out-name pocketlm_relaxed "$relaxed"
api() { sed -E 's/(_invoke__h)[0-9a-f]+:/\1HASH:/' "$1" | sort; }
if ! diff <(api "$out/pocketlm.d.ts") <(api "$out/pocketlm_relaxed.d.ts") >&2; then
  echo "wasm-package: the relaxed-SIMD build's API differs from the SIMD128 build's" >&2
  exit 1
fi
rm "$out/pocketlm_relaxed.d.ts" "$out/pocketlm_relaxed_bg.wasm.d.ts"
if [ "$profile" = release ]; then
  [ -x "$wasm_opt" ] || { echo "$wasm_opt is missing: run make setup (npm ci in www/)"; exit 1; }
  "$wasm_opt" "${opt_flags[@]}" -o "$out/pocketlm_bg.wasm" "$out/pocketlm_bg.wasm"
  "$wasm_opt" "${opt_flags[@]}" --enable-relaxed-simd -o "$out/pocketlm_relaxed_bg.wasm" "$out/pocketlm_relaxed_bg.wasm"
fi
touch "$out/.stamp-$profile"
