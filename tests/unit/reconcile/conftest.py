"""Fixtures for the kmock fault-injection tests (helpers live in kmock_support.py)."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import NOW, RequestLog
from kubernetes import client

from gptoss_operator.kube import CONNECTION_POOL_SIZE, Kube, without_client_retries
from gptoss_operator.reconcile import Reconciler
from gptoss_operator.settings import OperatorSettings


@pytest.fixture
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture
def kube(kmock: Any, request_log: RequestLog) -> Kube:
    config = without_client_retries(client.Configuration(host=str(kmock.url).rstrip("/")))
    config.connection_pool_maxsize = CONNECTION_POOL_SIZE  # the caches' watches each hold one
    return Kube(client.ApiClient(config), on_request=request_log)


@pytest.fixture
def reconciler(kube: Kube) -> Reconciler:
    return Reconciler(kube, OperatorSettings(), now=lambda: NOW)
