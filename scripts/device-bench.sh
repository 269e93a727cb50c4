#!/usr/bin/env bash
# Real-GPU numbers from one short run on a machine that has a GPU but nothing else this project
# needs: no Rust toolchain, no network, no model files, a few minutes:
#
#   scripts/device-bench.sh prepare    here: builds the release CLI into target/device/ with the
#                                      headers of the GGUF models under models/ (a few MiB each,
#                                      `pocketlm random-weights --header-only`), the Vulkan and
#                                      GL loaders' .debs (the GPU's driver brings its own ICD)
#                                      and llama.cpp's source (from the llama-cpp-python sdist
#                                      that `make bench-cpu` builds, without models and docs)
#   scripts/device-bench.sh run        there, in this tree with target/device/ copied along:
#                                      the device report, `selfcheck` (every kernel against its
#                                      CPU reference; with f16 tiles too), `kernel-bench` (matvec
#                                      of every format, then the prefill kernels, the GEMM with
#                                      f32 and f16 tiles) and `bench` of each model rebuilt from
#                                      its header with random weights of the same formats (same
#                                      shapes, same kernels, same speed), on both profiles and
#                                      with f16 tiles;
#                                      then, where nvcc and cmake are, llama.cpp built for CUDA
#                                      and its llama-bench on the same files, prompt and tokens
#   scripts/device-bench.sh llama      the llama.cpp part alone
#   scripts/device-bench.sh sweep      there: `bench --quick` of each decoder model with the
#                                      default attention chunking and with --attention-chunk
#                                      of each of DEVICE_BENCH_CHUNKS (default 16 32 64 128),
#                                      at the default prompt and at DEVICE_BENCH_LONG_PROMPT
#                                      (default 1024) tokens: which chunking to make the default
#   scripts/device-bench.sh compare    there, a change against its base in one run: the same
#                                      kernel-bench rows and model benches with
#                                      target/device/pocketlm-base (a release build of the base,
#                                      copied there by hand) and with target/device/pocketlm,
#                                      alternating, so that both share the GPU's state and clocks
#
# `run` writes everything it prints to $OUT/device-bench.txt (OUT defaults to target/device/out),
# `sweep` to $OUT/device-sweep.txt, `compare` to $OUT/device-compare.txt.
# Knobs: DEVICE_BENCH_SIZE (kernel-bench matrix, default 4096), DEVICE_BENCH_PROMPT and
# DEVICE_BENCH_GEN (prompt and generated tokens, default 128 and 64), DEVICE_BENCH_BACKEND
# (default gpu: the WebGPU backend even on a CPU adapter, so that the script can be tried on
# lavapipe first), DEVICE_BENCH_LLAMA=0 (no llama.cpp), DEVICE_BENCH_LLAMA_CMAKE (llama.cpp's
# build flags; default "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native"; adding
# -DGGML_CUDA_FA=OFF leaves out the flash-attention kernels, most of the build; at 128
# tokens of context attention is a small part of its time), DEVICE_BENCH_STEP_TIMEOUT (seconds for
# each of PocketLM's steps, default 300; lower keeps a hang from eating a short lease).
# `make bench-browser` needs Node and Chromium, which such a machine lacks; the native numbers
# are the GPU's own (the same WGSL through wgpu's Vulkan backend, as Chromium's Dawn runs it on
# Linux).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/device"
BIN="$DIR/pocketlm"
LLAMA_SDIST_URL="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
LLAMA_SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
OUT="${OUT:-$DIR/out}"
MODELS="${TMPDIR:-/tmp}/pocketlm-device-models"
size="${DEVICE_BENCH_SIZE:-4096}"
prompt="${DEVICE_BENCH_PROMPT:-128}"
gen="${DEVICE_BENCH_GEN:-64}"

# Each model of target/device rebuilt from its header into $MODELS (once).
rebuild_models() {
  mkdir -p "$MODELS"
  for h in "$DIR"/*.header.gguf; do
    m="$MODELS/$(basename "$h" .header.gguf).gguf"
    [ -f "$m" ] || "$BIN" random-weights "$h" "$m"
  done
}

# llama.cpp, built from target/device/llama.cpp.tar.xz with LLAMA_FLAGS (for CUDA by default)
# into $LLAMA, and its llama-bench on each model.
LLAMA="${TMPDIR:-/tmp}/pocketlm-llama"
LLAMA_FLAGS="${DEVICE_BENCH_LLAMA_CMAKE:--DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native}"

llama_wanted() {
  [ "${DEVICE_BENCH_LLAMA:-1}" != 0 ] && [ -f "$DIR/llama.cpp.tar.xz" ] \
    && command -v cmake >/dev/null \
    && { [[ $LLAMA_FLAGS != *GGML_CUDA=ON* ]] || command -v nvcc >/dev/null; }
}

# Builds llama-bench (at most 8 minutes; run again, a build goes on where it stopped), at the
# lowest CPU priority so that it can run beside PocketLM's benchmarks: log in $LLAMA/build.log.
llama_build() {
  [ -x "$LLAMA/build/bin/llama-bench" ] && return 0
  [ -d "$LLAMA/llama.cpp" ] || { mkdir -p "$LLAMA" && tar xJf "$DIR/llama.cpp.tar.xz" -C "$LLAMA"; } \
    || return 1
  local gen_flag=()
  command -v ninja >/dev/null && gen_flag=(-G Ninja)
  # shellcheck disable=SC2086 # LLAMA_FLAGS is a list of flags
  nice -n 19 cmake -S "$LLAMA/llama.cpp" -B "$LLAMA/build" "${gen_flag[@]}" \
    -DCMAKE_BUILD_TYPE=Release $LLAMA_FLAGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    > "$LLAMA/build.log" 2>&1 \
    && nice -n 19 timeout 480 cmake --build "$LLAMA/build" --target llama-bench -j "$(nproc)" \
      >> "$LLAMA/build.log" 2>&1
}

# Waits for the build started as pid $1 (none: builds now), then llama-bench on each model.
llama_bench() {
  echo
  if ! llama_wanted; then
    echo "== llama.cpp: skipped (DEVICE_BENCH_LLAMA=0, no source, or no cmake or nvcc here)"
    return 0
  fi
  echo "== llama.cpp: llama-bench built with $LLAMA_FLAGS"
  local t0=$SECONDS rc
  if [ -n "${1:-}" ]; then wait "$1"; else llama_build; fi
  rc=$?
  echo "(build exit $rc, waited $((SECONDS - t0)) s)"
  [ $rc -eq 0 ] || { tail -30 "$LLAMA/build.log"; return 1; }
  rebuild_models
  for m in "$MODELS"/*.gguf; do
    echo; echo "== llama-bench $(basename "$m") -p $prompt -n $gen -ngl 99"
    timeout 300 "$LLAMA/build/bin/llama-bench" -m "$m" -p "$prompt" -n "$gen" -ngl 99 -r 3
    echo "(exit $?)"
  done
}

# The Vulkan loader where the machine lacks one, the GPU driver's ICD, and `step`.
device_setup() {
  [ -x "$BIN" ] || { echo "no $BIN: run scripts/device-bench.sh prepare first" >&2; exit 1; }
  mkdir -p "$OUT"
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    for f in "$DIR"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  if [ -z "${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]; then
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json \
               /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json; do
      if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; break; fi
    done
  fi
  backend="${DEVICE_BENCH_BACKEND:-gpu}"
}

# `pocketlm ARGS` (or `PROG=… step ARGS` for another build) with a heading and its exit status.
step() {
  echo
  echo "== ${PROG:-pocketlm} $*"
  timeout "${DEVICE_BENCH_STEP_TIMEOUT:-300}" "${PROG_BIN:-$BIN}" "$@"
  echo "(exit $?)"
}

case "${1:-}" in
prepare)
  set -e
  cd "$ROOT"
  cargo build --release --bin pocketlm
  rm -rf "$DIR"
  mkdir -p "$DIR/debs"
  cp target/release/pocketlm "$BIN"
  strip "$BIN"
  for m in models/*.gguf; do
    "$BIN" random-weights "$m" "$DIR/$(basename "$m" .gguf).header.gguf" --header-only
  done
  # The loaders the device tool's notes name (NVIDIA's Vulkan ICD lives in its GLX library).
  (cd "$DIR/debs" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
    libgles2 2>/dev/null)
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  curl -sSfL -o "$tmp/sdist.tar.gz" "$LLAMA_SDIST_URL"
  echo "$LLAMA_SDIST_SHA256  $tmp/sdist.tar.gz" | sha256sum --check --quiet -
  tar xzf "$tmp/sdist.tar.gz" -C "$tmp"
  # What a CUDA build of llama-bench needs: no models, docs, tests, examples, server or other
  # GPU backends (3.8 MiB compressed instead of 77).
  excl=(models docs media .github examples tests benches conversion gguf-py pocs skills
        tools/ui tools/server)
  for b in sycl cann musa opencl hexagon webgpu zdnn zendnn metal openvino virtgpu et hip vulkan
  do excl+=("ggml/src/ggml-$b"); done
  tar cf - -C "$tmp"/llama_cpp_python-*/vendor "${excl[@]/#/--exclude=llama.cpp/}" \
    --exclude='*.py' llama.cpp | xz -9 -T0 > "$DIR/llama.cpp.tar.xz"
  echo "target/device: $(du -sh "$DIR" | cut -f1); copy it along (the device tool: carry" \
    "target/device) and run scripts/device-bench.sh run"
  ;;
run)
  device_setup
  {
    # llama.cpp builds on the CPU while PocketLM's benchmarks use the GPU.
    build=""
    if llama_wanted; then
      llama_build &
      build=$!
    fi
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
      --format=csv 2>/dev/null || true
    step device
    # Every kernel against its CPU reference on this GPU, with the GEMM's f32 and f16 tiles.
    step selfcheck
    step --f16-tiles selfcheck
    step kernel-bench --size "$size"
    # Prefill's linear kernels: the small-m path (8 and 16 rows) and the tiled GEMM (32 and 128
    # rows). A prompt of 17 to 31 tokens runs as 16 + 8 + …: 16 rows against 32 (one GEMM tile)
    # says whether one step of the 32-token graph would be cheaper (the engine's plan_step).
    for rows in 8 16 32 128; do
      step kernel-bench --size "$size" --rows "$rows" --formats f32,f16,q8_0,q4_0,q4_1,q4_k,q6_k
    done
    rebuild_models
    for m in "$MODELS"/*.gguf; do
      step --backend "$backend" bench "$m" --prompt-tokens "$prompt" --gen-tokens "$gen" \
        --per-kernel
      # The prefill GEMM's f16 tiles (kernel-bench above times both on the 128-row GEMM).
      step --backend "$backend" --f16-tiles bench "$m" --prompt-tokens "$prompt" \
        --gen-tokens "$gen"
      step --backend "$backend" --profile baseline bench "$m" --prompt-tokens "$prompt" \
        --gen-tokens "$gen"
    done
    llama_bench "$build"
  } 2>&1 | tee "$OUT/device-bench.txt"
  ;;
compare)
  device_setup
  base="$DIR/pocketlm-base"
  [ -x "$base" ] || { echo "no $base: copy a release build of the base there" >&2; exit 1; }
  formats="${DEVICE_BENCH_FORMATS:-f16,q8_0,q4_0,q4_1,q4_k,q6_k}"
  {
    date -u
    rebuild_models
    for rows in ${DEVICE_BENCH_ROWS:-1 8 16}; do
      for b in base new; do
        if [ $b = base ]; then PROG_BIN=$base; else PROG_BIN=$BIN; fi
        PROG="pocketlm ($b)" PROG_BIN=$PROG_BIN step kernel-bench --size "$size" --rows "$rows" \
          --formats "$formats"
      done
    done
    for round in 1 2; do
      for m in "$MODELS"/*.gguf; do
        case "$m" in *MiniLM*) continue ;; esac
        for b in base new; do
          if [ $b = base ]; then PROG_BIN=$base; else PROG_BIN=$BIN; fi
          extra=()
          [ $round = 1 ] && extra=(--per-kernel)
          PROG="pocketlm ($b, round $round)" PROG_BIN=$PROG_BIN step --backend "$backend" bench \
            "$m" --prompt-tokens "$prompt" --gen-tokens "$gen" "${extra[@]}"
        done
      done
    done
  } 2>&1 | tee "$OUT/device-compare.txt"
  ;;
sweep)
  device_setup
  {
    date -u
    rebuild_models
    for m in "$MODELS"/*.gguf; do
      case "$m" in *MiniLM*) continue ;; esac
      for p in "$prompt" "${DEVICE_BENCH_LONG_PROMPT:-1024}"; do
        for c in default ${DEVICE_BENCH_CHUNKS:-16 32 64 128}; do
          chunk=()
          [ "$c" = default ] || chunk=(--attention-chunk "$c")
          step --backend "$backend" "${chunk[@]}" bench "$m" --prompt-tokens "$p" \
            --gen-tokens "$gen" --quick
        done
      done
    done
  } 2>&1 | tee "$OUT/device-sweep.txt"
  ;;
llama)
  mkdir -p "$OUT"
  llama_bench 2>&1 | tee "$OUT/llama-bench.txt"
  ;;
*)
  echo "usage: scripts/device-bench.sh prepare|run|sweep|compare|llama" >&2
  exit 2
  ;;
esac
