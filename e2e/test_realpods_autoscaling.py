"""Autoscaling on real load, on real pods: the operator's autoscaler and the HorizontalPodAutoscaler.

A reduced run of bench/autoscale_real.py: the operator installed in-cluster by the chart, one
GptOssDeployment per mode, a bounded load generator through its Service until the deployment scales up, then
idle until it scales back down. `hpa` mode reads the pods' metrics through the real custom metrics pipeline
(Prometheus from Debian, Prometheus Adapter with the chart's rules; e2e/metrics) and the controller manager's
HPA controller. The benchmark prints the figures; this test asserts only the behaviour.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import realpods
from conftest import Kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    module: ModuleType = realpods.load_module(REPO / "bench" / "autoscale_real.py", "bench_autoscale_real")
    return module


@pytest.fixture(scope="module")
def bench(kubeconfig: Path, kubectl: Kubectl) -> Iterator[ModuleType]:
    module = _bench()
    module.install(module.Kubectl(kubeconfig), ["operator", "hpa"])
    yield module
    module.uninstall(module.Kubectl(kubeconfig))


def _args(busy_s: float, idle_s: float) -> argparse.Namespace:
    return argparse.Namespace(busy_seconds=busy_s, idle_seconds=idle_s, streams=8, max=3)


@pytest.mark.parametrize("mode", ["operator", "hpa"])
def test_real_load_scales_up_and_idle_scales_back_down(bench: ModuleType, kubeconfig: Path, mode: str) -> None:
    outcome = bench.measure(bench.Kubectl(kubeconfig), mode, _args(busy_s=120, idle_s=150), stop_early=True)
    print(mode, outcome.summary(), outcome.timeline)
    assert outcome.requests > 0 and outcome.errors <= outcome.requests // 10, outcome.summary()
    assert outcome.max_replicas >= 2, f"{mode} never scaled up under load: {outcome.timeline}"
    assert outcome.scaled_down_at_s is not None, f"{mode} never scaled back down when idle: {outcome.timeline}"
