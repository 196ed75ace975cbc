# embwarden: `make demo` and `make test` work on a fresh machine; each installs what it needs.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: install corpora demo ui test bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else "embwarden needs Python 3.11 or 3.12")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing embwarden and its dependencies into $(VENV) (a few minutes the first time)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 | { grep -v "is ignored: it is neither" || true; }
	@touch $(STAMP)

install: $(STAMP)

corpora:
	scripts/ensure-corpora.sh

demo: install
	$(PY) -m monitors.cli.demo

ui: install
	$(PY) -m monitors.cli.ui

test: install
	scripts/ensure-postgres.sh
	scripts/ensure-chromium.sh
	scripts/ensure-redis.sh
	scripts/ensure-corpora.sh
	$(PY) -m pytest

bench: install corpora
	$(PY) benchmarks/run.py $(SECTIONS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy audits monitors

clean:
	rm -rf .airflow .embwarden .bench .pytest_cache .mypy_cache
