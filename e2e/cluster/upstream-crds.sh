#!/usr/bin/env bash
# Fetch the CRDs of the projects the operator integrates with, through the Go module proxy (module zips are
# downloaded, never built), and copy them to
#   ~/.cache/gpt-oss-operator/crds/keda-<version>/                 (KEDA: ScaledObject, TriggerAuthentication, ...)
#   ~/.cache/gpt-oss-operator/crds/prometheus-operator-<version>/  (ServiceMonitor, PodMonitor, PrometheusRule, ...)
# Idempotent. Prints each directory (last line: the parent crds directory).
# Install them with: kubectl apply --server-side -f <dir>
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CRD_CACHE="${GPTOSS_CACHE:-$HOME/.cache/gpt-oss-operator}/crds"
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local

log() { printf '[crds] %s\n' "$*" >&2; }
die() { printf '[crds] ERROR: %s\n' "$*" >&2; exit 1; }

# fetch NAME MODULE VERSION SUBDIR: copy MODULE@VERSION's SUBDIR/*.yaml to $CRD_CACHE/NAME-VERSION.
fetch() {
  local name="$1" module="$2" version="$3" subdir="$4"
  local dest="$CRD_CACHE/$name-$version"
  if [[ -f "$dest/.complete" ]]; then
    log "$name $version cached"
    echo "$dest"
    return
  fi
  log "downloading $module@$version (module proxy)"
  local dir
  dir=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  [[ -d "$dir/$subdir" ]] || die "$module@$version has no $subdir; update upstream-crds.sh for this release"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  cp "$dir/$subdir"/*.yaml "$dest.partial/"
  chmod u+w "$dest.partial"/*.yaml  # the module cache is read-only
  date -u +%Y-%m-%dT%H:%M:%SZ >"$dest.partial/.complete"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  log "$name $version: $(find "$dest" -name '*.yaml' | wc -l) CRDs"
  echo "$dest"
}

command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$CRD_CACHE"
fetch keda github.com/kedacore/keda/v2 "$KEDA_VERSION" config/crd/bases
fetch prometheus-operator github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd
echo "$CRD_CACHE"
