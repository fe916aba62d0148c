# tether: `make test` is everything CI checks; `make sim` is the device demo.
SHELL := /bin/bash
CARGO ?= cargo
THUMB := thumbv7em-none-eabihf

.PHONY: all build test lint fmt clippy unit thumb targets sim sim-shell bench fuzz size clean

all: build

build:
	$(CARGO) build --workspace --release

# Install the rustup pieces the checks need (no-op when present).
targets:
	@rustup target list --installed | grep -qx $(THUMB) || rustup target add $(THUMB)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

thumb: targets
	$(CARGO) build -p tether-proto --no-default-features --target $(THUMB)

lint: targets fmt clippy

test: targets fmt clippy thumb unit

# The simulated device on a TAP in a fresh network namespace, driven by the
# tether client (falls back to the virtual wire without root or /dev/net/tun).
sim:
	@bash scripts/sim.sh demo

sim-shell:
	@bash scripts/sim.sh shell

# Side-by-side benchmarks; tables go to bench/results/.
bench:
	python3 bench/transfer.py

# Each fuzz target for FUZZ_SECONDS (default 60) from its committed corpus.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(shell sed -n 's/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml | grep -v tether-fuzz)
fuzz:
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@set -eo pipefail; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  (cd fuzz && cargo +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E 'stat::number_of_executed_units|Done|panicked|ERROR|SUMMARY' ); \
	done

clean:
	$(CARGO) clean
