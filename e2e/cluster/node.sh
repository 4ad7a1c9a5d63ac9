#!/usr/bin/env bash
# The real node of the local cluster: a kubelet that runs containers, beside the kwok nodes that pretend.
#
#   node.sh up       start (or reuse) containerd, kubelet, kube-proxy, CoreDNS, local-path-provisioner
#   node.sh down     stop them and remove everything they left: containers, mounts, netns, the bridge,
#                    iptables rules (kube-proxy's, CNI's, ours), cgroups, pod volumes
#   node.sh status   one line per component; exit 1 when something is not running
#
# Everything runs as host processes (root): containerd 1.6 and runc from Debian with its own socket
# ($GPTOSS_CONTAINERD_ADDRESS), the bridge/host-local/portmap/loopback CNI plugins from Debian's
# containernetworking-plugins, and the kubelet, kube-proxy, CoreDNS and local-path-provisioner built by
# build.sh. The node is $GPTOSS_NODE_NAME; it advertises simulated GPUs (nvidia.com/gpu capacity and
# GPU Feature Discovery labels). Configuration templates: node/; state, configuration and logs:
# $GPTOSS_NODE_DIR (logs in logs/). up.sh calls `node.sh up` after the control plane, down.sh
# `node.sh down` before deleting it. Pod traffic stays on this machine (see firewall_up).
#
# Environment: GPTOSS_NODE_GPUS (simulated GPUs, default 8); GPTOSS_PAUSE_IMAGE + GPTOSS_PAUSE_ARCHIVE
# (a sandbox image instead of `e2e/images/build.sh pause`); GPTOSS_HELPER_IMAGE (image of the volume
# provisioner's helper pods, needs /bin/sh; default: refs.env's BASE_IMAGE or RUNTIME_CPU_IMAGE);
# GPTOSS_NODE_IMAGE_ARCHIVES (extra docker/OCI archives to import, space-separated).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

TEMPLATES="$HERE/node"
CLUSTER_STATE="$KWOK_WORKDIR/clusters/$GPTOSS_CLUSTER_NAME"
KWOK_PKI="$CLUSTER_STATE/pki"
CONFIG_DIR="$GPTOSS_NODE_DIR/config"
PKI_DIR="$GPTOSS_NODE_DIR/pki"
LOG_DIR="$GPTOSS_NODE_DIR/logs"
KUBELET_DIR="$GPTOSS_NODE_DIR/kubelet"
VOLUMES_DIR="$GPTOSS_NODE_DIR/volumes"
CNI_DIR="$GPTOSS_NODE_DIR/cni"
PID_DIR="$GPTOSS_RUN_DIR/pids"
SYSCTL_SAVED="$GPTOSS_NODE_DIR/sysctl.saved"
IMAGES_SCRIPT="$GPTOSS_REPO_ROOT/e2e/images/build.sh"
REFS_FILE="$GPTOSS_CACHE/images/refs.env"
READY_TIMEOUT_S="${GPTOSS_NODE_TIMEOUT_S:-120}"

GPU_COUNT="${GPTOSS_NODE_GPUS:-8}"  # the demo's four samples take 6
GPU_PRODUCT="NVIDIA-H100-80GB-HBM3"
GPU_MEMORY_MIB="81559"  # what GPU Feature Discovery reports for an H100 80GB HBM3
NODE_LABELS="gptoss.dev/real-node=true,nvidia.com/gpu.present=true,nvidia.com/gpu.product=$GPU_PRODUCT"
NODE_LABELS+=",nvidia.com/gpu.memory=$GPU_MEMORY_MIB,nvidia.com/gpu.count=$GPU_COUNT"
NODE_LABELS+=",nvidia.com/gpu.family=hopper,nvidia.com/gpu.machine=simulated"
NODE_TAINT="gptoss.dev/real-node=true:PreferNoSchedule"  # as in node/kubelet.yaml's registerWithTaints
# kwok's fake pods get addresses from this range (kwok's default): nothing answers there, so the host
# must not route it to its default gateway (a Service backed by kwok pods would leak traffic off-host).
KWOK_FAKE_POD_CIDR="10.0.0.0/24"
# The sysctls this script (or kube-proxy) changes; down restores the values seen before the first up.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
COMPONENTS=(containerd kubelet kube-proxy coredns local-path-provisioner)

log() { printf '[node %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[node] ERROR: %s\n' "$*" >&2; exit 1; }
kctl() { "$GPTOSS_KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=20s "$@"; }
ctr_k8s() { ctr --address "$GPTOSS_CONTAINERD_ADDRESS" --namespace k8s.io "$@"; }
# containerd_answers: its socket exists (ctr would wait 10 s for a missing one) and it answers.
containerd_answers() {
  [[ -S "$GPTOSS_CONTAINERD_ADDRESS" ]] && ctr --address "$GPTOSS_CONTAINERD_ADDRESS" version >/dev/null 2>&1
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds; die naming WHAT on timeout.
wait_for() {
  local timeout_s="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout_s}s waiting for $what"
    sleep 0.5
  done
}

# ------------------------------------------------------------------------------------------- processes
pid_of() { local f="$PID_DIR/$1.pid"; [[ -f "$f" ]] && cat "$f"; }
running() { local pid; pid=$(pid_of "$1") && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }

changed() { local c; for c in "${CHANGED[@]}"; do [[ "$c" == "$1" ]] && return 0; done; return 1; }

# start_process NAME COMMAND...: have COMMAND run as NAME. Nothing happens when it already runs with this
# command line and NAME's configuration files did not change (NAME not in CHANGED): returns 1. Otherwise
# it is (re)started in its own session, detached from this script (and from the lock descriptors of up.sh
# and build.sh, which it would otherwise hold forever), logging to LOG_DIR/NAME.log.
start_process() {
  local name="$1"; shift
  local cmdline="$*" cmdline_file="$PID_DIR/$name.cmdline"
  if running "$name"; then
    if ! changed "$name" && [[ "$(cat "$cmdline_file" 2>/dev/null)" == "$cmdline" ]]; then return 1; fi
    log "$name: configuration changed; restarting"
    stop_process "$name"
  fi
  mkdir -p "$LOG_DIR" "$PID_DIR"
  [[ -f "$LOG_DIR/$name.log" ]] && mv -f "$LOG_DIR/$name.log" "$LOG_DIR/$name.log.1"
  setsid "$@" </dev/null >"$LOG_DIR/$name.log" 2>&1 8>&- 9>&- &
  echo "$!" >"$PID_DIR/$name.pid"
  echo "$cmdline" >"$cmdline_file"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# stop_process NAME: SIGTERM, then SIGKILL after 15 s, by the recorded pid only.
stop_process() {
  local name="$1" pid
  pid=$(pid_of "$name") || return 0
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PID_DIR/$name.pid" "$PID_DIR/$name.cmdline"
}

# ------------------------------------------------------------------------------------------- rendering
# render TEMPLATE DEST: substitute the ${VARS} of TEMPLATE (only those: shell scripts inside keep their
# $VARS) into DEST. Returns 0 when DEST changed, 1 when it already had this content.
render() {
  local template="$1" dest="$2" vars tmp
  # shellcheck disable=SC2016  # the pattern matches a literal ${NAME}
  vars=$(grep -o '\${[A-Z_][A-Z0-9_]*}' "$template" | sort -u | tr '\n' ' ' || true)
  tmp="$dest.tmp"
  mkdir -p "$(dirname "$dest")"
  envsubst "$vars" <"$template" >"$tmp"
  if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$dest"
}

# ----------------------------------------------------------------------------------------------- network
save_sysctls() {
  [[ -f "$SYSCTL_SAVED" ]] && return 0
  mkdir -p "$GPTOSS_NODE_DIR"
  local key
  for key in "${SYSCTLS[@]}"; do echo "$key=$(sysctl -n "$key")"; done >"$SYSCTL_SAVED"
}

restore_sysctls() {
  [[ -f "$SYSCTL_SAVED" ]] || return 0
  local line
  while read -r line; do sysctl -qw "$line" || true; done <"$SYSCTL_SAVED"
  rm -f "$SYSCTL_SAVED"
}

# network_up: the bridge with the node's address, forwarding for Service traffic, and the bridge's
# traffic through iptables (kube-proxy must see pod-to-Service-to-pod replies on the same bridge).
network_up() {
  save_sysctls
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  ip link show "$GPTOSS_BRIDGE" >/dev/null 2>&1 || ip link add "$GPTOSS_BRIDGE" type bridge
  ip addr replace "$GPTOSS_NODE_IP/${GPTOSS_POD_CIDR#*/}" dev "$GPTOSS_BRIDGE"
  ip link set "$GPTOSS_BRIDGE" up
  ip route replace unreachable "$KWOK_FAKE_POD_CIDR"
}

# ensure_chain TABLE CHAIN PARENT: an empty CHAIN jumped to first from PARENT.
ensure_chain() {
  local table="$1" chain="$2" parent="$3"
  iptables -t "$table" -N "$chain" 2>/dev/null || iptables -t "$table" -F "$chain"
  iptables -t "$table" -C "$parent" -j "$chain" 2>/dev/null || iptables -t "$table" -I "$parent" 1 -j "$chain"
}

# firewall_up API_PORT: keep node traffic on this machine.
# - Pods talk to each other over the bridge and to nothing routed elsewhere; nothing routed from elsewhere
#   reaches them (GPTOSS-FORWARD).
# - From pods the host accepts only DNS and the API server on the bridge address, and replies
#   (GPTOSS-INPUT). kube-apiserver listens on every address because it has a single --bind-address and
#   kwokctl's components dial 127.0.0.1; only loopback and the bridge may reach it, and the bridge address
#   (kubelet, CoreDNS) is reachable only from loopback and the bridge.
firewall_up() {
  local api_port="$1" br="$GPTOSS_BRIDGE"
  ensure_chain filter GPTOSS-FORWARD FORWARD
  iptables -A GPTOSS-FORWARD -i "$br" -o "$br" -j ACCEPT
  iptables -A GPTOSS-FORWARD -i "$br" -j REJECT --reject-with icmp-net-prohibited
  iptables -A GPTOSS-FORWARD -o "$br" -j REJECT --reject-with icmp-net-prohibited
  ensure_chain filter GPTOSS-INPUT INPUT
  iptables -A GPTOSS-INPUT -i lo -j RETURN
  iptables -A GPTOSS-INPUT -i "$br" -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
  iptables -A GPTOSS-INPUT -i "$br" -d "$GPTOSS_NODE_IP" -p udp --dport 53 -j RETURN
  iptables -A GPTOSS-INPUT -i "$br" -d "$GPTOSS_NODE_IP" -p tcp --dport 53 -j RETURN
  iptables -A GPTOSS-INPUT -i "$br" -d "$GPTOSS_NODE_IP" -p tcp --dport "$api_port" -j RETURN
  iptables -A GPTOSS-INPUT -i "$br" -j REJECT --reject-with icmp-port-unreachable
  iptables -A GPTOSS-INPUT -p tcp --dport "$api_port" -j REJECT --reject-with tcp-reset
  iptables -A GPTOSS-INPUT -d "$GPTOSS_POD_CIDR" -j REJECT --reject-with icmp-port-unreachable
  # kube-apiserver's 0.0.0.0 is dual-stack in Go; pods have no IPv6, so only loopback may reach it there.
  ip6tables -N GPTOSS-INPUT 2>/dev/null || ip6tables -F GPTOSS-INPUT
  ip6tables -C INPUT -j GPTOSS-INPUT 2>/dev/null || ip6tables -I INPUT 1 -j GPTOSS-INPUT
  ip6tables -A GPTOSS-INPUT -p tcp --dport "$api_port" ! -i lo -j REJECT --reject-with tcp-reset
}

# delete_chains TABLE PREFIX: remove every jump to chains named PREFIX* and then those chains.
delete_chains() {
  local table="$1" prefix="$2" rule chain
  # iptables-save quotes comments with spaces the way a shell does; eval splits them back into words.
  while read -r rule; do
    eval "iptables -t $table -D ${rule#-A }" 2>/dev/null || true
  done < <(iptables-save -t "$table" 2>/dev/null | grep -E -- "^-A .* -j $prefix" || true)
  local chains=()
  mapfile -t chains < <(iptables-save -t "$table" 2>/dev/null | sed -n "s/^:\(${prefix}[^ ]*\) .*/\1/p")
  for chain in "${chains[@]}"; do iptables -t "$table" -F "$chain" 2>/dev/null || true; done
  for chain in "${chains[@]}"; do iptables -t "$table" -X "$chain" 2>/dev/null || true; done
}

firewall_down() {
  mkdir -p "$LOG_DIR"
  if [[ -x "$KUBE_BIN/kube-proxy" ]]; then
    "$KUBE_BIN/kube-proxy" --cleanup >>"$LOG_DIR/kube-proxy-cleanup.log" 2>&1 || true
  fi
  local table
  for table in nat filter mangle; do
    delete_chains "$table" KUBE-  # whatever kube-proxy --cleanup left (it keeps some shared chains)
    delete_chains "$table" CNI-   # portmap's hostport chains
    delete_chains "$table" GPTOSS-
  done
  ip6tables -D INPUT -j GPTOSS-INPUT 2>/dev/null || true
  ip6tables -F GPTOSS-INPUT 2>/dev/null || true
  ip6tables -X GPTOSS-INPUT 2>/dev/null || true
}

network_down() {
  ip route del unreachable "$KWOK_FAKE_POD_CIDR" 2>/dev/null || true
  if ip link show "$GPTOSS_BRIDGE" >/dev/null 2>&1; then
    ip link del "$GPTOSS_BRIDGE"
    log "deleted bridge $GPTOSS_BRIDGE"
  fi
  restore_sysctls
}

# ---------------------------------------------------------------------------------------- certificates
api_server_url() {
  kctl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}'
}

# issue_cert NAME SUBJECT USAGE [SAN]: a key and a certificate signed by the cluster's CA.
issue_cert() {
  local name="$1" subject="$2" usage="$3" san="${4:-}" ext
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$subject" \
    -keyout "$PKI_DIR/$name.key" -out "$PKI_DIR/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$KWOK_PKI/ca.crt" -CAkey "$KWOK_PKI/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 365 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI_DIR/$name.csr"
  chmod 600 "$PKI_DIR/$name.key"
}

# node_certs: the kubelet and kube-proxy get identities of their own (system:node:<name> in system:nodes,
# so the Node authorizer and NodeRestriction apply as on a real node; system:kube-proxy), reissued when
# the cluster (and so its CA) was recreated. Returns 0 when it issued them, 1 when they were current.
node_certs() {
  local ca_sum
  ca_sum=$(sha256sum "$KWOK_PKI/ca.crt" | cut -d' ' -f1)
  if [[ -f "$PKI_DIR/ca.sha256" && "$(cat "$PKI_DIR/ca.sha256")" == "$ca_sum" ]]; then return 1; fi
  log "issuing the node's certificates from the cluster CA"
  rm -rf "$PKI_DIR"; mkdir -p "$PKI_DIR"; chmod 700 "$PKI_DIR"
  issue_cert kubelet-client "/O=system:nodes/CN=system:node:$GPTOSS_NODE_NAME" clientAuth
  issue_cert kubelet-serving "/CN=$GPTOSS_NODE_NAME" serverAuth "DNS:$GPTOSS_NODE_NAME,IP:$GPTOSS_NODE_IP"
  issue_cert kube-proxy "/CN=system:kube-proxy" clientAuth
  echo "$ca_sum" >"$PKI_DIR/ca.sha256"
}

# write_kubeconfig NAME SERVER: a kubeconfig for PKI_DIR/NAME.{crt,key}. Returns 0 when it changed.
write_kubeconfig() {
  local name="$1" server="$2" dest="$CONFIG_DIR/$1.kubeconfig" tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $GPTOSS_CLUSTER_NAME
  cluster:
    server: $server
    certificate-authority: $KWOK_PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI_DIR/$name.crt
    client-key: $PKI_DIR/$name.key
contexts:
- name: $name
  context: {cluster: $GPTOSS_CLUSTER_NAME, user: $name}
current-context: $name
EOF
  if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$dest"; chmod 600 "$dest"
}

# ---------------------------------------------------------------------------------------------- images
ref_from_file() { sed -n "s/^$1=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\}\$/\1/p" "$REFS_FILE" 2>/dev/null | tail -n1; }

# resolve_images: PAUSE_IMAGE (the sandbox image, needed before containerd starts) and HELPER_IMAGE.
resolve_images() {
  PAUSE_IMAGE="${GPTOSS_PAUSE_IMAGE:-}"
  if [[ -z "$PAUSE_IMAGE" ]]; then
    [[ -x "$IMAGES_SCRIPT" ]] ||
      die "no pause image: $IMAGES_SCRIPT is missing; set GPTOSS_PAUSE_IMAGE and GPTOSS_PAUSE_ARCHIVE to a local image"
    if ! "$IMAGES_SCRIPT" pause 8>&- 9>&- >&2; then
      # A node that already runs on a built pause image need not stop because a rebuild check failed.
      [[ -n "$(ref_from_file PAUSE_IMAGE)" ]] || die "$IMAGES_SCRIPT pause failed"
      log "WARNING: $IMAGES_SCRIPT pause failed; using the last pause image of $REFS_FILE"
    fi
    PAUSE_IMAGE=$(ref_from_file PAUSE_IMAGE)
    [[ -n "$PAUSE_IMAGE" ]] || die "$REFS_FILE has no PAUSE_IMAGE after '$IMAGES_SCRIPT pause'"
  fi
  HELPER_IMAGE="${GPTOSS_HELPER_IMAGE:-$(ref_from_file BASE_IMAGE)}"
  HELPER_IMAGE="${HELPER_IMAGE:-$(ref_from_file RUNTIME_CPU_IMAGE)}"
  if [[ -z "$HELPER_IMAGE" ]]; then
    HELPER_IMAGE="image-missing.invalid/build-it-with-e2e-images-build-sh:none"
    log "WARNING: no image for the volume provisioner's helper pods yet (refs.env has no BASE_IMAGE or" \
      "RUNTIME_CPU_IMAGE); PVCs stay Pending until one is built and 'node.sh up' runs again"
  fi
  export PAUSE_IMAGE HELPER_IMAGE
}

# (grep without -q reads all of ctr's output: with pipefail, an early exit would fail ctr with SIGPIPE.)
image_present() { ctr_k8s images ls -q | grep -xF "$1" >/dev/null; }

# load_images: everything e2e/images/build.sh built (or the archives named in the environment).
load_images() {
  local archive
  if [[ -n "${GPTOSS_PAUSE_ARCHIVE:-}" ]]; then
    image_present "$PAUSE_IMAGE" || ctr_k8s images import "$GPTOSS_PAUSE_ARCHIVE" >/dev/null
  elif [[ -x "$IMAGES_SCRIPT" ]]; then  # it skips images already there
    "$IMAGES_SCRIPT" load --address "$GPTOSS_CONTAINERD_ADDRESS" 8>&- 9>&- >&2 ||
      log "WARNING: $IMAGES_SCRIPT load --address $GPTOSS_CONTAINERD_ADDRESS failed; images may be missing"
  fi
  for archive in ${GPTOSS_NODE_IMAGE_ARCHIVES:-}; do ctr_k8s images import "$archive" >/dev/null; done
  image_present "$PAUSE_IMAGE" || die "the pause image $PAUSE_IMAGE is not in the node's containerd after loading"
}

# ------------------------------------------------------------------------------------------ components
render_configs() {
  CHANGED=()
  mkdir -p "$CONFIG_DIR" "$CNI_DIR/net.d" "$KUBELET_DIR" "$VOLUMES_DIR"
  export GPTOSS_NODE_DIR GPTOSS_RUN_DIR GPTOSS_CONTAINERD_ADDRESS GPTOSS_BRIDGE GPTOSS_POD_CIDR GPTOSS_NODE_IP
  export GPTOSS_DNS_IP GPTOSS_CLUSTER_DOMAIN GPTOSS_NODE_NAME KWOK_PKI KUBECONFIG
  render "$TEMPLATES/containerd.toml" "$CONFIG_DIR/containerd.toml" && CHANGED+=(containerd)
  render "$TEMPLATES/10-gptoss.conflist" "$CNI_DIR/net.d/10-gptoss.conflist" && CHANGED+=(containerd)
  render "$TEMPLATES/kubelet.yaml" "$CONFIG_DIR/kubelet.yaml" && CHANGED+=(kubelet)
  render "$TEMPLATES/kube-proxy.yaml" "$CONFIG_DIR/kube-proxy.yaml" && CHANGED+=(kube-proxy)
  render "$TEMPLATES/Corefile" "$CONFIG_DIR/Corefile" && CHANGED+=(coredns)
  render "$TEMPLATES/addons.yaml" "$CONFIG_DIR/addons.yaml" && CHANGED+=(local-path-provisioner)
  echo "nameserver $GPTOSS_NODE_IP" >"$CONFIG_DIR/resolv.conf"
  local server; server=$(api_server_url)
  write_kubeconfig kubelet-client "$server" && CHANGED+=(kubelet)
  write_kubeconfig kube-proxy "$server" && CHANGED+=(kube-proxy)
  return 0
}

# ensure NAME: NAME runs with its current configuration (see start_process); returns 0 when it (re)started.
ensure() { "start_$1"; }

start_containerd() {
  mkdir -p "$GPTOSS_RUN_DIR/containerd"
  start_process containerd containerd --config "$CONFIG_DIR/containerd.toml" || return 1
  wait_for 60 "containerd at $GPTOSS_CONTAINERD_ADDRESS (log: $LOG_DIR/containerd.log)" containerd_answers
}

start_kubelet() {
  start_process kubelet "$KUBE_BIN/kubelet" \
    --config "$CONFIG_DIR/kubelet.yaml" \
    --kubeconfig "$CONFIG_DIR/kubelet-client.kubeconfig" \
    --root-dir "$KUBELET_DIR" \
    --cert-dir "$PKI_DIR" \
    --hostname-override "$GPTOSS_NODE_NAME" \
    --node-ip "$GPTOSS_NODE_IP" \
    --node-labels "$NODE_LABELS" \
    --v=1
}

start_kube-proxy() {
  start_process kube-proxy "$KUBE_BIN/kube-proxy" --config "$CONFIG_DIR/kube-proxy.yaml" --v=1
}

start_coredns() {
  start_process coredns "$COREDNS_BIN/coredns" -conf "$CONFIG_DIR/Corefile"
}

start_local-path-provisioner() {
  start_process local-path-provisioner "$LOCAL_PATH_PROVISIONER_BIN/local-path-provisioner" --debug start \
    --kubeconfig "$KUBECONFIG" \
    --namespace local-path-storage \
    --configmap-name local-path-config \
    --service-account-name local-path-provisioner-service-account \
    --helper-image "$HELPER_IMAGE" \
    --worker-threads 16  # each claim's worker waits for its helper pod; tests create many claims at once
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

gpus_allocatable() {
  [[ "$(kctl get node "$GPTOSS_NODE_NAME" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" == "$GPU_COUNT" ]]
}

# advertise_gpus: labels as GPU Feature Discovery sets them and nvidia.com/gpu capacity the documented
# way for extended resources (a node status patch; the kubelet copies capacity to allocatable). A kubelet
# that registers again zeroes unknown extended resources, so this runs after every (re)start.
advertise_gpus() {
  local labels=()
  IFS=, read -r -a labels <<<"$NODE_LABELS"
  kctl label node "$GPTOSS_NODE_NAME" --overwrite "${labels[@]}" >/dev/null
  kctl taint node "$GPTOSS_NODE_NAME" --overwrite "$NODE_TAINT" >/dev/null
  kctl patch node "$GPTOSS_NODE_NAME" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$GPU_COUNT\"}}}" >/dev/null
  wait_for 60 "$GPU_COUNT allocatable nvidia.com/gpu on node $GPTOSS_NODE_NAME" gpus_allocatable
}

require_up_prerequisites() {
  [[ $EUID -eq 0 ]] || die "the real node needs root (containerd, iptables, mounts); run as root or set GPTOSS_REAL_NODE=0"
  local f
  for f in "$KUBE_BIN/kubelet" "$KUBE_BIN/kube-proxy" "$COREDNS_BIN/coredns" \
    "$LOCAL_PATH_PROVISIONER_BIN/local-path-provisioner"; do
    [[ -x "$f" ]] || die "$f is not built; run: $HERE/build.sh kubernetes coredns local-path-provisioner"
  done
  for f in containerd ctr runc iptables iptables-save ip openssl envsubst curl /usr/lib/cni/bridge \
    /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/portmap; do
    command -v "$f" >/dev/null ||
      die "$f not found; install Debian's containerd, runc, iptables, iproute2, openssl, gettext-base, curl and containernetworking-plugins"
  done
  [[ -f "$KWOK_PKI/ca.key" ]] || die "no cluster CA at $KWOK_PKI; start the control plane first (up.sh)"
  kctl get --raw=/readyz >/dev/null 2>&1 || die "the API server is not ready; start the control plane first (up.sh)"
}

cmd_up() {
  local start=$SECONDS
  require_up_prerequisites
  local server api_port
  server=$(api_server_url)
  api_port="${server##*:}"
  network_up
  firewall_up "$api_port"
  resolve_images
  render_configs
  # New certificates mean a new cluster: every client of the API server starts over.
  if node_certs; then CHANGED+=(kubelet kube-proxy coredns local-path-provisioner); fi
  if ensure containerd; then CHANGED+=(kubelet); fi  # a new containerd: the kubelet must reconnect
  load_images
  ensure kubelet || true
  wait_for "$READY_TIMEOUT_S" "node $GPTOSS_NODE_NAME to register (log: $LOG_DIR/kubelet.log)" \
    kctl get node "$GPTOSS_NODE_NAME"
  wait_for "$READY_TIMEOUT_S" "node $GPTOSS_NODE_NAME to be Ready (log: $LOG_DIR/kubelet.log)" \
    kctl wait --for=condition=Ready "node/$GPTOSS_NODE_NAME" --timeout=5s
  advertise_gpus
  ensure kube-proxy || true
  wait_for 60 "kube-proxy to sync its rules (log: $LOG_DIR/kube-proxy.log)" http_ok http://127.0.0.1:10256/healthz
  kctl apply --server-side --force-conflicts --field-manager=gptoss-node -f "$CONFIG_DIR/addons.yaml" >/dev/null
  # Failed helper pods of claims deleted meanwhile are never retried, so never cleaned up by the provisioner.
  kctl delete pods --namespace local-path-storage --field-selector=status.phase==Failed --wait=false >/dev/null
  ensure coredns || true
  wait_for 60 "CoreDNS to be ready (log: $LOG_DIR/coredns.log)" http_ok http://127.0.0.1:18181/ready
  ensure local-path-provisioner || true
  wait_for 60 "local-path-provisioner to start (log: $LOG_DIR/local-path-provisioner.log)" \
    grep -q "Provisioner started" "$LOG_DIR/local-path-provisioner.log"
  log "node $GPTOSS_NODE_NAME ready in $((SECONDS - start))s: $GPU_COUNT simulated $GPU_PRODUCT," \
    "pods on $GPTOSS_POD_CIDR via $GPTOSS_BRIDGE, DNS $GPTOSS_DNS_IP, default StorageClass local-path"
}

# ------------------------------------------------------------------------------------------------ down
# remove_containers: kill and delete every container of the node's containerd (the kubelet is stopped,
# so nothing recreates them); containerd then garbage-collects their snapshots.
remove_containers() {
  containerd_answers || return 0
  local id
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete --force "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers delete "$id" >/dev/null 2>&1 || true; done
}

# kubepods_cgroups: the pod cgroups the kubelet made (cgroupfs driver, every v1 hierarchy), deepest first.
kubepods_cgroups() {
  local root
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$root" ]] && find "$root" -depth -type d
  done
  return 0
}

# kill_leftovers: processes still in pod cgroups, and shims of our containerd (only those: they name our
# socket), by pid.
kill_leftovers() {
  local cg pid cmdline
  while read -r cg; do
    [[ -f "$cg/cgroup.procs" ]] || continue
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$cg/cgroup.procs"
  done < <(kubepods_cgroups)
  while read -r cmdline; do
    pid="${cmdline#/proc/}"; pid="${pid%/cmdline}"
    if [[ "$pid" != "$$" ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done < <(grep -laF -- "$GPTOSS_CONTAINERD_ADDRESS" /proc/[0-9]*/cmdline 2>/dev/null || true)
  while read -r cg; do rmdir "$cg" 2>/dev/null || true; done < <(kubepods_cgroups)
}

# mounts_under DIR...: mount points at or below the DIRs, deepest first. (The kubelet bind-mounts its root
# directory onto itself to make it a shared mount.)
mounts_under() {
  local prefix
  for prefix in "$@"; do
    findmnt -rn -o TARGET | awk -v p="$prefix" '$0 == p || index($0, p "/") == 1'
  done | sort -r
}

unmount_under() {
  local target
  while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
  done < <(mounts_under "$@")
}

cmd_down() {
  local name
  for name in local-path-provisioner coredns kube-proxy kubelet; do stop_process "$name"; done
  remove_containers
  stop_process containerd
  kill_leftovers
  # Pod volumes (kubelet), rootfs overlays, sandbox /dev/shm and network namespaces (containerd's state).
  unmount_under "$KUBELET_DIR" "$GPTOSS_RUN_DIR" "$GPTOSS_NODE_DIR/containerd"
  firewall_down
  network_down
  local left
  left=$(mounts_under "$KUBELET_DIR" "$GPTOSS_RUN_DIR" "$GPTOSS_NODE_DIR/containerd")
  [[ -z "$left" ]] || die "these mounts would not unmount: $left"
  # Pod state, volumes and configuration go; the image cache (containerd's root) and logs stay.
  rm -rf --one-file-system "$KUBELET_DIR" "$VOLUMES_DIR" "$CNI_DIR" "$CONFIG_DIR" "$PKI_DIR" "$GPTOSS_RUN_DIR"
  log "node $GPTOSS_NODE_NAME is down (images kept in $GPTOSS_NODE_DIR/containerd, logs in $LOG_DIR)"
}

# ---------------------------------------------------------------------------------------------- status
cmd_status() {
  local name ok=0 ready
  for name in "${COMPONENTS[@]}"; do
    if running "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else echo "$name: not running"; ok=1; fi
  done
  ready=$(kctl get node "$GPTOSS_NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.allocatable.nvidia\.com/gpu}' 2>/dev/null ||
    echo "absent")
  echo "node $GPTOSS_NODE_NAME: Ready/GPUs = ${ready:-unknown}"
  [[ "$ready" == "True $GPU_COUNT" ]] || ok=1
  return "$ok"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: node.sh up|down|status" ;;
esac
