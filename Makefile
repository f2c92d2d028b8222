# SCS Edge — the commands a newcomer and CI run. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# A clean CI checkout builds once: incremental caches would only cost disk (gigabytes of it).
ifeq ($(CI),true)
export CARGO_INCREMENTAL ?= 0
endif

.PHONY: help test deps lint deny-advisories unit integration dev bench image lab clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

test: deps lint ## everything CI checks: lints, unit tests, real-daemon integration tests, the image booted in QEMU
	$(CARGO) build --workspace --bins --locked
	scripts/build-image.sh
	$(CARGO) nextest run --workspace --profile ci --locked

deps: ## install Debian packages and cargo-nextest (idempotent; needs root)
	scripts/install-deps.sh

lint: ## cargo fmt --check, clippy -D warnings, cargo deny (licenses, bans, sources)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) deny --log-level error check licenses bans sources

deny-advisories: ## RustSec advisories (needs network access to github.com)
	$(CARGO) deny check advisories

unit: ## the fast unit tests only (no root, no daemons)
	$(CARGO) nextest run --workspace --locked -E 'kind(lib) | kind(bin)'

integration: deps ## the integration tests only (libvirtd + QEMU, OVN, the image in QEMU)
	$(CARGO) build --workspace --bins --locked
	scripts/build-image.sh
	$(CARGO) nextest run --workspace --locked -E 'package(scs-edge-tests) & kind(test)'

dev: deps ## run the agent in the foreground against local libvirt (state in target/dev)
	$(CARGO) build --workspace --bins --locked
	scripts/dev.sh

bench: deps ## benchmarks against a baseline in the same run → target/bench/results.jsonl, docs/benchmarks.md
	$(CARGO) build --release --workspace --bins --locked
	target/release/scs-edge-bench

image: deps ## build the node image (mkosi; only when an input changed) → target/image/scs-edge_<version>.raw
	scripts/build-image.sh

lab: image ## start a local region and boot one site from the image in QEMU that joins it; prints `ready: <clouds.yaml>`
	$(CARGO) build --locked -p scs-edge-lab -p scs-edge-region
	target/debug/scs-edge-lab

clean: ## remove build output
	$(CARGO) clean
