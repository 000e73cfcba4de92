# Everyday commands. `make run` and `make test` work on a fresh clone: they build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format typecheck openapi bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e clients/python
	touch $(STAMP)

run: $(STAMP)  ## Run the service locally on SQLite in development mode (no Fence/Arborist/cloud)
	$(BIN)/bucket-registry serve --dev --port 8000

test: $(STAMP)  ## Run the whole test suite (PostgreSQL on 127.0.0.1:5432, moto, stubs)
	$(BIN)/pytest

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: $(STAMP)  ## Regenerate openapi.yaml from the app
	$(BIN)/bucket-registry openapi --output openapi.yaml

bench: $(STAMP)  ## Throughput/latency of the presign warm path and the cold stampede
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bucket-registry.db*
