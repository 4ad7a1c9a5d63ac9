"""Invalid GptOssDeployments and the field each rejection must name.

One table serves two judges: tests/unit/api/test_admission_simulated.py runs it through the CRD with
cel-python, e2e/test_admission.py through the real API server (`kubectl create --dry-run=server`).
`field` is a substring both judges' error messages contain: the path of the offending field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLES_DIR = REPO_ROOT / "manifests" / "samples"
SAMPLE_NAMES = (
    "gpt-oss-20b.yaml",
    "gpt-oss-120b-1xh100.yaml",
    "gpt-oss-120b-2xh100.yaml",
    "gpt-oss-120b-autoscaling.yaml",
)
DELETE = object()  # a patch value that removes the key


def custom_resource(name: str = "bad", **spec: Any) -> dict[str, Any]:
    """A minimal valid GptOssDeployment (gpt-oss-20b), with `spec` keys replaced."""
    return {
        "apiVersion": "gptoss.io/v1alpha1",
        "kind": "GptOssDeployment",
        "metadata": {"name": name},
        "spec": {"model": "gpt-oss-20b", **spec},
    }


def merged(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of `patch` into a copy of `base`; `DELETE` values remove keys."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class InvalidCase:
    """One spec the API server must refuse; `old` makes it an update of that object."""

    id: str
    obj: dict[str, Any]
    field: str
    old: dict[str, Any] | None = None


def _case(case_id: str, field: str, *, name: str = "bad", **spec: Any) -> InvalidCase:
    obj = custom_resource(name)
    obj["spec"] = merged(obj["spec"], spec)
    return InvalidCase(case_id, obj, field)


_AUTOSCALING_ON = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}


def _cache(**cache: Any) -> dict[str, Any]:
    """A `weights` value with these cache fields."""
    return {"cache": cache}


def _update(case_id: str, field: str, old_weights: dict[str, Any], new_weights: dict[str, Any]) -> InvalidCase:
    """An update of a gpt-oss-20b from `old_weights` to `new_weights` (its own name, so e2e cases never meet)."""
    old, new = custom_resource(case_id), custom_resource(case_id)
    old["spec"]["weights"], new["spec"]["weights"] = old_weights, new_weights
    return InvalidCase(case_id, new, field, old=old)


INVALID_CASES: tuple[InvalidCase, ...] = (
    # --- required, enums, unknown fields
    _case("missing-model", "spec.model", model=DELETE),
    _case("unknown-model", "spec.model", model="gpt-oss-7b"),
    _case("unknown-field-gpus", "spec.gpus", gpus=2),
    _case("unknown-nested-field", "spec.engine.maxSeqLength", engine={"maxSeqLength": 8192}),
    _case("bad-moe-backend", "spec.engine.moeBackend", engine={"moeBackend": "DEEPGEMM"}),
    _case("bad-gpu-architecture", "spec.gpu.architecture", gpu={"architecture": "ampere"}),
    _case("bad-kv-cache-dtype", "spec.engine.kvCacheDtype", engine={"kvCacheDtype": "fp4"}),
    _case("bad-autoscaling-mode", "spec.autoscaling.mode", autoscaling={"mode": "vpa"}),
    _case("bad-reasoning-effort", "spec.serving.reasoningEffort", serving={"reasoningEffort": "extreme"}),
    _case("bad-service-type", "spec.service.type", service={"type": "ExternalName"}),
    _case("bad-toleration-effect", "spec.tolerations[0].effect", tolerations=[{"key": "a", "effect": "NoRun"}]),
    _case("bad-image-pull-policy", "spec.imagePullPolicy", imagePullPolicy="Sometimes"),
    _case("bad-cache-access-mode", "spec.weights.cache.accessMode", weights={"cache": {"accessMode": "RWX"}}),
    # --- types and ranges
    _case("replicas-negative", "spec.replicas", replicas=-1),
    _case("replicas-not-a-number", "spec.replicas", replicas="two"),
    _case("gpu-count-3", "spec.gpu.count", model="gpt-oss-120b", gpu={"count": 3}),
    _case("kv-fraction-1.5", "spec.engine.kvCacheMemoryFraction", engine={"kvCacheMemoryFraction": 1.5}),
    _case("max-seq-len-10", "spec.engine.maxSeqLen", engine={"maxSeqLen": 10}),
    _case("max-batch-size-0", "spec.engine.maxBatchSize", engine={"maxBatchSize": 0}),
    _case("max-num-tokens-100", "spec.engine.maxNumTokens", engine={"maxNumTokens": 100}),
    _case("max-unavailable-0", "spec.disruptionBudget.maxUnavailable", disruptionBudget={"maxUnavailable": 0}),
    _case(
        "kv-utilization-target-0",
        "spec.autoscaling.targets.kvCacheUtilization",
        autoscaling={"targets": {"kvCacheUtilization": 0}},
    ),
    _case(
        "scale-up-missing-step",
        "spec.autoscaling.scaleUp.maxStepReplicas",
        autoscaling={"scaleUp": {"stabilizationWindowSeconds": 30}},
    ),
    _case("resource-value-not-string", "spec.resources.requests.cpu", resources={"requests": {"cpu": 8}}),
    # --- patterns
    _case("bad-cache-size", "spec.weights.cache.size", weights={"cache": {"size": "100GB"}}),
    _case("bad-repo-format", "spec.weights.huggingFace.repo", weights={"huggingFace": {"repo": "gpt-oss-20b"}}),
    _case("empty-revision", "spec.weights.huggingFace.revision", weights={"huggingFace": {"revision": ""}}),
    _case("bad-hub-endpoint", "spec.weights.huggingFace.endpoint", weights={"huggingFace": {"endpoint": "ftp://x"}}),
    _case(
        "token-ref-without-key",
        "spec.weights.huggingFace.tokenSecretRef.key",
        weights={"huggingFace": {"tokenSecretRef": {"name": "hf"}}},
    ),
    _case(
        "bad-claim-name",
        "spec.weights.existingClaim.claimName",
        weights={"existingClaim": {"claimName": "My_PVC"}},
    ),
    _case(
        "absolute-sub-path",
        "spec.weights.existingClaim.subPath",
        weights={"existingClaim": {"claimName": "models", "subPath": "/data"}},
    ),
    _case("bad-gpu-product", "spec.gpu.product", gpu={"product": "NVIDIA H100"}),
    _case("bad-mig-profile", "spec.gpu.migProfile", gpu={"migProfile": "3g40gb"}),
    _case("gpu-memory-too-small", "spec.gpu.memoryGiB", gpu={"product": "ACME-X1", "memoryGiB": 4}),
    _case(
        "bad-allowed-namespace",
        "spec.networkPolicy.allowedNamespaces[0]",
        networkPolicy={"allowedNamespaces": ["Bad_NS"]},
    ),
    # --- list types
    _case(
        "duplicate-allowed-namespace",
        "spec.networkPolicy.allowedNamespaces[1]",
        networkPolicy={"allowedNamespaces": ["team-a", "team-a"]},
    ),
    _case("duplicate-pull-secret", "spec.imagePullSecrets[1]", imagePullSecrets=[{"name": "r"}, {"name": "r"}]),
    # --- CEL rules
    _case("20b-on-2-gpus", "spec.gpu.count", gpu={"count": 2}),
    _case(
        "min-above-max",
        "spec.autoscaling.minReplicas",
        autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2},
    ),
    _case("replicas-above-autoscaling-max", "spec.replicas", replicas=5, autoscaling=_AUTOSCALING_ON),
    _case(
        "replicas-below-autoscaling-min",
        "spec.replicas",
        replicas=1,
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 3},
    ),
    _case(
        "hpa-scale-to-zero",
        "spec.autoscaling.minReplicas",
        autoscaling={"enabled": True, "mode": "hpa", "minReplicas": 0, "maxReplicas": 3},
    ),
    _case(
        "keda-without-prometheus",
        "spec.autoscaling.prometheusAddress",
        autoscaling={**_AUTOSCALING_ON, "mode": "keda"},
    ),
    _case(
        "both-weights-sources",
        "spec.weights",
        weights={"huggingFace": {"repo": "openai/gpt-oss-20b"}, "existingClaim": {"claimName": "models"}},
    ),
    _case(
        "responses-store-url-and-secret",
        "spec.serving.responsesStore",
        serving={"responsesStore": {"url": "redis://r:6379/0", "urlSecretRef": {"name": "s", "key": "url"}}},
    ),
    _case(
        "responses-store-not-redis", "spec.serving.responsesStore.url", serving={"responsesStore": {"url": "http://r"}}
    ),
    _case(
        "sub-path-escapes-volume",
        "spec.weights.existingClaim.subPath",
        weights={"existingClaim": {"claimName": "models", "subPath": "models/../../etc"}},
    ),
    _case("gpu-in-resource-limits", "spec.resources", resources={"limits": {"nvidia.com/gpu": "1"}}),
    _case("gpu-in-resource-requests", "spec.resources", resources={"requests": {"nvidia.com/gpu": "1"}}),
    _case(
        "toleration-without-key-equal",
        "spec.tolerations[0].key",
        tolerations=[{"operator": "Equal", "value": "x", "effect": "NoSchedule"}],
    ),
    _case(
        "toleration-exists-with-value",
        "spec.tolerations[0].value",
        tolerations=[{"key": "dedicated", "operator": "Exists", "value": "gpu"}],
    ),
    _case(
        "toleration-seconds-without-no-execute",
        "spec.tolerations[0].tolerationSeconds",
        tolerations=[{"key": "dedicated", "effect": "NoSchedule", "tolerationSeconds": 60}],
    ),
    _case("name-starts-with-digit", "metadata.name", name="1-gpt-oss"),
    _case("name-too-long", "metadata.name", name="g" * 60),
    InvalidCase(
        "model-changed-on-update",
        custom_resource("immutable", model="gpt-oss-120b"),
        "spec.model",
        old=custom_resource("immutable"),
    ),
    # --- GPUs and the weights cache (docs/gpus.md)
    _case("two-mig-slices", "spec.gpu.count", model="gpt-oss-120b", gpu={"migProfile": "7g.141gb", "count": 2}),
    _case("read-only-cache", "spec.weights.cache.accessMode", weights={"cache": {"accessMode": "ReadOnlyMany"}}),
    _case("rwo-cache-two-replicas", "spec.replicas", replicas=2, weights=_cache(accessMode="ReadWriteOnce")),
    _case(
        "rwop-cache-autoscaling-to-three",
        "spec.replicas",
        weights=_cache(accessMode="ReadWriteOncePod"),
        autoscaling=_AUTOSCALING_ON,
    ),
    _update(
        "cache-access-mode-changed",
        "spec.weights.cache.accessMode",
        _cache(accessMode="ReadWriteMany"),
        _cache(accessMode="ReadWriteOnce"),
    ),
    _update("cache-storage-class-set", "spec.weights.cache.storageClassName", {}, _cache(storageClassName="fast")),
    _update(
        "cache-storage-class-changed",
        "spec.weights.cache.storageClassName",
        _cache(storageClassName="standard"),
        _cache(storageClassName="fast"),
    ),
    _update("cache-size-shrunk", "spec.weights.cache.size", _cache(size="100Gi"), _cache(size="99Gi")),
    _update("cache-size-below-default", "spec.weights.cache.size", {}, _cache(size="20Gi")),
    # `weights` without `cache` (kubectl sends an empty `weights: {}` as null, which is another error).
    _update(
        "cache-size-left-out-after-growing",
        "spec.weights.cache.size",
        _cache(size="1Ti"),
        {"huggingFace": {"revision": "main"}},
    ),
)


def load_sample(file_name: str) -> dict[str, Any]:
    """One sample manifest from manifests/samples/."""
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((SAMPLES_DIR / file_name).read_text(encoding="utf-8"))
    return loaded


def missing_fields(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths present in `expected` that `actual` lacks or holds with another value (extra keys are fine)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [path or "<root>"]
        found: list[str] = []
        for key, value in expected.items():
            child = f"{path}.{key}" if path else key
            found += missing_fields(value, actual[key], child) if key in actual else [child]
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [path]
        return [
            p
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for p in missing_fields(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [path]
