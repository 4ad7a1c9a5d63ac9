#!/usr/bin/env bash
# `make test`: everything CI runs, in the order that keeps a cold run short.
#
# On a fresh machine the local control plane (and the real node's kubelet, kube-proxy, CoreDNS and volume
# provisioner) is built from Go modules, and the images from the project's Dockerfiles. Those builds start
# first, in the background at low priority, while lint, types and the tests that need no cluster run; then
# the cluster comes up with its real node and the end-to-end tests run on it: the kwok scenarios, then the
# real-pod suite (marker `realnode`). Last, the kwok scenarios run again on a second control plane of the
# oldest Kubernetes the chart claims (KUBE_VERSION_OLDEST, cluster `gptoss-oldest`; docs/kubernetes-versions.md).
# Built binaries and images are cached under ~/.cache/gpt-oss-operator/
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
# The control plane first: the kwok scenarios run on it while the real node's binaries, the metrics
# adapter and the images are still building (a cold run's critical path). The oldest Kubernetes's control
# plane comes last: the real node joins as soon as its own inputs are built, and the real-pod suite runs
# while that one builds (one build at a time: two cores).
control_plane_built="$CACHE_DIR/.control-plane-built.$$"
node_inputs_built="$CACHE_DIR/.node-inputs-built.$$"
rm -f "$control_plane_built" "$node_inputs_built"
(
  nice -n 10 e2e/cluster/build.sh kwok kubernetes etcd helm && touch "$control_plane_built" &&
    nice -n 10 e2e/cluster/build.sh coredns local-path-provisioner &&
    nice -n 10 e2e/metrics/build.sh && nice -n 10 e2e/images/build.sh all && touch "$node_inputs_built" &&
    nice -n 10 e2e/cluster/build.sh kubernetes-oldest
) >>"$BUILD_LOG" 2>&1 &
build_pid=$!

build_failed() {
  echo "a build failed; its log ends with:" >&2
  tail -n 40 "$BUILD_LOG" >&2
  exit 1
}

# wait_for_build MARKER: until the background chain has built up to MARKER (it touches the file), or fails.
wait_for_build() {
  local marker="$1"
  while [[ ! -e "$marker" ]]; do
    kill -0 "$build_pid" 2>/dev/null || { wait "$build_pid" || build_failed; break; }
    sleep 2
  done
  rm -f "$marker"
}

step "lint: ruff, ruff format, mypy --strict"
$BIN/ruff check .
$BIN/ruff format --check .
$BIN/mypy

step "tests without a cluster: unit, runtime (real tritonserver on CPU), monitoring (real Prometheus)"
$BIN/pytest -q -m "not cluster" tests

step "waiting for the control plane's binaries"
wait_for_build "$control_plane_built"

if [[ "${CI:-}" == "true" ]]; then
  # CI leaves nothing running behind it: no node, no mounts, no bridge, no iptables rules, and neither
  # cluster (down.sh deletes `gptoss` and `gptoss-oldest`).
  trap 'make cluster-down >/dev/null 2>&1 || true' EXIT
fi

step "local control plane up (kwok's simulated GPU nodes; the real node joins later)"
export GPTOSS_NODE_LATER=1
e2e/cluster/up.sh
e2e/cluster/upstream-crds.sh >/dev/null

step "end-to-end tests on the local control plane (kwok scenarios)"
$BIN/pytest -q e2e tests -m "cluster and not realnode"

step "waiting for the builds the real node needs (its binaries, the metrics adapter, the images)"
wait_for_build "$node_inputs_built"

step "the real node joins the local cluster"
export GPTOSS_NODE_LATER=0
e2e/cluster/up.sh

step "end-to-end tests on real pods (the real node)"
$BIN/pytest -q e2e -m realnode

step "waiting for the control plane of the oldest Kubernetes the chart claims (KUBE_VERSION_OLDEST)"
wait "$build_pid" || build_failed

step "a second local control plane on the oldest Kubernetes the chart claims (kwok nodes only, beside the first)"
GPTOSS_KUBE_VERSION_SET=oldest e2e/cluster/up.sh

step "end-to-end tests on the oldest Kubernetes the chart claims (kwok scenarios)"
GPTOSS_KUBECONFIG="${GPTOSS_OLDEST_KUBECONFIG:-$CACHE_DIR/kubeconfig-oldest}" $BIN/pytest -q e2e -m "cluster and not realnode"

step "make test: all checks passed in $(( ($(date +%s) - started) / 60 )) min"
