# gpt-oss-operator: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE_DIR ?= $(HOME)/.cache/gpt-oss-operator
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv lint typecheck unit runtime-tests e2e test demo cluster-up cluster-down crds tools bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the project and its test tools

lint: venv ## ruff and mypy (strict)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv ## fast tests, no cluster
	$(BIN)/pytest -q tests

test: venv lint unit ## everything CI runs
	@echo "make test: all checks passed"

clean: ## remove build outputs (not the binary cache)
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
