"""Placement the cluster operator sets for every GptOssDeployment: the server pool and where downloads run.

GPTOSS_SERVER_NODE_SELECTOR is added to every server pod over the CR's own nodeSelector (a CR cannot leave
the pool); GPTOSS_FETCH_NODE_SELECTOR, _TOLERATIONS and _PRIORITY_CLASS_NAME place the weights Job's pod,
which needs no GPU. Without them the pods render as before (no restart on upgrade).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from builders_support import ALL_FEATURES, SETTINGS, one, sample

from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import build_children
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

POOL = {"pool": "inference"}


def build(cr: GptOssDeployment, settings: OperatorSettings) -> list[dict[str, Any]]:
    return build_children(cr, plan(cr.spec, settings), settings, ALL_FEATURES)


def server_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def job_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Job")["spec"]["template"]["spec"]
    return spec


def test_server_pods_join_the_cluster_operators_pool_over_the_crs_own_selector() -> None:
    cr = sample("gpt-oss-20b")
    cr = cr.model_copy(update={"spec": cr.spec.model_copy(update={"node_selector": {"pool": "mine", "zone": "a"}})})
    objects = build(cr, OperatorSettings(server_node_selector=POOL))
    assert server_pod(objects)["nodeSelector"] == {"pool": "inference", "zone": "a"}
    assert "nodeSelector" not in job_pod(objects)  # the Job has its own setting


def test_the_weights_job_runs_where_the_settings_place_it() -> None:
    settings = OperatorSettings(
        fetch_node_selector={"role": "download"},
        fetch_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        fetch_priority_class_name="batch-low",
    )
    pod = job_pod(build(sample("gpt-oss-20b"), settings))
    assert pod["nodeSelector"] == {"role": "download"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "batch-low"


def test_without_placement_settings_nothing_changes() -> None:
    plain = build(sample("gpt-oss-20b"), SETTINGS)
    assert "nodeSelector" not in job_pod(plain) and "tolerations" not in job_pod(plain)
    assert build(sample("gpt-oss-20b"), OperatorSettings(server_node_selector={})) == plain


def test_settings_come_from_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_SERVER_NODE_SELECTOR", json.dumps(POOL))
    monkeypatch.setenv("GPTOSS_FETCH_TOLERATIONS", json.dumps([{"key": "gpu", "operator": "Exists"}]))
    settings = OperatorSettings()
    assert settings.server_node_selector == POOL
    assert settings.fetch_tolerations[0].manifest() == {"key": "gpu", "operator": "Exists"}


def test_a_misspelt_toleration_field_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="efect"):
        OperatorSettings(fetch_tolerations=[{"key": "gpu", "efect": "NoSchedule"}])
