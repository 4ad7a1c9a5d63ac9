"""hack/install-prometheus.sh: valid shell, idempotent, and leaves no Prometheus running."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from monitoring_env import REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "install-prometheus.sh"


def test_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_second_run_does_nothing_and_no_service_is_left_running(promtool: str) -> None:
    if not shutil.which("prometheus"):
        pytest.skip("prometheus is not installed")
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stdout
    # Debian's service runs as the user `prometheus`; the tests' own Prometheus runs as the test's user.
    service = subprocess.run(
        ["pgrep", "-u", "prometheus", "-x", "prometheus"], capture_output=True, text=True, check=False
    )
    assert service.stdout.split() == [], "a system Prometheus service is running"
