"""Every built-in object the builders make validates offline against Kubernetes 1.36's OpenAPI schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from builders_support import children, cr_files, load_cr

KUBERNETES_VERSION = "1.36.0"
BUILT_IN_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2")


def built_in(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in objects if item["apiVersion"] in BUILT_IN_GROUPS]


@pytest.mark.parametrize("cr_file", cr_files(), ids=lambda path: path.name)
def test_built_in_children_validate_strictly(cr_file: Path) -> None:
    objects = built_in(children(load_cr(cr_file)))
    assert objects
    for item in objects:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{item['kind']} {item['metadata']['name']}: {error.message} at {list(error.path)}")


def test_a_broken_object_is_caught() -> None:
    """The check above can fail: a typo in a field name is rejected in strict mode."""
    broken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
