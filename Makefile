# Two entry points: `make serve` and `make test`. Both create or refresh the
# virtualenv first, so they work on a fresh machine with Python 3.11 and gcc.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_ARGS ?=

.PHONY: serve test venv lint header native clean

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

test: $(STAMP) native
	$(BIN)/ruff check .
	$(BIN)/python -m kernel_abi.gen --check
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check .

header: $(STAMP)
	$(BIN)/python -m kernel_abi.gen

clean:
	rm -rf build *.egg-info .pytest_cache
