#!/usr/bin/env bash
# Build the local control plane (kwok, kwokctl, kube-apiserver, kube-controller-manager, kube-scheduler,
# etcd), the real node's kubelet, kube-proxy, CoreDNS and local-path-provisioner, and helm from Go modules, once per pinned version, into
#   ~/.cache/gpt-oss-operator/bin/<component>-<version>/
# A component whose directory is complete is reused; a cold build happens only when the cache lacks that
# version. Only the Go module proxy is used. Usage: build.sh [component...]
# (components: kwok kubernetes kubernetes-oldest etcd helm coredns local-path-provisioner; default all but
# kubernetes-oldest, which only the oldest-version cluster needs: GPTOSS_KUBE_VERSION_SET=oldest).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

BIN_CACHE="${GPTOSS_BIN_CACHE:-$HOME/.cache/gpt-oss-operator/bin}"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# -mod=mod lets the generated wrapper modules fill in go.sum while building.
export GOFLAGS="-buildvcs=false -mod=mod"
LEAN_LDFLAGS="-s -w"

CLEANUP=()
cleanup() { if [[ ${#CLEANUP[@]} -gt 0 ]]; then rm -rf "${CLEANUP[@]}"; fi; }
trap cleanup EXIT

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install Go >= 1.26 (kwok v0.8 needs it)"

# is_built DIR FILE...: true when DIR holds the completion marker and every named binary.
is_built() {
  local dir="$1"; shift
  [[ -f "$dir/.complete" ]] || return 1
  local f
  for f in "$@"; do [[ -x "$dir/$f" ]] || return 1; done
}

# One build at a time: concurrent runs (make targets, the e2e fixture) would share staging directories
# and starve 2 cores. The lock is taken only when something must be built: a caller whose components are all
# cached (up.sh when the real node joins, while `make test` builds the oldest control plane) never waits.
HOLDS_LOCK=0
build_lock() {
  [[ "$HOLDS_LOCK" == 0 ]] || return 0
  exec 9>"$BIN_CACHE/.build.lock"
  if ! flock -n 9; then
    log "another build.sh is running; waiting for it"
    flock 9
  fi
  HOLDS_LOCK=1
}

# needs_build NAME DIR FILE...: false (logging "cached") when DIR holds FILE... complete; else takes the
# build lock and checks again (the build.sh it waited for may have just built it).
needs_build() {
  local name="$1"; shift
  if is_built "$@"; then log "$name cached"; return 1; fi
  build_lock
  if is_built "$@"; then log "$name cached (built meanwhile)"; return 1; fi
}

# finish STAGING FINAL START: mark a staging directory complete and move it into place atomically.
finish() {
  local staging="$1" final="$2" start="$3"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$staging/.complete"
  rm -rf "$final"
  mv "$staging" "$final"
  log "done $(basename "$final") in $(( $(date +%s) - start ))s -> $final"
}

# module_json MODULE@VERSION: download a module through the proxy, print `go mod download -json`.
module_json() { go mod download -json "$1"; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

build_kwok() {
  local final="$BIN_CACHE/kwok-$KWOK_VERSION"
  needs_build "kwok $KWOK_VERSION" "$final" kwok kwokctl || return 0
  local start; start=$(date +%s)
  log "building kwok + kwokctl $KWOK_VERSION (go install)"
  local staging="$final.partial"
  rm -rf "$staging"; mkdir -p "$staging"
  GOBIN="$staging" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "$LEAN_LDFLAGS" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  finish "$staging" "$final" "$start"
}

# new_wrapper DIR NAME: an empty Go module used to build commands of modules with replace directives.
new_wrapper() {
  local dir="$1"
  (cd "$dir" && go mod init "local.invalid/gptoss-$2-wrapper" >/dev/null 2>&1)
  cat >"$dir/main.go" <<'EOF'
// Package main is empty: this module only pins dependencies for `go build <their commands>`.
package main

func main() {}
EOF
}

# replace_local_staging WRAPPER UPSTREAM_GOMOD VERSION: for every required X with `replace X => ./path` in the upstream
# go.mod (k8s.io/kubernetes replaces its staging repositories with local paths), replace X with its
# published module at VERSION in the wrapper.
replace_local_staging() {
  local wrapper="$1" gomod="$2" version="$3" mod count=0
  while read -r mod; do
    [[ -n "$mod" ]] || continue
    (cd "$wrapper" && go mod edit -replace "$mod=$mod@$version")
    count=$((count + 1))
  done < <(go mod edit -json "$gomod" | python3 -c '
import json, sys
mod = json.load(sys.stdin)
required = {r["Path"] for r in mod.get("Require") or []}
for r in mod.get("Replace") or []:
    # Only modules the upstream actually requires; etcd also "replaces" forbidden modules with a
    # nonexistent local path to make bad imports fail loudly.
    if r["New"]["Path"].startswith(".") and r["Old"]["Path"] in required:
        print(r["Old"]["Path"])
')
  log "  replaced $count local staging modules with their $version releases"
}

# build_kube VERSION CMD...: the named commands of k8s.io/kubernetes at VERSION (one go build, shared
# compilation) into $BIN_CACHE/kubernetes-VERSION/.
build_kube() {
  local version="$1"; shift
  local cmds=("$@") final="$BIN_CACHE/kubernetes-$version"
  needs_build "kubernetes $version" "$final" "${cmds[@]}" || return 0
  local start; start=$(date +%s)
  log "building ${cmds[*]} $version (one go build, shared compilation)"
  local json gomod wrapper staging="$final.partial"
  json=$(module_json "k8s.io/kubernetes@$version")
  gomod=$(json_field GoMod <<<"$json")
  wrapper=$(mktemp -d "${TMPDIR:-/tmp}/gptoss-k8s-wrapper.XXXXXX")
  CLEANUP+=("$wrapper")
  new_wrapper "$wrapper" kubernetes
  (cd "$wrapper" && go mod edit -require "k8s.io/kubernetes@$version")
  # Staging modules are published as v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
  replace_local_staging "$wrapper" "$gomod" "v0.${version#v1.}"
  local major minor rest
  rest="${version#v}"; major="${rest%%.*}"; rest="${rest#*.}"; minor="${rest%%.*}"
  local ldflags="$LEAN_LDFLAGS" pkg
  # Without these the servers report v0.0.0-master, which breaks Helm's kubeVersion checks.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  rm -rf "$staging"; mkdir -p "$staging"
  local pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$wrapper" && go build -trimpath -ldflags "$ldflags" -o "$staging/" "${pkgs[@]}")
  finish "$staging" "$final" "$start"
}

# The newest tested Kubernetes: the control plane and the real node's kubelet and kube-proxy.
build_kubernetes() {
  build_kube "$KUBE_VERSION" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
}

# The oldest Kubernetes the chart claims (its kubeVersion): a control plane only, for a kwok-only cluster
# (GPTOSS_KUBE_VERSION_SET=oldest); the real node stays on the newest (a kubelet must not be newer than
# its API server).
build_kubernetes-oldest() {
  build_kube "$KUBE_VERSION_OLDEST" kube-apiserver kube-controller-manager kube-scheduler
}

build_etcd() {
  local final="$BIN_CACHE/etcd-$ETCD_VERSION"
  needs_build "etcd $ETCD_VERSION" "$final" etcd || return 0
  local start; start=$(date +%s)
  log "building etcd $ETCD_VERSION"
  local json gomod wrapper staging="$final.partial"
  json=$(module_json "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  gomod=$(json_field GoMod <<<"$json")
  wrapper=$(mktemp -d "${TMPDIR:-/tmp}/gptoss-etcd-wrapper.XXXXXX")
  CLEANUP+=("$wrapper")
  new_wrapper "$wrapper" etcd
  (cd "$wrapper" && go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  # server/v3 replaces its sibling etcd modules (api, client, pkg) with local paths; they are published
  # at the same version.
  replace_local_staging "$wrapper" "$gomod" "$ETCD_VERSION"
  rm -rf "$staging"; mkdir -p "$staging"
  # The server module's root package is the etcd main package.
  (cd "$wrapper" && go build -trimpath -ldflags "$LEAN_LDFLAGS" -o "$staging/etcd" go.etcd.io/etcd/server/v3)
  finish "$staging" "$final" "$start"
}

build_helm() {
  local final="$BIN_CACHE/helm-$HELM_VERSION"
  needs_build "helm $HELM_VERSION" "$final" helm || return 0
  local start; start=$(date +%s)
  log "building helm $HELM_VERSION (go install)"
  local major="${HELM_VERSION%%.*}" staging="$final.partial"
  local module="helm.sh/helm/$major"
  rm -rf "$staging"; mkdir -p "$staging"
  GOBIN="$staging" GOFLAGS="-buildvcs=false" go install -trimpath \
    -ldflags "$LEAN_LDFLAGS -X $module/internal/version.version=$HELM_VERSION" "$module/cmd/helm@$HELM_VERSION"
  finish "$staging" "$final" "$start"
}

# go_install_component NAME VERSION MODULE/CMD BINARY LDFLAGS: `go install` a module without replace
# directives into $BIN_CACHE/NAME-VERSION/BINARY.
go_install_component() {
  local name="$1" version="$2" pkg="$3" binary="$4" ldflags="$5"
  local final="$BIN_CACHE/$name-$version"
  needs_build "$name $version" "$final" "$binary" || return 0
  local start; start=$(date +%s)
  log "building $name $version (go install)"
  local staging="$final.partial"
  rm -rf "$staging"; mkdir -p "$staging"
  GOBIN="$staging" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "$LEAN_LDFLAGS $ldflags" "$pkg@$version"
  finish "$staging" "$final" "$start"
}

# CoreDNS: the real node's cluster DNS (kubernetes plugin), run as a host process by node.sh.
build_coredns() {
  go_install_component coredns "$COREDNS_VERSION" github.com/coredns/coredns coredns \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}

# rancher's local-path-provisioner: the real node's default StorageClass, run as a host process by node.sh.
build_local-path-provisioner() {
  go_install_component local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
    github.com/rancher/local-path-provisioner local-path-provisioner "-X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"
}

main() {
  local components=("$@")
  [[ ${#components[@]} -gt 0 ]] || components=(kwok kubernetes etcd helm coredns local-path-provisioner)
  mkdir -p "$BIN_CACHE"
  local c total_start; total_start=$(date +%s)
  for c in "${components[@]}"; do
    case "$c" in
      kwok | kubernetes | kubernetes-oldest | etcd | helm | coredns | local-path-provisioner) "build_$c" ;;
      *) die "unknown component '$c'; expected one of: kwok kubernetes kubernetes-oldest etcd helm coredns local-path-provisioner" ;;
    esac
  done
  log "all requested components ready in $(( $(date +%s) - total_start ))s under $BIN_CACHE"
}

main "$@"
