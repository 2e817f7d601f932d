# Set-up and entry points. Needs only Python 3.11 on the machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test quick lint format docs bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The docs extra (mkdocs, mkdocstrings) is installed only for make docs.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,docs]"
	touch $(DOCS_STAMP)

# The bench extra (the gymnax anchors) is installed only for make bench.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench]"
	touch $(BENCH_STAMP)

run: $(STAMP)
	$(BIN)/python -m experiments.vertical_landing

quick: $(STAMP)
	$(BIN)/python -m experiments.vertical_landing --quick

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Test processes; XLA compiles mostly on one thread, so two processes use both cores.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# Builds the API reference and guides into site/; warnings are errors.
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

# The throughput benchmark; pass options with BENCH_ARGS, for example BENCH_ARGS=--quick.
bench: $(BENCH_STAMP)
	$(BIN)/python -m experiments.throughput $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build site *.egg-info
