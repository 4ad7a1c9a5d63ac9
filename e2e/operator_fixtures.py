"""Fixtures of the kwok scenarios that run the operator as a local process (e2e/operator_process.py).

e2e/conftest.py imports them, so every e2e module has them: `crd` (the CRD applied and Established, once
per module), `operator` (the operator watching only the test's namespace, its log printed at teardown so
pytest shows it when the test fails) and `volumes` (static PersistentVolumes bound as a provisioner would,
since the kwok cluster has none). A module that needs another operator (other settings, several starts)
defines its own `operator` fixture with `running_operator` or `stop_and_show`; a module's own fixture of
the same name wins over these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# A module import, not names: operator_process imports conftest, which imports this module, so when a
# script (e2e/demo.py) imports operator_process first, its names do not exist yet at this point.
import operator_process
import pytest
from conftest import Kubectl

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "gptossdeployments.gptoss.io.yaml"
CRD_FIELD_MANAGER = "gptoss-e2e-operator"


def stop_and_show(process: operator_process.OperatorProcess) -> None:
    """Stop the operator and print its log (pytest shows a failed test's output)."""
    exit_code = process.stop()
    print(f"--- operator log ({process.log_path}), exit {exit_code} ---\n{process.logs()}")


@contextlib.contextmanager
def running_operator(
    kubeconfig: Path, namespace: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[operator_process.OperatorProcess]:
    """The operator watching `namespace` (with `env` added to its settings) for the duration of the block."""
    process = operator_process.OperatorProcess(kubeconfig, [namespace], log_path, extra_env=env).start()
    try:
        yield process
    finally:
        stop_and_show(process)


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={CRD_FIELD_MANAGER}", "-f", str(CRD_FILE))
    kubectl.wait("crd/gptossdeployments.gptoss.io", "condition=Established", 60)


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[operator_process.OperatorProcess]:
    """The operator watching the test's namespace, with the default settings."""
    with running_operator(kubeconfig, namespace, tmp_path / "operator.log") as process:
        yield process


@pytest.fixture
def volumes(kubectl: Kubectl, namespace: str) -> Iterator[operator_process.Volumes]:
    provided = operator_process.Volumes(kubectl, namespace)
    yield provided
    provided.delete_all()
