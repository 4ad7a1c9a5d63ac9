"""Generate the GptOssDeployment CustomResourceDefinition from the pydantic models in `gptoss_operator.api`.

The models are the only schema source. Pydantic emits JSON Schema (draft 2020-12); the API server wants a
*structural* OpenAPI v3 schema, so the conversion here:

- inlines every `$ref` (Kubernetes does not resolve references), the referring site's keys winning;
- turns `Optional[X]` (`anyOf: [X, {type: null}]`) into plain optional `X` and drops `default: null`;
- drops `title`s and `additionalProperties: false` (structural schemas forbid it next to `properties`;
  unknown fields are still refused: by the API server's strict field validation, kubectl's default, and by
  pydantic's `extra="forbid"` in the operator);
- turns `additionalProperties: true` (free-form objects) into `x-kubernetes-preserve-unknown-fields`;
- rewrites draft-2020 numeric `exclusiveMinimum`/`exclusiveMaximum` into OpenAPI v3.0's boolean form;
- turns `const` into a one-value `enum` and bounds every enum string with `maxLength`, which keeps the
  API server's CEL cost estimate small.

Run `python -m gptoss_operator.crd --write` (or `make crds`) after changing the models; a test fails
while the checked-in copies drift.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from gptoss_operator import names
from gptoss_operator.api import (
    MAX_NAME_LENGTH,
    NAME_MESSAGE,
    NAME_PATTERN,
    GptOssDeploymentSpec,
    GptOssDeploymentStatus,
)

REGENERATE_COMMAND: Final = "make crds  (or: python -m gptoss_operator.crd --write)"
CRD_FILE_NAME: Final = f"{names.CRD_NAME}.yaml"
# Relative to the repository root. The chart's copy is read by templates/crd.yaml (not Helm's crds/ folder),
# so that crds.enabled and crds.keep apply to it.
CRD_PATHS: Final = (Path("crds") / CRD_FILE_NAME, Path("charts/gpt-oss-operator/files/crds") / CRD_FILE_NAME)

HEADER: Final = (
    "# GENERATED FILE - DO NOT EDIT.\n"
    "# The GptOssDeployment CRD, generated from the pydantic models in operator/gptoss_operator/api.py\n"
    "# by `gptoss-operator crd` (gptoss_operator.crd.render_crd_yaml).\n"
    f"# Regenerate: {REGENERATE_COMMAND}\n"
)

CATEGORIES: Final = ("gptoss", "ai")

# The Service and the other children are named after the GptOssDeployment: metadata.name is bounded and
# checked once, in api.py (MAX_NAME_LENGTH, NAME_PATTERN, NAME_MESSAGE); the bound also keeps the CEL
# rule's estimated cost small.
CEL_NAME_IS_DNS_LABEL: Final[dict[str, str]] = {
    "rule": f"self.metadata.name.matches('{NAME_PATTERN}')",
    "message": NAME_MESSAGE,
}

# JSON Schema keywords without a structural form: a model that needs one fails generation loudly.
_UNSUPPORTED_KEYWORDS: Final = ("oneOf", "allOf", "not", "prefixItems", "if", "then", "else", "patternProperties")
_FORMATS_KUBERNETES_KNOWS: Final = frozenset(
    {"int32", "int64", "float", "double", "byte", "date", "date-time", "duration", "uri", "email", "uuid"}
)


class CrdGenerationError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


# ------------------------------------------------------------------------------------ schema conversion
def to_structural(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON Schema (with its `$defs`) into a structural OpenAPI v3 schema."""
    definitions: Mapping[str, Any] = schema.get("$defs", {})
    root = {key: value for key, value in schema.items() if key != "$defs"}
    return _convert(root, definitions, path="")


def _convert(node: Mapping[str, Any], definitions: Mapping[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, definitions, path)
    for keyword in _UNSUPPORTED_KEYWORDS:
        if keyword in node:
            raise CrdGenerationError(f"{path or '<root>'}: JSON Schema keyword {keyword!r} has no structural form")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, definitions, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, definitions, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, Mapping):
                out[key] = _convert(value, definitions, f"{path}.*")
            # `False` is dropped: see the module docstring.
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "format" and value not in _FORMATS_KUBERNETES_KNOWS:
            continue
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    _bound_enum_strings(out)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise CrdGenerationError(f"{path or '<root>'}: schema has no type: {dict(node)}")
    return out


def _resolve(node: Mapping[str, Any], definitions: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Inline `$ref` and collapse `Optional[X]`, until the node is a plain schema. Site keys win."""
    resolved = dict(node)
    while True:
        if "$ref" in resolved:
            reference = resolved.pop("$ref")
            prefix = "#/$defs/"
            if not reference.startswith(prefix) or reference[len(prefix) :] not in definitions:
                raise CrdGenerationError(f"{path}: cannot resolve {reference!r}")
            resolved = {**definitions[reference[len(prefix) :]], **resolved}
        elif "anyOf" in resolved:
            variants = resolved.pop("anyOf")
            not_null = [variant for variant in variants if variant != {"type": "null"}]
            if len(not_null) != 1 or len(not_null) == len(variants):
                raise CrdGenerationError(f"{path}: only Optional[X] unions have a structural form, got {variants}")
            if resolved.get("default", 0) is None:
                del resolved["default"]
            resolved = {**not_null[0], **resolved}
        else:
            return resolved


def _bound_enum_strings(node: dict[str, Any]) -> None:
    enum = node.get("enum")
    if node.get("type") == "string" and enum and "maxLength" not in node:
        node["maxLength"] = max(len(str(value)) for value in enum)


# ---------------------------------------------------------------------------------------------- the CRD
def _object_schema() -> dict[str, Any]:
    spec = to_structural(GptOssDeploymentSpec.model_json_schema(by_alias=True, mode="validation"))
    status = to_structural(GptOssDeploymentStatus.model_json_schema(by_alias=True, mode="validation"))
    _mark_conditions_as_map(status)
    return {
        "type": "object",
        "description": "A gpt-oss model server (gpt-oss-20b or gpt-oss-120b) on Triton with TensorRT-LLM.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "The versioned schema of this representation of an object (gptoss.io/v1alpha1).",
            },
            "kind": {"type": "string", "description": "The REST resource this object represents (GptOssDeployment)."},
            # No description on metadata itself: the API server allows only name and generateName here.
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": MAX_NAME_LENGTH,
                        "description": f"Name of the deployment: a DNS-1035 label of at most {MAX_NAME_LENGTH} "
                        "characters; it names the Service and the other children.",
                    },
                    "generateName": {
                        "type": "string",
                        "maxLength": MAX_NAME_LENGTH - 5,
                        "description": "Prefix of a generated name (5 random characters are appended).",
                    },
                },
            },
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [CEL_NAME_IS_DNS_LABEL],
    }


def _mark_conditions_as_map(status: dict[str, Any]) -> None:
    """Conditions are a list keyed by type, so server-side apply merges them per condition."""
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model", "description": "The model served."},
        {
            "name": "GPUs",
            "type": "integer",
            "jsonPath": ".status.gpusPerReplica",
            "description": "GPUs per replica (status.gpusPerReplica).",
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "description": "Desired replicas."},
        {
            "name": "Ready",
            "type": "integer",
            "jsonPath": ".status.readyReplicas",
            "description": "Ready replicas of the current generation.",
        },
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
        {
            "name": "Endpoint",
            "type": "string",
            "jsonPath": ".status.endpoints.openai",
            "description": "OpenAI-compatible base URL inside the cluster.",
        },
        {
            "name": "Total-GPUs",
            "type": "integer",
            "jsonPath": ".status.gpus",
            "description": "GPUs asked for by all desired replicas.",
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def generate_crd() -> dict[str, Any]:
    """The GptOssDeployment CustomResourceDefinition as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": names.CRD_NAME,
            "labels": {names.LABEL_NAME: "gpt-oss-operator", names.LABEL_PART_OF: "gpt-oss-operator"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _object_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                    "selectableFields": [{"jsonPath": ".spec.model"}],
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    """The CRD as YAML with a generated-file header; byte-stable for the same models."""
    body = yaml.safe_dump(generate_crd(), sort_keys=True, width=1_000_000, allow_unicode=True)
    return HEADER + "---\n" + body


# ------------------------------------------------------------------------------------------- write/check
def stale_files(root: Path) -> list[Path]:
    """The checked-in CRD copies under `root` that differ from the models (missing ones included)."""
    expected = render_crd_yaml()
    return [
        root / relative
        for relative in CRD_PATHS
        if not (root / relative).is_file() or (root / relative).read_text(encoding="utf-8") != expected
    ]


def write_files(root: Path) -> list[Path]:
    """Write every checked-in CRD copy under `root`; returns the paths written."""
    rendered = render_crd_yaml()
    written = []
    for relative in CRD_PATHS:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptoss_operator.crd", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write crds/ and the chart's files/crds/ copies")
    action.add_argument("--check", action="store_true", help="exit 1 when a checked-in copy drifts")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (default: cwd)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_files(args.root):
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = stale_files(args.root)
        for path in stale:
            print(f"{path} differs from the models; run: {REGENERATE_COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    sys.stdout.write(render_crd_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
