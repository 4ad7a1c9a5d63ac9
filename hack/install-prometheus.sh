#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package, for the monitoring tests.
#
# Idempotent: does nothing when `promtool` and `prometheus` are already on PATH. Non-interactive, works
# as root without systemd, and never leaves a system Prometheus service running: the tests start their
# own Prometheus on a loopback port with a temporary config.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "install-prometheus: $(promtool --version 2>&1 | head -n1) already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: apt-get not found; install Prometheus >= 2.42 (prometheus and promtool) with" \
    "your system's package manager and put both on PATH" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-prometheus: run as root or install sudo (apt-get needs root)" >&2
    exit 1
  fi
fi

# Refuse service starts during the installation (the package's maintainer scripts would otherwise try
# to start the system Prometheus through invoke-rc.d). Only install our policy when none exists, and
# remove it afterwards.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# installed by hack/install-prometheus.sh for the duration of apt-get install\nexit 101\n' \
    | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 0755 "$POLICY"
  OWN_POLICY=1
fi
cleanup() {
  if [ "$OWN_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or do not know the package yet.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  $SUDO apt-get update -q
fi
# A stale package list can name a version the mirror no longer has: refresh once and retry.
if ! $SUDO apt-get install -y -q --no-install-recommends prometheus; then
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends prometheus
fi

# Belt and braces: if a service manager started Prometheus anyway, stop it (the tests need no system
# instance, and it would hold port 9090).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
  $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

echo "install-prometheus: installed $(promtool --version 2>&1 | head -n1)"
