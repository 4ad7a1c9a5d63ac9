#!/usr/bin/env bash
# Run the e2e suite against a kind cluster instead of the local kwok control plane (needs Docker or
# Podman, and `kind` on PATH: `go install sigs.k8s.io/kind@v0.32.0`). Not used in CI here, where no
# container runtime exists. Usage: e2e/kind/run.sh [pytest args...]   (env KEEP_CLUSTER=1 keeps it)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
CLUSTER_NAME="${KIND_CLUSTER_NAME:-gptoss}"
KUBECONFIG_PATH="${KIND_KUBECONFIG:-$HOME/.cache/gpt-oss-operator/kind-kubeconfig}"
KUBECTL="${GPTOSS_KUBECTL:-$REPO_ROOT/.venv/bin/kubectl}"
PROXY_PORT="${KIND_PROXY_PORT:-8011}"

log() { printf '[kind] %s\n' "$*"; }
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

command -v kind >/dev/null || { echo "kind not found: go install sigs.k8s.io/kind@v0.32.0" >&2; exit 1; }

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  log "creating kind cluster $CLUSTER_NAME"
  kind create cluster --name "$CLUSTER_NAME" --config "$HERE/kind-config.yaml" --kubeconfig "$KUBECONFIG_PATH" --wait 180s \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
else
  kind get kubeconfig --name "$CLUSTER_NAME" >"$KUBECONFIG_PATH"
fi

# Extended resources can only be advertised through the node status subresource; kubectl proxy lets us
# send the JSON patch the way the Kubernetes docs ("Advertise Extended Resources for a Node") describe.
k proxy --port "$PROXY_PORT" >/dev/null 2>&1 &
PROXY_PID=$!
trap 'kill "$PROXY_PID" 2>/dev/null || true; [[ "${KEEP_CLUSTER:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER_NAME"' EXIT
until curl -fsS "http://127.0.0.1:$PROXY_PORT/readyz" >/dev/null 2>&1; do sleep 0.2; done

fake_gpus() {  # NODE COUNT
  local node="$1" count="$2" field
  for field in capacity allocatable; do
    curl -fsS -X PATCH -H 'Content-Type: application/json-patch+json' \
      --data "[{\"op\":\"add\",\"path\":\"/status/$field/nvidia.com~1gpu\",\"value\":\"$count\"}]" \
      "http://127.0.0.1:$PROXY_PORT/api/v1/nodes/$node/status" >/dev/null
  done
}

mapfile -t workers < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o name | sed 's|node/||' | sort)
[[ ${#workers[@]} -ge 6 ]] || { echo "expected 6 workers, found ${#workers[@]}" >&2; exit 1; }
pools=(h100x8 h100x8 h100x1 h100x1 cpu cpu)
for i in "${!pools[@]}"; do
  node="${workers[$i]}" pool="${pools[$i]}"
  k label node "$node" --overwrite gptoss.dev/simulated=true "gptoss.dev/pool=$pool" >/dev/null
  case "$pool" in
    h100x8) gpus=8 ;;
    h100x1) gpus=1 ;;
    *) gpus=0 ;;
  esac
  if ((gpus > 0)); then
    k label node "$node" --overwrite nvidia.com/gpu.present=true nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 \
      nvidia.com/gpu.memory=81559 "nvidia.com/gpu.count=$gpus" >/dev/null
    k taint node "$node" --overwrite nvidia.com/gpu=present:NoSchedule >/dev/null
    fake_gpus "$node" "$gpus"
  fi
  log "$node -> $pool ($gpus GPUs)"
done

cd "$REPO_ROOT"
GPTOSS_KUBECONFIG="$KUBECONFIG_PATH" "$REPO_ROOT/.venv/bin/pytest" e2e "$@"
