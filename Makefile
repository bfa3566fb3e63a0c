# Two commands for a fresh Debian machine (see README.md):
#   make demo   run the main job on bundled input
#   make test   every test, with every cargo feature on (what CI runs)
# Both install what they need. Build output lives outside the clone so repeat runs stay warm.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ernie-target
CARGO ?= cargo
# Debian packages the optional features link against.
APT_PACKAGES ?= pkg-config
FEATURES ?= --all-features

.PHONY: test demo bench fuzz deps build clippy

## Install system packages that are missing (only calls apt when something is).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

test: deps
	$(CARGO) test --workspace $(FEATURES)

build: deps
	$(CARGO) build --release --bin ernie

DEMO_MODEL ?= tests/fixtures/moe-f32
demo: build
	@echo "== ernie generate on the bundled tiny MoE checkpoint (random weights: the text is gibberish by design) =="
	$(CARGO_TARGET_DIR)/release/ernie generate --model $(DEMO_MODEL) --prompt "Write a short poem about the sea." --max-tokens 24
	$(CARGO_TARGET_DIR)/release/ernie generate --model $(DEMO_MODEL) --prompt "Write a short poem about the sea." --max-tokens 24 --format json

BENCH_MODEL ?= $(HOME)/.cache/ernie-bench-21b-a3b-4layer
bench: build
	$(CARGO) bench --bench moe
	@test -f $(BENCH_MODEL)/model.safetensors || python3 tests/reference/make_bench_checkpoint.py $(BENCH_MODEL)
	$(CARGO_TARGET_DIR)/release/ernie generate --model $(BENCH_MODEL) --prompt "Tell me about the sea." --max-tokens 32 --format json > /dev/null

clippy:
	$(CARGO) clippy --workspace $(FEATURES) --all-targets
