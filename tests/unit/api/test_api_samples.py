"""The sample manifests: valid against the models, commented, and each showing what its name says."""

from __future__ import annotations

from typing import Any

import pytest
from admission_cases import SAMPLE_NAMES, SAMPLES_DIR, load_sample

from gptoss_operator.api import GptOssDeployment


def _parsed(file_name: str) -> GptOssDeployment:
    return GptOssDeployment.model_validate(load_sample(file_name))


def test_the_sample_folder_holds_exactly_the_documented_samples() -> None:
    assert sorted(path.name for path in SAMPLES_DIR.glob("*.yaml")) == sorted(SAMPLE_NAMES)


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_sample_validates_against_the_models(file_name: str) -> None:
    raw = load_sample(file_name)
    cr = _parsed(file_name)

    assert (raw["apiVersion"], raw["kind"]) == ("gptoss.io/v1alpha1", "GptOssDeployment")
    assert cr.name == file_name.removesuffix(".yaml")
    # Nothing the sample says is lost: dumping the parsed spec gives back every field it had.
    assert _subset_mismatches(raw["spec"], cr.spec.model_dump(by_alias=True, mode="json")) == []


@pytest.mark.parametrize("file_name", SAMPLE_NAMES)
def test_sample_teaches_its_fields_in_comments(file_name: str) -> None:
    lines = (SAMPLES_DIR / file_name).read_text(encoding="utf-8").splitlines()
    comments = [line for line in lines if line.lstrip().startswith("#")]
    assert len(comments) >= 8
    assert lines[0].startswith("#"), "start with a comment saying what the sample deploys"


def test_20b_sample_runs_on_one_h100() -> None:
    spec = _parsed("gpt-oss-20b.yaml").spec
    assert (spec.model, spec.gpu.count, spec.gpu.product) == ("gpt-oss-20b", 1, "NVIDIA-H100-80GB-HBM3")


def test_120b_on_one_h100_keeps_a_modest_context_and_says_kv_is_tight() -> None:
    spec = _parsed("gpt-oss-120b-1xh100.yaml").spec
    text = (SAMPLES_DIR / "gpt-oss-120b-1xh100.yaml").read_text(encoding="utf-8")

    assert (spec.model, spec.gpu.count) == ("gpt-oss-120b", 1)
    assert spec.engine.max_seq_len is not None and spec.engine.max_seq_len <= 16384
    assert "KV cache is TIGHT" in text


def test_120b_on_two_h100_uses_two_gpus_per_replica() -> None:
    spec = _parsed("gpt-oss-120b-2xh100.yaml").spec
    assert (spec.model, spec.gpu.count, spec.engine.moe_backend) == ("gpt-oss-120b", 2, "TRITON")


def test_autoscaling_sample_uses_the_operator_autoscaler_within_bounds() -> None:
    spec = _parsed("gpt-oss-120b-autoscaling.yaml").spec
    scaling = spec.autoscaling
    assert scaling.enabled and scaling.mode == "operator"
    assert scaling.min_replicas <= spec.replicas <= scaling.max_replicas
    assert scaling.min_replicas < scaling.max_replicas


def _subset_mismatches(expected: Any, actual: Any, path: str = "spec") -> list[str]:
    if isinstance(expected, dict):
        return [
            problem
            for key, value in expected.items()
            for problem in (
                _subset_mismatches(value, actual[key], f"{path}.{key}") if key in actual else [f"{path}.{key}"]
            )
        ]
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [path]
        return [
            p
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for p in _subset_mismatches(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [path]
