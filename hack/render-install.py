#!/usr/bin/env python3
"""Render manifests/install.yaml (everything in one file) from the Helm chart with its default values.

Usage: hack/render-install.py [--check]   (`make crds` runs it after regenerating the CRD)
--check exits 1 when the checked-in file differs from what the chart renders.

Needs the project's helm: $HELM, else the pinned build (~/.cache/gpt-oss-operator/bin/helm-<version>/helm,
made by `e2e/cluster/build.sh helm`), else helm on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
CHART: Final = REPO / "charts" / "gpt-oss-operator"
INSTALL_MANIFEST: Final = REPO / "manifests" / "install.yaml"
CACHE: Final = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
RELEASE: Final = "gpt-oss-operator"
RELEASE_NAMESPACE: Final = "gpt-oss-system"
# Offline renders would otherwise assume helm's old default; this is the local control plane's version.
KUBE_VERSION: Final = "v1.36.0"
REGENERATE_COMMAND: Final = "make crds  (or: hack/render-install.py)"

HEADER: Final = f"""\
# gpt-oss-operator: everything in one file, rendered from the Helm chart with its default values.
#   kubectl apply --server-side -f manifests/install.yaml
# GENERATED - do not edit. Regenerate: {REGENERATE_COMMAND}
# (helm template {RELEASE} charts/gpt-oss-operator --namespace {RELEASE_NAMESPACE})
---
apiVersion: v1
kind: Namespace
metadata:
  name: {RELEASE_NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted
"""


class HelmNotFoundError(RuntimeError):
    """No helm binary to render the chart with."""


def helm_binary() -> Path:
    """$HELM, the pinned build from e2e/cluster/versions.env, or helm on PATH."""
    if os.environ.get("HELM"):
        configured = Path(os.environ["HELM"])
        if not configured.is_file():
            raise HelmNotFoundError(f"HELM={configured} is not a file: point it at a helm binary or unset it")
        return configured
    versions = (REPO / "e2e" / "cluster" / "versions.env").read_text(encoding="utf-8")
    match = re.search(r"^HELM_VERSION=(\S+)", versions, re.MULTILINE)
    if match:
        pinned = CACHE / "bin" / f"helm-{match.group(1)}" / "helm"
        if pinned.exists():
            return pinned
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    raise HelmNotFoundError(
        "helm is not built yet: run `e2e/cluster/build.sh helm` (or `make e2e-tools`), or set HELM=/path/to/helm"
    )


def render(helm: Path) -> str:
    """The chart's default install as one manifest, Namespace first."""
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    argv += ["--kube-version", KUBE_VERSION]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed ({' '.join(argv)}):\n{result.stderr.strip()}")
    return HEADER + result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/render-install.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when manifests/install.yaml drifted")
    args = parser.parse_args(argv)
    try:
        expected = render(helm_binary())
    except RuntimeError as error:  # HelmNotFoundError included
        print(f"render-install: {error}", file=sys.stderr)
        return 2
    if args.check:
        current = INSTALL_MANIFEST.read_text(encoding="utf-8") if INSTALL_MANIFEST.exists() else ""
        if current != expected:
            drifted = INSTALL_MANIFEST.relative_to(REPO)
            print(f"{drifted} drifted from the chart; run: {REGENERATE_COMMAND}", file=sys.stderr)
            return 1
        return 0
    INSTALL_MANIFEST.write_text(expected, encoding="utf-8")
    print(f"wrote {INSTALL_MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
