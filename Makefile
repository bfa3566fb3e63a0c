# Two commands for a fresh Debian machine (see README.md):
#   make demo   run the main job on bundled input
#   make test   every test, with every cargo feature on (what CI runs)
# Both install what they need. Build output lives outside the clone so repeat runs stay warm.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ernie-target
CARGO ?= cargo
# Debian packages the optional features link against: libturbojpeg (feature turbojpeg: JPEG
# decoding bit-exact with Pillow), libav* + libclang for ffmpeg-next's bindgen (feature ffmpeg:
# video files), g++ for the host emulation of the CUDA kernels (feature host-emu).
APT_PACKAGES ?= pkg-config g++ libturbojpeg0-dev libavcodec-dev libavformat-dev libavutil-dev \
	libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev clang libclang-dev
FEATURES ?= --all-features

.PHONY: test demo bench bench-llama fuzz deps build clippy

## Install system packages that are missing (only calls apt when something is).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# scripts/cuda-toolchain.sh fetches the pinned CUDA 13.0 NVRTC/ptxas wheels from PyPI into
# ~/.cache and prints their environment; with it, the kernel compile check must run, not skip.
# The no-CUDA stubs need no build of their own: an all-features build compiles
# backend/cuda_stub.rs and model/cuda_stub.rs under cfg(test) and runs their tests, and
# tests/cli/device_cli.rs checks the CLI's one-line CUDA error on this driverless machine. The last
# line covers what --all-features cannot: the benches compile (cargo test skips them).
test: deps
	eval "$$(scripts/cuda-toolchain.sh)" && ERNIE_REQUIRE_CUDA_TOOLCHAIN=1 $(CARGO) test --workspace $(FEATURES)
	$(CARGO) test --workspace $(FEATURES) --benches --no-run

build: deps
	$(CARGO) build --release --bin ernie --features ffmpeg,turbojpeg

# The main job: captioning bundled public-domain / CC0 media (assets/media/ATTRIBUTION.md). With no
# DEMO_MODEL, `ernie caption` uses its built-in demo checkpoint (the ERNIE-4.5-VL layout with
# seeded random weights, created once in ~/.cache/ernie): the captions are gibberish by
# construction. Point DEMO_MODEL at a real ERNIE-4.5-VL checkpoint for real captions.
DEMO_MODEL ?=
DEMO_OUT ?= demo-output
ERNIE := $(CARGO_TARGET_DIR)/release/ernie
CAPTION := $(ERNIE) caption $(if $(DEMO_MODEL),--model $(DEMO_MODEL)) --max-tokens 32
demo: build
	@mkdir -p $(DEMO_OUT)
	@echo "== caption: astronaut (PD, NASA) =="
	$(CAPTION) --image assets/media/astronaut_rgb_512x512.png
	@echo "== caption: coffee (CC0) =="
	$(CAPTION) --image assets/media/coffee_progressive_600x400.jpg
	@echo "== caption: testsrc2 video (CC0), JSON output =="
	$(CAPTION) --video assets/media/testsrc2_256x144_vp9_opus_15frames.webm --format json
	@echo "== both images and the video in one prompt, with per-layer expert load by modality =="
	$(CAPTION) --image assets/media/astronaut_rgb_512x512.png --image assets/media/coffee_progressive_600x400.jpg \
		--video assets/media/testsrc2_256x144_vp9_opus_15frames.webm \
		--prompt "Compare the two pictures and the video." --routing-stats $(DEMO_OUT)/routing.json
	@echo "routing heatmap: $(DEMO_OUT)/routing.png (experts x layers, one panel per modality); load table: $(DEMO_OUT)/routing.json"

BENCH_MODEL ?= $(HOME)/.cache/ernie-bench-21b-a3b-4layer
# A venv outside the clone with numpy, for the benchmark checkpoint writer.
BENCH_VENV ?= $(HOME)/.cache/ernie-bench-venv
bench: build
	$(CARGO) bench --bench moe
	@test -x $(BENCH_VENV)/bin/python || (python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q numpy==2.4.6)
	@test -f $(BENCH_MODEL)/model.safetensors || $(BENCH_VENV)/bin/python tests/reference/make_bench_checkpoint.py $(BENCH_MODEL)
	scripts/bench-elastic.sh $(CARGO_TARGET_DIR)/release/ernie $(BENCH_MODEL) 3
	$(MAKE) bench-llama

# ernie vs llama.cpp, same run (issue #13): needs a llama.cpp build (llama-bench, llama-quantize)
# and its sources (convert_hf_to_gguf.py); skipped when LLAMA_BIN has no llama-bench. The GGUF
# files (≈ 16 GB) go to GGUF_DIR; the converter runs in its own venv with llama.cpp's pins.
LLAMA_BIN ?= /work/llama.cpp/build/bin
LLAMA_SRC ?= /work/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp
LLAMA_VENV ?= $(HOME)/.cache/ernie-llama-venv
BENCH_ROUNDS ?= 3
bench-llama:
	@if [ ! -x $(LLAMA_BIN)/llama-bench ]; then echo "bench-llama: no $(LLAMA_BIN)/llama-bench (set LLAMA_BIN, LLAMA_SRC): skipped"; exit 0; fi; \
	test -x $(LLAMA_VENV)/bin/python || (python3 -m venv $(LLAMA_VENV) && \
	  $(LLAMA_VENV)/bin/pip install -q -r $(LLAMA_SRC)/requirements/requirements-convert_hf_to_gguf.txt); \
	BENCH_MODEL=$(BENCH_MODEL) BENCH_PYTHON=$(LLAMA_VENV)/bin/python LLAMA_BIN=$(LLAMA_BIN) LLAMA_SRC=$(LLAMA_SRC) \
	  scripts/bench-llama.sh $(CARGO_TARGET_DIR)/release/ernie $(BENCH_ROUNDS)

clippy:
	$(CARGO) clippy --workspace $(FEATURES) --all-targets

# Bounded fuzzing of the media decoders (not in CI): needs `cargo install cargo-fuzz --locked` and a
# nightly toolchain. FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 60
fuzz: deps
	mkdir -p fuzz/corpus/image_decode fuzz/corpus/audio_decode fuzz/corpus/wav_decode
	cargo +nightly fuzz run --fuzz-dir fuzz --features turbojpeg image_decode fuzz/corpus/image_decode ../shared/media/images -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048
	cargo +nightly fuzz run --fuzz-dir fuzz audio_decode fuzz/corpus/audio_decode ../shared/media/audio ../shared/media/audio/edge_wav -- -max_total_time=$(FUZZ_SECONDS) -max_len=262144 -rss_limit_mb=2048
	cargo +nightly fuzz run --fuzz-dir fuzz wav_decode fuzz/corpus/wav_decode -- -max_total_time=$(FUZZ_SECONDS)
