"""Run the operator's autoscaler inside the Kopf operator: one loop, every `autoscaler_interval_seconds`.

One task for the whole operator rather than a Kopf timer per GptOssDeployment: Kopf timers need a
finalizer on every object, and a finalizer would make deleting a CR hang while the operator is down (the
handlers module avoids them for the same reason). The loop evaluates every watched deployment per round,
concurrently; deployments without autoscaling cost one list call per round and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import kopf

from gptoss_operator.caches import ClusterCache
from gptoss_operator.kube import GPTOSS, Json, Kube
from gptoss_operator.settings import OperatorSettings

from .controller import Autoscaler
from .scrape import scrape_url
from .signals import MetricsSample

log = logging.getLogger(__name__)

KEDA_API_VERSION = "keda.sh/v1alpha1"


class KubeAutoscalerApi:
    """`controller.AutoscalerApi` over the operator's `Kube` client, reading the watch-fed caches when synced."""

    def __init__(self, kube: Kube, cache_of: Callable[[], ClusterCache | None] = lambda: None) -> None:
        self.kube = kube
        self._cache_of = cache_of

    def _cache(self) -> ClusterCache | None:
        cache = self._cache_of()
        return cache if cache is not None and cache.synced else None

    def list_deployments(self, namespaces: Sequence[str]) -> list[Json]:
        cache = self._cache()
        if cache is not None:  # the cache watches exactly the operator's namespaces
            return cache.deployments.items()
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        return [item for namespace in scopes for item in self.kube.list_items(GPTOSS, namespace)]

    def nodes(self) -> list[Json]:
        cache = self._cache()
        return list(cache.snapshot().nodes) if cache is not None else self.kube.nodes()

    def active_pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Json]:
        cache = self._cache()
        if cache is None:
            return self.kube.active_pods(namespace, label_selector)
        if namespace is None:
            return list(cache.snapshot().pods)  # the autoscaler asks for one namespace only without cluster-wide reads
        labels = dict(part.split("=", 1) for part in (label_selector or "").split(",") if "=" in part)
        return cache.pods_of(namespace, labels)

    def serves_keda(self) -> bool:
        try:
            return self.kube.has_api(KEDA_API_VERSION, "ScaledObject")
        except Exception as error:  # discovery of an absent group answers 404: treat any failure as absent
            log.debug("KEDA discovery failed: %s", error)
            return False

    def apply_status(self, namespace: str, name: str, status_fields: Mapping[str, Any], field_manager: str) -> Json:
        return self.kube.apply_status(namespace, name, status_fields, field_manager)

    def scale(self, namespace: str, name: str, replicas: int) -> Json:
        return self.kube.scale(namespace, name, replicas)

    def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.kube.emit_event(involved, type_, reason, message)


async def run_forever(autoscaler: Autoscaler, interval_seconds: float) -> None:
    """Evaluate every `interval_seconds` (measured from the start of a round; rounds never overlap)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            outcomes = await autoscaler.evaluate_all()
            for outcome in outcomes:
                if outcome.decision is not None and outcome.applied != outcome.decision.current:
                    log.info(
                        "autoscaler: %s/%s %d -> %d: %s",
                        outcome.namespace,
                        outcome.name,
                        outcome.decision.current,
                        outcome.applied,
                        outcome.decision.reason,
                    )
        except Exception as error:  # the API server may be away for a while; the next round tries again
            log.warning("autoscaler round failed: %s", error)
        await asyncio.sleep(max(0.0, interval_seconds - (loop.time() - started)))


def register(
    registry: kopf.OperatorRegistry,
    kube: Kube,
    settings: OperatorSettings,
    cache_of: Callable[[], ClusterCache | None] = lambda: None,
) -> None:
    """Start the autoscaler loop with the operator and stop it on shutdown."""
    tasks: list[asyncio.Task[None]] = []
    sessions: list[aiohttp.ClientSession] = []

    @kopf.on.startup(registry=registry, id="autoscaler-start")
    async def _start(**_: Any) -> None:
        session = aiohttp.ClientSession()
        sessions.append(session)

        async def scrape(url: str) -> MetricsSample:
            return await scrape_url(session, url, timeout_seconds=settings.autoscaler_scrape_timeout_seconds)

        autoscaler = Autoscaler(KubeAutoscalerApi(kube, cache_of), settings, scrape)
        tasks.append(asyncio.create_task(run_forever(autoscaler, settings.autoscaler_interval_seconds)))

    @kopf.on.cleanup(registry=registry, id="autoscaler-stop")
    async def _stop(**_: Any) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in sessions:
            await session.close()
