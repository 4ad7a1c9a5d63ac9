"""Fixtures of the API tests: the generated CRD and its schemas."""

from __future__ import annotations

from typing import Any

import pytest

from gptoss_operator.crd import generate_crd


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return generate_crd()


@pytest.fixture(scope="session")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    (only_version,) = crd["spec"]["versions"]
    return only_version


@pytest.fixture(scope="session")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    """The CRD's openAPIV3Schema (the whole object: apiVersion, kind, metadata, spec, status)."""
    return version["schema"]["openAPIV3Schema"]
