#!/usr/bin/env bash
# Stop and delete the local clusters: first the real node (node.sh down: its processes, containers,
# mounts, network namespaces, bridge, iptables rules and volumes), then the kwok control plane `gptoss` and
# its kubeconfig, then the oldest-version cluster `gptoss-oldest` (kwok nodes only) and its kubeconfig.
# The built binaries and the node's imported images stay cached.
# GPTOSS_KUBE_VERSION_SET=oldest deletes only `gptoss-oldest`; =newest only `gptoss` and its real node.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# delete_cluster SET: delete the kwok cluster of one version set (env.sh names it and its kubeconfig).
# A subshell: env.sh's variables of one set must not leak into the other's.
# shellcheck disable=SC2030,SC2031
delete_cluster() (
  GPTOSS_KUBE_VERSION_SET="$1"
  # shellcheck source=env.sh
  source "$HERE/env.sh"
  if [[ "$1" == newest ]]; then  # only `gptoss` may have the real node (whatever GPTOSS_REAL_NODE says now)
    if [[ $EUID -eq 0 ]]; then
      "$HERE/node.sh" down
    elif [[ -d "$GPTOSS_RUN_DIR" ]]; then
      echo "[cluster] WARNING: the real node's state ($GPTOSS_RUN_DIR) is left: only root can tear it down" >&2
    fi
  fi
  if [[ ! -x "$KWOK_BIN/kwokctl" ]]; then
    echo "[cluster] kwokctl $KWOK_VERSION is not built; nothing to delete"
    return 0
  fi
  if "$KWOK_BIN/kwokctl" get clusters 2>/dev/null | grep -qx "$GPTOSS_CLUSTER_NAME"; then
    "$KWOK_BIN/kwokctl" delete cluster --name "$GPTOSS_CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
    echo "[cluster] deleted cluster '$GPTOSS_CLUSTER_NAME'"
  else
    echo "[cluster] no cluster named '$GPTOSS_CLUSTER_NAME'"
  fi
  rm -f "$KUBECONFIG"
)

# shellcheck disable=SC2031
case "${GPTOSS_KUBE_VERSION_SET:-all}" in
  all) delete_cluster newest && delete_cluster oldest ;;
  newest | oldest) delete_cluster "$GPTOSS_KUBE_VERSION_SET" ;;
  *) echo "[cluster] ERROR: GPTOSS_KUBE_VERSION_SET=$GPTOSS_KUBE_VERSION_SET; expected newest or oldest" >&2; exit 1 ;;
esac
