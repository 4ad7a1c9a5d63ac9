"""What a reconcile exports to the operator's Prometheus metrics (kmock API server, the real registry)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kmock_support import NAMESPACE, SsaEmulator, in_thread, sample, store

from gptoss_operator import metrics, names
from gptoss_operator.reconcile import Reconciler

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAME = "gpt-oss-20b"
LABELS = {"namespace": NAMESPACE, "name": NAME, "model": "gpt-oss-20b"}


def ttft_target() -> float | None:
    return metrics.REGISTRY.get_sample_value(names.METRIC_TTFT_TARGET, LABELS)


@pytest.fixture(autouse=True)
def forget_the_deployment() -> Iterator[None]:
    metrics.forget_deployment(NAMESPACE, NAME)
    yield
    metrics.forget_deployment(NAMESPACE, NAME)


async def test_time_to_first_token_target_is_exported_from_the_spec(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample(autoscaling={"targets": {"timeToFirstTokenSeconds": 1.5}}))
    outcome = await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert outcome.result == metrics.RESULT_SUCCESS
    assert ttft_target() == 1.5
    assert metrics.REGISTRY.get_sample_value(names.METRIC_DESIRED_REPLICAS, LABELS) == 1


async def test_no_target_in_the_spec_exports_none_and_drops_an_old_one(kmock: Any, reconciler: Reconciler) -> None:
    store(kmock, sample(autoscaling={"targets": {"timeToFirstTokenSeconds": 3}}))
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert ttft_target() == 3

    store(kmock, sample())  # the target was removed from the spec
    await in_thread(reconciler.reconcile, NAMESPACE, NAME)
    assert ttft_target() is None
