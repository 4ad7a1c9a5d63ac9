"""The custom-metrics pipeline of the local cluster, for Python callers (benchmarks, tests, the demo).

    from e2e.metrics import pipeline          # or: import pipeline with e2e/metrics on sys.path
    pipeline.ensure_up()     # Prometheus + Prometheus Adapter serving custom.metrics.k8s.io (idempotent)
    ...                      # HorizontalPodAutoscalers with Pods metrics (gptoss_*) now work
    pipeline.ensure_down()   # unregister the API, stop both processes

Both run the shell scripts beside this file (up.sh, down.sh) and raise :class:`PipelineError` with the
script's output when one fails. No pytest here. Needs the local cluster with its real node
(e2e/cluster/up.sh); see e2e/metrics/README.md.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
UP_SCRIPT: Final = HERE / "up.sh"
DOWN_SCRIPT: Final = HERE / "down.sh"
BUILD_SCRIPT: Final = HERE / "build.sh"
# Defaults of env.sh (GPTOSS_PROMETHEUS_PORT overrides the port there and here).
PROMETHEUS_URL: Final = f"http://127.0.0.1:{os.environ.get('GPTOSS_PROMETHEUS_PORT', '19090')}"
CUSTOM_METRICS_API: Final = "/apis/custom.metrics.k8s.io/v1beta1"
# A cold adapter build takes minutes on 2 busy cores; starting takes seconds once built.
UP_TIMEOUT_S: Final = 1800
DOWN_TIMEOUT_S: Final = 120


class PipelineError(RuntimeError):
    """up.sh or down.sh failed; the message carries its output."""


def _run(script: Path, timeout_s: float, *args: str) -> str:
    try:
        result = subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise PipelineError(f"{script.name} did not finish within {timeout_s:.0f}s") from error
    if result.returncode != 0:
        raise PipelineError(
            f"{script.name} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result.stdout


def ensure_built() -> None:
    """Build Prometheus Adapter into the binary cache unless it is there (ensure_up does this too)."""
    _run(BUILD_SCRIPT, UP_TIMEOUT_S)


def ensure_up() -> None:
    """Start, or keep, Prometheus and the adapter and wait until custom.metrics.k8s.io is Available."""
    _run(UP_SCRIPT, UP_TIMEOUT_S)


def ensure_down() -> None:
    """Unregister custom.metrics.k8s.io, delete the pipeline's objects and stop both processes."""
    _run(DOWN_SCRIPT, DOWN_TIMEOUT_S)
