#!/usr/bin/env bash
# Build the project's container images without Docker (buildah, chroot isolation, no daemon) and load
# them into a containerd. Every image is cached under ~/.cache/gpt-oss-operator/images/ (or
# $GPTOSS_CACHE/images/) as a docker-archive keyed by the content hash of all its inputs; an image whose
# inputs did not change is never rebuilt.
#
# Usage:
#   e2e/images/build.sh [pause|base|runtime-cpu|operator|fetcher|all]...     (default: all)
#       Builds what is missing, then writes ~/.cache/gpt-oss-operator/images/refs.env (merged, so a
#       partial build keeps the other lines):
#         PAUSE_IMAGE=localhost/gpt-oss-operator/pause:<hash12>          PAUSE_ARCHIVE=<path>.docker.tar
#         RUNTIME_CPU_IMAGE=localhost/gpt-oss-operator/runtime:cpu-<hash12>  RUNTIME_CPU_ARCHIVE=...
#         OPERATOR_IMAGE=localhost/gpt-oss-operator/operator:<hash12>    OPERATOR_ARCHIVE=...
#         FETCHER_IMAGE=localhost/gpt-oss-operator/fetcher:<hash12>      FETCHER_ARCHIVE=...
#       (the slim weights fetcher: runtime/Dockerfile.fetcher)
#         BASE_IMAGE=localhost/gpt-oss-operator/debian-base:bookworm-<hash12>  BASE_ARCHIVE=...
#       (the Debian base the others start from: minbase + python3; root, /bin/sh; for helper pods)
#       Refs are never `:latest`, so `imagePullPolicy: IfNotPresent` uses the loaded image without a registry.
#   e2e/images/build.sh load [--address /run/gptoss/containerd/containerd.sock] [--namespace k8s.io]
#       Imports every archive named in refs.env into that containerd namespace with `ctr` (skipping refs
#       already there), then removes the earlier builds of the same images that no container uses (the
#       real node's kubelet has image GC off). Run a build first.
#
# Needs root (buildah/mmdebstrap), Go (pause) and Python 3.11 with pip (the wheelhouse: the project's
# .venv). The Debian tools are installed with apt-get when missing. Only package registries are used:
# Debian for the root filesystem, PyPI for the wheelhouse on the host; RUN steps run with --network=none.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS=(buildah podman skopeo umoci mmdebstrap)

install_missing_tools() {
  local missing=() tool
  for tool in "${TOOLS[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [[ ${#missing[@]} -eq 0 ]] && return
  echo "[images] installing ${missing[*]} with apt-get" >&2
  [[ $(id -u) -eq 0 ]] || { echo "[images] ERROR: run as root to install ${missing[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
}

if [[ "${1:-}" == "load" ]]; then exec python3 "$HERE/images.py" "$@"; fi
install_missing_tools
# One build at a time per cache (containers/storage and the archives are shared). `load` only reads
# refs.env (replaced atomically), so it does not wait for a build.
CACHE="${GPTOSS_CACHE:-$HOME/.cache/gpt-oss-operator}"
mkdir -p "$CACHE/images"
exec 9>"$CACHE/images/.lock"
flock 9
exec python3 "$HERE/images.py" "$@"
