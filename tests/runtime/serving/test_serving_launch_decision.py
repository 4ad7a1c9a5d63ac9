"""How the launcher starts tritonserver for TensorRT-LLM: direct exec (no mpirun) for 1 and 2 GPUs,
PMIX_HOSTNAME for the LLM API's MPI spawn, Triton's HTTP/gRPC ports on loopback when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_serving_launcher import a_plan

from gptoss_runtime.launcher import PMIX_HOSTNAME, ServeOptions, prepare, tensorrt_llm_environment


@pytest.mark.parametrize("gpus", [1, 2])
def test_trtllm_is_launched_without_mpirun_and_with_pmix_hostname(
    gpus: int, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PMIX_HOSTNAME", raising=False)
    plan = a_plan()
    engine = plan.engine.model_copy(update={"tensor_parallel_size": gpus, "moe_expert_parallel_size": gpus})
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_copy(update={"engine": engine, "gpus_per_replica": gpus}).to_json())

    argv, environment = prepare(
        ServeOptions(weights=tiny_weights, engine="trtllm", plan_file=plan_file, model_repository=tmp_path / "repo")
    )

    assert Path(argv[0]).name == "tritonserver"  # exec'd directly: it is PID 1 and gets SIGTERM itself
    assert "mpirun" not in " ".join(argv)
    assert environment["PMIX_HOSTNAME"] == PMIX_HOSTNAME


def test_a_pmix_hostname_set_by_the_pod_is_kept() -> None:
    assert tensorrt_llm_environment({"PMIX_HOSTNAME": "pod-a"}) == {}
    assert tensorrt_llm_environment({}) == {"PMIX_HOSTNAME": PMIX_HOSTNAME}


def test_reference_engine_gets_no_mpi_environment(
    tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PMIX_HOSTNAME", raising=False)
    _, environment = prepare(ServeOptions(weights=tiny_weights, engine="reference", model_repository=tmp_path / "r"))
    assert "PMIX_HOSTNAME" not in environment


def test_triton_ports_bind_to_loopback_and_metrics_stay_reachable(tiny_weights: Path, tmp_path: Path) -> None:
    argv, _ = prepare(
        ServeOptions(
            weights=tiny_weights, engine="reference", model_repository=tmp_path / "r", triton_address="127.0.0.1"
        )
    )
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=0.0.0.0"} <= set(argv)
