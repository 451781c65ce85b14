# The targets the README and CI call, unchanged. Each creates what it needs: the virtual environment,
# the Kafka jars (through Maven), the local broker and PostgreSQL.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint typecheck check services-up services-down bench clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11 (or newer).")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/tipline demo $(ARGS)

services-up: $(STAMP)
	@$(BIN)/tipline services up

services-down: $(STAMP)
	@$(BIN)/tipline services down

test: $(STAMP)
	@$(BIN)/tipline services up
	@$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	@$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	@$(BIN)/tipline services up
	@$(BIN)/pytest -m integration tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck: $(STAMP)
	@$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	@$(BIN)/tipline bench $(ARGS)

clean-venv:
	rm -rf $(VENV)
