# tether: `make test` is everything CI checks; `make sim` is the device demo.
SHELL := /bin/bash
CARGO ?= cargo
THUMB := thumbv7em-none-eabihf
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
WINDOWS := x86_64-pc-windows-gnu
MACOS := x86_64-apple-darwin

.PHONY: all build test lint fmt clippy clippy-other unit thumb targets qemu-deps wine-deps windows sim sim-shell qemu bench bench-quick bench-check fuzz size soak clean

all: build

build:
	$(CARGO) build --workspace --release

# Install the rustup pieces the checks need (no-op when present).
targets:
	@rustup target list --installed | grep -qx $(THUMB) || rustup target add $(THUMB)
	@rustup target list --installed | grep -qx $(WINDOWS) || rustup target add $(WINDOWS)
	@rustup target list --installed | grep -qx $(MACOS) || rustup target add $(MACOS)
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt

fmt:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path firmware-example/Cargo.toml --check
	$(CARGO) fmt --manifest-path firmware-qemu/Cargo.toml --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) fmt --manifest-path bench/load/Cargo.toml --check
	$(CARGO) fmt --manifest-path bench/codec/Cargo.toml --check

clippy: targets
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd firmware-qemu && $(CARGO) clippy --release -- -D warnings
	cd firmware-qemu && $(CARGO) clippy --lib --tests --target $(HOST) -- -D warnings

# The tether CLI for Windows and macOS: clippy only (no linking); the Windows
# build is also linked and run under Wine by tests/tests/host_wine.rs.
clippy-other: targets
	$(CARGO) clippy -p tether-host --all-targets --target $(WINDOWS) -- -D warnings
	$(CARGO) clippy -p tether-host --all-targets --target $(MACOS) -- -D warnings

# mingw (links tether.exe) and Wine (runs it) for tests/tests/host_wine.rs; as root only.
wine-deps:
	@{ command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 && [ -x /usr/lib/wine/wine64 ]; } || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "== installing gcc-mingw-w64-x86-64 and wine64 (apt-get)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 wine64 >/dev/null; \
	  else echo "== mingw or wine64 is missing and this is not root: the Wine test will be skipped"; fi; }

# tether.exe for Windows (x86_64-pc-windows-gnu, linked by mingw).
windows: targets wine-deps
	$(CARGO) build --release -p tether-host --bin tether --target $(WINDOWS)
	@echo "built target/$(WINDOWS)/release/tether.exe"

unit: qemu-deps wine-deps
	cd firmware-qemu && $(CARGO) test --lib --target $(HOST)
	$(CARGO) test --workspace

# The core as a library, and linked into a real Cortex-M4F firmware image.
thumb: targets
	$(CARGO) build -p tether-proto --no-default-features --target $(THUMB)
	cd firmware-example && $(CARGO) build --release
	cd firmware-qemu && $(CARGO) build --release

# Flash and RAM of the firmware images: firmware-qemu (the image that runs)
# and firmware-example (the minimal link-only image, for comparison).
LLVM_BIN = $(shell rustc --print sysroot)/lib/rustlib/$(HOST)/bin
QEMU_IMG = firmware-qemu/target/$(THUMB)/release/tether-firmware-qemu
EXAMPLE_IMG = firmware-example/target/$(THUMB)/release/tether-firmware-example
size: targets
	@rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools
	cd firmware-qemu && $(CARGO) build --release
	cd firmware-example && $(CARGO) build --release
	@echo "== firmware-qemu ($(THUMB), opt-level s, LTO): sections (.psram is the file store, not loaded)"
	@$(LLVM_BIN)/llvm-size -A $(QEMU_IMG) | grep -Ev '^(\.(debug|comment|ARM)|Total)'
	@$(LLVM_BIN)/llvm-size -A $(QEMU_IMG) | awk '$$1 ~ /^\.(vector_table|text|rodata|data)$$/ { f += $$2 } $$1 ~ /^\.(data|bss|uninit)$$/ { r += $$2 } END { printf "flash %d B; static RAM %d B plus the stack (the .psram store not counted)\n", f, r }'
	@echo "== largest functions"
	@$(LLVM_BIN)/llvm-nm --size-sort -S --demangle $(QEMU_IMG) | grep -v ' [bBdD] ' | tail -8
	@echo "== largest RAM objects"
	@$(LLVM_BIN)/llvm-nm --size-sort -S --demangle $(QEMU_IMG) | grep ' [bBdD] ' | tail -8
	@echo "== firmware-example (link-only, for comparison)"
	@$(LLVM_BIN)/llvm-size $(EXAMPLE_IMG)

# qemu-system-arm for the QEMU test (tests/tests/qemu.rs); as root only.
qemu-deps:
	@command -v qemu-system-arm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "== installing qemu-system-arm (apt-get)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null; \
	  else echo "== qemu-system-arm is missing and this is not root: the QEMU test will be skipped"; fi; }

lint: targets fmt clippy clippy-other

test: targets fmt clippy clippy-other thumb unit bench-check

# The simulated device on a TAP in a fresh network namespace, driven by the
# tether client (falls back to the virtual wire without root or /dev/net/tun).
sim:
	@bash scripts/sim.sh demo

sim-shell:
	@bash scripts/sim.sh shell

# The firmware image in QEMU (mps2-an386) on a TAP, driven by the tether client.
qemu:
	@bash scripts/qemu.sh

# The soak suite (tests/tests/soak.rs) against release builds of tether and
# tether-sim: kill -9 trials, files changing while sent, every name length,
# BUSY and reruns, messages, 200 clients, idle-connection waves. One line per
# check. Long form by default (6-8 minutes here); SOAK=short for the 2-minute
# form, SOAK_SEED=N repeats a run, SOAK_ONLY=prefix,prefix picks checks.
SOAK ?= long
soak:
	SOAK=$(SOAK) $(CARGO) test --release -p tether-tests --test soak

# Every benchmark row side by side, one Markdown file per run in bench/results/
# (bench/README.md). Never part of `make test`: CI times nothing.
bench:
	python3 bench/bench.py

# The same in under 3 minutes (smaller files, fewer rounds), for a developer.
bench-quick:
	BENCH_QUICK=1 python3 bench/bench.py

# Smoke check for `make test`: the bench scripts import (syntax, names), nothing runs.
bench-check:
	@if command -v python3 >/dev/null; then \
	  python3 -B -c 'import sys; sys.path.insert(0, "bench"); import bench' && echo "bench scripts: ok"; \
	else echo "bench scripts: not checked (python3 is not installed)"; fi

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
