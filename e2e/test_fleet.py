"""The operator at fleet scale on the real control plane (issue 12): leader election and a reduced bench.

- Two operator processes share a Lease: one leads, the other stands by and starts nothing. SIGKILL the
  leader and the standby takes over within the lease duration (plus its start-up) and reconciles a CR
  created right then; no child exists twice.
- `bench/scale.py` with a handful of CRs, as a behaviour test: every CR gets its children, a steady-state
  reconcile makes no LIST, an idle resync writes nothing, new CRs and spec changes in the idle fleet get
  their children, the standby takes over. Its timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Kubectl, wait_until
from operator_process import OperatorProcess, get_cr, load_sample

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "gptossdeployments.gptoss.io.yaml"
LEASE = "gptoss-e2e-leader"
LEASE_SECONDS = 6
RENEW_SECONDS = 2
# A standby looks every 2 s; once it leads it syncs its caches before reconciling.
TAKEOVER_BOUND_S = LEASE_SECONDS + 2 + 20
CHILD_KINDS = "deployments,services,configmaps,persistentvolumeclaims,jobs,poddisruptionbudgets,networkpolicies"


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-e2e-fleet", "-f", str(CRD_FILE))
    kubectl.wait("crd/gptossdeployments.gptoss.io", "condition=Established", 60)


def elected_operator(kubeconfig: Path, namespace: str, log_dir: Path, identity: str) -> OperatorProcess:
    env = {
        "GPTOSS_LEADER_ELECTION": "true",
        "GPTOSS_LEADER_ELECTION_NAMESPACE": namespace,
        "GPTOSS_LEADER_ELECTION_LEASE_NAME": LEASE,
        "GPTOSS_LEADER_ELECTION_LEASE_SECONDS": str(LEASE_SECONDS),
        "GPTOSS_LEADER_ELECTION_RENEW_SECONDS": str(RENEW_SECONDS),
        "GPTOSS_POD_NAME": identity,
    }
    return OperatorProcess(kubeconfig, [namespace], log_dir / f"{identity}.log", extra_env=env)


@pytest.fixture
def pair(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    operators = [elected_operator(kubeconfig, namespace, tmp_path, name) for name in ("op-a", "op-b")]
    try:
        for operator in operators:
            operator.start()  # a standby answers /healthz too
        yield operators
    finally:
        for operator in operators:
            operator.stop()


def holder(kubectl_ns: Kubectl) -> str:
    lease = kubectl_ns.json("get", "lease", LEASE)
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def reconciled(kubectl_ns: Kubectl, name: str) -> bool:
    status = get_cr(kubectl_ns, name).get("status") or {}
    return any(c.get("type") == "ChildrenApplied" and c.get("status") == "True" for c in status.get("conditions") or [])


def child_names(kubectl_ns: Kubectl) -> list[str]:
    items = kubectl_ns.json("get", CHILD_KINDS, "-l", "gptoss.io/deployment")["items"]
    return [f"{item['kind']}/{item['metadata']['name']}" for item in items]


def test_killing_the_leader_hands_over_to_the_standby(kubectl_ns: Kubectl, pair: list[OperatorProcess]) -> None:
    wait_until(lambda: holder(kubectl_ns) in ("op-a", "op-b"), timeout_s=30, what="a leader")
    leader = next(o for o in pair if o.log_path.stem == holder(kubectl_ns))
    standby = next(o for o in pair if o is not leader)
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml") | {"metadata": {"name": "before"}})
    wait_until(lambda: reconciled(kubectl_ns, "before"), timeout_s=60, what="the leader reconciling")
    assert "became the leader" not in standby.logs()  # standbys start nothing

    leader.kill()
    kubectl_ns.apply(load_sample("gpt-oss-20b.yaml") | {"metadata": {"name": "after"}})
    wait_until(lambda: holder(kubectl_ns) == standby.log_path.stem, timeout_s=TAKEOVER_BOUND_S, what="a takeover")
    wait_until(lambda: reconciled(kubectl_ns, "after"), timeout_s=TAKEOVER_BOUND_S, what="the new leader reconciling")
    names = child_names(kubectl_ns)
    assert len(names) == len(set(names))  # no child exists twice
    assert any(name.startswith("Deployment/after") for name in names)


def test_reduced_scale_bench_behaves(kubeconfig: Path, crd: None, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import scale

    scale.KUBECONFIG = kubeconfig  # the cluster this session tests
    args = argparse.Namespace(
        crs=6,
        nodes=3,
        gpus_per_node=8,
        replicas=2,
        noise_pods=40,
        rate=3.0,
        resync_seconds=5.0,
        settle=3.0,
        steady_crs=2,
        steady_updates=2,
        steady_gap=0.5,
        steady_timeout=60.0,
        timeout=240.0,
        keep=False,
        json=False,
    )
    figures = scale.run_bench(args)
    with capsys.disabled():
        print(f"\nreduced scale bench: {figures}")
    assert figures.crs == 6 and figures.pods > 0
    assert figures.lists_per_reconcile == 0
    assert figures.writes_per_idle_resync == 0
    assert figures.duplicated_children == 0
    assert figures.steady_samples == 4  # every new CR and spec change of the idle fleet got its children applied
    assert figures.failover_s > 0  # the standby reconciled a CR after the leader died
