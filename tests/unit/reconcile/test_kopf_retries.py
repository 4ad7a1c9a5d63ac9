"""The real Kopf operator loop with our handlers against kmock: a transient fault is retried by Kopf.

kmock lists namespaces badly, so the operator runs cluster-wide here (the namespaced mode is covered on
the real control plane in e2e/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kmock
import kopf
import pytest
from kmock_support import NAMESPACE, SsaEmulator, first_n, sample, store
from kubernetes import client

from gptoss_operator import handlers
from gptoss_operator.kube import Kube, without_client_retries
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SsaEmulator)]

NAMESPACED = {
    "gptoss.io/v1alpha1/gptossdeployments": "GptOssDeployment",
    "apps/v1/deployments": "Deployment",
    "batch/v1/jobs": "Job",
    "v1/services": "Service",
    "v1/configmaps": "ConfigMap",
    "v1/persistentvolumeclaims": "PersistentVolumeClaim",
    "policy/v1/poddisruptionbudgets": "PodDisruptionBudget",
    "networking.k8s.io/v1/networkpolicies": "NetworkPolicy",
}
STATUS_PATCH = f"patch /apis/gptoss.io/v1alpha1/namespaces/{NAMESPACE}/gptossdeployments/gpt-oss-20b/status"


def declare_resources(server: Any) -> None:
    for key, kind in NAMESPACED.items():
        server.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=["list", "watch", "patch"])
    for key, kind in {"v1/namespaces": "Namespace", "apiextensions.k8s.io/v1/customresourcedefinitions": "CRD"}.items():
        server.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=False, verbs=["list", "watch"])


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in record.getMessage() for record in caplog.records):
        if time.monotonic() > deadline:
            messages = [r.getMessage()[:160] for r in caplog.records if not r.name.startswith("aiohttp")]
            pytest.fail(f"no log line with {text!r} in {timeout_s}s; saw: {messages[-30:]}")
        await asyncio.sleep(0.1)


async def test_kopf_retries_a_transient_status_failure(kmock: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    declare_resources(kmock)
    store(kmock, sample())
    kmock[STATUS_PATCH][first_n(1)] << 503 << kmock.headers({"Retry-After": "1"}) << {"message": "unavailable"}

    url = str(kmock.url).rstrip("/")
    kube = Kube(client.ApiClient(without_client_retries(client.Configuration(host=url))))
    settings = OperatorSettings(resync_seconds=3600)  # only Kopf's own retry may repair the failure
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Reconciler(kube, settings), settings)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url)

    stop = asyncio.Event()
    operator = asyncio.create_task(kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop))
    try:
        await wait_for_log(caplog, "'reconcile-create' failed temporarily")
        await wait_for_log(caplog, "'reconcile-create' succeeded")
    finally:
        stop.set()
        await asyncio.wait_for(operator, 15)

    cr_reads = [r for r in kmock if r.method == kmock.method.GET and str(r.url.path).endswith("/gpt-oss-20b")]
    assert len(cr_reads) >= 2  # the failed reconcile and Kopf's retry (kmock keeps even a refused patch's data)
    child_watches = [str(r.url) for r in kmock if "watch=true" in str(r.url) and "deployments?" in str(r.url)]
    assert any("labelSelector=gptoss.io/deployment" in url for url in child_watches)  # filtered server-side
