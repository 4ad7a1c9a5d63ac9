"""The Kubernetes versions the chart claims (docs/kubernetes-versions.md), on whichever server this runs on.

`make test` runs the kwok group twice: on the newest tested Kubernetes (KUBE_VERSION, cluster `gptoss`)
and on the oldest the chart claims (KUBE_VERSION_OLDEST, cluster `gptoss-oldest`). Each test reads the
server's version and expects accordingly:

- the server runs one of the two tested minors, inside the chart's `kubeVersion`;
- the HPA `behavior.tolerance` field: a 1.34 server drops it (feature gate HPAConfigurableTolerance off),
  1.35 and later keep it; the operator detects which at start (a dry-run probe), logs it once, builds its
  HPAs to match and applies each once (not on every reconcile), and where the CR asks for a tolerance the
  server ignores, ScalingActive says so;
- the CRD's `selectableFields` (GA in 1.32) answer a field selector on `spec.model`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLUSTER_DIR, Kubectl, wait_until
from operator_process import OperatorProcess, condition, get_cr, load_sample

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "gptossdeployments.gptoss.io.yaml"
CHART_FILE = REPO / "charts" / "gpt-oss-operator" / "Chart.yaml"
HPA_TOLERANCE_MINOR = 35  # HPAConfigurableTolerance: beta and on by default from 1.35 (alpha, off, in 1.33-1.34)
TOLERANCE = 0.2  # not Kubernetes' default (0.1): a server that ignores it changes the HPA's behaviour
RECONCILES_TO_WATCH = 4  # resyncs after the HPA exists, during which it must not be applied again


def pinned_versions() -> dict[str, str]:
    lines = (CLUSTER_DIR / "versions.env").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"^KUBE_VERSION\w*=", line))


def minor(version: str) -> tuple[int, int]:
    match = re.match(r"^v?(\d+)\.(\d+)", version)
    assert match, version
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def server_version(kubectl: Kubectl) -> str:
    return str(kubectl.json("version")["serverVersion"]["gitVersion"])


@pytest.fixture(scope="module")
def keeps_tolerance(server_version: str) -> bool:
    """What a server of this version does with default feature gates (the local clusters keep the defaults)."""
    return minor(server_version) >= (1, HPA_TOLERANCE_MINOR)


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-e2e-operator", "-f", str(CRD_FILE))
    kubectl.wait("crd/gptossdeployments.gptoss.io", "condition=Established", 60)


@pytest.fixture
def operator(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log", resync_seconds=1.0).start()
    yield process
    code = process.stop()
    print(f"--- operator log ({process.log_path}), exit {code} ---\n{process.logs()}")


def hpa_cr(name: str) -> dict[str, Any]:
    cr = load_sample("gpt-oss-20b.yaml")
    cr["metadata"]["name"] = name
    cr["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "hpa",
        "minReplicas": 1,
        "maxReplicas": 3,
        "tolerance": TOLERANCE,
        "targets": {"requestsWaitingPerReplica": 4},
    }
    return cr


def hpas_of(kubectl_ns: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", "horizontalpodautoscalers", "-l", f"gptoss.io/deployment={name}")["items"])


def hpa_applies(operator: OperatorProcess) -> int:
    """How often the operator applied an HPA (its `reconciled ...: applied [...]` log lines)."""
    text = operator.log_path.read_text(errors="replace") if operator.log_path.exists() else ""
    return sum(1 for line in text.splitlines() if "applied [" in line and "HorizontalPodAutoscaler/" in line)


# ------------------------------------------------------------------------------------------- versions
def test_the_server_is_a_tested_version_the_chart_claims(server_version: str) -> None:
    pinned = pinned_versions()  # minors, not patches: e2e/kind runs any patch of the newest minor
    assert minor(server_version) in {minor(pinned["KUBE_VERSION"]), minor(pinned["KUBE_VERSION_OLDEST"])}, pinned
    floor = yaml.safe_load(CHART_FILE.read_text(encoding="utf-8"))["kubeVersion"]
    match = re.fullmatch(r">=(\d+)\.(\d+)\.0-0", floor)
    assert match, floor
    assert minor(server_version) >= (int(match.group(1)), int(match.group(2)))


def test_the_server_keeps_the_hpa_tolerance_only_from_1_35(
    kubectl_ns: Kubectl, namespace: str, keeps_tolerance: bool
) -> None:
    """The premise of the detection, straight from the API server: a dry-run HPA with a tolerance."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
            "maxReplicas": 2,
            "behavior": {"scaleUp": {"tolerance": "50m"}},
        },
    }
    stored = json.loads(
        kubectl_ns.run("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(hpa)).stdout
    )
    assert ("tolerance" in stored["spec"]["behavior"]["scaleUp"]) is keeps_tolerance


# ------------------------------------------------------------------------------------ the operator
def test_the_operator_detects_the_tolerance_and_applies_the_hpa_once(
    kubectl_ns: Kubectl, namespace: str, operator: OperatorProcess, server_version: str, keeps_tolerance: bool
) -> None:
    detected = "behavior tolerance served" if keeps_tolerance else "behavior tolerance NOT served"
    wait_until(lambda: detected in operator.logs(), timeout_s=60, what=f"the operator to log '{detected}'")
    assert f"Kubernetes {server_version}" in operator.logs()

    kubectl_ns.apply(hpa_cr("scaled"))

    def dump() -> str:
        return json.dumps(hpas_of(kubectl_ns, "scaled"), indent=2) + "\n" + operator.logs(60)

    wait_until(lambda: len(hpas_of(kubectl_ns, "scaled")) == 1, timeout_s=120, what="the HPA\n" + dump())
    behavior = hpas_of(kubectl_ns, "scaled")[0]["spec"]["behavior"]
    if keeps_tolerance:
        assert behavior["scaleUp"]["tolerance"] == behavior["scaleDown"]["tolerance"] == "200m", dump()
    else:
        assert "tolerance" not in behavior["scaleUp"] and "tolerance" not in behavior["scaleDown"], dump()

    # Applied once: later reconciles (a resync every second) find the live HPA as desired.
    wait_until(lambda: hpa_applies(operator) >= 1, timeout_s=60, what="the operator's log of the HPA's apply")
    counter = "gptoss_operator_reconciles_total"
    seen = operator.counter(counter, namespace=namespace)  # its one CR
    wait_until(
        lambda: operator.counter(counter, namespace=namespace) >= seen + RECONCILES_TO_WATCH,
        timeout_s=120,
        what=f"{RECONCILES_TO_WATCH} more reconciles",
    )
    assert hpa_applies(operator) == 1, operator.logs(80)


def test_scaling_active_says_when_the_server_ignores_the_tolerance(
    kubectl_ns: Kubectl, operator: OperatorProcess, keeps_tolerance: bool
) -> None:
    kubectl_ns.apply(hpa_cr("words"))

    def active() -> dict[str, Any]:
        return condition(get_cr(kubectl_ns, "words"), "ScalingActive")

    wait_until(lambda: active().get("reason") == "HorizontalPodAutoscaler", timeout_s=120, what="ScalingActive")
    message = str(active()["message"])
    assert active()["status"] == "True"
    if keeps_tolerance:
        assert "tolerance" not in message, message
    else:
        assert f"spec.autoscaling.tolerance {TOLERANCE:g} is not applied" in message, message
        assert "HPAConfigurableTolerance" in message, message


# ---------------------------------------------------------------------------------------- the CRD
def test_selectable_fields_answer_a_field_selector_on_the_model(kubectl_ns: Kubectl, crd: None) -> None:
    small, large = load_sample("gpt-oss-20b.yaml"), load_sample("gpt-oss-20b.yaml")
    small["metadata"]["name"], large["metadata"]["name"] = "small", "large"
    large["spec"]["model"] = "gpt-oss-120b"
    kubectl_ns.apply([small, large])
    found = kubectl_ns.json("get", "gptoss", "--field-selector", "spec.model=gpt-oss-120b")["items"]
    assert [item["metadata"]["name"] for item in found] == ["large"]
