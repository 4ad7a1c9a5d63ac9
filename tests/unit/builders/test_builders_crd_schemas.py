"""PodMonitor and ScaledObject against the upstream CRDs' schemas, when those CRDs are on this machine.

The cluster harness fetches the Prometheus Operator and KEDA modules (Go module proxy) into
~/.cache/gpt-oss-operator/crds or the Go module cache; without them these tests skip. Besides the JSON
schema, unknown fields are reported: the API server would silently prune them (structural schemas).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from builders_support import ALL_FEATURES, children, cr_files, load_cr

SEARCH_ROOTS = [Path.home() / ".cache" / "gpt-oss-operator" / "crds", Path.home() / "go" / "pkg" / "mod"]
CRD_FILES = {
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "ScaledObject": "keda.sh_scaledobjects.yaml",
}


def find_schema(kind: str) -> dict[str, Any] | None:
    for root in SEARCH_ROOTS:
        if not root.is_dir():
            continue
        for path in sorted(root.glob(f"**/{CRD_FILES[kind]}")):
            crd = yaml.safe_load(path.read_text(encoding="utf-8"))
            for version in crd["spec"]["versions"]:
                if version.get("storage"):
                    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
                    return schema
    return None


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        properties = schema.get("properties")
        if properties is None:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return [f for key, item in value.items() for f in unknown_fields(item, extra, f"{path}.{key}")]
            return []
        found: list[str] = []
        for key, item in value.items():
            if key not in properties:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, properties[key], f"{path}.{key}")
        return found
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [
            f for index, item in enumerate(value) for f in unknown_fields(item, schema["items"], f"{path}[{index}]")
        ]
    return []


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_custom_resources_match_upstream_crds(kind: str) -> None:
    schema = find_schema(kind)
    if schema is None:
        pytest.skip(f"the {kind} CRD is not on this machine (make cluster-up fetches it)")
    built = [item for path in cr_files() for item in children(load_cr(path), ALL_FEATURES) if item["kind"] == kind]
    assert built, f"no sample or fixture builds a {kind}"
    for item in built:
        jsonschema.validate(item, schema)
        assert unknown_fields(item, schema) == [], item["metadata"]["name"]


def test_the_unknown_field_check_catches_typos() -> None:
    schema = {"properties": {"spec": {"properties": {"triggers": {"items": {"properties": {"type": {}}}}}}}}
    item = {"spec": {"triggers": [{"type": "prometheus", "metdata": {}}], "minReplicas": 1}}
    assert unknown_fields(item, schema) == [".spec.triggers[0].metdata", ".spec.minReplicas"]
