#!/usr/bin/env bash
# Stop the custom-metrics pipeline (e2e/metrics/up.sh): unregister the custom metrics API first (an
# APIService whose backend is gone breaks discovery, and with it namespace deletion and garbage
# collection), delete the pipeline's Kubernetes objects, then stop Prometheus, its pod discovery and the adapter. Leaves no
# process running. Keeps the TSDB, certificates and logs under the state folder; --purge removes them too.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

RUN_DIR="$METRICS_STATE/run"
LOG_DIR="$METRICS_STATE/logs"
log() { printf '[metrics %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[metrics] ERROR: %s\n' "$*" >&2; exit 1; }
kctl() { "$GPTOSS_KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=20s "$@"; }
# shellcheck source=process.sh
source "$HERE/process.sh"

delete_cluster_objects() {
  if ! kctl get --raw=/readyz >/dev/null 2>&1; then
    log "the cluster does not answer; no Kubernetes objects to delete"
    return
  fi
  kctl delete apiservice v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io --ignore-not-found >/dev/null
  kctl delete clusterrolebinding,clusterrole -l app.kubernetes.io/part-of=gptoss-metrics-pipeline --ignore-not-found >/dev/null
  kctl delete rolebinding -n kube-system gptoss-metrics:prometheus-adapter:auth-reader --ignore-not-found >/dev/null
  kctl delete namespace "$METRICS_NAMESPACE" --ignore-not-found --wait=false >/dev/null
  log "deleted the custom metrics APIServices and the pipeline's objects"
}

main() {
  mkdir -p "$RUN_DIR"
  exec 9>"$METRICS_STATE/.lock"
  flock 9
  delete_cluster_objects
  stop_process prometheus-adapter "$ADAPTER_BIN"
  stop_process prometheus "$PROMETHEUS_BINARY"
  stop_process pod-discovery "$METRICS_PYTHON"
  if [[ "${1:-}" == "--purge" ]]; then
    rm -rf "$METRICS_STATE/prometheus-data" "$METRICS_STATE/config" "$METRICS_STATE/pki" "$LOG_DIR"
    log "removed the pipeline's state under $METRICS_STATE"
  fi
  log "pipeline down"
}

main "$@"
