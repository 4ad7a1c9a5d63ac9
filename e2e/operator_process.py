"""Run the operator (`gptoss-operator run`) as a child process against a kubeconfig, for e2e tests.

Each test starts its own operator watching only the test's namespace, on free ports, and stops it with
SIGTERM (or SIGKILL, to simulate a crash). Its output goes to a log file that failing tests print.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Kubectl, wait_until

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "manifests" / "samples"
STARTUP_TIMEOUT_S = 60
READY_TIMEOUT_S = 180
RESYNC_SECONDS = 3.0
KWOK_NODE = {"type": "kwok"}  # every simulated node carries it
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
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
        env = operator_environment(
            self.kubeconfig,
            self.namespaces,
            metrics_port=self.metrics_port,
            health_port=self.health_port,
            resync_seconds=self.resync_seconds,
            extra_env=self.extra_env,
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


def volume_name(namespace: str, claim: str) -> str:
    return "gptoss-e2e-" + hashlib.sha256(f"{namespace}/{claim}".encode()).hexdigest()[:12]


class Volumes:
    """Binds pending claims of a namespace to static PersistentVolumes (no provisioner in the cluster)."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace

    def bind_pending(self) -> None:
        claims = self.kubectl.json("get", "pvc", "--namespace", self.namespace)["items"]
        for claim in claims:
            if claim.get("status", {}).get("phase") == "Bound" or claim["spec"].get("volumeName"):
                continue
            name = claim["metadata"]["name"]
            self.kubectl.apply(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": volume_name(self.namespace, name),
                        "labels": {"gptoss.dev/e2e": self.namespace},
                    },
                    "spec": {
                        "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                        "accessModes": claim["spec"]["accessModes"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "claimRef": {"namespace": self.namespace, "name": name},
                        "hostPath": {"path": f"/tmp/gptoss-e2e/{self.namespace}/{name}"},
                    },
                }
            )

    def delete_all(self) -> None:
        self.kubectl("delete", "pv", "-l", f"gptoss.dev/e2e={self.namespace}", "--wait=false", "--ignore-not-found")


def load_sample(name: str, **spec: Any) -> dict[str, Any]:
    cr: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    cr["spec"].update(spec)
    return cr


def get_cr(kubectl_ns: Kubectl, name: str) -> dict[str, Any]:
    return dict(kubectl_ns.json("get", "gptoss", name))


def condition(cr: dict[str, Any], type_: str) -> dict[str, Any]:
    # A new object's status may hold `conditions: null` (a CRD just created does).
    for cond in (cr.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_for_condition(
    kubectl_ns: Kubectl,
    name: str,
    type_: str,
    status: str,
    *,
    volumes: Volumes | None = None,
    reason: str | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    operator: OperatorProcess | None = None,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        if volumes is not None:
            volumes.bind_pending()
        seen.update(get_cr(kubectl_ns, name))
        cond = condition(seen, type_)
        current = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        return bool(current and cond.get("observedGeneration") == seen["metadata"]["generation"])

    try:
        wait_until(check, timeout_s=timeout_s, interval_s=1.0, what=f"{name} {type_}={status} {reason or ''}")
    except BaseException:
        print(json.dumps(seen.get("status", {}), indent=2))
        if operator is not None:
            print(operator.logs())
        raise
    return seen


# ------------------------------------------------------------------------------------------------------
# The operator as the chart's ServiceAccount, in a long-lived process (`make demo`).
#
# Nothing below uses pytest: the demo script imports it too. The identity is a kubeconfig holding a
# token of the chart's ServiceAccount (`kubectl create token`), so the process has exactly the chart's
# RBAC. A detached operator outlives the command that started it; a JSON state file next to its pid
# file lets a later command find it again, reuse it or stop it.


START_MARKER = "--- gpt-oss-operator"  # the line a DetachedOperator writes to its log before each start


class OperatorStartError(RuntimeError):
    """The operator process exited or never answered its health endpoint; the message has its log tail."""


@dataclass(frozen=True)
class TokenKubeconfig:
    """A kubeconfig that authenticates as one ServiceAccount with a bound token."""

    path: Path
    username: str  # system:serviceaccount:<namespace>:<name>
    expires_at: float  # Unix time, read from the token's `exp` claim
    cluster: str  # the API server and a hash of its CA (changes when the cluster is recreated)


VIEW_CURRENT_CLUSTER = ("config", "view", "--raw", "--minify", "--flatten", "-o", "json")


def cluster_fingerprint(kubectl_binary: Path, kubeconfig: Path) -> tuple[str, dict[str, Any]]:
    """(`<server> ca:<sha256 prefix>`, the cluster entry with its CA inlined) of a kubeconfig's current context."""
    result = subprocess.run(
        [str(kubectl_binary), "--kubeconfig", str(kubeconfig), *VIEW_CURRENT_CLUSTER],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise OperatorStartError(f"cannot read the kubeconfig {kubeconfig}: {result.stderr.strip()}")
    cluster = dict(json.loads(result.stdout)["clusters"][0]["cluster"])
    ca = str(cluster.get("certificate-authority-data", ""))
    return f"{cluster['server']} ca:{hashlib.sha256(ca.encode()).hexdigest()[:16]}", cluster


def token_expiry(token: str) -> float:
    """The `exp` claim of a JWT (not verified: the API server does that), as Unix time."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError) as error:
        raise OperatorStartError(f"`kubectl create token` returned no JWT with an exp claim ({error})") from None


def service_account_kubeconfig(
    kubectl_binary: Path,
    admin_kubeconfig: Path,
    namespace: str,
    account: str,
    path: Path,
    *,
    duration: str = "24h",
) -> TokenKubeconfig:
    """Mint a token for `namespace/account` with the admin kubeconfig and write a kubeconfig (mode 0600)
    for the same API server that authenticates with it only. The token never appears in any output."""
    fingerprint, cluster = cluster_fingerprint(kubectl_binary, admin_kubeconfig)
    create_token = ["create", "token", account, "--namespace", namespace, f"--duration={duration}"]
    result = subprocess.run(
        [str(kubectl_binary), "--kubeconfig", str(admin_kubeconfig), *create_token],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise OperatorStartError(
            f"kubectl create token {account} --namespace {namespace} failed: {result.stderr.strip()}"
            " (is the chart installed? its ServiceAccount must exist)"
        )
    token = result.stdout.strip()
    username = f"system:serviceaccount:{namespace}:{account}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": username, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "cluster", "user": username, "namespace": namespace}}],
        "current-context": account,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return TokenKubeconfig(path, username, token_expiry(token), fingerprint)


def operator_environment(
    kubeconfig: Path,
    namespaces: list[str],
    *,
    metrics_port: int,
    health_port: int,
    resync_seconds: float,
    extra_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of `gptoss-operator run`: ours without GPTOSS_* settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTOSS_")}
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "GPTOSS_NAMESPACES": ",".join(namespaces),
            "GPTOSS_METRICS_PORT": str(metrics_port),
            "GPTOSS_HEALTH_PORT": str(health_port),
            "GPTOSS_RESYNC_SECONDS": str(resync_seconds),
            "GPTOSS_LOG_FORMAT": "text",
            "GPTOSS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # These tests play their pods on kwok's nodes, whose Job pods kwok completes at once; the cluster's
            # real node (which would really pull and run the images) is for the real-pod suite only.
            "GPTOSS_SERVER_NODE_SELECTOR": json.dumps(KWOK_NODE),
            "GPTOSS_FETCH_NODE_SELECTOR": json.dumps(KWOK_NODE),
            "GPTOSS_FETCH_TOLERATIONS": json.dumps([KWOK_TOLERATION]),
            **(extra_env or {}),
        }
    )
    return env


@dataclass(frozen=True)
class OperatorState:
    """What a detached operator's starter recorded about it (the state file, JSON)."""

    pid: int
    health_port: int
    metrics_port: int
    namespaces: list[str]
    username: str
    cluster: str
    token_expires_at: float
    started_at: float

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


def _is_operator_pid(pid: int) -> bool:
    """True when `pid` is alive and runs the operator (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"gptoss_operator" in cmdline or b"gptoss-operator" in cmdline


class DetachedOperator:
    """`gptoss-operator run` in its own session, with pid, state, log and kubeconfig files in `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pid_file = state_dir / "operator.pid"
        self.state_file = state_dir / "operator.json"
        self.log_path = state_dir / "operator.log"
        self.kubeconfig = state_dir / "operator.kubeconfig"

    def state(self) -> OperatorState | None:
        """The recorded state of a live operator process, or None (no record, or the process is gone)."""
        try:
            state = OperatorState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return state if _is_operator_pid(state.pid) else None

    def healthy(self, state: OperatorState) -> bool:
        return http_get(f"http://127.0.0.1:{state.health_port}/healthz") is not None

    def start(
        self,
        identity: TokenKubeconfig,
        namespaces: list[str],
        *,
        resync_seconds: float = 60.0,
        timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> OperatorState:
        """Start a new process (stop the old one first); return once /healthz answers."""
        self._terminate()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        metrics_port, health_port = free_port(), free_port()
        env = operator_environment(
            identity.path, namespaces, metrics_port=metrics_port, health_port=health_port, resync_seconds=resync_seconds
        )
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            log.write(f"\n{START_MARKER} {stamp}: started as {identity.username}\n".encode())
            log.flush()
            process = subprocess.Popen(
                [sys.executable, "-m", "gptoss_operator.cli", "run"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the demo's shell and its Ctrl-C
            )
        state = OperatorState(
            pid=process.pid,
            health_port=health_port,
            metrics_port=metrics_port,
            namespaces=namespaces,
            username=identity.username,
            cluster=identity.cluster,
            token_expires_at=identity.expires_at,
            started_at=time.time(),
        )
        self.pid_file.write_text(f"{process.pid}\n")
        self.state_file.write_text(json.dumps(dataclasses.asdict(state), indent=2) + "\n")
        deadline = time.monotonic() + timeout_s
        while not self.healthy(state):
            if process.poll() is not None:
                self._forget()
                raise OperatorStartError(f"the operator exited with {process.returncode}:\n{self.logs(40)}")
            if time.monotonic() > deadline:
                self._terminate()
                raise OperatorStartError(f"the operator did not become healthy in {timeout_s:.0f}s:\n{self.logs(40)}")
            time.sleep(0.2)
        return state

    def stop(self, timeout_s: float = 20) -> bool:
        """SIGTERM the recorded process (SIGKILL after `timeout_s`) and remove its files but the log.
        Returns whether a process was stopped."""
        stopped = self._terminate(timeout_s)
        self.kubeconfig.unlink(missing_ok=True)  # it holds the token
        return stopped

    def _terminate(self, timeout_s: float = 20) -> bool:
        state = self.state()
        if state is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout_s
                while _is_operator_pid(state.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if _is_operator_pid(state.pid):
                    os.kill(state.pid, signal.SIGKILL)
        self._forget()
        return state is not None

    def _forget(self) -> None:
        for path in (self.pid_file, self.state_file):
            path.unlink(missing_ok=True)

    def logs(self, tail: int = 200) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def logs_since_start(self) -> str:
        """The log of the latest process only (the file keeps earlier runs above it)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[text.rfind(START_MARKER) :] if START_MARKER in text else text
