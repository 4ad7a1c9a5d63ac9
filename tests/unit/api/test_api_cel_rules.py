"""The CRD's admission rules, checked without a cluster: defaults, schema and CEL (cel-python).

The same table of invalid specs runs against the real API server in e2e/test_admission.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from admission_cases import INVALID_CASES, SAMPLE_NAMES, InvalidCase, custom_resource, load_sample
from crd_simulator import admit, evaluate_rule, iter_rules
from pydantic import ValidationError

from gptoss_operator import api, catalog, crd


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda case: case.id)
def test_invalid_spec_is_rejected_naming_the_field(schema: dict[str, Any], case: InvalidCase) -> None:
    if case.old is not None:
        assert admit(schema, case.old).allowed, "the old object of an update case must itself be valid"
    result = admit(schema, case.obj, case.old)

    assert not result.allowed, f"{case.id} was admitted"
    assert any(case.field in error for error in result.errors), result.errors


def test_the_table_is_big_and_its_ids_unique() -> None:
    assert len(INVALID_CASES) >= 20
    assert len({case.id for case in INVALID_CASES}) == len(INVALID_CASES)


def test_every_cel_rule_rejects_at_least_one_case(schema: dict[str, Any]) -> None:
    triggered = {rule for case in INVALID_CASES for rule in admit(schema, case.obj, case.old).failed_rules}
    every_rule = {rule["rule"] for _, rule in iter_rules(schema)}

    assert every_rule - triggered == set()


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_samples_are_admitted(schema: dict[str, Any], file_name: str) -> None:
    result = admit(schema, load_sample(file_name))
    assert result.errors == []


def test_a_minimal_object_is_admitted_and_defaulted(schema: dict[str, Any]) -> None:
    result = admit(schema, custom_resource("gpt-oss"))

    assert result.allowed
    assert result.defaulted["spec"]["replicas"] == 1
    assert result.defaulted["spec"]["imagePullPolicy"] == "IfNotPresent"


def test_an_update_that_keeps_the_model_is_admitted(schema: dict[str, Any]) -> None:
    old = custom_resource("m", replicas=1)
    new = custom_resource("m", replicas=3)
    assert admit(schema, new, old).allowed


# Each rule on its own, on the smallest `self` that shows it: (rule, accepted selves, rejected selves).
RULE_CASES: list[tuple[dict[str, Any], list[Any], list[Any]]] = [
    (
        api.CEL_GPU_COUNT_PER_MODEL,
        [
            {"model": "gpt-oss-20b"},
            {"model": "gpt-oss-20b", "gpu": {}},
            {"model": "gpt-oss-20b", "gpu": {"count": 1}},
            {"model": "gpt-oss-120b", "gpu": {"count": 2}},
        ],
        [{"model": "gpt-oss-20b", "gpu": {"count": 2}}],
    ),
    (
        api.CEL_REPLICAS_WITHIN_AUTOSCALING,
        [
            {"replicas": 9},
            {"replicas": 9, "autoscaling": {"enabled": False, "minReplicas": 1, "maxReplicas": 2}},
            {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 2}},
        ],
        [
            {"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}},
            {"replicas": 0, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2}},
        ],
    ),
    (
        api.CEL_ONE_WEIGHTS_SOURCE,
        [{}, {"huggingFace": {}}, {"existingClaim": {"claimName": "x"}}],
        [{"huggingFace": {}, "existingClaim": {"claimName": "x"}}],
    ),
    (
        api.CEL_MIN_LE_MAX,
        [{"minReplicas": 1, "maxReplicas": 1}, {"minReplicas": 0, "maxReplicas": 4}],
        [{"minReplicas": 5, "maxReplicas": 4}],
    ),
    (
        api.CEL_HPA_MIN_REPLICAS,
        [{"mode": "hpa", "minReplicas": 1}, {"mode": "keda", "minReplicas": 0}, {"mode": "operator", "minReplicas": 0}],
        [{"mode": "hpa", "minReplicas": 0}],
    ),
    (
        api.CEL_KEDA_NEEDS_PROMETHEUS,
        [
            {"enabled": True, "mode": "keda", "prometheusAddress": "http://prometheus:9090"},
            {"enabled": False, "mode": "keda"},
            {"enabled": True, "mode": "operator"},
        ],
        [{"enabled": True, "mode": "keda"}],
    ),
    (
        api.CEL_NO_GPU_IN_RESOURCES,
        [{}, {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}}],
        [{"limits": {"nvidia.com/gpu": "1"}}, {"requests": {"nvidia.com/gpu": "2"}}],
    ),
    (
        api.CEL_SUB_PATH_STAYS_INSIDE,
        ["", "models/gpt-oss-20b", "a..b/c", "..hidden"],
        ["..", "../x", "a/../../x", "a/.."],
    ),
    (
        api.CEL_TOLERATION_KEY_OR_EXISTS,
        [{"key": "a"}, {"operator": "Exists"}, {"key": "", "operator": "Exists"}],
        [{}, {"operator": "Equal", "value": "x"}, {"key": ""}],
    ),
    (
        api.CEL_TOLERATION_EXISTS_NO_VALUE,
        [
            {"key": "a", "operator": "Exists"},
            {"key": "a", "operator": "Exists", "value": ""},
            {"key": "a", "value": "v"},
        ],
        [{"key": "a", "operator": "Exists", "value": "v"}],
    ),
    (
        api.CEL_TOLERATION_SECONDS_NO_EXECUTE,
        [{"key": "a"}, {"key": "a", "effect": "NoExecute", "tolerationSeconds": 30}],
        [{"key": "a", "tolerationSeconds": 30}, {"key": "a", "effect": "NoSchedule", "tolerationSeconds": 30}],
    ),
    (
        api.CEL_MIG_ONE_SLICE,
        [{}, {"count": 2}, {"migProfile": "3g.40gb"}, {"migProfile": "3g.40gb", "count": 1}],
        [{"migProfile": "7g.141gb", "count": 2}],
    ),
    (
        api.CEL_CACHE_NOT_READ_ONLY,
        [{}, {"accessMode": "ReadWriteMany"}, {"accessMode": "ReadWriteOncePod"}],
        [{"accessMode": "ReadOnlyMany"}],
    ),
    (
        api.CEL_SINGLE_NODE_CACHE_ONE_REPLICA,
        [
            {"replicas": 5},
            {"replicas": 1, "weights": {"cache": {"accessMode": "ReadWriteOnce"}}},
            {"replicas": 0, "weights": {"cache": {"accessMode": "ReadWriteOncePod"}}},
            {"replicas": 4, "weights": {"cache": {"accessMode": "ReadWriteMany"}}},
            {"replicas": 3, "weights": {"existingClaim": {"claimName": "m"}, "cache": {"accessMode": "ReadWriteOnce"}}},
            {
                "replicas": 1,
                "weights": {"cache": {"accessMode": "ReadWriteOnce"}},
                "autoscaling": {"enabled": False, "maxReplicas": 4},
            },
            {
                "replicas": 1,
                "weights": {"cache": {"accessMode": "ReadWriteOnce"}},
                "autoscaling": {"enabled": True, "maxReplicas": 1},
            },
        ],
        [
            {"replicas": 2, "weights": {"cache": {"accessMode": "ReadWriteOnce"}}},
            {"replicas": 2, "weights": {"cache": {"accessMode": "ReadWriteOncePod"}}},
            {
                "replicas": 1,
                "weights": {"cache": {"accessMode": "ReadWriteOnce"}},
                "autoscaling": {"enabled": True, "maxReplicas": 2},
            },
        ],
    ),
    (
        crd.CEL_NAME_IS_DNS_LABEL,
        [{"metadata": {"name": "gpt-oss-20b"}}, {"metadata": {"name": "a"}}, {"metadata": {"name": "g0-1"}}],
        [
            {"metadata": {"name": "1gpt"}},
            {"metadata": {"name": "gpt.oss"}},
            {"metadata": {"name": "gpt-"}},
        ],
    ),
]


@pytest.mark.parametrize(("rule", "accepted", "rejected"), RULE_CASES, ids=lambda v: str(v)[:40])
def test_each_rule_accepts_and_rejects(rule: dict[str, Any], accepted: list[Any], rejected: list[Any]) -> None:
    assert [evaluate_rule(rule["rule"], value) for value in accepted] == [True] * len(accepted)
    assert [evaluate_rule(rule["rule"], value) for value in rejected] == [False] * len(rejected)


def test_the_model_is_immutable() -> None:
    rule = str(api.CEL_MODEL_IMMUTABLE["rule"])
    assert evaluate_rule(rule, "gpt-oss-20b", "gpt-oss-20b")
    assert not evaluate_rule(rule, "gpt-oss-120b", "gpt-oss-20b")


def test_every_rule_message_starts_with_the_field_it_is_about(schema: dict[str, Any]) -> None:
    rules = iter_rules(schema)
    property_names = _all_property_names(schema) | {"metadata", "name"}
    assert len(rules) >= 12
    for _, rule in rules:
        field = rule["message"].split()[0].rstrip(":")
        assert set(field.split(".")) <= property_names, rule["message"]


def _all_property_names(node: dict[str, Any]) -> set[str]:
    found = set(node.get("properties", {}))
    for sub in node.get("properties", {}).values():
        found |= _all_property_names(sub)
    if isinstance(node.get("items"), dict):
        found |= _all_property_names(node["items"])
    return found


SERVER_ONLY_CHECKS = ("metadata.name", "Duplicate value")  # checks outside the spec schema and its CEL rules


def _schema_only_cases() -> list[InvalidCase]:
    """The cases refused by the OpenAPI schema alone (no CEL rule, no server-only check)."""
    schema = crd.generate_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found = []
    for case in INVALID_CASES:
        result = admit(schema, case.obj, case.old)
        if not result.failed_rules and not any(c in e for e in result.errors for c in SERVER_ONLY_CHECKS):
            found.append(case)
    return found


@pytest.mark.parametrize("case", _schema_only_cases(), ids=lambda case: case.id)
def test_schema_rejections_agree_with_the_pydantic_models(case: InvalidCase) -> None:
    """What the CRD's schema refuses (CEL aside), the operator's models refuse too: one schema source."""
    with pytest.raises(ValidationError) as caught:
        api.GptOssDeploymentSpec.model_validate(case.obj["spec"])

    locations = {"spec." + ".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}
    wanted = case.field.replace("[", ".").replace("]", "")
    assert any(location.startswith(wanted) or wanted.startswith(location) for location in locations), locations


# ------------------------------------------------------------------------------ the cache's transitions
def _spec(model: str = "gpt-oss-20b", **weights: Any) -> dict[str, Any]:
    return {"model": model, "weights": weights} if weights else {"model": model}


# (rule, (old spec, new spec) pairs it admits, pairs it refuses)
TRANSITION_CASES: list[tuple[dict[str, Any], list[tuple[Any, Any]], list[tuple[Any, Any]]]] = [
    (
        api.CEL_CACHE_ACCESS_MODE_IMMUTABLE,
        [
            (_spec(), _spec()),
            # Volumes per replica to one shared claim and back: a new claim either way, none changes.
            (_spec(), _spec(cache={"accessMode": "ReadWriteMany"})),
            (_spec(), _spec(cache={"accessMode": "ReadWriteOnce"})),
            (_spec(cache={"accessMode": "ReadWriteMany"}), _spec()),
            (_spec(cache={"accessMode": "ReadWriteMany"}), _spec(cache={"accessMode": "ReadWriteMany"})),
            (_spec(), _spec(existingClaim={"claimName": "m"}, cache={"accessMode": "ReadWriteOnce"})),
            (_spec(existingClaim={"claimName": "m"}), _spec(cache={"accessMode": "ReadWriteOnce"})),
        ],
        [
            (_spec(cache={"accessMode": "ReadWriteMany"}), _spec(cache={"accessMode": "ReadWriteOnce"})),
            (_spec(cache={"accessMode": "ReadWriteOnce"}), _spec(cache={"accessMode": "ReadWriteOncePod"})),
        ],
    ),
    (
        api.CEL_CACHE_STORAGE_CLASS_IMMUTABLE,
        [
            (_spec(cache={"storageClassName": "fast"}), _spec(cache={"storageClassName": "fast", "size": "90Gi"})),
            (_spec(existingClaim={"claimName": "m"}), _spec(cache={"storageClassName": "fast"})),
        ],
        [
            (_spec(), _spec(cache={"storageClassName": "fast"})),
            (_spec(cache={"storageClassName": "fast"}), _spec()),
            (_spec(cache={"storageClassName": "fast"}), _spec(cache={"storageClassName": "slow"})),
        ],
    ),
    (
        api.CEL_CACHE_SIZE_NO_SHRINK,
        [
            (_spec(), _spec()),
            (_spec(), _spec(cache={"size": "40Gi"})),  # gpt-oss-20b's default size, written out
            (_spec(cache={"size": "100Gi"}), _spec(cache={"size": "200Gi"})),
            (_spec(cache={"size": "1Ti"}), _spec(cache={"size": "1024Gi"})),  # equal in another unit
            (_spec(cache={"size": "100G"}), _spec(cache={"size": "93.2Gi"})),  # 100 GB < 93.2 GiB
            (_spec("gpt-oss-120b"), _spec("gpt-oss-120b", cache={"size": "150Gi"})),
            (_spec(cache={"size": "500Gi"}), _spec(existingClaim={"claimName": "m"})),
        ],
        [
            (_spec(cache={"size": "100Gi"}), _spec(cache={"size": "99Gi"})),
            (_spec(cache={"size": "100Gi"}), _spec(cache={"size": "100G"})),  # 100 GB is less than 100 GiB
            (_spec(), _spec(cache={"size": "39Gi"})),
            (_spec("gpt-oss-120b"), _spec("gpt-oss-120b", cache={"size": "100Gi"})),
            (_spec(cache={"size": "1Ti"}), _spec()),  # leaving it out falls back to the smaller default
        ],
    ),
]


@pytest.mark.parametrize(("rule", "admitted", "refused"), TRANSITION_CASES, ids=lambda v: str(v)[:40])
def test_each_cache_transition_rule_admits_and_refuses(
    rule: dict[str, Any], admitted: list[tuple[Any, Any]], refused: list[tuple[Any, Any]]
) -> None:
    text = str(rule["rule"])
    assert [evaluate_rule(text, new, old) for old, new in admitted] == [True] * len(admitted)
    assert [evaluate_rule(text, new, old) for old, new in refused] == [False] * len(refused)


def test_the_cache_rules_are_transition_rules_of_the_spec(schema: dict[str, Any]) -> None:
    """They compare with oldSelf, so they run on updates only, where both objects exist (spec always does)."""
    spec_rules = [rule["rule"] for rule in schema["properties"]["spec"]["x-kubernetes-validations"]]
    for rule in api.CACHE_TRANSITION_RULES:
        assert rule["rule"] in spec_rules
        assert "oldSelf" in str(rule["rule"])


def test_the_size_rule_defaults_to_the_catalogs_sizes() -> None:
    rule = str(api.CEL_CACHE_SIZE_NO_SHRINK["rule"])
    for model in ("gpt-oss-20b", "gpt-oss-120b"):
        assert f"'{catalog.MODELS[model].default_cache_size}'" in rule


@pytest.mark.parametrize(
    ("text", "value"),
    [("40Gi", 40 * 1024**3), ("1.5Ti", 3 * 1024**4 // 2), ("100G", 100 * 10**9), ("7", 7), ("2k", 2000)],
)
def test_quantities_parse_as_kubernetes_reads_them(text: str, value: int) -> None:
    assert api.parse_quantity(text) == value


def test_a_quantity_of_another_form_is_refused() -> None:
    with pytest.raises(ValueError, match="quantity"):
        api.parse_quantity("40GB")


# What the API server accepts in a rule (apiextensions validation: supportedValidationReason); anything else
# makes the whole CRD invalid.
SUPPORTED_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}


def test_every_rule_reason_is_one_the_api_server_accepts(schema: dict[str, Any]) -> None:
    reasons = {rule["reason"] for _, rule in iter_rules(schema) if "reason" in rule}
    assert reasons <= SUPPORTED_REASONS
