# PocketLM. The two commands: `make demo` (the main job) and `make test` (everything).
# Both install what they need first (scripts/setup.sh, idempotent).

SHELL := /bin/bash
WASM_TARGET := wasm32-unknown-unknown
# The CLI's output name would collide with the library's .wasm, so wasm builds leave it out.
WASM_CARGO_FLAGS := --target $(WASM_TARGET) --no-default-features
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# A private runtime dir silences harmless Vulkan-loader warnings.
GPU_ENV := XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-$$(mktemp -d)}

.PHONY: all setup demo bench test test-model check fmt test-unit test-gpu-full test-gpu-baseline test-wasm test-browser wasm clean

all: demo

setup:
	@scripts/setup.sh

## make demo: the device report and a self-check of every kernel on this machine's GPU.
demo: setup
	cargo build --release --bin pocketlm
	$(GPU_ENV) $(TARGET_DIR)/release/pocketlm selfcheck

## make bench: kernel benchmarks on this machine's GPU: matvec of every weight format on a
## 4096×4096 matrix, as time per call and bandwidth relative to a plain copy on the same device.
bench: setup
	cargo build --release --bin pocketlm
	$(GPU_ENV) $(TARGET_DIR)/release/pocketlm kernel-bench

## make test: unit tests, GPU kernels on lavapipe (full profile) and SwiftShader (baseline
## profile), the wasm tests in headless Chromium, and the wasm package driven by Playwright.
test: setup
	$(MAKE) --no-print-directory test-unit test-gpu-full test-gpu-baseline test-wasm test-browser
	@echo "make test: all suites passed"

test-unit:
	cargo test --lib --test 'quant_*' --test formats --test cli --test sampling --test chat_template --test tokenizer --test model_config

test-gpu-full:
	@echo "== GPU kernels on lavapipe, full profile (f16 + subgroups) =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) \
	  POCKETLM_TEST_PROFILE=full POCKETLM_TEST_ADAPTER=llvmpipe \
	  cargo test --test 'gpu_*' -- --nocapture

test-gpu-baseline:
	@echo "== GPU kernels on SwiftShader, baseline profile (no f16, no subgroups, 256 invocations) =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh swiftshader) \
	  POCKETLM_TEST_PROFILE=baseline POCKETLM_TEST_ADAPTER=swiftshader \
	  cargo test --test 'gpu_*' -- --nocapture

## make test-model: the real default model generates exactly what transformers generates
## (greedy, 3 prompts × 40 tokens) on lavapipe. Slow on a CPU driver (about 4 minutes), so it is
## not part of make test yet.
test-model: setup
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) POCKETLM_TEST_ADAPTER=llvmpipe \
	  cargo test --test model_smollm2 -- --nocapture

test-wasm:
	@echo "== wasm tests in headless Chromium (WebGPU) =="
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  CHROMEDRIVER=$$(command -v chromedriver) WASM_BINDGEN_TEST_TIMEOUT=600 \
	  cargo test $(WASM_CARGO_FLAGS) --test 'web*' -- --nocapture

test-browser: wasm
	@echo "== the wasm package in headless Chromium (Playwright) =="
	cd www && npm test

## make wasm: the wasm-bindgen package in www/pkg (PROFILE=release for an optimised build).
PROFILE ?= dev
WASM_DIR := $(if $(filter release,$(PROFILE)),release,debug)
wasm:
	cargo build $(WASM_CARGO_FLAGS) --lib --profile $(PROFILE)
	wasm-bindgen --target web --out-dir www/pkg --out-name pocketlm \
	  $(TARGET_DIR)/$(WASM_TARGET)/$(WASM_DIR)/pocketlm.wasm

## make check: formatting and clippy (-D warnings) for the native and wasm32 targets.
check: setup
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy $(WASM_CARGO_FLAGS) --all-targets -- -D warnings

fmt:
	cargo fmt

clean:
	cargo clean
	rm -rf www/pkg www/test-results
