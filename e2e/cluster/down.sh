#!/usr/bin/env bash
# Stop and delete the local cluster: first the real node (node.sh down: its processes, containers,
# mounts, network namespaces, bridge, iptables rules and volumes), then the kwok control plane and its
# kubeconfig. The built binaries and the node's imported images stay cached.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

if [[ $EUID -eq 0 ]]; then
  "$HERE/node.sh" down
elif [[ -d "$GPTOSS_RUN_DIR" ]]; then
  echo "[cluster] WARNING: the real node's state ($GPTOSS_RUN_DIR) is left: only root can tear it down" >&2
fi

if [[ ! -x "$KWOK_BIN/kwokctl" ]]; then
  echo "[cluster] kwokctl $KWOK_VERSION is not built; nothing to delete"
  exit 0
fi
if "$KWOK_BIN/kwokctl" get clusters 2>/dev/null | grep -qx "$GPTOSS_CLUSTER_NAME"; then
  "$KWOK_BIN/kwokctl" delete cluster --name "$GPTOSS_CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
  echo "[cluster] deleted cluster '$GPTOSS_CLUSTER_NAME'"
else
  echo "[cluster] no cluster named '$GPTOSS_CLUSTER_NAME'"
fi
rm -f "$KUBECONFIG"
