# SCS Edge — the commands a newcomer and CI run. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# A clean CI checkout builds once: incremental caches would only cost disk (gigabytes of it).
ifeq ($(CI),true)
export CARGO_INCREMENTAL ?= 0
endif

# One compile serves the lints, the tests, the lab and the image (decision 0012). Clippy is the
# compiler of our own crates (cargo's workspace wrapper; dependencies still go to rustc), so `make
# build` lints every target while it compiles it, as `cargo clippy --all-targets -- -D warnings` would,
# instead of a second, check-only compile. The image ships the agent from this same dev-profile build;
# a fleet's image is built with `make image IMAGE_PROFILE=release`, without the wrapper, and so are
# `make bench`'s binaries: clippy's driver turns MIR optimisations off, which must not colour a
# measurement.
IMAGE_PROFILE ?= dev
BUILD := $(CARGO) build --workspace --all-targets --locked
ifeq ($(IMAGE_PROFILE),dev)
export RUSTC_WORKSPACE_WRAPPER := $(shell rustc --print sysroot 2>/dev/null)/bin/clippy-driver
export CLIPPY_ARGS := -Dwarnings
AGENT_BUILD := $(BUILD)
AGENT := target/debug/scs-edge-agent
else
AGENT_BUILD := $(CARGO) build --profile $(IMAGE_PROFILE) --locked -p scs-edge-agent -p scs-edge-release --bins
AGENT := target/$(IMAGE_PROFILE)/scs-edge-agent
endif
IMAGE := env SCS_EDGE_AGENT=$(AGENT) scripts/build-image.sh
# Versions N+1 and N+2 of the same inputs, for the OS-update tests (tests/tests/update.rs).
UPDATE_TEST_IMAGES := env SCS_EDGE_AGENT=$(AGENT) scripts/build-update-test-images.sh
PHASE := scripts/phase.sh run
# `make lab SITES=N`: N ≥ 2 puts each site in its own network namespace behind a link that
# `scs-edge-lab wan <site> cut|restore|delay <n>ms|loss <p>%` impairs (decision 0016).
SITES ?= 1

.PHONY: help test deps lint lint-fast build deny-advisories unit integration dev bench image test-images lab clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

test: ## everything CI checks: lints, unit tests, real-daemon integration tests, the image booted in QEMU
	@scripts/phase.sh begin
	@$(PHASE) deps scripts/install-deps.sh
	@$(PHASE) lint $(MAKE) --no-print-directory lint-fast
	@$(PHASE) build $(BUILD)
	@$(PHASE) image $(IMAGE)
	@$(PHASE) test-images $(UPDATE_TEST_IMAGES)
	@$(PHASE) tests $(CARGO) nextest run --workspace --profile ci --locked
	@scripts/phase.sh report

deps: ## install what the tests, the lab and the benchmarks call, and check it is all there (needs root)
	scripts/install-deps.sh

lint: lint-fast build ## cargo fmt --check, cargo deny (licenses, bans, sources), clippy -D warnings on every target

lint-fast:
	$(CARGO) fmt --all -- --check
	$(CARGO) deny --log-level error check licenses bans sources

build: deps ## compile every target of the workspace once, clippy-linted (-D warnings)
	$(BUILD)

deny-advisories: ## RustSec advisories (needs network access to github.com)
	$(CARGO) deny check advisories

unit: ## the fast unit tests only (no root, no daemons)
	$(CARGO) nextest run --workspace --locked -E 'kind(lib) | kind(bin)'

integration: build image ## the integration tests only (libvirtd + QEMU, OVN, the image in QEMU)
	$(UPDATE_TEST_IMAGES)
	$(CARGO) nextest run --workspace --locked -E 'package(scs-edge-tests) & kind(test)'

dev: build ## run the agent in the foreground against local libvirt (state in target/dev)
	scripts/dev.sh

bench: deps ## benchmarks against a baseline in the same run → target/bench/results.jsonl, docs/benchmarks.md
	env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS $(CARGO) build --release --workspace --bins --locked
	env SCS_EDGE_AGENT=target/release/scs-edge-agent scripts/build-update-test-images.sh
	target/release/scs-edge-bench

image: deps ## build the node image (mkosi; only when an input changed; IMAGE_PROFILE=release for a fleet) → target/image/scs-edge_<version>.raw
	$(AGENT_BUILD)
	$(IMAGE)

test-images: image ## the next releases for the update test and the lab: N+1 and a broken N+2 → target/image-test/<version>/
	$(UPDATE_TEST_IMAGES)

lab: image ## start a local region and boot SITES sites (default 1) from the image in QEMU that join it; prints `ready: <clouds.yaml>`
	target/debug/scs-edge-lab up --sites $(SITES)

clean: ## remove build output
	$(CARGO) clean
