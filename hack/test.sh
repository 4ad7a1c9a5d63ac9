#!/usr/bin/env bash
# `make test`: everything CI runs, in the order that keeps a cold run short.
#
# On a fresh machine the local control plane is built from Go modules (25-45 minutes on 2 cores). That
# build starts first, in the background at low priority, while lint, types and the tests that need no
# cluster run; then the cluster comes up and the end-to-end tests run on it. Built binaries are cached
# under ~/.cache/gpt-oss-operator/bin/<component>-<version>/, so later runs skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
CACHE_DIR="${HOME}/.cache/gpt-oss-operator"
mkdir -p "$CACHE_DIR"
BUILD_LOG="$CACHE_DIR/build.log"
export PATH="$PWD/$BIN:$PATH"

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
started=$(date +%s)

step "building the local control plane in the background (log: $BUILD_LOG)"
nice -n 10 e2e/cluster/build.sh >>"$BUILD_LOG" 2>&1 &
build_pid=$!

step "Prometheus and promtool (Debian packages) for the monitoring tests"
hack/install-prometheus.sh

step "lint: ruff, ruff format, mypy --strict"
$BIN/ruff check .
$BIN/ruff format --check .
$BIN/mypy

step "tests without a cluster: unit, runtime (real tritonserver on CPU), monitoring (real Prometheus)"
$BIN/pytest -q -m "not cluster" tests

step "waiting for the control-plane build"
if ! wait "$build_pid"; then
  echo "the control-plane build failed; its log ends with:" >&2
  tail -n 40 "$BUILD_LOG" >&2
  exit 1
fi

step "local cluster up (kwok, simulated H100 nodes)"
e2e/cluster/up.sh
e2e/cluster/upstream-crds.sh >/dev/null

step "end-to-end tests on the local control plane"
$BIN/pytest -q e2e tests -m cluster

step "make test: all checks passed in $(( ($(date +%s) - started) / 60 )) min"
