"""`gptoss-runtime serve`: weight checks, the model repository it writes, and how it stops."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from serving_support import runtime_command, shm_files, start_server, stub_processes, wait_until

from gptoss_runtime import contract
from gptoss_runtime.checkpoint import write_manifest
from gptoss_runtime.launcher import LaunchError, ServeOptions, prepare
from gptoss_runtime.plan import EngineSettings, KvBudget, ServingPlan
from gptoss_runtime.triton_repo import ModelRepositorySpec, render_config_pbtxt, write_model_repository


def a_plan(**changes: object) -> ServingPlan:
    plan = ServingPlan(
        model="gpt-oss-120b",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=2,
        engine=EngineSettings(
            tensor_parallel_size=2,
            moe_expert_parallel_size=2,
            moe_backend="TRITON",
            attention_data_parallel=False,
            max_seq_len=8192,
            max_batch_size=64,
            max_num_tokens=20000,
            kv_cache_free_memory_fraction=0.85,
            kv_cache_dtype="auto",
            cuda_graph_batch_sizes=(1, 2, 4, 8, 16, 32, 64),
            environment={"TRTLLM_ENABLE_PDL": "1"},
        ),
        kv_budget=KvBudget(
            gpu_memory_gib=160,
            weights_gib=65,
            activation_headroom_gib=10,
            kv_cache_gib=85,
            kv_bytes_per_token=73728,
            kv_cache_tokens=1_200_000,
            max_concurrent_sequences=150,
        ),
        default_reasoning_effort="high",
    )
    return plan.model_copy(update=changes)


def copy_weights(tiny_weights: Path, tmp_path: Path) -> Path:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    return weights


def serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(runtime_command("serve", *args), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    return result


# --- refusing bad weights and plans (no server starts) ---------------------------------------------


def test_missing_config_is_refused(tmp_path: Path) -> None:
    result = serve_fails(f"--weights={tmp_path}", "--engine=reference", f"--model-repository={tmp_path / 'r'}")
    assert "--weights" in result.stderr and "config.json" in result.stderr


def test_missing_shard_is_refused(tiny_weights: Path, tmp_path: Path) -> None:
    weights = copy_weights(tiny_weights, tmp_path)
    next(weights.glob("model-*.safetensors")).unlink()
    result = serve_fails(f"--weights={weights}", "--engine=reference", f"--model-repository={tmp_path / 'r'}")
    assert "is missing" in result.stderr


def test_changed_file_fails_the_manifest_check(tiny_weights: Path, tmp_path: Path) -> None:
    weights = copy_weights(tiny_weights, tmp_path)
    write_manifest(weights)
    tokenizer = weights / "tokenizer_config.json"
    tokenizer.write_text(tokenizer.read_text().replace("{", "{ ", 1))

    with pytest.raises(LaunchError, match=r"tokenizer_config\.json"):
        prepare(ServeOptions(weights=weights, engine="reference", model_repository=tmp_path / "r"))


def test_marker_is_required_when_asked(tiny_weights: Path, tmp_path: Path) -> None:
    weights = copy_weights(tiny_weights, tmp_path)
    options = ServeOptions(weights=weights, engine="reference", model_repository=tmp_path / "r", require_marker=True)
    with pytest.raises(LaunchError, match=contract.WEIGHTS_COMPLETE_MARKER):
        prepare(options)

    (weights / contract.WEIGHTS_COMPLETE_MARKER).write_text(
        json.dumps({"repo": "openai/gpt-oss-20b", "revision": "abc"})
    )
    argv, _ = prepare(options)
    assert any(arg.startswith("--model-repository=") for arg in argv)


def test_plan_revision_must_match_the_marker(tiny_weights: Path, tmp_path: Path) -> None:
    weights = copy_weights(tiny_weights, tmp_path)
    (weights / contract.WEIGHTS_COMPLETE_MARKER).write_text(json.dumps({"revision": "old"}))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(a_plan(weights_revision="new").to_json())
    options = ServeOptions(
        weights=weights, engine="trtllm", plan_file=plan_file, model_repository=tmp_path / "r", require_marker=True
    )
    with pytest.raises(LaunchError, match="revision mismatch"):
        prepare(options)


def test_trtllm_needs_a_plan_and_a_valid_one(tiny_weights: Path, tmp_path: Path) -> None:
    result = serve_fails(f"--weights={tiny_weights}", "--engine=trtllm", f"--model-repository={tmp_path / 'r'}")
    assert "--plan is required" in result.stderr

    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text('{"model": "gpt-oss-7b"}')
    result = serve_fails(f"--weights={tiny_weights}", "--engine=trtllm", f"--plan={bad_plan}")
    assert "--plan" in result.stderr and "not a valid serving plan" in result.stderr


# --- the model repository ------------------------------------------------------------------------


def test_trtllm_repository_carries_the_plan(tiny_weights: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(a_plan().to_json())
    argv, environment = prepare(
        ServeOptions(weights=tiny_weights, engine="trtllm", plan_file=plan_file, model_repository=tmp_path / "repo")
    )

    model_dir = tmp_path / "repo" / contract.TRITON_MODEL_NAME
    config = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "decoupled: true" in config and "KIND_MODEL" in config
    options = json.loads((model_dir / "engine.json").read_text())
    assert options["engine"] == "trtllm" and options["model_name"] == "gpt-oss-120b"
    assert options["max_tokens_limit"] == 8192 and options["default_reasoning_effort"] == "high"
    llm_args = options["llm_args"]
    assert llm_args["tensor_parallel_size"] == 2 and llm_args["moe_expert_parallel_size"] == 2
    assert llm_args["moe_config"] == {"backend": "TRITON"}
    assert llm_args["kv_cache_config"]["free_gpu_memory_fraction"] == 0.85
    assert ServingPlan.model_validate(options["plan"]) == a_plan()
    assert (model_dir / "1" / "model.py").read_text().count("TritonPythonModel") >= 1
    assert environment["TRTLLM_ENABLE_PDL"] == "1"
    assert "--exit-timeout-secs=25" in argv


def test_config_declares_every_tensor_of_the_schema(tmp_path: Path) -> None:
    from gptoss_runtime.triton_model import schema

    config = render_config_pbtxt(
        ModelRepositorySpec(engine="reference", weights_dir=tmp_path, model_name="gpt-oss-20b")
    )
    for tensor in (*schema.INPUTS, *schema.OUTPUTS):
        assert f'name: "{tensor.name}"' in config
    assert "KIND_CPU" in config


def test_rewriting_the_repository_removes_stale_files(tmp_path: Path) -> None:
    spec = ModelRepositorySpec(engine="reference", weights_dir=tmp_path, model_name="gpt-oss-20b")
    repository = tmp_path / "repo"
    (repository / "stale_model").mkdir(parents=True)
    write_model_repository(repository, spec)
    assert sorted(path.name for path in repository.iterdir()) == [contract.TRITON_MODEL_NAME]


# --- stopping ------------------------------------------------------------------------------------


@pytest.mark.triton
def test_sigterm_stops_tritonserver_and_its_stubs(tiny_weights: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", tiny_weights, "scripted")
    pid = server.process.pid
    assert stub_processes(server.model_repository), "the model's stub should be running"
    assert shm_files(pid), "the Python backend should use shared memory with our prefix"

    server.process.send_signal(signal.SIGTERM)
    exit_code = server.process.wait(timeout=30)

    assert exit_code == 0, server.log()[-3000:]
    wait_until(lambda: not stub_processes(server.model_repository), 10, "the stub to exit")
    assert shm_files(pid) == []
    assert "successfully unloaded 'gpt_oss'" in server.log()
