"""The builders' output fits the oldest Kubernetes the chart claims (its kubeVersion floor, KUBE_VERSION_OLDEST).

Offline, against that minor's OpenAPI schema (strict: a field the minor does not know fails), with the
capabilities the operator detects on such a server (no HPA tolerance: docs/kubernetes-versions.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from builders_support import ALL_FEATURES, REPO, cr_files, load_cr

from gptoss_operator.builders import build_children
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings, ServerCapabilities

BUILT_IN_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2")


def oldest_minor() -> str:
    """`1.34` of KUBE_VERSION_OLDEST=v1.34.4 (e2e/cluster/versions.env)."""
    versions = (REPO / "e2e" / "cluster" / "versions.env").read_text(encoding="utf-8")
    match = re.search(r"^KUBE_VERSION_OLDEST=v(\d+\.\d+)\.\d+$", versions, re.MULTILINE)
    assert match, "versions.env names no KUBE_VERSION_OLDEST"
    return match.group(1)


OLDEST = OperatorSettings(server_capabilities=ServerCapabilities(version=f"v{oldest_minor()}.0", hpa_tolerance=False))


def built_in(cr_file: Path) -> list[dict[str, Any]]:
    cr = load_cr(cr_file)
    objects = build_children(cr, plan(cr.spec, OLDEST), OLDEST, ALL_FEATURES)
    return [item for item in objects if item["apiVersion"] in BUILT_IN_GROUPS]


@pytest.mark.parametrize("cr_file", cr_files(), ids=lambda path: path.name)
def test_built_in_children_validate_on_the_oldest_minor(cr_file: Path) -> None:
    schema_version = f"{oldest_minor()}.0"
    objects = built_in(cr_file)
    assert objects
    for item in objects:
        try:
            kubernetes_validate.validate(item, schema_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{item['kind']} {item['metadata']['name']}: {error.message} at {list(error.path)}")


def test_a_field_the_minor_lacks_is_caught() -> None:
    """The check above can fail: that minor's schema is there and strict (a misspelt field is refused)."""
    broken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, f"{oldest_minor()}.0", strict=True)
