#!/usr/bin/env bash
# `make test`: everything CI runs, in the order that keeps a cold run short.
#
# On a fresh machine the local control plane (and the real node's kubelet, kube-proxy, CoreDNS and volume
# provisioner) is built from Go modules, and the images from the project's Dockerfiles. Those builds start
# first, in the background at low priority, while lint, types and the tests that need no cluster run; then
# the cluster comes up with its real node and the end-to-end tests run on it: the kwok scenarios, then the
# real-pod suite (marker `realnode`). Built binaries and images are cached under ~/.cache/gpt-oss-operator/
# (bin/<component>-<version>/, images/<name>-<content hash>), so later runs skip the builds.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
CACHE_DIR="${HOME}/.cache/gpt-oss-operator"
mkdir -p "$CACHE_DIR"
BUILD_LOG="$CACHE_DIR/build.log"
export PATH="$PWD/$BIN:$PATH"

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
started=$(date +%s)

step "Debian packages: the real node's runtime, image tools, Redis, Prometheus (when missing)"
hack/install-debian-packages.sh

step "building the local cluster's binaries and the images in the background (log: $BUILD_LOG)"
(nice -n 10 e2e/cluster/build.sh && nice -n 10 e2e/metrics/build.sh && nice -n 10 e2e/images/build.sh all) \
  >>"$BUILD_LOG" 2>&1 &
build_pid=$!

step "lint: ruff, ruff format, mypy --strict"
$BIN/ruff check .
$BIN/ruff format --check .
$BIN/mypy

step "tests without a cluster: unit, runtime (real tritonserver on CPU), monitoring (real Prometheus)"
$BIN/pytest -q -m "not cluster" tests

step "waiting for the builds (binaries, images)"
if ! wait "$build_pid"; then
  echo "a build failed; its log ends with:" >&2
  tail -n 40 "$BUILD_LOG" >&2
  exit 1
fi

if [[ "${CI:-}" == "true" ]]; then
  # CI leaves nothing running behind it: no node, no mounts, no bridge, no iptables rules.
  trap 'make cluster-down >/dev/null 2>&1 || true' EXIT
fi

step "local cluster up (control plane, kwok's simulated GPU nodes, the real node)"
e2e/cluster/up.sh
e2e/cluster/upstream-crds.sh >/dev/null

step "end-to-end tests on the local control plane (kwok scenarios)"
$BIN/pytest -q e2e tests -m "cluster and not realnode"

step "end-to-end tests on real pods (the real node)"
$BIN/pytest -q e2e -m realnode

step "make test: all checks passed in $(( ($(date +%s) - started) / 60 )) min"
