#!/usr/bin/env bash
# Build Prometheus Adapter (sigs.k8s.io/prometheus-adapter, cmd/adapter) from its Go module, once per
# pinned version, into ~/.cache/gpt-oss-operator/bin/prometheus-adapter-<version>/adapter (with a
# .complete marker, like e2e/cluster/build.sh). Prometheus itself comes from Debian (hack/install-prometheus.sh).
# Only the Go module proxy is used. Prints the cold build time.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

BIN_CACHE="${GPTOSS_BIN_CACHE:-$HOME/.cache/gpt-oss-operator/bin}"
FINAL="$BIN_CACHE/prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"

log() { printf '[metrics-build %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[metrics-build] ERROR: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH; install Go >= 1.22 to build Prometheus Adapter"

if [[ -f "$FINAL/.complete" && -x "$FINAL/adapter" ]]; then
  log "prometheus-adapter $PROMETHEUS_ADAPTER_VERSION cached at $FINAL"
  exit 0
fi

mkdir -p "$BIN_CACHE"
# Its own lock (not the control plane's): a caller waiting here must not wait for a 30-minute
# Kubernetes build. The build runs niced so that a concurrent control-plane build keeps the CPUs.
exec 9>"$BIN_CACHE/.prometheus-adapter.lock"
if ! flock -n 9; then
  log "another build of prometheus-adapter is running; waiting for it"
  flock 9
  [[ -f "$FINAL/.complete" ]] && { log "built by the other caller"; exit 0; }
fi

start=$(date +%s)
staging="$FINAL.partial"
rm -rf "$staging"
mkdir -p "$staging"
log "building prometheus-adapter $PROMETHEUS_ADAPTER_VERSION (go build in the downloaded module)"
# `go install pkg@version` also reads the module's version list (for deprecation notices), which the
# proxy refuses for this module; downloading the exact version and building inside it works and uses
# upstream's own go.sum, so the dependency set is exactly the release's.
module_dir=$(go mod download -json "sigs.k8s.io/prometheus-adapter@$PROMETHEUS_ADAPTER_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
(cd "$module_dir" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$staging/adapter" ./cmd/adapter)
# `--help` exits 2 (pflag's "help requested"): check that it printed the adapter's own flags instead.
help_text=$("$staging/adapter" --help 2>&1 || true)
[[ "$help_text" == *--prometheus-url* ]] || die "the built adapter does not run: $staging/adapter"
date -u +%Y-%m-%dT%H:%M:%SZ >"$staging/.complete"
rm -rf "$FINAL"
mv "$staging" "$FINAL"
log "done prometheus-adapter-$PROMETHEUS_ADAPTER_VERSION in $(( $(date +%s) - start ))s -> $FINAL"
