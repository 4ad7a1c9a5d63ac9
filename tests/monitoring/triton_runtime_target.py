"""A real inference pod on CPU: `gptoss-runtime serve` (tritonserver + the gpt_oss model + the reference
engine) on a tiny random checkpoint, under a small bounded load over Triton's HTTP streaming endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from prometheus_harness import free_port, wait_for

from gptoss_runtime import contract

READY_TIMEOUT_S = 120.0
CONCURRENCY = 2
MAX_REQUESTS = 600  # bounds the load even if a test hangs; ~0.3 s per request on the tiny model
PAUSE_S = 0.1


class ReferenceTriton:
    def __init__(self, workdir: Path) -> None:
        from gptoss_runtime.checkpoint import make_tiny_checkpoint

        weights = make_tiny_checkpoint(workdir / "weights")
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = workdir / "server.log"
        command = [
            sys.executable,
            "-c",
            "from gptoss_runtime.cli import main; main()",
            "serve",
            f"--weights={weights}",
            "--engine=reference",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--model-repository={workdir / 'model-repository'}",
            "--exit-timeout=5",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.url = f"http://127.0.0.1:{self.http_port}/v2/models/{contract.TRITON_MODEL_NAME}"
        try:
            wait_for("the gpt_oss model to be ready", self._ready, deadline_s=READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.load = BoundedLoad(f"{self.url}/generate_stream")

    def _ready(self) -> bool | None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"tritonserver exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}"
            )
        with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as response:
            return True if response.status == 200 else None

    def stop(self) -> None:
        if hasattr(self, "load"):
            self.load.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        from gptoss_runtime.launcher import shm_prefix

        for path in Path("/dev/shm").glob(f"{shm_prefix(self.process.pid)}*"):
            path.unlink(missing_ok=True)


class BoundedLoad:
    """A few concurrent streaming requests, one after another, at most MAX_REQUESTS in all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopped = threading.Event()
        self.budget = threading.Semaphore(MAX_REQUESTS)
        self.lock = threading.Lock()
        self.completed = 0
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._worker, args=(i,), name=f"load-{i}", daemon=True) for i in range(CONCURRENCY)
        ]
        for thread in self.threads:
            thread.start()

    def _worker(self, index: int) -> None:
        step = 0
        while not self.stopped.is_set() and self.budget.acquire(blocking=False):
            step += 1
            body = json.dumps({"text_input": f"Request {index}-{step}: say hello", "max_tokens": 8 + step % 17})
            request = urllib.request.Request(self.url, data=body.encode(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    response.read()
                with self.lock:
                    self.completed += 1
            except OSError as error:
                with self.lock:
                    self.errors.append(str(error))
            self.stopped.wait(PAUSE_S)

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=70)
