"""The chart's `kubeVersion` is what the e2e suite tests: its floor is KUBE_VERSION_OLDEST's minor (the second,
oldest-version cluster), and the newest tested version (KUBE_VERSION) satisfies it (docs/kubernetes-versions.md).

Carries the `cluster` marker like test_chart_render (it needs the helm the cluster tooling builds, no API server).
"""

from __future__ import annotations

import re

import pytest
import yaml
from test_chart_render import CHART, RELEASE, REPO, helm

pytestmark = pytest.mark.cluster


def pinned(name: str) -> str:
    versions = (REPO / "e2e" / "cluster" / "versions.env").read_text(encoding="utf-8")
    match = re.search(rf"^{name}=(v\d+\.\d+\.\d+)$", versions, re.MULTILINE)
    assert match, f"versions.env pins no {name}"
    return match.group(1)


def minor(version: str) -> tuple[int, int]:
    major, minor_, *_ = version.lstrip("v").split(".")
    return int(major), int(minor_)


def test_the_claimed_floor_is_the_oldest_tested_minor() -> None:
    claimed = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["kubeVersion"]
    oldest = minor(pinned("KUBE_VERSION_OLDEST"))
    assert claimed == f">={oldest[0]}.{oldest[1]}.0-0"
    assert minor(pinned("KUBE_VERSION")) >= oldest


@pytest.mark.parametrize("name", ["KUBE_VERSION_OLDEST", "KUBE_VERSION"])
def test_the_chart_installs_on_every_tested_version(name: str) -> None:
    helm("template", RELEASE, str(CHART), "--kube-version", pinned(name))


def test_an_older_minor_is_refused_by_helm() -> None:
    major, oldest = minor(pinned("KUBE_VERSION_OLDEST"))
    result = helm("template", RELEASE, str(CHART), "--kube-version", f"v{major}.{oldest - 1}.9", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "Kubernetes version" in result.stderr, result.stderr
