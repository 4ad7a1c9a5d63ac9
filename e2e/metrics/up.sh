#!/usr/bin/env bash
# Start (or reuse) the custom-metrics pipeline of the local cluster, for autoscaling.mode hpa:
#   pods (prometheus.io/* annotations) --scrape--> Prometheus (Debian's, host process, 127.0.0.1; its
#     targets from pod_discovery.py, HTTP service discovery, as Debian builds it without Kubernetes's)
#     --PromQL--> Prometheus Adapter (built from its Go module, host process on the real node's bridge,
#                 with the rules the chart renders) --aggregation--> custom.metrics.k8s.io --> HPA controller
# Idempotent: running processes whose inputs did not change are kept; changed inputs restart them.
# Needs the local cluster with its real node (e2e/cluster/up.sh). Undo with e2e/metrics/down.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

SCRAPE_INTERVAL="${GPTOSS_SCRAPE_INTERVAL:-5s}"
READY_TIMEOUT_S="${GPTOSS_METRICS_TIMEOUT:-120}"
RUN_DIR="$METRICS_STATE/run"
LOG_DIR="$METRICS_STATE/logs"
CONF_DIR="$METRICS_STATE/config"
PKI_DIR="$METRICS_STATE/pki"

log() { printf '[metrics %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[metrics] ERROR: %s\n' "$*" >&2; exit 1; }
kctl() { "$GPTOSS_KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=20s "$@"; }

# shellcheck source=process.sh
source "$HERE/process.sh"

check_prerequisites() {
  "$HERE/build.sh"
  if [[ ! -x "$PROMETHEUS_BINARY" ]]; then
    "$GPTOSS_REPO_ROOT/hack/install-prometheus.sh"
    PROMETHEUS_BINARY="$(command -v prometheus)"
  fi
  [[ -x "$HELM_BIN/helm" ]] || die "helm is not built at $HELM_BIN/helm; run e2e/cluster/build.sh helm"
  [[ -x "$METRICS_PYTHON" ]] || die "no Python at $METRICS_PYTHON; run 'make venv' or set GPTOSS_PYTHON"
  kctl get --raw=/readyz >/dev/null 2>&1 || die "the cluster's API server does not answer; run e2e/cluster/up.sh"
  ip -4 -o addr show | grep -qw "inet $GPTOSS_NODE_IP" ||
    die "no host address $GPTOSS_NODE_IP (the real node's bridge): start the real node (e2e/cluster/up.sh with GPTOSS_REAL_NODE=1)"
}

# ensure_pki: a CA of the adapter's own and its serving certificate for the Service name the API server
# dials (<service>.<namespace>.svc) and for the bridge address (health checks from the host).
ensure_pki() {
  local dns="$ADAPTER_SERVICE.$METRICS_NAMESPACE.svc"
  mkdir -p "$PKI_DIR"
  if [[ -s "$PKI_DIR/adapter.crt" ]] && openssl x509 -in "$PKI_DIR/adapter.crt" -noout -checkend 86400 >/dev/null &&
    openssl x509 -in "$PKI_DIR/adapter.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$GPTOSS_NODE_IP"; then
    return
  fi
  log "making the adapter's CA and serving certificate ($dns, $GPTOSS_NODE_IP)"
  (
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=gptoss-metrics-adapter-ca" \
      -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$dns" \
      -keyout "$PKI_DIR/adapter.key" -out "$PKI_DIR/adapter.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s,DNS:%s.%s,IP:%s\nextendedKeyUsage=serverAuth\n' \
      "$dns" "$dns" "$GPTOSS_CLUSTER_DOMAIN" "$GPTOSS_NODE_IP" >"$PKI_DIR/adapter.ext"
    openssl x509 -req -in "$PKI_DIR/adapter.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
      -CAcreateserial -days 365 -extfile "$PKI_DIR/adapter.ext" -out "$PKI_DIR/adapter.crt" 2>/dev/null
  )
}

apply_cluster_objects() {
  # Right after down.sh the namespace may still be terminating; nothing can be created in it until it is gone.
  if [[ "$(kctl get namespace "$METRICS_NAMESPACE" -o jsonpath='{.status.phase}' 2>/dev/null)" == Terminating ]]; then
    log "waiting for the terminating namespace $METRICS_NAMESPACE to go"
    kctl wait --for=delete "namespace/$METRICS_NAMESPACE" --timeout="${READY_TIMEOUT_S}s" >/dev/null ||
      die "namespace $METRICS_NAMESPACE is still terminating after ${READY_TIMEOUT_S}s"
  fi
  # A namespace made anew means new ServiceAccounts: tokens of the old ones may still pass `auth whoami` for a
  # few seconds (the API server caches token reviews), then fail the adapter's start. Issue fresh ones.
  if ! kctl get namespace "$METRICS_NAMESPACE" >/dev/null 2>&1; then
    rm -f "$CONF_DIR"/*.kubeconfig
  fi
  # shellcheck disable=SC2016  # envsubst's list of the variables it may replace, literally
  local variables='${METRICS_NAMESPACE} ${ADAPTER_SERVICE} ${ADAPTER_PORT} ${GPTOSS_NODE_IP} ${ADAPTER_CA_BUNDLE}'
  (
    ADAPTER_CA_BUNDLE=$(base64 -w0 <"$PKI_DIR/ca.crt")
    export METRICS_NAMESPACE ADAPTER_SERVICE ADAPTER_PORT GPTOSS_NODE_IP ADAPTER_CA_BUNDLE
    envsubst "$variables" <"$HERE/cluster-objects.yaml"
  ) | kctl apply --server-side --force-conflicts --field-manager=gptoss-metrics -f - >/dev/null
}

# ensure_kubeconfig SERVICEACCOUNT: a kubeconfig with a bound token of that ServiceAccount, renewed when
# older than half its lifetime (the processes using it restart then: it is one of their inputs).
ensure_kubeconfig() {
  local account="$1" file="$CONF_DIR/$1.kubeconfig"
  # Reused while young and still accepted: a recreated cluster has a new CA and token signing key.
  if [[ -s "$file" ]] && [[ -z $(find "$file" -mmin +$((TOKEN_DURATION_HOURS * 30)) 2>/dev/null) ]] &&
    "$GPTOSS_KUBECTL" --kubeconfig "$file" --request-timeout=10s auth whoami >/dev/null 2>&1; then
    return
  fi
  log "issuing a ${TOKEN_DURATION_HOURS}h token for ServiceAccount $METRICS_NAMESPACE/$account"
  local server ca token
  server=$(kctl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kctl config view --minify --raw --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kctl create token "$account" -n "$METRICS_NAMESPACE" --duration="${TOKEN_DURATION_HOURS}h")
  (
    umask 077
    local k=("$GPTOSS_KUBECTL" config --kubeconfig "$file.new")
    rm -f "$file.new"
    "${k[@]}" set-cluster local --server="$server" >/dev/null
    "${k[@]}" set clusters.local.certificate-authority-data "$ca" >/dev/null
    "${k[@]}" set-credentials "$account" --token="$token" >/dev/null
    "${k[@]}" set-context default --cluster=local --user="$account" >/dev/null
    "${k[@]}" use-context default >/dev/null
    mv "$file.new" "$file"
  )
}

render_configs() {
  "$METRICS_PYTHON" "$HERE/render_config.py" prometheus "$CONF_DIR/prometheus.yml" \
    "http://$DISCOVERY_ADDRESS/targets" "$SCRAPE_INTERVAL"
  "$HELM_BIN/helm" template gpt-oss-operator "$GPTOSS_REPO_ROOT/charts/gpt-oss-operator" \
    --namespace "$METRICS_NAMESPACE" --set prometheusAdapter.rules.enabled=true \
    --show-only templates/prometheus-adapter-rules.yaml |
    "$METRICS_PYTHON" "$HERE/render_config.py" adapter "$CONF_DIR/adapter-config.yaml"
}

ensure_discovery() {
  local kubeconfig="$CONF_DIR/prometheus.kubeconfig"
  ensure_process pod-discovery "$METRICS_PYTHON" "$HERE/pod_discovery.py" "$kubeconfig" -- \
    "$HERE/pod_discovery.py" --kubeconfig "$kubeconfig" --listen "$DISCOVERY_ADDRESS"
  wait_for "pod discovery at http://$DISCOVERY_ADDRESS/targets" pod-discovery \
    curl -fsS -o /dev/null "http://$DISCOVERY_ADDRESS/targets"
}

ensure_prometheus() {
  mkdir -p "$METRICS_STATE/prometheus-data"
  ensure_process prometheus "$PROMETHEUS_BINARY" "$CONF_DIR/prometheus.yml" -- \
    --config.file="$CONF_DIR/prometheus.yml" \
    --storage.tsdb.path="$METRICS_STATE/prometheus-data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="$PROMETHEUS_ADDRESS"
  wait_for "Prometheus ready at http://$PROMETHEUS_ADDRESS" prometheus \
    curl -fsS -o /dev/null "http://$PROMETHEUS_ADDRESS/-/ready"
}

# caller_authentication_flags: how the adapter authenticates the aggregator. With front-proxy settings
# in kube-system/extension-apiserver-authentication (--requestheader-* on the API server) it looks them up
# itself and sees the original caller. kwokctl sets none; then the adapter would retry that lookup and log
# an error forever, so it gets the cluster's client CA as a file instead and authenticates the
# aggregator's client certificate (see README: the API server authorizes the caller before it proxies).
caller_authentication_flags() {
  local jsonpath='{.data.requestheader-client-ca-file}'
  if [[ -n "$(kctl get configmap -n kube-system extension-apiserver-authentication -o jsonpath="$jsonpath")" ]]; then
    rm -f "$PKI_DIR/cluster-client-ca.crt"
    return
  fi
  kctl get configmap -n kube-system extension-apiserver-authentication \
    -o jsonpath='{.data.client-ca-file}' >"$PKI_DIR/cluster-client-ca.crt"
  [[ -s "$PKI_DIR/cluster-client-ca.crt" ]] || die "kube-system/extension-apiserver-authentication has no client-ca-file"
  echo "--authentication-skip-lookup=true"
  echo "--client-ca-file=$PKI_DIR/cluster-client-ca.crt"
}

ensure_adapter() {
  local kubeconfig="$CONF_DIR/prometheus-adapter.kubeconfig" authentication inputs
  mapfile -t authentication < <(caller_authentication_flags)
  inputs=("$CONF_DIR/adapter-config.yaml" "$kubeconfig" "$PKI_DIR/adapter.crt")
  if [[ -f "$PKI_DIR/cluster-client-ca.crt" ]]; then inputs+=("$PKI_DIR/cluster-client-ca.crt"); fi
  ensure_process prometheus-adapter "$ADAPTER_BIN" "${inputs[@]}" -- \
    "${authentication[@]}" \
    --secure-port="$ADAPTER_PORT" \
    --bind-address="$GPTOSS_NODE_IP" \
    --tls-cert-file="$PKI_DIR/adapter.crt" \
    --tls-private-key-file="$PKI_DIR/adapter.key" \
    --lister-kubeconfig="$kubeconfig" \
    --authentication-kubeconfig="$kubeconfig" \
    --authorization-kubeconfig="$kubeconfig" \
    --prometheus-url="http://$PROMETHEUS_ADDRESS/" \
    --config="$CONF_DIR/adapter-config.yaml" \
    --metrics-relist-interval=10s \
    --v=2
  wait_for "adapter ready at https://$ADAPTER_ADDRESS" prometheus-adapter \
    curl -fsS -o /dev/null --cacert "$PKI_DIR/ca.crt" "https://$ADAPTER_ADDRESS/readyz"
}

wait_for_api() {
  local api
  for api in v1beta1.custom.metrics.k8s.io v1beta2.custom.metrics.k8s.io; do
    kctl wait --for=condition=Available "apiservice/$api" --timeout="${READY_TIMEOUT_S}s" >/dev/null ||
      die "APIService $api is not Available: $(kctl get apiservice "$api" -o jsonpath='{.status.conditions[0].message}')"
  done
  log "custom.metrics.k8s.io is served (APIServices Available)"
}

main() {
  local start=$SECONDS
  check_prerequisites
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$CONF_DIR"
  exec 9>"$METRICS_STATE/.lock"
  flock 9
  ensure_pki
  apply_cluster_objects
  ensure_kubeconfig prometheus
  ensure_kubeconfig prometheus-adapter
  render_configs
  ensure_discovery
  ensure_prometheus
  ensure_adapter
  wait_for_api
  log "pipeline up in $((SECONDS - start))s: Prometheus http://$PROMETHEUS_ADDRESS, discovery http://$DISCOVERY_ADDRESS/targets, adapter https://$ADAPTER_ADDRESS (logs: $LOG_DIR)"
}

main "$@"
