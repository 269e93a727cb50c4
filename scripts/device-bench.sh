#!/usr/bin/env bash
# Real-GPU numbers from one short run on a machine that has a GPU but nothing else this project
# needs: no Rust toolchain, no network, no model files, a few minutes. Two steps:
#
#   scripts/device-bench.sh prepare    here: builds the release CLI into target/device/ with the
#                                      headers of the GGUF models under models/ (a few MiB each,
#                                      `pocketlm random-weights --header-only`) and the Vulkan
#                                      loader's .deb (the GPU's driver brings its own ICD)
#   scripts/device-bench.sh run        there, in this tree with target/device/ copied along:
#                                      the device report, `kernel-bench` (matvec of every format,
#                                      then the prefill kernels) and `bench` of each model rebuilt
#                                      from its header with random weights of the same formats
#                                      (same shapes, same kernels, same speed), on both profiles
#
# `run` writes everything it prints to $OUT/device-bench.txt (OUT defaults to target/device/out).
# Knobs: DEVICE_BENCH_SIZE (kernel-bench matrix, default 4096), DEVICE_BENCH_PROMPT and
# DEVICE_BENCH_GEN (bench's prompt and generated tokens, default 128 and 64),
# DEVICE_BENCH_BACKEND (default gpu: the WebGPU backend even on a CPU adapter, so that the script
# can be tried on lavapipe first). `make bench-browser` needs Node and Chromium, which such a
# machine lacks; the native numbers are the GPU's own (the same WGSL through wgpu's Vulkan
# backend, as Chromium's Dawn runs it on Linux).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/device"
BIN="$DIR/pocketlm"

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
  (cd "$DIR/debs" && apt-get download libvulkan1 2>/dev/null)
  echo "target/device: $(du -sh "$DIR" | cut -f1); copy it along (the device tool: carry" \
    "target/device) and run scripts/device-bench.sh run"
  ;;
run)
  [ -x "$BIN" ] || { echo "no $BIN: run scripts/device-bench.sh prepare first" >&2; exit 1; }
  OUT="${OUT:-$DIR/out}"
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
  size="${DEVICE_BENCH_SIZE:-4096}"
  prompt="${DEVICE_BENCH_PROMPT:-128}"
  gen="${DEVICE_BENCH_GEN:-64}"
  backend="${DEVICE_BENCH_BACKEND:-gpu}"
  step() {
    echo
    echo "== pocketlm $*"
    timeout 300 "$BIN" "$@"
    echo "(exit $?)"
  }
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
      --format=csv 2>/dev/null || true
    step device
    step kernel-bench --size "$size"
    # Prefill's linear kernels: the small-m path (8 rows) and the tiled GEMM (128 rows).
    for rows in 8 128; do
      step kernel-bench --size "$size" --rows "$rows" --formats f32,f16,q8_0,q4_0,q4_1,q4_k,q6_k
    done
    for h in "$DIR"/*.header.gguf; do
      m="${TMPDIR:-/tmp}/$(basename "$h" .header.gguf).gguf"
      "$BIN" random-weights "$h" "$m"
      step --backend "$backend" bench "$m" --prompt-tokens "$prompt" --gen-tokens "$gen" \
        --per-kernel
      step --backend "$backend" --profile baseline bench "$m" --prompt-tokens "$prompt" \
        --gen-tokens "$gen"
      rm -f "$m"
    done
  } 2>&1 | tee "$OUT/device-bench.txt"
  ;;
*)
  echo "usage: scripts/device-bench.sh prepare|run" >&2
  exit 2
  ;;
esac
