"""A small stand-in for the API server's admission of custom resources, for tests without a cluster.

It does what the API server does with a CRD's structural schema, in the same order: strict field
validation (unknown fields), defaulting, OpenAPI schema validation, then the CEL rules
(`x-kubernetes-validations`, evaluated with cel-python; transition rules get `oldSelf` on update).
Error strings start with the field path the way the API server writes it (`spec.gpu.count: ...`), so
the same expectations hold here and in e2e/test_admission.py against the real server.

It covers the schema keywords the generated CRD uses; the real API server stays the final judge.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy

from gptoss_operator.api import parse_quantity

Schema = Mapping[str, Any]


@dataclass
class Admission:
    """The outcome of admitting one object: error strings, and the CEL rules that failed."""

    errors: list[str] = field(default_factory=list)
    failed_rules: list[str] = field(default_factory=list)
    defaulted: Any = None

    @property
    def allowed(self) -> bool:
        return not self.errors


def admit(schema: Schema, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> Admission:
    """Admit `obj` (a create, or an update of `old`) against an openAPIV3Schema."""
    result = Admission()
    _unknown_fields(schema, obj, "", result.errors)
    if result.errors:
        return result  # strict field validation refuses the request before anything else
    defaulted = apply_defaults(schema, obj)
    old_defaulted = apply_defaults(schema, old) if old is not None else None
    result.defaulted = defaulted
    validate(schema, defaulted, "", result.errors)
    if not result.errors:
        _run_rules(schema, defaulted, old_defaulted, "", result)
    return result


# ----------------------------------------------------------------------------------------------- paths
def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _shown(path: str) -> str:
    return path or "<root>"


# -------------------------------------------------------------------------------------- unknown fields
def _unknown_fields(schema: Schema, value: Any, path: str, errors: list[str]) -> None:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, Mapping) and schema.get("type") == "object":
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None and path != "metadata":
                if key not in properties:
                    errors.append(f'unknown field "{_child(path, key)}"')
                else:
                    _unknown_fields(properties[key], item, _child(path, key), errors)
            elif "additionalProperties" in schema:
                _unknown_fields(schema["additionalProperties"], item, _child(path, key), errors)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _unknown_fields(schema["items"], item, f"{path}[{index}]", errors)


# ------------------------------------------------------------------------------------------- defaulting
def apply_defaults(schema: Schema, value: Any) -> Any:
    """A copy of `value` with the schema's defaults filled in where a present object lacks a field."""
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: Schema, value: Any) -> None:
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(sub, value[name])
        if isinstance(schema.get("additionalProperties"), Mapping):
            for item in value.values():
                _default_in_place(schema["additionalProperties"], item)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_in_place(schema["items"], item)


# ------------------------------------------------------------------------------------ schema validation
_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def validate(schema: Schema, value: Any, path: str, errors: list[str]) -> None:
    """OpenAPI v3 validation of the keywords structural schemas use; appends `path: problem` strings."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
        return
    kind = schema.get("type")
    if kind and not _TYPE_CHECKS[kind](value):
        errors.append(f"{_shown(path)}: Invalid value: must be of type {kind}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{_shown(path)}: Unsupported value: {value!r}: supported values: {schema['enum']}")
    if kind in ("integer", "number"):
        _validate_number(schema, value, path, errors)
    elif kind == "string":
        _validate_string(schema, value, path, errors)
    elif kind == "array":
        _validate_array(schema, value, path, errors)
    elif kind == "object":
        _validate_object(schema, value, path, errors)


def _validate_number(schema: Schema, value: float, path: str, errors: list[str]) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            errors.append(f"{_shown(path)}: Invalid value: {value}: should be greater than {low}")
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            errors.append(f"{_shown(path)}: Invalid value: {value}: should be less than {high}")


def _validate_string(schema: Schema, value: str, path: str, errors: list[str]) -> None:
    if len(value) > schema.get("maxLength", len(value)):
        errors.append(f"{_shown(path)}: Too long: may not be more than {schema['maxLength']} characters")
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{_shown(path)}: Invalid value: {value!r}: should be at least {schema['minLength']} chars")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{_shown(path)}: Invalid value: {value!r}: should match {schema['pattern']!r}")


def _validate_array(schema: Schema, value: list[Any], path: str, errors: list[str]) -> None:
    if len(value) > schema.get("maxItems", len(value)):
        errors.append(f"{_shown(path)}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
    for index, item in enumerate(value):
        validate(schema.get("items", {}), item, f"{path}[{index}]", errors)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type in ("map", "set"):
        seen: list[Any] = []
        for index, item in enumerate(value):
            key = [item.get(k) for k in schema["x-kubernetes-list-map-keys"]] if list_type == "map" else item
            if key in seen:
                errors.append(f"{path}[{index}]: Duplicate value: {key!r}")
            seen.append(key)


def _validate_object(schema: Schema, value: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if len(value) > schema.get("maxProperties", len(value)):
        errors.append(f"{_shown(path)}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{_child(path, name)}: Required value")
    properties = schema.get("properties", {})
    for name, item in value.items():
        if name in properties:
            validate(properties[name], item, _child(path, name), errors)
        elif isinstance(schema.get("additionalProperties"), Mapping):
            validate(schema["additionalProperties"], item, _child(path, name), errors)


# ------------------------------------------------------------------------------------------- CEL rules
def _quantity(text: Any) -> celpy.celtypes.DoubleType:
    """Kubernetes' CEL `quantity()` (missing from cel-python), as a number of base units."""
    return celpy.celtypes.DoubleType(float(parse_quantity(str(text))))


def _is_less_than(left: Any, right: Any) -> celpy.celtypes.BoolType:
    """`quantity(a).isLessThan(quantity(b))` of the same library."""
    return celpy.celtypes.BoolType(left < right)


KUBERNETES_FUNCTIONS = {"quantity": _quantity, "isLessThan": _is_less_than}


@cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=KUBERNETES_FUNCTIONS)


def evaluate_rule(rule: str, self_value: Any, old_value: Any = None) -> bool:
    """Evaluate one CEL rule with `self` (and `oldSelf`) bound; raises on evaluation errors."""
    activation = {"self": celpy.json_to_cel(self_value)}
    if old_value is not None:
        activation["oldSelf"] = celpy.json_to_cel(old_value)
    return bool(_program(rule).evaluate(activation))


def _run_rules(schema: Schema, value: Any, old: Any, path: str, result: Admission) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule["rule"]
        is_transition = "oldSelf" in text
        if is_transition and old is None:
            continue  # transition rules run only on updates where the old value exists
        if not evaluate_rule(text, value, old if is_transition else None):
            where = path + rule.get("fieldPath", "") if rule.get("fieldPath") else path
            result.errors.append(f"{_shown(where)}: Invalid value: {rule['message']}")
            result.failed_rules.append(text)
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        for name, item in value.items():
            old_item = old.get(name) if isinstance(old, Mapping) else None
            if name in properties:
                _run_rules(properties[name], item, old_item, _child(path, name), result)
            elif isinstance(schema.get("additionalProperties"), Mapping):
                _run_rules(schema["additionalProperties"], item, old_item, _child(path, name), result)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _run_rules(schema.get("items", {}), item, None, f"{path}[{index}]", result)


def iter_rules(schema: Schema, path: str = "") -> list[tuple[str, Mapping[str, Any]]]:
    """Every CEL rule in a schema with the path of the node it sits on."""
    found = [(path, rule) for rule in schema.get("x-kubernetes-validations", [])]
    for name, sub in schema.get("properties", {}).items():
        found += iter_rules(sub, _child(path, name))
    if "items" in schema:
        found += iter_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        found += iter_rules(schema["additionalProperties"], f"{path}.*")
    return found
