"""Runs a real Prometheus (Debian's binary) on a free loopback port for one test module."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = 60.0, every_s: float = 0.25) -> T:
    """Poll `probe` until it returns something other than None, or fail naming `what`."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (OSError, urllib.error.URLError, ValueError) as error:
            last_error, result = error, None
        if result is not None:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"gave up after {deadline_s}s waiting for {what} (last error: {last_error})")


class Prometheus:
    """`prometheus` with a given config, its TSDB in `workdir`; stop() kills it and waits."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_file = workdir / "prometheus.log"
        self._log = self.log_file.open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for("Prometheus to be ready", self._ready, deadline_s=60)
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}: {self.log_file.read_text()}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
            return True if response.status == 200 else None

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise ValueError(f"Prometheus API error for {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
