#!/usr/bin/env bash
# Installs the Debian packages the real node, the image builds and the tests need, when missing:
#   containerd, runc, containernetworking-plugins, iptables, conntrack  (the real node's runtime and network)
#   buildah, podman, skopeo, umoci, mmdebstrap                          (images from the project's Dockerfiles)
#   redis-server                                                        (a shared Responses store in tests)
#   prometheus                                                          (promtool + the custom metrics pipeline)
# Usage: hack/install-debian-packages.sh [PACKAGE...]   (default: all of the above)
#
# Idempotent (dpkg says what is installed), non-interactive, works as root without systemd, and never
# leaves a system service running: every daemon of these packages is started by the project's own scripts
# with their own configuration.
set -euo pipefail

DEFAULT_PACKAGES=(
  containerd runc containernetworking-plugins iptables conntrack
  buildah podman skopeo umoci mmdebstrap
  redis-server prometheus
)
PACKAGES=("$@")
[[ ${#PACKAGES[@]} -gt 0 ]] || PACKAGES=("${DEFAULT_PACKAGES[@]}")

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-debian-packages: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || {
  echo "install-debian-packages: apt-get not found; install ${missing[*]} with your package manager" >&2
  exit 1
}
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-debian-packages: run as root (apt-get needs it)" >&2; exit 1; }
  SUDO="sudo"
fi

# Refuse service starts during the installation (maintainer scripts would start containerd, redis and
# prometheus through invoke-rc.d). Only install our policy when none exists, and remove it afterwards.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [[ ! -e "$POLICY" ]]; then
  printf '#!/bin/sh\n# installed by hack/install-debian-packages.sh for the duration of apt-get install\nexit 101\n' |
    $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 0755 "$POLICY"
  OWN_POLICY=1
fi
cleanup() { if [[ "$OWN_POLICY" == 1 ]]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "install-debian-packages: installing ${missing[*]}"
# A stale or missing package list: refresh once and retry.
if ! $SUDO apt-get install -y -q "${missing[@]}"; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q "${missing[@]}"
fi

# Belt and braces: stop any service a service manager started anyway.
for service in containerd redis-server prometheus; do
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif [[ -x "/etc/init.d/$service" ]]; then
    $SUDO "/etc/init.d/$service" stop >/dev/null 2>&1 || true
  fi
done
echo "install-debian-packages: done"
