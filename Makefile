# tether: `make test` is everything CI checks; `make sim` is the device demo.
SHELL := /bin/bash
CARGO ?= cargo
THUMB := thumbv7em-none-eabihf

.PHONY: all build test lint fmt clippy unit thumb targets sim sim-shell bench fuzz size soak clean

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
	$(CARGO) fmt --manifest-path firmware-example/Cargo.toml --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# The core as a library, and linked into a real Cortex-M4F firmware image.
thumb: targets
	$(CARGO) build -p tether-proto --no-default-features --target $(THUMB)
	cd firmware-example && $(CARGO) build --release

# Flash and RAM of the firmware image that links the device logic.
LLVM_BIN = $(shell rustc --print sysroot)/lib/rustlib/$(shell rustc -vV | sed -n 's/^host: //p')/bin
size: targets
	@rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
	cd firmware-example && $(CARGO) build --release
	@echo "== firmware-example ($(THUMB), opt-level s, LTO): sections"
	@$(LLVM_BIN)/llvm-size -A firmware-example/target/$(THUMB)/release/tether-firmware-example | grep -Ev '^(\.(debug|comment|ARM)|Total)'
	@$(LLVM_BIN)/llvm-size firmware-example/target/$(THUMB)/release/tether-firmware-example
	@echo "== largest functions"
	@$(LLVM_BIN)/llvm-nm --size-sort -S --demangle firmware-example/target/$(THUMB)/release/tether-firmware-example | tail -8
	@echo "== RAM: no .data/.bss; everything is on main's stack: 16 KiB store arena, 512+640+768 B session buffers, 256+256 B rx/tx, 1472 B datagram reply, plus the Session and Device structs (sizes: tether-sim --ram)"

lint: targets fmt clippy

test: targets fmt clippy thumb unit

# The simulated device on a TAP in a fresh network namespace, driven by the
# tether client (falls back to the virtual wire without root or /dev/net/tun).
sim:
	@bash scripts/sim.sh demo

sim-shell:
	@bash scripts/sim.sh shell

# The soak suite (tests/tests/soak.rs) against release builds of tether and
# tether-sim: kill -9 trials, files changing while sent, every name length,
# BUSY and reruns, messages, 200 clients, idle-connection waves. One line per
# check. Long form by default (6-8 minutes here); SOAK=short for the 2-minute
# form, SOAK_SEED=N repeats a run, SOAK_ONLY=prefix,prefix picks checks.
SOAK ?= long
soak:
	SOAK=$(SOAK) $(CARGO) test --release -p tether-tests --test soak

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
