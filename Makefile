# gpt-oss-operator: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE_DIR ?= $(HOME)/.cache/gpt-oss-operator
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv lint typecheck unit runtime-tests e2e test demo cluster-up cluster-down crds tools bench clean images

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
	$(BIN)/pytest -q -m "not cluster" tests

e2e: cluster-up ## end-to-end tests on the local control plane
	$(BIN)/pytest -q e2e tests -m cluster

test: venv ## everything CI runs: lint, types, unit/runtime/monitoring tests, then e2e on the local cluster
	hack/test.sh

crds: venv ## regenerate the CRD (crds/, the chart's files/crds/) from the models, and manifests/install.yaml
	$(BIN)/python hack/generate-crds.py --write
	$(BIN)/python hack/render-install.py

.PHONY: cluster-binaries e2e-tools
cluster-binaries: ## build the local control plane + helm from Go modules (cached per version; cold: 20-25 min on 2 cores)
	e2e/cluster/build.sh

cluster-up: venv ## start (or reuse) the local kwok cluster; kubeconfig: ~/.cache/gpt-oss-operator/kubeconfig
	e2e/cluster/up.sh

cluster-down: ## delete the local clusters (gptoss with its real node and metrics pipeline, gptoss-oldest); binaries and images stay cached
	if [[ -x $(BIN)/python ]]; then $(BIN)/python e2e/demo.py stop; fi
	if [[ -x e2e/metrics/down.sh ]]; then e2e/metrics/down.sh; fi
	e2e/cluster/down.sh

.PHONY: cluster-up-oldest cluster-down-oldest e2e-oldest
cluster-up-oldest: venv ## start (or reuse) a second kwok cluster on the oldest Kubernetes the chart claims; kubeconfig: ~/.cache/gpt-oss-operator/kubeconfig-oldest
	GPTOSS_KUBE_VERSION_SET=oldest e2e/cluster/up.sh

cluster-down-oldest: ## delete only the oldest-version cluster (cluster-down deletes both)
	GPTOSS_KUBE_VERSION_SET=oldest e2e/cluster/down.sh

e2e-oldest: cluster-up-oldest ## the kwok end-to-end tests on the oldest Kubernetes the chart claims
	GPTOSS_KUBECONFIG=$(CACHE_DIR)/kubeconfig-oldest $(BIN)/pytest -q e2e -m "cluster and not realnode"

images: ## build the operator, runtime (CPU variant) and pause images without Docker (cached by content)
	e2e/images/build.sh all

demo: cluster-up ## the samples served by real pods (GPUs simulated): images, chart, operator pod, a streamed answer
	$(BIN)/python e2e/demo.py up

e2e-tools: ## helm + upstream CRDs (KEDA, prometheus-operator) into ~/.cache/gpt-oss-operator
	e2e/cluster/build.sh helm
	e2e/cluster/upstream-crds.sh

runtime-tests: venv ## the runtime's tests with the real tritonserver on CPU
	$(BIN)/pytest -q tests/runtime

bench: venv ## benchmarks: render, gateway overhead, reference engine, autoscaling simulation
	$(BIN)/python bench/render.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/reference_engine.py
	$(BIN)/python bench/autoscale_sim.py

clean: ## remove build outputs (not the binary cache)
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
