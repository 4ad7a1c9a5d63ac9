"""The planner: every model x GPU x count, the defaults NVIDIA's recipe asks for, and every rejection."""

from __future__ import annotations

from typing import Any

import pytest

from gptoss_operator.api import GptOssDeploymentSpec
from gptoss_operator.catalog import GPUS, MODELS
from gptoss_operator.planner import PlanError, cuda_graph_batch_sizes, explain, plan
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

SETTINGS = OperatorSettings()
H100 = "NVIDIA-H100-80GB-HBM3"


def spec(model: str = "gpt-oss-20b", **fields: Any) -> GptOssDeploymentSpec:
    return GptOssDeploymentSpec.model_validate({"model": model, **fields})


def plan_of(model: str = "gpt-oss-20b", **fields: Any) -> ServingPlan:
    return plan(spec(model, **fields), SETTINGS)


# (model, product, requested count) -> (GPUs per replica, max batch, max seq len)
MATRIX = [
    ("gpt-oss-20b", H100, None, 1, 64, 32768),
    ("gpt-oss-20b", H100, 1, 1, 64, 32768),
    ("gpt-oss-20b", "NVIDIA-H100-PCIe", None, 1, 64, 32768),
    ("gpt-oss-20b", "NVIDIA-H100-NVL", None, 1, 64, 32768),
    ("gpt-oss-20b", "NVIDIA-H200", None, 1, 64, 32768),
    ("gpt-oss-120b", H100, None, 2, 64, 32768),
    ("gpt-oss-120b", H100, 2, 2, 64, 32768),
    ("gpt-oss-120b", H100, 1, 1, 16, 16384),
    ("gpt-oss-120b", "NVIDIA-H100-PCIe", None, 2, 64, 32768),
    ("gpt-oss-120b", "NVIDIA-H100-PCIe", 1, 1, 16, 16384),
    ("gpt-oss-120b", "NVIDIA-H100-NVL", None, 1, 16, 32768),
    ("gpt-oss-120b", "NVIDIA-H100-NVL", 2, 2, 64, 32768),
    ("gpt-oss-120b", "NVIDIA-H200", None, 1, 56, 32768),
    ("gpt-oss-120b", "NVIDIA-H200", 2, 2, 64, 32768),
]


@pytest.mark.parametrize(("model", "product", "count", "gpus", "batch", "seq_len"), MATRIX)
def test_every_model_gpu_and_count_gives_a_plan_that_fits(
    model: str, product: str, count: int | None, gpus: int, batch: int, seq_len: int
) -> None:
    result = plan_of(model, gpu={"product": product, "count": count})

    assert result.gpus_per_replica == gpus
    assert result.engine.tensor_parallel_size == gpus
    assert result.engine.moe_expert_parallel_size == gpus
    assert result.engine.max_batch_size == batch
    assert result.engine.max_seq_len == seq_len
    budget = result.kv_budget
    assert budget.kv_cache_gib > 0
    assert budget.max_concurrent_sequences >= result.engine.max_batch_size  # the whole batch fits at full length
    assert budget.kv_cache_tokens >= batch * seq_len
    assert budget.weights_gib + budget.activation_headroom_gib + budget.kv_cache_gib <= budget.gpu_memory_gib
    assert result.engine.max_num_tokens >= result.engine.max_batch_size
    assert result.engine.cuda_graph_batch_sizes[-1] == min(batch, 256)


def test_120b_on_two_h100_follows_nvidias_hopper_recipe() -> None:
    engine = plan_of("gpt-oss-120b", gpu={"product": H100, "count": 2}).engine

    assert (engine.tensor_parallel_size, engine.moe_expert_parallel_size) == (2, 2)
    assert engine.attention_data_parallel is False
    assert engine.moe_backend == "TRITON"
    assert engine.kv_cache_free_memory_fraction == 0.85
    assert engine.cuda_graph_padding is True
    assert max(engine.cuda_graph_batch_sizes) == 64
    assert engine.max_num_tokens == 20000
    assert engine.environment == {"TRTLLM_ENABLE_PDL": "1"}


def test_120b_on_one_h100_is_tight_but_fits() -> None:
    result = plan_of("gpt-oss-120b", gpu={"product": H100, "count": 1})

    assert 9 < result.kv_budget.kv_cache_gib < 14
    assert result.engine.max_seq_len <= 16384
    assert result.kv_budget.max_concurrent_sequences >= result.engine.max_batch_size


def test_kv_bytes_per_token_count_full_attention_layers_and_fp8_halves_them() -> None:
    assert plan_of("gpt-oss-20b").kv_budget.kv_bytes_per_token == 12 * 8 * 64 * 2 * 2  # 24 KiB
    assert plan_of("gpt-oss-120b").kv_budget.kv_bytes_per_token == 18 * 8 * 64 * 2 * 2  # 36 KiB
    bf16 = plan_of("gpt-oss-120b", gpu={"count": 1})
    fp8 = plan_of("gpt-oss-120b", gpu={"count": 1}, engine={"kvCacheDtype": "fp8"})
    assert fp8.kv_budget.kv_bytes_per_token * 2 == bf16.kv_budget.kv_bytes_per_token
    assert fp8.kv_budget.kv_cache_tokens == pytest.approx(2 * bf16.kv_budget.kv_cache_tokens, abs=1)
    assert fp8.engine.kv_cache_dtype == "fp8"


def test_auto_batch_shrinks_to_what_fits_a_long_context() -> None:
    result = plan_of("gpt-oss-120b", gpu={"count": 1}, engine={"maxSeqLen": 131072})

    assert result.engine.max_batch_size == result.kv_budget.max_concurrent_sequences
    assert 1 <= result.engine.max_batch_size < 16


def test_explicit_settings_are_kept() -> None:
    engine = plan_of(
        "gpt-oss-20b",
        engine={
            "maxSeqLen": 8192,
            "maxBatchSize": 128,
            "maxNumTokens": 8192,
            "kvCacheMemoryFraction": 0.5,
            "moeBackend": "CUTLASS",
        },
    ).engine

    assert (engine.max_seq_len, engine.max_batch_size, engine.max_num_tokens) == (8192, 128, 8192)
    assert engine.kv_cache_free_memory_fraction == 0.5
    assert engine.moe_backend == "CUTLASS"
    assert engine.enable_chunked_prefill is False  # a whole 8192-token prompt fits one step


def test_chunked_prefill_when_a_prompt_can_exceed_one_step() -> None:
    assert plan_of("gpt-oss-20b", engine={"maxSeqLen": 65536}).engine.enable_chunked_prefill is True


def test_gpu_alias_resolves_to_the_canonical_product() -> None:
    assert plan_of("gpt-oss-20b", gpu={"product": "NVIDIA-H100-SXM5-80GB"}).gpu_product == H100


def test_weights_location_and_serving_settings_reach_the_plan() -> None:
    result = plan_of(
        "gpt-oss-20b",
        weights={"huggingFace": {"repo": "acme/mirror", "revision": "refs/pr/1"}},
        serving={"reasoningEffort": "high", "openaiEndpoint": False},
    )
    assert result.weights_subdir == "acme--mirror/refs--pr--1"
    assert result.weights_revision == "refs/pr/1"
    assert result.default_reasoning_effort == "high"
    assert result.openai_endpoint is False

    claimed = plan_of("gpt-oss-20b", weights={"existingClaim": {"claimName": "models", "subPath": "20b"}})
    assert (claimed.weights_subdir, claimed.weights_revision) == ("", None)
    assert "existing PersistentVolumeClaim" in explain(claimed)


def test_the_plan_round_trips_through_json() -> None:
    result = plan_of("gpt-oss-120b")
    assert ServingPlan.from_json(result.to_json()) == result


def test_plan_is_deterministic() -> None:
    assert plan_of("gpt-oss-120b").to_json() == plan_of("gpt-oss-120b").to_json()


@pytest.mark.parametrize(
    ("maximum", "expected"),
    [
        (1, (1,)),
        (5, (1, 2, 4, 5)),
        (16, (1, 2, 4, 8, 16)),
        (64, (1, 2, 4, 8, 16, 24, 32, 48, 64)),
        (100, (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 100)),
        (1000, (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)),
    ],
)
def test_cuda_graph_batch_sizes(maximum: int, expected: tuple[int, ...]) -> None:
    assert cuda_graph_batch_sizes(maximum) == expected


def test_explain_tells_the_plan_in_words() -> None:
    text = explain(plan_of("gpt-oss-120b", gpu={"count": 2}))
    assert "2x NVIDIA-H100-80GB-HBM3" in text
    assert "tensor parallel 2 with expert parallel 2" in text
    assert "KV cache" in text
    assert "TRTLLM_ENABLE_PDL=1" in text


# ------------------------------------------------------------------------------------------ rejections
def unchecked(model: str, **fields: Any) -> GptOssDeploymentSpec:
    """A spec that skipped schema validation, as plan() must validate anything it is given."""
    valid = spec(model)
    for path, value in fields.items():
        section, _, attribute = path.partition("__")
        if attribute:
            part = getattr(valid, section).model_copy(update={attribute: value})
            valid = valid.model_copy(update={section: part})
        else:
            valid = valid.model_copy(update={section: value})
    return valid


REJECTIONS = [
    (unchecked("gpt-oss-120b", gpu__count=3), "gpu.count", ["1 or 2", "gpu.count"]),
    (unchecked("gpt-oss-20b", gpu__count=2), "gpu.count", ["1 GPU", "gpu.count to 1"]),
    (spec("gpt-oss-20b", gpu={"product": "A100"}), "gpu.product", ['"A100"', "NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"]),
    (
        spec("gpt-oss-120b", gpu={"count": 1}, engine={"maxSeqLen": 131072, "maxBatchSize": 16}),
        "engine.maxBatchSize",
        ["engine.maxSeqLen", "fp8", "gpu.count 2", "do not fit"],
    ),
    (
        spec("gpt-oss-120b", gpu={"count": 1}, engine={"maxBatchSize": 64}),
        "engine.maxBatchSize",
        ["lower engine.maxBatchSize to"],
    ),
    (
        spec("gpt-oss-120b", gpu={"count": 1}, engine={"maxSeqLen": 131072, "kvCacheMemoryFraction": 0.1}),
        "engine.maxSeqLen",
        ["one sequence", "fp8", "gpu.count 2"],
    ),
    (
        spec("gpt-oss-20b", engine={"maxNumTokens": 256, "maxBatchSize": 512, "maxSeqLen": 1024}),
        "engine.maxNumTokens",
        ["at least engine.maxBatchSize"],
    ),
    (
        spec("gpt-oss-20b", engine={"attentionDataParallel": True}),
        "engine.attentionDataParallel",
        ["more than one GPU"],
    ),
    (unchecked("gpt-oss-20b", engine__max_seq_len=262144), "engine.maxSeqLen", ["131072"]),
    (
        unchecked(
            "gpt-oss-20b",
            autoscaling=spec("gpt-oss-20b").autoscaling.model_copy(update={"enabled": True, "mode": "keda"}),
        ),
        "autoscaling.prometheusAddress",
        ["http://"],
    ),
    (
        unchecked(
            "gpt-oss-20b",
            autoscaling=spec("gpt-oss-20b").autoscaling.model_copy(
                update={"enabled": True, "min_replicas": 5, "max_replicas": 2}
            ),
        ),
        "autoscaling.minReplicas",
        ["maxReplicas"],
    ),
]


@pytest.mark.parametrize(("bad_spec", "field", "hints"), REJECTIONS, ids=[case[1] for case in REJECTIONS])
def test_impossible_plans_are_rejected_naming_the_field_and_the_fix(
    bad_spec: GptOssDeploymentSpec, field: str, hints: list[str]
) -> None:
    with pytest.raises(PlanError) as caught:
        plan(bad_spec, SETTINGS)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    for hint in hints:
        assert hint in str(caught.value)


def test_catalog_facts() -> None:
    small, large = MODELS["gpt-oss-20b"], MODELS["gpt-oss-120b"]
    assert (small.layers, small.experts, small.full_attention_layers) == (24, 32, 12)
    assert (large.layers, large.experts, large.full_attention_layers) == (36, 128, 18)
    assert small.kv_bytes_per_token() == 24 * 1024
    assert large.kv_bytes_per_token() == 36 * 1024
    assert large.kv_bytes_per_token(1) == 18 * 1024
    assert {"NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H200"} <= set(GPUS)
    assert GPUS["NVIDIA-H200"].memory_gib > 139
