"""Paths and binaries of the monitoring tests (imported by the test modules and conftest)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITORING_DIR = REPO_ROOT / "monitoring"
RULES_FILE = MONITORING_DIR / "rules" / "gpt-oss.rules.yaml"
RULE_TESTS_DIR = MONITORING_DIR / "tests"
RELABEL_FILE = MONITORING_DIR / "podmonitor_relabel.yaml"
CHART_DIR = REPO_ROOT / "charts" / "gpt-oss-operator"
DASHBOARDS_DIR = CHART_DIR / "files" / "dashboards"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"
INSTALL_HINT = "run hack/install-prometheus.sh (installs Debian's prometheus package)"


def require_binary(name: str) -> str:
    """The path of a Prometheus binary; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the monitoring tests must run)")
    pytest.skip(message)
