"""The pydantic models of GptOssDeployment: defaults, unknown fields, enums and bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gptoss_operator.api import DEFAULT_GPU_PRODUCT, GptOssDeployment, GptOssDeploymentSpec


def _spec(**fields: Any) -> GptOssDeploymentSpec:
    return GptOssDeploymentSpec.model_validate({"model": "gpt-oss-20b", **fields})


def _error_locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in error.errors()]


def test_a_minimal_spec_gets_every_default() -> None:
    spec = _spec()

    assert spec.replicas == 1
    assert spec.gpu.product == DEFAULT_GPU_PRODUCT
    assert spec.gpu.count is None  # the planner chooses
    assert spec.engine.max_seq_len is None
    assert spec.engine.kv_cache_dtype == "auto"
    assert spec.engine.moe_backend == "auto"
    assert spec.serving.reasoning_effort == "medium"
    assert spec.serving.openai_endpoint is True
    assert spec.weights.hugging_face is None and spec.weights.existing_claim is None
    assert spec.weights.cache.access_mode is None  # a volume per replica (docs/storage.md)
    assert not spec.shares_cache
    assert spec.autoscaling.enabled is False
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 4)
    assert spec.autoscaling.scale_down.stabilization_window_seconds == 300
    assert spec.service.type == "ClusterIP"
    assert spec.network_policy.enabled is True
    assert spec.disruption_budget.max_unavailable == 1


def test_camel_case_aliases_round_trip() -> None:
    spec = _spec(engine={"maxSeqLen": 8192, "kvCacheMemoryFraction": 0.8}, imagePullPolicy="Always")

    dumped = spec.model_dump(by_alias=True, exclude_none=True)

    assert dumped["engine"]["maxSeqLen"] == 8192
    assert dumped["engine"]["kvCacheMemoryFraction"] == 0.8
    assert dumped["imagePullPolicy"] == "Always"
    assert GptOssDeploymentSpec.model_validate(dumped) == spec


def test_model_is_required() -> None:
    with pytest.raises(ValidationError) as caught:
        GptOssDeploymentSpec.model_validate({})
    assert _error_locations(caught.value) == ["model"]


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"gpus": 2}, "gpus"),
        ({"engine": {"maxSeqLength": 8192}}, "engine.maxSeqLength"),
        ({"weights": {"huggingface": {"repo": "openai/gpt-oss-20b"}}}, "weights.huggingface"),
        ({"tolerations": [{"key": "a", "effct": "NoSchedule"}]}, "tolerations.0.effct"),
    ],
)
def test_unknown_fields_are_rejected_naming_the_field(fields: dict[str, Any], location: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _spec(**fields)
    assert location in _error_locations(caught.value)
    assert "Extra inputs are not permitted" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"model": "gpt-oss-7b"}, "model"),
        ({"engine": {"moeBackend": "DEEPGEMM"}}, "engine.moeBackend"),
        ({"engine": {"kvCacheDtype": "fp4"}}, "engine.kvCacheDtype"),
        ({"serving": {"reasoningEffort": "extreme"}}, "serving.reasoningEffort"),
        ({"autoscaling": {"mode": "vpa"}}, "autoscaling.mode"),
        ({"service": {"type": "ExternalName"}}, "service.type"),
        ({"tolerations": [{"key": "a", "effect": "NoRun"}]}, "tolerations.0.effect"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
    ],
)
def test_enums_reject_other_values(fields: dict[str, Any], location: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _spec(**fields)
    assert location in _error_locations(caught.value)


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"replicas": -1}, "replicas"),
        ({"gpu": {"count": 3}}, "gpu.count"),
        ({"engine": {"kvCacheMemoryFraction": 1.5}}, "engine.kvCacheMemoryFraction"),
        ({"engine": {"maxSeqLen": 10}}, "engine.maxSeqLen"),
        ({"engine": {"maxBatchSize": 0}}, "engine.maxBatchSize"),
        ({"weights": {"cache": {"size": "100GB"}}}, "weights.cache.size"),
        ({"weights": {"huggingFace": {"repo": "gpt-oss-20b"}}}, "weights.huggingFace.repo"),
        ({"weights": {"existingClaim": {"claimName": "My_PVC"}}}, "weights.existingClaim.claimName"),
        ({"gpu": {"product": "NVIDIA H100"}}, "gpu.product"),
        ({"networkPolicy": {"allowedNamespaces": ["Bad_NS"]}}, "networkPolicy.allowedNamespaces.0"),
        ({"resources": {"requests": {"cpu": 8}}}, "resources.requests.cpu"),
        ({"nodeSelector": {f"k{i}": "v" for i in range(65)}}, "nodeSelector"),
        ({"tolerations": [{"key": "a"}] * 33}, "tolerations"),
    ],
)
def test_bounds_and_patterns_are_enforced(fields: dict[str, Any], location: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _spec(**fields)
    assert location in _error_locations(caught.value)


def test_the_whole_object_parses_and_ignores_server_metadata() -> None:
    cr = GptOssDeployment.model_validate(
        {
            "apiVersion": "gptoss.io/v1alpha1",
            "kind": "GptOssDeployment",
            "metadata": {"name": "m", "namespace": "ml", "uid": "u-1", "generation": 3, "managedFields": []},
            "spec": {"model": "gpt-oss-120b", "gpu": {"count": 2}},
        }
    )

    assert (cr.name, cr.namespace, cr.metadata.generation) == ("m", "ml", 3)
    assert cr.spec.gpu.count == 2
    assert cr.status is None
