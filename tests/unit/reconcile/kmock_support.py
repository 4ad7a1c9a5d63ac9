"""kmock helpers for fault-injection tests of the reconcile loop.

kmock is an in-memory API server without server-side apply: `SsaEmulator` only lets an apply create a
missing object (as the real server does) so the reconcile can run end to end. Behaviour is tested on the
real control plane (e2e/test_operator.py); here we inject API faults and watch retries.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from gptoss_operator import names

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"
NAMESPACE = "team"
NOW = "2026-11-25T10:00:00Z"


class SsaEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator where an apply-patch of a missing object creates it (merge semantics otherwise)."""

    async def _handle(self, request: Any) -> Any:
        is_apply = "apply-patch" in request.headers.get("Content-Type", "")
        if request.resource is not None and request.action == kmock.action.UPDATE and request.name and is_apply:
            key = (request.resource, request.namespace, request.name)
            stub = {"metadata": {"name": request.name, "namespace": request.namespace}}
            if key not in self._objects:
                self._objects[key] = stub
            elif self._objects[key].deleted:
                self._objects[key].create(stub)
        return await super()._handle(request)


def sample(name: str = "gpt-oss-20b.yaml", **spec_overrides: Any) -> dict[str, Any]:
    cr: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    cr["metadata"].update(namespace=NAMESPACE, uid="uid-1", generation=1, resourceVersion="1")
    cr["spec"].update(copy.deepcopy(spec_overrides))
    return cr


def store(server: Any, cr: dict[str, Any]) -> None:
    server.objects[server.resource(f"{names.API_VERSION}/{names.PLURAL}"), NAMESPACE, cr["metadata"]["name"]] = cr


def first_n(n: int) -> Callable[[Any], bool]:
    """A kmock filter that matches the first `n` requests it sees, then none (a transient fault)."""
    seen = {"count": 0}

    def matches(_request: Any) -> bool:
        seen["count"] += 1
        return seen["count"] <= n

    return matches


class RequestLog:
    """Records (verb, code) of every request the Kube client makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, verb: str, code: int | str) -> None:
        self.calls.append((verb, str(code)))

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.calls]


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """The Kube client is synchronous; kmock serves from this event loop, so call it from a thread."""
    return await asyncio.to_thread(fn, *args)


async def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Wait until `condition()` holds (polled), or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.01)
