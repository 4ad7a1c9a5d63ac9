# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Settings of the custom-metrics pipeline (sourced by up.sh and down.sh; e2e/metrics/pipeline.py reads the
# same defaults). Builds on the local cluster's settings (e2e/cluster/env.sh: KUBECONFIG, the real node's
# bridge address GPTOSS_NODE_IP, the binaries' cache).

GPTOSS_METRICS_DIR_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../cluster/env.sh
source "$GPTOSS_METRICS_DIR_HERE/../cluster/env.sh"
# shellcheck source=versions.env
source "$GPTOSS_METRICS_DIR_HERE/versions.env"

ADAPTER_BIN="$GPTOSS_BIN_CACHE/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION/adapter"
PROMETHEUS_BINARY="${GPTOSS_PROMETHEUS_BINARY:-$(command -v prometheus || echo /usr/bin/prometheus)}"
# Everything the pipeline writes: configs, tokens, certificates, the TSDB, logs and pid files.
METRICS_STATE="${GPTOSS_METRICS_STATE:-$GPTOSS_CACHE/metrics}"
# Kubernetes objects of the pipeline (ServiceAccounts, the adapter's Service) live here.
METRICS_NAMESPACE="gptoss-metrics"
ADAPTER_SERVICE="prometheus-adapter"
# Prometheus answers on loopback only: its clients (the adapter, tests, benchmarks) run on the host.
PROMETHEUS_ADDRESS="127.0.0.1:${GPTOSS_PROMETHEUS_PORT:-19090}"
# Pod discovery for Prometheus (pod_discovery.py: Debian's Prometheus has no Kubernetes discovery).
DISCOVERY_ADDRESS="127.0.0.1:${GPTOSS_POD_DISCOVERY_PORT:-19091}"
# The adapter listens on the real node's bridge address: the API server's aggregator reaches it through
# the selectorless Service (kube-proxy's DNAT of the ClusterIP), and an endpoint may not be a loopback
# address.
ADAPTER_PORT="${GPTOSS_ADAPTER_PORT:-19443}"
ADAPTER_ADDRESS="$GPTOSS_NODE_IP:$ADAPTER_PORT"
# ServiceAccount tokens the host processes use; refreshed (and the processes restarted) after half of it.
TOKEN_DURATION_HOURS=48
METRICS_KWOK_PKI="$KWOK_WORKDIR/clusters/$GPTOSS_CLUSTER_NAME/pki"
METRICS_PYTHON="${GPTOSS_PYTHON:-$GPTOSS_REPO_ROOT/.venv/bin/python}"
