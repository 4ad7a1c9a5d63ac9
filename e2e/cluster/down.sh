#!/usr/bin/env bash
# Stop and delete the local kwok cluster and its kubeconfig. The built binaries stay cached.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

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
