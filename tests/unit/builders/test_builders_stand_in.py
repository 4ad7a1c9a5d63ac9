"""The CPU stand-in and the weights mirror: operator settings that change the pods, never the CR.

GPTOSS_ENGINE_STAND_IN=reference makes the server run the CPU reference engine with small CPU and memory,
while the pods keep requesting GPUs and keep their GPU placement; GPTOSS_WEIGHTS_MIRROR_ENDPOINT is the
Hub the weights Job uses when the CR names none.
"""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pytest
from builders_support import ALL_FEATURES, GOLDEN_DIR, SETTINGS, by_kind, cr_from, one, sample
from test_builders_validate import BUILT_IN_GROUPS, KUBERNETES_VERSION

from gptoss_operator import names
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import build_children
from gptoss_operator.cli import dump_yaml_documents
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

MIRROR = "http://hf-mirror.gpt-oss-system.svc:8080"
STAND_IN = OperatorSettings(engine_stand_in="reference", weights_mirror_endpoint=MIRROR)
GOLDEN = GOLDEN_DIR / "standin-sample-gpt-oss-20b.yaml"


def build(cr: GptOssDeployment, settings: OperatorSettings) -> list[dict[str, Any]]:
    return build_children(cr, plan(cr.spec, settings), settings, ALL_FEATURES)


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(objects)["containers"] if c["name"] == name)


def fetch_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The download: the Job's container (a shared cache), else the server pod's init container."""
    jobs = by_kind(objects, "Job")
    if jobs:
        return next(c for c in jobs[0]["spec"]["template"]["spec"]["containers"] if c["name"] == "fetch")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["initContainers"] if c["name"] == "fetch")


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in item.get("env", [])}


def test_stand_in_serves_with_the_reference_engine() -> None:
    objects = build(sample("gpt-oss-20b"), STAND_IN)
    command = container(objects, "server")["command"]
    assert command[command.index("--engine") + 1] == "reference"
    assert "--plan" in command and "--require-marker" in command  # the same contract as on GPUs
    assert env_of(container(objects, "server"))["GPTOSS_ENGINE_STAND_IN"] == "reference"
    annotations = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_ENGINE] == "reference"


def test_gpu_cluster_pods_are_unchanged_by_the_new_settings() -> None:
    objects = build(sample("gpt-oss-20b"), SETTINGS)
    command = container(objects, "server")["command"]
    assert command[command.index("--engine") + 1] == "trtllm"
    assert "GPTOSS_ENGINE_STAND_IN" not in env_of(container(objects, "server"))
    assert names.ANNOTATION_ENGINE not in one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def test_stand_in_keeps_gpu_requests_affinity_and_tolerations() -> None:
    cr = sample("gpt-oss-120b-2xh100")
    on_gpus, stand_in = pod_spec(build(cr, SETTINGS)), pod_spec(build(cr, STAND_IN))
    assert stand_in["affinity"] == on_gpus["affinity"]
    assert stand_in["tolerations"] == on_gpus["tolerations"]
    server = next(c for c in stand_in["containers"] if c["name"] == "server")
    assert server["resources"]["requests"][names.GPU_RESOURCE] == "2"
    assert server["resources"]["limits"][names.GPU_RESOURCE] == "2"


def test_stand_in_resources_are_small_and_override_the_spec() -> None:
    cr = cr_from(
        {
            "model": "gpt-oss-20b",
            "gpu": {"product": "NVIDIA-H100-80GB-HBM3"},
            "resources": {"requests": {"cpu": "16", "memory": "96Gi"}, "limits": {"memory": "96Gi"}},
        }
    )
    objects = build(cr, STAND_IN)
    assert container(objects, "server")["resources"] == {
        "requests": {"cpu": "100m", "memory": "768Mi", names.GPU_RESOURCE: "1"},
        "limits": {"memory": "2Gi", names.GPU_RESOURCE: "1"},
    }
    assert container(objects, "gateway")["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert fetch_container(objects)["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }


def test_stand_in_resources_come_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_ENGINE_STAND_IN", "reference")
    monkeypatch.setenv(
        "GPTOSS_STAND_IN_RESOURCES",
        '{"server": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}}',
    )
    objects = build(sample("gpt-oss-20b"), OperatorSettings())
    resources = container(objects, "server")["resources"]
    assert resources["requests"] == {"cpu": "250m", "memory": "1Gi", names.GPU_RESOURCE: "1"}
    assert resources["limits"] == {"memory": "3Gi", names.GPU_RESOURCE: "1"}


def test_an_unknown_stand_in_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_ENGINE_STAND_IN", "cpu")
    with pytest.raises(ValueError, match="engine_stand_in"):
        OperatorSettings()


def test_the_mirror_setting_is_the_jobs_hub_when_the_cr_names_none() -> None:
    objects = build(sample("gpt-oss-20b"), STAND_IN)
    assert env_of(fetch_container(objects))["HF_ENDPOINT"] == MIRROR


def test_the_crs_endpoint_wins_over_the_mirror_setting() -> None:
    own = "https://hub.example.internal"
    cr = cr_from(
        {
            "model": "gpt-oss-20b",
            "gpu": {"product": "NVIDIA-H100-80GB-HBM3"},
            "weights": {"huggingFace": {"endpoint": own}},
        }
    )
    assert env_of(fetch_container(build(cr, STAND_IN)))["HF_ENDPOINT"] == own


def test_a_new_mirror_makes_a_new_job_and_no_mirror_keeps_the_old_name() -> None:
    cr = sample("gpt-oss-20b")
    without = one(build(cr, SETTINGS), "Job")["metadata"]["name"]
    with_mirror = one(build(cr, STAND_IN), "Job")["metadata"]["name"]
    assert with_mirror != without  # job templates are immutable: the endpoint is part of the name
    blank = OperatorSettings(weights_mirror_endpoint="")
    assert blank.weights_mirror_endpoint is None
    assert one(build(cr, blank), "Job")["metadata"]["name"] == without


def test_a_mirror_that_is_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="weights_mirror_endpoint"):
        OperatorSettings(weights_mirror_endpoint="hf-mirror:8080")


def test_stand_in_golden_file() -> None:
    rendered = dump_yaml_documents(build(sample("gpt-oss-20b"), STAND_IN))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(rendered, encoding="utf-8")
    assert rendered == GOLDEN.read_text(encoding="utf-8"), (
        f"{GOLDEN.name} differs; regenerate with UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/builders"
    )


def test_stand_in_children_validate_strictly_and_stay_restricted() -> None:
    objects = [o for o in build(sample("gpt-oss-120b-2xh100"), STAND_IN) if o["apiVersion"] in BUILT_IN_GROUPS]
    for item in objects:
        kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
    for item in objects:
        if item["kind"] in ("Deployment", "Job"):
            pod = item["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for each in [*pod.get("initContainers", []), *pod["containers"]]:
                assert each["securityContext"]["readOnlyRootFilesystem"] is True
                assert each["securityContext"]["capabilities"] == {"drop": ["ALL"]}
