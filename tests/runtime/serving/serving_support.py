"""Running the real tritonserver (from the nvidia-pytriton wheel) and the gateway for the serving tests.

`start_server` starts `gptoss-runtime serve` as a subprocess on free ports and waits until Triton reports
the `gpt_oss` model ready (about two seconds). The launcher execs tritonserver, so the process started is
the server itself; `stop_cleanly` sends SIGTERM and checks that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gptoss_runtime.launcher import shm_prefix

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# The scripted engine paces its tokens so that a stream can be cancelled half-way.
SCRIPTED_TOKEN_DELAY_S = 0.002


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition()` until it is true (the servers offer no push notification to wait on)."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def runtime_command(*args: str) -> list[str]:
    """`gptoss-runtime ...` with this interpreter (the venv's python; no reliance on PATH)."""
    return [sys.executable, "-c", "from gptoss_runtime.cli import main; main()", *args]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    model_repository: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        return http_status(f"{self.http_url}/v2/models/gpt_oss/ready") == 200

    def stop_cleanly(self) -> None:
        """Stop, and check the stop was clean: exit 0, the model unloaded, nothing left behind."""
        pid = self.process.pid
        leftovers_before_cleanup: list[str] = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
            leftovers_before_cleanup = [f"stub {p}" for p in stub_processes(self.model_repository)]
            leftovers_before_cleanup += [str(path) for path in shm_files(pid)]
        exit_code = self.stop()
        assert exit_code == 0, f"tritonserver exited with {exit_code}:\n{self.log()[-3000:]}"
        assert leftovers_before_cleanup == [], f"left behind: {leftovers_before_cleanup}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Safety net for a server that died uncleanly: leave no stub process or /dev/shm file behind.
        for pid in stub_processes(self.model_repository):
            os.kill(pid, signal.SIGKILL)
        remove_shm_files(self.process.pid)
        return int(self.process.returncode)


def stub_processes(model_repository: Path) -> list[int]:
    """Python-backend stubs serving a model of this repository (their command line names it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in command and str(model_repository) in command:
            pids.append(int(proc.name))
    return pids


def shm_files(pid: int) -> list[Path]:
    return sorted(Path("/dev/shm").glob(f"{shm_prefix(pid)}*"))


def remove_shm_files(pid: int) -> None:
    for path in shm_files(pid):
        path.unlink(missing_ok=True)


def start_server(work_dir: Path, weights: Path, engine: str, *extra_args: str, wait: bool = True) -> ServerProcess:
    work_dir.mkdir(parents=True, exist_ok=True)
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    repository = work_dir / "model-repository"
    log_path = work_dir / "server.log"
    command = runtime_command(
        "serve",
        f"--weights={weights}",
        f"--engine={engine}",
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        f"--model-repository={repository}",
        "--exit-timeout=5",
        *extra_args,
    )
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
    server = ServerProcess(process, log_path, ports["http"], ports["grpc"], ports["metrics"], repository)
    if wait:
        wait_until(server.ready, READY_TIMEOUT_S, "the gpt_oss model to be ready")
    return server


@contextmanager
def running_gateway(server: ServerProcess, tiny_weights: Path, log_path: Path) -> Iterator[str]:
    """`gptoss-runtime gateway` in front of `server`, ready; yields its base URL."""
    port = free_port()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            runtime_command(
                "gateway",
                f"--triton-grpc={server.grpc_url}",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--weights={tiny_weights}",  # the model name comes from the config's gptoss_imitates
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/readyz") == 200, 30, "the gateway to be ready")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # the gateway prints its threads' stacks
            time.sleep(1)
            process.kill()
            process.wait()
            raise AssertionError(f"the gateway did not stop on SIGTERM:\n{log_path.read_text()[-6000:]}") from None
