"""The generated CRD: a structural schema that documents every field, with subresources and columns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from crd_simulator import validate

from gptoss_operator import names
from gptoss_operator.crd import (
    CrdGenerationError,
    generate_crd,
    render_crd_yaml,
    to_structural,
)

FORBIDDEN_KEYWORDS = ("$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "prefixItems")


def _walk(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node (root, properties, items, additionalProperties) with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from _walk(node["additionalProperties"], f"{path}.*")


def _properties(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    for parent_path, parent in _walk(node, path):
        for name, sub in parent.get("properties", {}).items():
            yield f"{parent_path}.{name}", sub


def test_names_scope_and_version(crd: dict[str, Any], version: dict[str, Any]) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "gptossdeployments.gptoss.io"
    spec = crd["spec"]
    assert spec["group"] == names.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "GptOssDeployment"
    assert spec["names"]["plural"] == "gptossdeployments"
    assert spec["names"]["shortNames"] == ["gptoss"]
    assert "gptoss" in spec["names"]["categories"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    problems = []
    for path, node in _walk(schema):
        problems += [f"{path or '<root>'}: has {key}" for key in FORBIDDEN_KEYWORDS if key in node]
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: neither type nor x-kubernetes-preserve-unknown-fields")
        if node.get("nullable"):
            problems.append(f"{path}: nullable")
    assert problems == []


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    undocumented = [path for path, node in _properties(schema) if not node.get("description", "").strip()]
    # The API server refuses anything but name and generateName on metadata, a description included.
    assert undocumented == [".metadata"], "add description=... to these fields in gptoss_operator/api.py or plan.py"


def test_metadata_restricts_only_the_name(schema: dict[str, Any]) -> None:
    metadata = schema["properties"]["metadata"]
    assert set(metadata) == {"type", "properties"}
    assert set(metadata["properties"]) == {"name", "generateName"}
    assert metadata["properties"]["name"]["maxLength"] == 52


def test_spec_and_model_are_required(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["required"] == ["model"]


def test_every_default_is_valid_against_its_own_schema(schema: dict[str, Any]) -> None:
    errors: list[str] = []
    defaults = 0
    for path, node in _walk(schema):
        if "default" in node:
            defaults += 1
            validate(node, node["default"], path, errors)
    assert defaults > 20
    assert errors == []


def test_optional_fields_are_plain_types_without_null_defaults(schema: dict[str, Any]) -> None:
    engine = schema["properties"]["spec"]["properties"]["engine"]["properties"]
    assert engine["maxSeqLen"] == {
        "description": engine["maxSeqLen"]["description"],
        "type": "integer",
        "minimum": 1024,
        "maximum": 131072,
    }
    assert all(node.get("default", "x") is not None for _, node in _walk(schema))


def test_maps_lists_and_free_form_objects(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["nodeSelector"]["additionalProperties"] == {"type": "string"}
    assert spec["nodeSelector"]["maxProperties"] == 64
    assert spec["tolerations"]["type"] == "array" and spec["tolerations"]["maxItems"] == 32
    assert spec["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_enums_are_bounded_strings(schema: dict[str, Any]) -> None:
    enums = [(path, node) for path, node in _walk(schema) if "enum" in node]
    assert len(enums) >= 10
    for path, node in enums:
        assert node["type"] == "string", path
        assert node["maxLength"] >= max(len(value) for value in node["enum"]), path


def test_status_carries_the_serving_plan(schema: dict[str, Any]) -> None:
    plan = schema["properties"]["status"]["properties"]["plan"]
    assert {"engine", "kvBudget", "gpusPerReplica", "model"} <= set(plan["properties"])
    assert plan["properties"]["engine"]["properties"]["cudaGraphBatchSizes"]["items"] == {"type": "integer"}


def test_scale_and_status_subresources(version: dict[str, Any]) -> None:
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns(version: dict[str, Any], schema: dict[str, Any]) -> None:
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0] == [
        "Model",
        "GPUs",
        "Replicas",
        "Ready",
        "Phase",
        "Endpoint",
        "Age",
    ]
    assert columns["Model"]["jsonPath"] == ".spec.model"
    assert columns["Endpoint"]["jsonPath"] == ".status.endpoints.openai"
    assert "per replica" in columns["GPUs"]["description"]
    for column in columns.values():  # every column points at a field the schema has
        node: Mapping[str, Any] = schema
        for part in column["jsonPath"].strip(".").split("."):
            if part == "creationTimestamp":
                break
            node = node["properties"][part]


def test_rendered_yaml_is_stable_and_says_how_to_regenerate() -> None:
    first, second = render_crd_yaml(), render_crd_yaml()
    assert first == second
    assert first.startswith("# GENERATED FILE - DO NOT EDIT.")
    assert "make crds" in first.splitlines()[3]
    assert yaml.safe_load(first) == generate_crd()


@pytest.mark.parametrize(
    "unsupported",
    [
        {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        {"oneOf": [{"type": "integer"}]},
        {"$ref": "#/$defs/Missing"},
        {"type": "array", "prefixItems": [{"type": "integer"}]},
    ],
)
def test_constructs_without_a_structural_form_are_refused(unsupported: dict[str, Any]) -> None:
    with pytest.raises(CrdGenerationError):
        to_structural({"type": "object", "properties": {"field": unsupported}})


def test_conversion_rules_on_a_small_schema() -> None:
    converted = to_structural(
        {
            "$defs": {"Inner": {"title": "Inner", "type": "object", "description": "inner", "properties": {}}},
            "title": "Outer",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ref": {"$ref": "#/$defs/Inner", "description": "site wins"},
                "maybe": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}], "default": None},
                "fixed": {"const": "only", "type": "string"},
                "free": {"type": "object", "additionalProperties": True},
            },
        }
    )

    props = converted["properties"]
    assert "additionalProperties" not in converted and "title" not in converted
    assert props["ref"]["description"] == "site wins"
    assert props["maybe"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}
    assert props["fixed"] == {"type": "string", "enum": ["only"], "maxLength": 4}
    assert props["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
