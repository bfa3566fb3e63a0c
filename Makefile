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

.PHONY: test demo bench bench-llama bench-caption fuzz deps build clippy

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
# The ERNIE 5.0 half: with no DEMO_ERNIE5_MODEL, `ernie generate --output x.png|x.wav` and
# `ernie caption --audio` use the built-in ERNIE 5.0 demo (an ernie5 model with an image decoder and
# a Mimi codec, seeded random weights, created once in ~/.cache/ernie): the image and the speech are
# noise, the audio caption gibberish. DEMO_ERNIE5_MODEL names a real ernie5 checkpoint; DEMO_VAE /
# DEMO_MIMI a real image decoder (diffusers AutoencoderKL) / Mimi codec folder to use instead of
# the checkpoint's own.
DEMO_ERNIE5_MODEL ?=
DEMO_VAE ?=
DEMO_MIMI ?=
ERNIE5 := $(if $(DEMO_ERNIE5_MODEL),--model $(DEMO_ERNIE5_MODEL))
WITH_MIMI := $(if $(DEMO_MIMI),--audio-codec $(DEMO_MIMI))
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
	@echo "== ERNIE 5.0: caption an audio clip (CC0 chirp) =="
	$(ERNIE) caption $(ERNIE5) $(WITH_MIMI) --audio assets/media/chirp_8k_f32_mono.wav --max-tokens 32
	@echo "== ERNIE 5.0: generate an image =="
	$(ERNIE) generate $(ERNIE5) $(if $(DEMO_VAE),--vision-decoder $(DEMO_VAE)) --prompt "A red fox in the snow." --seed 1 --output $(DEMO_OUT)/fox.png
	@echo "== ERNIE 5.0: generate speech =="
	$(ERNIE) generate $(ERNIE5) $(WITH_MIMI) --prompt "Say hello." --temperature 1 --seed 1 --max-seconds 3 --output $(DEMO_OUT)/hello.wav

BENCH_MODEL ?= $(HOME)/.cache/ernie-bench-21b-a3b-4layer
# A venv outside the clone with numpy, for the benchmark checkpoint writer.
BENCH_VENV ?= $(HOME)/.cache/ernie-bench-venv
# Generation benchmarks (scripts/bench-generation.sh): the ernie5 checkpoint with image and audio
# parts on BENCH_MODEL's decoder (hard-linked), the published-size Mimi, and the small model
# (`tiny` = the test fixtures; or the ernie5 demo checkpoint's directory).
GEN_BENCH_MODEL ?= $(HOME)/.cache/ernie-bench-ernie5-21b-a3b-4layer
BENCH_MIMI ?= $(HOME)/.cache/ernie-bench-mimi
GEN_BENCH_SMALL ?= $(HOME)/.cache/ernie/ernie5-demo-v1
bench: build
	$(CARGO) bench --bench moe
	@test -x $(BENCH_VENV)/bin/python || (python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q numpy==2.4.6)
	@test -f $(BENCH_MODEL)/model.safetensors || $(BENCH_VENV)/bin/python tests/reference/make_bench_checkpoint.py $(BENCH_MODEL)
	scripts/bench-elastic.sh $(CARGO_TARGET_DIR)/release/ernie $(BENCH_MODEL) 3
	@test -f $(GEN_BENCH_MODEL)/generation_config.json || $(BENCH_VENV)/bin/python \
		tests/reference/make_generation_bench_checkpoint.py $(GEN_BENCH_MODEL) $(BENCH_MODEL) $(BENCH_MIMI)
	ERNIE_BENCH_VAE=$(GEN_BENCH_MODEL)/vision_decoder $(CARGO) bench --bench codec
	@test -d $(GEN_BENCH_SMALL) || [ "$(GEN_BENCH_SMALL)" = tiny ] || $(ERNIE) generate --prompt "a fox" --output $$(mktemp -d)/fox.png
	scripts/bench-generation.sh $(CARGO_TARGET_DIR)/release/ernie 3 $(GEN_BENCH_SMALL) $(GEN_BENCH_MODEL)
	$(MAKE) bench-llama
	$(MAKE) bench-caption

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

# ernie caption vs transformers, same run (issue #13): time to the first caption token of a 512×512
# image on the 4-layer ERNIE-4.5-VL-28B-A3B-shaped checkpoint (≈ 8.6 GB, written to VL_BENCH_MODEL
# when missing); REF_PYTHON needs torch + transformers (tests/reference/requirements.txt). Each
# engine loads the whole checkpoint, so they run one after the other.
VL_BENCH_MODEL ?= $(HOME)/.cache/ernie-bench-vl-28b-a3b-4layer
REF_PYTHON ?= /work/refenv/bin/python
bench-caption: build
	@if ! $(REF_PYTHON) -c "import torch, transformers" 2>/dev/null; then echo "bench-caption: $(REF_PYTHON) has no torch + transformers (set REF_PYTHON): skipped"; exit 0; fi; \
	VL_BENCH_MODEL=$(VL_BENCH_MODEL) BENCH_PYTHON=$(REF_PYTHON) scripts/bench-caption.sh $(CARGO_TARGET_DIR)/release/ernie $(BENCH_ROUNDS)

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
