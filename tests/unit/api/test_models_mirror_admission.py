"""The pydantic models refuse what the API server refuses: the offline CLI and the operator agree with admission.

The CRD's CEL rules are enforced by the API server only; api.py mirrors each one with a pydantic
validator. Every case of the shared table (admission_cases.py, also run against the CRD with cel-python
and against a real API server) must fail pydantic validation at the field the API server names, with
the CEL rule's own message; near-miss objects that admission accepts must pass the models too.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from admission_cases import INVALID_CASES, SAMPLE_NAMES, InvalidCase, custom_resource, load_sample
from crd_simulator import admit, iter_rules
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gptoss_operator import api, crd
from gptoss_operator.api import GptOssDeployment, validate_update
from gptoss_operator.cli import EXIT_BAD_INPUT, field_path, main

CASES_BY_ID = {case.id: case for case in INVALID_CASES}


def _validation_errors(obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[ErrorDetails]:
    """pydantic's errors for the object (an update of `old` when given); empty when it is valid."""
    try:
        new = GptOssDeployment.model_validate(obj)
        if old is not None:
            validate_update(GptOssDeployment.model_validate(old), new)
    except ValidationError as error:
        return error.errors(include_url=False)
    return []


def _errors_of(obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(field path, message) of each pydantic error for the object."""
    return [(field_path(item["loc"]), item["msg"]) for item in _validation_errors(obj, old)]


def _names(path: str, field: str) -> bool:
    """Whether the error path `path` is the field `field` or inside it."""
    return path == field or path.startswith((f"{field}.", f"{field}["))


def _rule_sites(schema: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """CEL rule text -> (the path of the schema node it sits on, as a regex; its message)."""
    sites = {}
    for node, rule in iter_rules(schema):
        pattern = re.escape(node).replace(r"\[\]", r"\[\d+\]").replace(r"\.\*", r"\.[^.\[]+")
        sites[str(rule["rule"])] = (pattern, str(rule["message"]))
    return sites


def _within(path: str, node_pattern: str) -> bool:
    return node_pattern == "" or re.match(rf"{node_pattern}($|[.\[])", path) is not None


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_the_models_reject_every_case_naming_the_field(case: InvalidCase) -> None:
    errors = _errors_of(case.obj, case.old)

    assert errors, f"{case.id}: the models accepted what the API server refuses"
    assert any(_names(path, case.field) for path, _ in errors), errors


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_a_failed_cel_rule_gives_its_own_message_inside_its_node(schema: dict[str, Any], case: InvalidCase) -> None:
    """Each CEL rule admission fails is reported by the models with the same words, within the same object.

    pydantic checks an object's cross-field rules only once its fields are valid; a rule is excused when
    another error inside its object came first.
    """
    sites = _rule_sites(schema)
    errors = _errors_of(case.obj, case.old)

    for rule in admit(schema, case.obj, case.old).failed_rules:
        node, message = sites[rule]
        reported = any(msg == message and _within(path, node) for path, msg in errors)
        preempted = any(msg != message and _within(path, node) for path, msg in errors)
        assert reported or preempted, (rule, errors)


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_every_admission_error_uses_a_message_of_the_crd(schema: dict[str, Any], case: InvalidCase) -> None:
    known = {message for _, message in _rule_sites(schema).values()} | {api.NAME_LENGTH_MESSAGE}
    mirrored = [item for item in _validation_errors(case.obj, case.old) if item["type"] == api.ADMISSION_ERROR_TYPE]

    for item in mirrored:
        assert item["msg"] in known or item["msg"].startswith("Duplicate value: "), item


# Objects the API server admits although they sit next to a rule's edge: the mirrors must not over-reject.
NEAR_MISSES: list[tuple[str, dict[str, Any]]] = [
    ("20b-on-1-gpu", custom_resource(gpu={"count": 1})),
    ("120b-on-2-gpus", custom_resource(model="gpt-oss-120b", gpu={"count": 2})),
    ("replicas-at-autoscaling-min", custom_resource(replicas=2, autoscaling={"enabled": True, "minReplicas": 2})),
    ("replicas-at-autoscaling-max", custom_resource(replicas=3, autoscaling={"enabled": True, "maxReplicas": 3})),
    ("replicas-outside-disabled-bounds", custom_resource(replicas=9, autoscaling={"maxReplicas": 2})),
    ("min-equals-max", custom_resource(autoscaling={"minReplicas": 3, "maxReplicas": 3}, replicas=3)),
    ("operator-scales-to-zero", custom_resource(replicas=0, autoscaling={"enabled": True, "minReplicas": 0})),
    ("keda-scales-to-zero", custom_resource(autoscaling={"mode": "keda", "minReplicas": 0})),
    ("hpa-from-one", custom_resource(autoscaling={"enabled": True, "mode": "hpa", "minReplicas": 1})),
    ("keda-disabled-without-prometheus", custom_resource(autoscaling={"mode": "keda"})),
    (
        "keda-with-prometheus",
        custom_resource(autoscaling={"enabled": True, "mode": "keda", "prometheusAddress": "http://prom:9090"}),
    ),
    ("hugging-face-only", custom_resource(weights={"huggingFace": {"repo": "openai/gpt-oss-20b"}})),
    ("claim-only", custom_resource(weights={"existingClaim": {"claimName": "models", "subPath": "a..b/..c"}})),
    ("claim-dotted-folder", custom_resource(weights={"existingClaim": {"claimName": "models", "subPath": "..hidden"}})),
    ("cpu-and-memory", custom_resource(resources={"limits": {"memory": "64Gi"}, "requests": {"cpu": "8"}})),
    ("toleration-exists-without-key", custom_resource(tolerations=[{"operator": "Exists"}])),
    ("toleration-exists-empty-value", custom_resource(tolerations=[{"key": "a", "operator": "Exists", "value": ""}])),
    ("toleration-equal", custom_resource(tolerations=[{"key": "a", "operator": "Equal", "value": "b"}])),
    (
        "toleration-seconds-no-execute",
        custom_resource(tolerations=[{"key": "a", "effect": "NoExecute", "tolerationSeconds": 30}]),
    ),
    ("distinct-namespaces", custom_resource(networkPolicy={"allowedNamespaces": ["team-a", "team-b"]})),
    ("distinct-pull-secrets", custom_resource(imagePullSecrets=[{"name": "a"}, {"name": "b"}])),
    ("one-letter-name", custom_resource("a")),
    ("longest-name", custom_resource("g" * crd.MAX_NAME_LENGTH)),
    ("name-with-digits", custom_resource("g0-1")),
    ("20b-on-a-mig-slice", custom_resource(gpu={"migProfile": "3g.40gb", "count": 1})),
    ("custom-gpu", custom_resource(gpu={"product": "ACME-X1", "memoryGiB": 96, "architecture": "blackwell"})),
    ("gpu-node-selector", custom_resource(gpu={"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100"}})),
    ("trtllm-moe-backend", custom_resource(gpu={"product": "NVIDIA-B200"}, engine={"moeBackend": "TRTLLM"})),
    ("rwo-cache-one-replica", custom_resource(weights={"cache": {"accessMode": "ReadWriteOnce"}})),
    (
        "rwop-cache-autoscaling-off",
        custom_resource(weights={"cache": {"accessMode": "ReadWriteOncePod"}}, autoscaling={"maxReplicas": 4}),
    ),
    (
        "rwo-cache-unused-with-a-claim",
        custom_resource(
            replicas=3, weights={"existingClaim": {"claimName": "m"}, "cache": {"accessMode": "ReadWriteOnce"}}
        ),
    ),
]


@pytest.mark.parametrize(("case_id", "obj"), NEAR_MISSES, ids=[case[0] for case in NEAR_MISSES])
def test_objects_next_to_a_rule_pass_admission_and_the_models(
    schema: dict[str, Any], case_id: str, obj: dict[str, Any]
) -> None:
    assert admit(schema, obj).errors == [], f"{case_id}: the table is wrong, admission refuses it"
    assert _errors_of(obj) == []


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_samples_pass_the_mirrors(file_name: str) -> None:
    assert _errors_of(load_sample(file_name)) == []


def test_an_update_that_keeps_the_model_passes() -> None:
    old, new = custom_resource("m", replicas=1), custom_resource("m", replicas=3)
    assert _errors_of(new, old) == []


# Updates the API server admits next to the cache's transition rules: (old weights, new weights).
UPDATE_NEAR_MISSES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("cache-grows", {"cache": {"size": "100Gi"}}, {"cache": {"size": "101Gi"}}),
    ("cache-default-written-out", {}, {"cache": {"size": "40Gi", "accessMode": "ReadWriteMany"}}),
    ("cache-same-size-other-unit", {"cache": {"size": "1Ti"}}, {"cache": {"size": "1024Gi"}}),
    ("cache-to-existing-claim", {"cache": {"storageClassName": "a"}}, {"existingClaim": {"claimName": "m"}}),
    ("existing-claim-to-cache", {"existingClaim": {"claimName": "m"}}, {"cache": {"accessMode": "ReadWriteOnce"}}),
]


@pytest.mark.parametrize(("case_id", "old_weights", "new_weights"), UPDATE_NEAR_MISSES, ids=lambda v: str(v)[:30])
def test_updates_next_to_a_transition_rule_pass_admission_and_the_models(
    schema: dict[str, Any], case_id: str, old_weights: dict[str, Any], new_weights: dict[str, Any]
) -> None:
    old, new = custom_resource(case_id, weights=old_weights), custom_resource(case_id, weights=new_weights)

    assert admit(schema, new, old).errors == [], f"{case_id}: the table is wrong, admission refuses it"
    assert _errors_of(new, old) == []


def test_the_name_rule_is_the_crds() -> None:
    assert api.MAX_NAME_LENGTH == crd.MAX_NAME_LENGTH
    assert crd.CEL_NAME_IS_DNS_LABEL["message"] == api.NAME_MESSAGE
    assert f"'{api.NAME_PATTERN}'" in crd.CEL_NAME_IS_DNS_LABEL["rule"]


def test_the_rule_violations_are_reported_together() -> None:
    toleration = {"operator": "Exists", "value": "x", "tolerationSeconds": 5}
    paths = [path for path, _ in _errors_of(custom_resource(tolerations=[toleration]))]

    assert sorted(paths) == ["spec.tolerations[0].tolerationSeconds", "spec.tolerations[0].value"]


# ------------------------------------------------------------------------------------------------ CLI
def _write_case(tmp_path: Path, case: InvalidCase) -> str:
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(yaml.safe_dump(case.obj, sort_keys=False), encoding="utf-8")
    return str(path)


# Cases only the CEL rules used to refuse, plus a list-uniqueness and the name cases.
CLI_CASE_IDS = [
    "both-weights-sources",
    "gpu-in-resource-limits",
    "toleration-without-key-equal",
    "sub-path-escapes-volume",
    "hpa-scale-to-zero",
    "replicas-above-autoscaling-max",
    "keda-without-prometheus",
    "min-above-max",
    "20b-on-2-gpus",
    "name-too-long",
    "name-starts-with-digit",
    "duplicate-pull-secret",
    "two-mig-slices",
    "read-only-cache",
    "rwo-cache-two-replicas",
    "rwop-cache-autoscaling-to-three",
]


@pytest.mark.parametrize("command", ["plan", "render"])
@pytest.mark.parametrize("case_id", CLI_CASE_IDS)
def test_the_cli_refuses_with_exit_2_naming_the_field(tmp_path: Path, command: str, case_id: str) -> None:
    case = CASES_BY_ID[case_id]
    out, err = io.StringIO(), io.StringIO()

    code = main([command, "-f", _write_case(tmp_path, case)], out=out, err=err)

    assert code == EXIT_BAD_INPUT, err.getvalue()
    assert out.getvalue() == ""
    assert re.search(rf"^error: \S+: {re.escape(case.field)}: ", err.getvalue(), re.MULTILINE), err.getvalue()


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "gptoss-operator"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gptoss_operator.cli"]


@pytest.mark.parametrize("case_id", ["both-weights-sources", "toleration-exists-with-value", "name-too-long"])
def test_gptoss_operator_render_prints_no_traceback(tmp_path: Path, case_id: str) -> None:
    case = CASES_BY_ID[case_id]
    result = subprocess.run(
        [*_console_script(), "render", "-f", _write_case(tmp_path, case)], capture_output=True, text=True, check=False
    )

    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert f": {case.field}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
