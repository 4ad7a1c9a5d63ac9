"""The whole operator loop (Kopf + caches + work queue) against kmock.

A transient status failure is retried by the work queue's backoff; Kopf writes nothing on the CR; the
caches watch the children with a server-side label filter; a steady-state reconcile makes no LIST.
kmock lists namespaces badly, so the operator runs cluster-wide here (the namespaced mode is covered on
the real control plane in e2e/).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import kmock
import kopf
import pytest
from kmock_support import NAMESPACE, SsaEmulator, first_n, sample, store
from kubernetes import client

from gptoss_operator import builders, handlers
from gptoss_operator.kube import CONNECTION_POOL_SIZE, Kube, resource_type, without_client_retries
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.kmock(cls=SsaEmulator)]

RESOURCES = {
    "gptoss.io/v1alpha1/gptossdeployments": ("GptOssDeployment", True),
    "apps/v1/deployments": ("Deployment", True),
    "batch/v1/jobs": ("Job", True),
    "v1/services": ("Service", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", True),
    "networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "v1/namespaces": ("Namespace", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
}
NAME = "gpt-oss-20b"
CR_PATH = f"/apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/{NAME}"
STATUS_PATCH = f"patch {CR_PATH}/status"
CORE_KINDS = [resource_type(kind) for kind in builders.MANAGED_KINDS if kind.feature is None]


def declare_resources(server: Any) -> None:
    for key, (kind, namespaced) in RESOURCES.items():
        server.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=["list", "watch", "patch"])


async def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached in {timeout_s}s: {what}")
        await asyncio.sleep(0.05)


def status_patches(server: Any) -> list[Any]:
    return [r for r in server if r.method == kmock.method.PATCH and str(r.url.path) == f"{CR_PATH}/status"]


async def test_the_queue_retries_a_transient_status_failure_and_kopf_writes_nothing(kmock: Any) -> None:
    declare_resources(kmock)
    store(kmock, sample())
    kmock[STATUS_PATCH][first_n(1)] << 503 << {"message": "unavailable"}

    url = str(kmock.url).rstrip("/")
    configuration = without_client_retries(client.Configuration(host=url))
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    kube = Kube(client.ApiClient(configuration))
    settings = OperatorSettings(resync_seconds=3600)  # only the queue's retry may repair the failure
    runtime = handlers.OperatorRuntime(kube, settings, child_kinds=CORE_KINDS)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, runtime)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    stop = asyncio.Event()
    operator = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop))
    try:
        await eventually(lambda: len(status_patches(kmock)) >= 1, "the failed status write")
        await eventually(lambda: runtime.queue.processed >= 2 and runtime.queue.idle, "the queue's retry")
        assert runtime.queue.failures((NAMESPACE, NAME)) == 0  # the retry succeeded
    finally:
        stop.set()
        await asyncio.wait_for(operator, 15)

    cr_writes = [r for r in kmock if r.method == kmock.method.PATCH and str(r.url.path) == CR_PATH]
    assert cr_writes == []  # no Kopf annotations, no finalizer: the CR's only writes are to its status
    child_watches = [str(r.url) for r in kmock if "watch=true" in str(r.url) and "deployments?" in str(r.url)]
    assert any("labelSelector=gptoss.io%2Fdeployment" in url for url in child_watches)  # filtered server-side
