"""GPUs as clusters have them: the Hopper and Blackwell catalog, products it lacks, MIG slices, nodes
without GPU Feature Discovery, and the MoE kernels per architecture; each through the planner, and the
`plan` command through the CLI."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from gptoss_operator.api import GptOssDeploymentSpec
from gptoss_operator.catalog import ARCHITECTURES, GPU_ALIASES, GPUS, find_gpu
from gptoss_operator.cli import EXIT_BAD_INPUT, main
from gptoss_operator.planner import PlanError, gpu_placement, plan
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

SETTINGS = OperatorSettings()
H100 = "NVIDIA-H100-80GB-HBM3"


def spec(model: str = "gpt-oss-20b", **fields: Any) -> GptOssDeploymentSpec:
    return GptOssDeploymentSpec.model_validate({"model": model, **fields})


def plan_of(model: str = "gpt-oss-20b", **fields: Any) -> ServingPlan:
    return plan(spec(model, **fields), SETTINGS)


def refusal(model: str = "gpt-oss-20b", **fields: Any) -> PlanError:
    with pytest.raises(PlanError) as caught:
        plan_of(model, **fields)
    return caught.value


# ------------------------------------------------------------------------------------------ the catalog
NEW_PRODUCTS = ["NVIDIA-H200-NVL", "NVIDIA-H800", "NVIDIA-H20", "NVIDIA-B200", "NVIDIA-GB200"]


def test_the_catalog_has_the_hopper_and_blackwell_data_center_parts() -> None:
    assert set(GPUS) == {
        "NVIDIA-H100-80GB-HBM3",
        "NVIDIA-H100-PCIe",
        "NVIDIA-H100-NVL",
        "NVIDIA-H200",
        *NEW_PRODUCTS,
    }
    assert {gpu.architecture for gpu in GPUS.values()} == {"hopper", "blackwell"}
    assert GPUS["NVIDIA-B200"].architecture == GPUS["NVIDIA-GB200"].architecture == "blackwell"


@pytest.mark.parametrize("product", list(GPUS))
def test_every_product_is_a_gfd_label_value_with_memory_interconnect_and_mig(product: str) -> None:
    gpu = GPUS[product]

    assert product.startswith("NVIDIA-") and " " not in product  # NVML's name with spaces as dashes
    assert 79 <= gpu.memory_gib <= 190  # GiB that CUDA sees: a little under the marketing GB
    assert gpu.interconnect
    assert gpu.mig_profiles, "every data-center Hopper and Blackwell part offers MIG"
    for profile in gpu.mig_profiles:
        assert profile.memory_gib < gpu.memory_gib
        assert profile.resource == f"nvidia.com/mig-{profile.name}"


@pytest.mark.parametrize(("model", "product"), [(m, p) for m in ("gpt-oss-20b", "gpt-oss-120b") for p in GPUS])
def test_every_model_plans_on_every_product(model: str, product: str) -> None:
    result = plan_of(model, gpu={"product": product})

    assert result.gpu_product == product
    assert result.kv_budget.max_concurrent_sequences >= result.engine.max_batch_size
    assert result.engine.moe_backend == GPUS[product].moe.default_moe_backend


@pytest.mark.parametrize("product", ["NVIDIA-H20", "NVIDIA-B200", "NVIDIA-GB200", "NVIDIA-H200-NVL"])
def test_120b_needs_one_gpu_of_90_gib_or_more(product: str) -> None:
    assert plan_of("gpt-oss-120b", gpu={"product": product}).gpus_per_replica == 1


def test_120b_on_h800_takes_two_gpus_like_h100() -> None:
    assert plan_of("gpt-oss-120b", gpu={"product": "NVIDIA-H800"}).gpus_per_replica == 2


@pytest.mark.parametrize(("alias", "product"), [*GPU_ALIASES.items(), ("nvidia-b200", "NVIDIA-B200")])
def test_aliases_and_other_letter_cases_find_the_product(alias: str, product: str) -> None:
    found = find_gpu(alias)
    assert found is not None and found.product == product


# ------------------------------------------------------------------------------------------ MoE kernels
def test_blackwell_runs_the_trtllm_moe_kernels_and_hopper_the_triton_ones() -> None:
    assert plan_of(gpu={"product": "NVIDIA-B200"}).engine.moe_backend == "TRTLLM"
    assert plan_of(gpu={"product": "NVIDIA-H200"}).engine.moe_backend == "TRITON"
    assert ARCHITECTURES["blackwell"].moe_backends == ("TRTLLM", "CUTLASS")


@pytest.mark.parametrize(("product", "backend"), [(H100, "CUTLASS"), ("NVIDIA-GB200", "CUTLASS")])
def test_cutlass_runs_on_both_architectures(product: str, backend: str) -> None:
    assert plan_of(gpu={"product": product}, engine={"moeBackend": backend}).engine.moe_backend == backend


@pytest.mark.parametrize(("product", "backend"), [(H100, "TRTLLM"), ("NVIDIA-B200", "TRITON")])
def test_a_moe_backend_the_architecture_lacks_is_refused(product: str, backend: str) -> None:
    error = refusal(gpu={"product": product}, engine={"moeBackend": backend})

    assert error.field == "engine.moeBackend"
    assert "auto" in error.message


# --------------------------------------------------------------------------------- a product it lacks
def test_a_product_the_catalog_lacks_is_planned_from_its_memory() -> None:
    result = plan_of("gpt-oss-120b", gpu={"product": "ACME-X1", "memoryGiB": 96})

    assert result.gpu_product == "ACME-X1"
    assert result.gpus_per_replica == 1  # 96 GiB holds 120b with a useful KV cache
    assert result.kv_budget.gpu_memory_gib == 96
    assert result.engine.moe_backend == "TRITON"  # hopper unless gpu.architecture says otherwise


def test_a_custom_blackwell_product_gets_the_blackwell_kernels() -> None:
    result = plan_of(gpu={"product": "ACME-B1", "memoryGiB": 120, "architecture": "blackwell"})
    assert result.engine.moe_backend == "TRTLLM"


def test_memory_given_for_a_catalogued_product_overrides_the_catalog() -> None:
    assert plan_of(gpu={"product": H100, "memoryGiB": 64}).kv_budget.gpu_memory_gib == 64


def test_an_unknown_product_without_memory_names_the_fix() -> None:
    error = refusal(gpu={"product": "ACME-X1"})

    assert error.field == "gpu.product"
    assert "gpu.memoryGiB" in error.message and "NVIDIA-B200" in error.message


def test_a_custom_product_too_small_blames_its_memory() -> None:
    assert refusal("gpt-oss-120b", gpu={"product": "ACME-X1", "memoryGiB": 40, "count": 1}).field == "gpu.memoryGiB"


# ------------------------------------------------------------------------------------------ MIG slices
@pytest.mark.parametrize(
    ("product", "profile"), [(H100, "3g.40gb"), ("NVIDIA-H200", "4g.71gb"), ("NVIDIA-B200", "1g.45gb")]
)
def test_20b_on_a_mig_slice_is_planned_from_the_slices_memory(product: str, profile: str) -> None:
    gpu = GPUS[product]
    slice_facts = gpu.mig_profile(profile)
    assert slice_facts is not None

    result = plan_of(gpu={"product": product, "migProfile": profile})

    assert result.gpus_per_replica == 1
    assert result.kv_budget.gpu_memory_gib == pytest.approx(slice_facts.memory_gib, abs=0.01)
    assert result.kv_budget.gpu_memory_gib < gpu.memory_gib
    assert result.kv_budget.max_concurrent_sequences >= result.engine.max_batch_size


def test_a_mig_replica_requests_the_slices_resource_on_the_parent_product() -> None:
    placement = gpu_placement(spec(gpu={"product": "NVIDIA-H200", "migProfile": "4g.71gb"}))

    assert placement.resource == "nvidia.com/mig-4g.71gb"
    assert placement.product_labels == ("NVIDIA-H200",)  # mixed strategy: GFD keeps the parent's product


def test_120b_on_a_slice_too_small_is_refused_naming_the_field() -> None:
    error = refusal("gpt-oss-120b", gpu={"migProfile": "3g.40gb"})

    assert error.field == "gpu.migProfile"
    assert "larger MIG slice" in error.message


def test_120b_on_a_whole_gpu_slice_of_an_h200_fits() -> None:
    assert plan_of("gpt-oss-120b", gpu={"product": "NVIDIA-H200", "migProfile": "7g.141gb"}).gpus_per_replica == 1


def test_a_profile_the_product_lacks_lists_its_profiles() -> None:
    error = refusal(gpu={"migProfile": "4g.71gb"})

    assert error.field == "gpu.migProfile"
    assert "3g.40gb" in error.message


def test_a_slice_of_a_custom_product_uses_the_memory_given() -> None:
    result = plan_of(gpu={"product": "ACME-X1", "memoryGiB": 24, "migProfile": "2g.24gb"})
    assert result.kv_budget.gpu_memory_gib == 24


# ------------------------------------------------------------------------------- without GPU discovery
def test_a_gpu_node_selector_replaces_the_gfd_label() -> None:
    selector = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    placement = gpu_placement(spec(gpu={"nodeSelector": selector}))

    assert placement.product_labels == ()
    assert placement.node_selector == selector
    assert placement.resource == "nvidia.com/gpu"


def test_an_alias_schedules_on_both_spellings() -> None:
    assert gpu_placement(spec(gpu={"product": "NVIDIA-H100-SXM"})).product_labels == (H100, "NVIDIA-H100-SXM")


# ---------------------------------------------------------------------------------------- through the CLI
def _cr(name: str, model: str, gpu: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gptoss.io/v1alpha1",
        "kind": "GptOssDeployment",
        "metadata": {"name": name},
        "spec": {"model": model, "gpu": gpu},
    }


def _plan_cli(tmp_path: Path, cr: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(cr), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", str(path), *extra], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("cr", "expected"),
    [
        (_cr("b200", "gpt-oss-120b", {"product": "NVIDIA-B200"}), ["1x NVIDIA-B200", "MoE backend TRTLLM"]),
        (
            _cr("custom", "gpt-oss-20b", {"product": "ACME-X1", "memoryGiB": 48}),
            ["1x ACME-X1", "GPU memory 48.0 GiB", "nvidia.com/gpu.product is ACME-X1"],
        ),
        (
            _cr("mig", "gpt-oss-20b", {"product": "NVIDIA-H100-80GB-HBM3", "migProfile": "3g.40gb"}),
            ["MIG 3g.40gb slice", "requests 1 nvidia.com/mig-3g.40gb"],
        ),
        (
            _cr("no-gfd", "gpt-oss-20b", {"nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}}),
            ["cloud.google.com/gke-accelerator=nvidia-h100-80gb", "not required"],
        ),
    ],
    ids=lambda value: value["metadata"]["name"] if isinstance(value, dict) else "",
)
def test_gptoss_operator_plan_accepts(tmp_path: Path, cr: dict[str, Any], expected: list[str]) -> None:
    code, out, err = _plan_cli(tmp_path, cr)

    assert code == 0, err
    for text in expected:
        assert text in out


def test_gptoss_operator_plan_json_carries_the_slices_memory(tmp_path: Path) -> None:
    code, out, err = _plan_cli(tmp_path, _cr("mig", "gpt-oss-20b", {"migProfile": "3g.40gb"}), "-o", "json")

    assert code == 0, err
    assert ServingPlan.model_validate_json(out).kv_budget.gpu_memory_gib < GPUS[H100].memory_gib


@pytest.mark.parametrize(
    ("cr", "field"),
    [
        (_cr("mig-120b", "gpt-oss-120b", {"migProfile": "3g.40gb"}), "spec.gpu.migProfile"),
        (_cr("unknown", "gpt-oss-20b", {"product": "ACME-X1"}), "spec.gpu.product"),
        (_cr("two-slices", "gpt-oss-120b", {"migProfile": "7g.80gb", "count": 2}), "spec.gpu.count"),
    ],
    ids=["120b-on-a-small-slice", "unknown-product", "two-slices"],
)
def test_gptoss_operator_plan_refuses_naming_the_field(tmp_path: Path, cr: dict[str, Any], field: str) -> None:
    code, out, err = _plan_cli(tmp_path, cr)

    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert f": {field}: " in err


def _rendered_pod_spec(tmp_path: Path, cr: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump(cr), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert main(["render", "-f", str(path)], out=out, err=err) == 0, err.getvalue()
    deployment = next(doc for doc in yaml.safe_load_all(out.getvalue()) if doc["kind"] == "Deployment")
    pod_spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod_spec


def _server_resources(pod_spec: dict[str, Any]) -> dict[str, Any]:
    server = next(container for container in pod_spec["containers"] if container["name"] == "server")
    resources: dict[str, Any] = server["resources"]
    return resources


def test_gptoss_operator_render_schedules_a_mig_replica_on_the_slice_resource(tmp_path: Path) -> None:
    pod_spec = _rendered_pod_spec(tmp_path, _cr("mig", "gpt-oss-20b", {"migProfile": "3g.40gb"}))

    resources = _server_resources(pod_spec)
    assert resources["limits"]["nvidia.com/mig-3g.40gb"] == "1"
    assert "nvidia.com/gpu" not in resources["limits"] and "nvidia.com/gpu" not in resources["requests"]
    (term,) = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]} in term["matchExpressions"]


def test_gptoss_operator_render_uses_the_gpu_node_selector_instead_of_gfd(tmp_path: Path) -> None:
    selector = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    cr = _cr("no-gfd", "gpt-oss-20b", {"nodeSelector": selector})
    cr["spec"]["nodeSelector"] = {"pool": "inference"}

    pod_spec = _rendered_pod_spec(tmp_path, cr)

    assert pod_spec["nodeSelector"] == {**selector, "pool": "inference"}
    assert "nvidia.com/gpu.product" not in yaml.safe_dump(pod_spec)
    assert _server_resources(pod_spec)["limits"]["nvidia.com/gpu"] == "1"
