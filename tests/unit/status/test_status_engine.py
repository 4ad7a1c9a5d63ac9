"""Status under the CPU stand-in (operator setting GPTOSS_ENGINE_STAND_IN): condition, field, Ready, Event."""

from __future__ import annotations

from typing import Any

from test_status_compute import TEMPLATE, compute, cond, observe, pod

from gptoss_operator import names, status
from gptoss_operator.builders import build_children
from gptoss_operator.cli import parse_deployment
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

STAND_IN_TEMPLATE = {**TEMPLATE, names.ANNOTATION_ENGINE: "reference"}


def stand_in(**overrides: Any) -> status.Observation:
    return observe(template_annotations=STAND_IN_TEMPLATE, **overrides)


def test_gpu_cluster_status_has_no_stand_in_condition() -> None:
    result = compute(observe())
    assert status.condition_of(result, names.COND_ENGINE_STAND_IN) is None
    assert result["engine"] == {"name": "trtllm", "standIn": False}
    assert "stands in" not in cond(result, names.COND_READY)["message"]


def test_stand_in_is_said_by_condition_field_and_ready_message() -> None:
    result = compute(stand_in())
    engine = cond(result, names.COND_ENGINE_STAND_IN)
    assert (engine["status"], engine["reason"]) == ("True", "CpuReferenceEngine")
    assert engine["message"] == (
        "the CPU reference engine stands in for TensorRT-LLM (cluster setting GPTOSS_ENGINE_STAND_IN=reference); "
        "GPUs are simulated"
    )
    assert result["engine"] == {"name": "reference", "standIn": True}
    ready = cond(result, names.COND_READY)
    assert ready["status"] == "True"
    assert ready["message"].startswith("2/2 replicas of generation 3 ready; ")
    assert "CPU reference engine stands in for TensorRT-LLM" in ready["message"]


def test_ready_message_says_it_while_not_ready_too() -> None:
    result = compute(stand_in(pods=[pod("a", ready=False), pod("b", ready=False)]))
    ready = cond(result, names.COND_READY)
    assert ready["status"] == "False"
    assert "GPUs are simulated" in ready["message"]


def test_one_normal_event_when_the_stand_in_starts_serving() -> None:
    first = compute(stand_in(pods=[pod("a", ready=False), pod("b", ready=False)]))
    events = status.transition_events(None, first)
    stand_in_events = [e for e in events if e.reason == names.COND_ENGINE_STAND_IN]
    assert len(stand_in_events) == 1
    assert stand_in_events[0].type == "Normal"
    assert "GPTOSS_ENGINE_STAND_IN=reference" in stand_in_events[0].message
    again = compute(stand_in(), previous=first)
    assert [e.reason for e in status.transition_events(first, again)] == ["Ready"]
    assert status.transition_events(again, compute(stand_in(), previous=again)) == []


def test_turning_the_stand_in_off_says_tensorrt_llm_serves() -> None:
    before = compute(stand_in())
    after = compute(observe(), previous=before)
    engine = cond(after, names.COND_ENGINE_STAND_IN)
    assert (engine["status"], engine["reason"]) == ("False", "TensorRTLLM")
    assert after["engine"] == {"name": "trtllm", "standIn": False}
    assert status.transition_events(before, after) == []


def test_the_builders_annotation_is_what_status_reads() -> None:
    cr = parse_deployment(
        {
            "apiVersion": "gptoss.io/v1alpha1",
            "kind": "GptOssDeployment",
            "metadata": {"name": "demo", "namespace": "team"},
            "spec": {"model": "gpt-oss-20b", "gpu": {"product": "NVIDIA-H100-80GB-HBM3"}},
        }
    )
    settings = OperatorSettings(engine_stand_in="reference")
    (deployment,) = [c for c in build_children(cr, plan(cr.spec, settings), settings) if c["kind"] == "Deployment"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    result = compute(observe(template_annotations=annotations))
    assert cond(result, names.COND_ENGINE_STAND_IN)["status"] == "True"
