"""Run the operator (`gptoss-operator run`) as a child process against a kubeconfig, for e2e tests.

Each test starts its own operator watching only the test's namespace, on free ports, and stops it with
SIGTERM (or SIGKILL, to simulate a crash). Its output goes to a log file that failing tests print.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 60
RESYNC_SECONDS = 3.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a local test URL
            return str(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


class OperatorProcess:
    """One operator process; `start()` returns once its health endpoint answers."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: list[str],
        log_path: Path,
        *,
        resync_seconds: float = RESYNC_SECONDS,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.extra_env = extra_env or {}
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPTOSS_")}
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                "GPTOSS_NAMESPACES": ",".join(self.namespaces),
                "GPTOSS_METRICS_PORT": str(self.metrics_port),
                "GPTOSS_HEALTH_PORT": str(self.health_port),
                "GPTOSS_RESYNC_SECONDS": str(self.resync_seconds),
                "GPTOSS_LOG_FORMAT": "text",
                "GPTOSS_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            }
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gptoss_operator.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while http_get(f"http://127.0.0.1:{self.health_port}/healthz") is None:
            if self.process.poll() is not None:
                pytest.fail(f"the operator exited with {self.process.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the operator did not become healthy in {STARTUP_TIMEOUT_S}s:\n{self.logs()}")
            time.sleep(0.2)
        return self

    def stop(self, timeout_s: float = 20) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def logs(self, tail: int = 200) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics") or ""

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(rf"^{re.escape(name)}\{{(.*)\}} ([0-9.e+-]+)$", line)
            if not match:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
