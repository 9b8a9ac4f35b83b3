# Two entry points: `make serve` and `make test`. Both create or refresh the
# virtualenv first, so they work on a fresh machine with Python 3.11 and gcc.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_ARGS ?=
RUST_CRATE := kernel_abi/rust/shmd-client
CARGO ?= $(shell command -v cargo || echo $(HOME)/.cargo/bin/cargo)

.PHONY: serve test venv lint header native rust clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,test,bench]"
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/shmd serve $(SERVE_ARGS)

native:
	$(MAKE) -C kernel_abi/c

# The Rust client: std only, so it builds offline. Format and lints where the
# toolchain has them; tests/test_rust.py runs `cargo test` against a daemon.
rust:
	@if [ ! -x "$(CARGO)" ]; then echo "cargo not installed: the Rust client is not built (tests/test_rust.py skips)"; exit 0; fi; \
	cd $(RUST_CRATE) && \
	if $(CARGO) fmt --version >/dev/null 2>&1; then $(CARGO) fmt --check; else echo "rustfmt not installed: format not checked"; fi && \
	if $(CARGO) clippy --version >/dev/null 2>&1; then $(CARGO) clippy --offline --quiet --all-targets -- -D warnings; \
	else echo "clippy not installed: lints not checked"; fi && \
	$(CARGO) build --offline --quiet --release --bins --examples

test: $(STAMP) native rust
	$(BIN)/ruff check .
	$(BIN)/python -m kernel_abi.gen --check
	$(BIN)/python -m pytest -q -ra

# Mutation testing (not part of `test`: about an hour). Report: docs/MUTATION.md.
mutate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[mutate]"
	$(BIN)/python tools/mutate.py --json bench/results/mutation.json

lint: $(STAMP)
	$(BIN)/ruff check .

header: $(STAMP)
	$(BIN)/python -m kernel_abi.gen

clean:
	rm -rf build *.egg-info .pytest_cache
