"""Fixtures of the monitoring tests: the Prometheus binaries (skipped locally, required in CI)."""

from __future__ import annotations

import pytest
from monitoring_env import require_binary


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return require_binary("prometheus")
