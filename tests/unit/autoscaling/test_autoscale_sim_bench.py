"""The autoscaling benchmark runs, on a one-hour trace, and prints the promised JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "autoscale_sim.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autoscale_sim", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoscale_sim"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


def test_json_output_has_every_policy_and_static_costs_most(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--hours", "1", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"operator", "static", "hpa-queue-ratio"}
    for figures in result.values():
        assert set(figures) == {"gpu_hours", "slo_miss_fraction"}
        assert 0.0 <= figures["slo_miss_fraction"] <= 1.0
        assert figures["gpu_hours"] > 0
    static = result["static"]["gpu_hours"]
    assert static == pytest.approx(8.0)  # 8 replicas x 1 GPU x 1 h
    assert static > result["operator"]["gpu_hours"]
    assert static > result["hpa-queue-ratio"]["gpu_hours"]


def test_same_seed_same_numbers(bench: ModuleType) -> None:
    first = {k: v.summary() for k, v in bench.run_all("gpt-oss-120b", 0.5, 11, 2.0).items()}
    second = {k: v.summary() for k, v in bench.run_all("gpt-oss-120b", 0.5, 11, 2.0).items()}
    assert first == second
    assert first["static"]["gpu_hours"] == pytest.approx(4.0)  # 4 replicas x 2 GPUs x 0.5 h


def test_a_small_gpu_pool_caps_the_operator(bench: ModuleType) -> None:
    results = bench.run_all("gpt-oss-20b", 1, 3, 2.0, gpu_pool=1)
    assert results["static"].gpu_hours == pytest.approx(1.0)
    assert results["operator"].peak_replicas == 1
    assert results["operator"].capacity_limited_decisions > 0


def test_table_is_printed(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--hours", "0.25", "--model", "gpt-oss-120b"]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours" in out
    assert "SLO miss" in out
    for name in ("operator", "static", "hpa-queue-ratio"):
        assert name in out


def test_bad_arguments_are_refused(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--hours", "0"])
    assert "--hours must be > 0" in capsys.readouterr().err
