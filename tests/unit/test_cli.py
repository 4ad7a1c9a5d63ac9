"""`gptoss-operator` crd / plan / render, and every bad-input path (exit 2, the field named, no traceback)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gptoss_operator.cli import EXIT_BAD_INPUT, field_path, main

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
SAMPLE_20B = REPO / "manifests" / "samples" / "gpt-oss-20b.yaml"
SAMPLE_2GPU = REPO / "manifests" / "samples" / "gpt-oss-120b-2xh100.yaml"


def run_cli(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        original = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = main(list(argv), out=out, err=err)
        finally:
            sys.stdin = original
    else:
        code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "cr.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


CR = """
apiVersion: gptoss.io/v1alpha1
kind: GptOssDeployment
metadata: {name: demo}
spec:
"""


# -------------------------------------------------------------------------------------------- success
def test_crd_prints_the_generated_crd() -> None:
    pytest.importorskip("gptoss_operator.crd")
    code, out, _ = run_cli("crd")
    assert code == 0
    crd = yaml.safe_load(out)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "gptossdeployments.gptoss.io"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_plan_explains_every_sample(sample: Path) -> None:
    code, out, err = run_cli("plan", "-f", str(sample))
    assert code == 0, err
    assert "KV cache" in out
    assert "per replica" in out


def test_plan_json_is_the_serving_plan() -> None:
    code, out, _ = run_cli("plan", "-f", str(SAMPLE_2GPU), "-o", "json")
    assert code == 0
    plan = json.loads(out)
    assert plan["gpusPerReplica"] == 2
    assert plan["engine"]["tensorParallelSize"] == 2
    assert plan["engine"]["moeExpertParallelSize"] == 2


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_render_prints_every_child_of_every_sample(sample: Path) -> None:
    code, out, err = run_cli("render", "-f", str(sample))
    assert code == 0, err
    kinds = [document["kind"] for document in yaml.safe_load_all(out)]
    assert {"ConfigMap", "Deployment", "Service"} <= set(kinds)
    assert "PodMonitor" not in kinds  # no --pod-monitor: as on a cluster without the Prometheus Operator


def test_render_gpu_requests_of_the_samples() -> None:
    def gpus(sample: Path) -> str:
        _, out, _ = run_cli("render", "-f", str(sample))
        deployment = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        value: str = server["resources"]["limits"]["nvidia.com/gpu"]
        return value

    assert gpus(SAMPLE_2GPU) == "2"
    assert gpus(SAMPLE_20B) == "1"


def test_render_optional_kinds_with_flags(tmp_path: Path) -> None:
    text = CR + "  model: gpt-oss-20b\n  autoscaling: {enabled: true, mode: keda, prometheusAddress: 'http://p:9090'}\n"
    code, out, _ = run_cli("render", "-f", write(tmp_path, text), "--pod-monitor", "--keda")
    assert code == 0
    kinds = [document["kind"] for document in yaml.safe_load_all(out)]
    assert "PodMonitor" in kinds
    assert "ScaledObject" in kinds


def test_render_uses_placeholder_uid_and_reads_stdin() -> None:
    code, out, _ = run_cli("render", "-f", "-", stdin=CR + "  model: gpt-oss-20b\n")
    assert code == 0
    first = next(yaml.safe_load_all(out))
    assert first["metadata"]["ownerReferences"][0]["uid"] == "00000000-0000-0000-0000-000000000000"
    assert first["metadata"]["namespace"] == "default"


def test_other_kinds_in_the_file_are_skipped(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + CR + "  model: gpt-oss-20b\n"
    code, out, _ = run_cli("plan", "-f", write(tmp_path, text))
    assert code == 0
    assert "demo" in out


def test_console_script_runs_without_a_cluster() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gptoss_operator.cli", "plan", "-f", str(SAMPLE_20B), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "gpt-oss-20b"


# ------------------------------------------------------------------------------------------ bad input
BAD_INPUTS = [
    ("missing-file", None, "no such file"),
    ("empty", "", "empty"),
    ("malformed", "apiVersion: [unclosed\nkind: x", "not valid YAML"),
    ("not-a-mapping", "- a\n- b\n", "expected a YAML mapping"),
    ("wrong-kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n", "kind: expected GptOssDeployment"),
    ("wrong-api-version", CR.replace("gptoss.io/v1alpha1", "gptoss.io/v1") + "  model: gpt-oss-20b\n", "apiVersion"),
    ("missing-model", CR + "  replicas: 1\n", "spec.model: Field required"),
    ("unknown-model", CR + "  model: gpt-5\n", "spec.model: Input should be"),
    ("typo-field", CR + "  model: gpt-oss-20b\n  gpus: {count: 1}\n", "spec.gpus: unknown field; did you mean gpu?"),
    ("count-too-high", CR + "  model: gpt-oss-120b\n  gpu: {count: 3}\n", "spec.gpu.count: Input should be"),
    ("nested-typo", CR + "  model: gpt-oss-20b\n  engine: {maxSeqLength: 4096}\n", "did you mean maxSeqLen?"),
    ("unknown-field", CR + "  model: gpt-oss-20b\n  zzz: 1\n", "spec.zzz: unknown field; known fields here: affinity"),
    (
        "bad-toleration",
        CR + "  model: gpt-oss-20b\n  tolerations: [{effect: Sometimes}]\n",
        "spec.tolerations[0].effect",
    ),
    (
        "missing-name",
        "apiVersion: gptoss.io/v1alpha1\nkind: GptOssDeployment\nmetadata: {}\nspec: {model: gpt-oss-20b}\n",
        "metadata.name: Field required",
    ),
    (
        "unknown-gpu",
        CR + "  model: gpt-oss-20b\n  gpu: {product: A100}\n",
        'spec.gpu.product: unknown GPU product "A100"',
    ),
    ("20b-on-two", CR + "  model: gpt-oss-20b\n  gpu: {count: 2}\n", "gpu.count"),
    (
        "does-not-fit",
        CR + "  model: gpt-oss-120b\n  gpu: {count: 1}\n  engine: {maxSeqLen: 131072, maxBatchSize: 32}\n",
        "spec.engine.maxBatchSize:",
    ),
]


@pytest.mark.parametrize("command", ["plan", "render"])
@pytest.mark.parametrize(("case", "text", "expected"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_problem(
    tmp_path: Path, command: str, case: str, text: str | None, expected: str
) -> None:
    path = str(tmp_path / "absent.yaml") if text is None else write(tmp_path, text)
    code, out, err = run_cli(command, "-f", path)

    assert code == EXIT_BAD_INPUT, (case, out, err)
    assert expected in err, err
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert out == ""


def test_bad_input_through_the_console_script_has_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, CR + "  model: gpt-oss-20b\n  gpu: {count: 9}\n")
    result = subprocess.run(
        [sys.executable, "-m", "gptoss_operator.cli", "render", "-f", path], capture_output=True, text=True, check=False
    )
    assert result.returncode == EXIT_BAD_INPUT
    assert "spec.gpu.count" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["plan"], out=io.StringIO(), err=io.StringIO())
    assert caught.value.code == 2


def test_bad_operator_settings_are_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_METRICS_PORT", "not-a-port")
    code, _, err = run_cli("plan", "-f", str(SAMPLE_20B))
    assert code == EXIT_BAD_INPUT
    assert "settings: metrics_port" in err


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (("spec", "gpu", "count"), "spec.gpu.count"),
        (("spec", "tolerations", 0, "key"), "spec.tolerations[0].key"),
        ((), "(root)"),
    ],
)
def test_field_path(location: tuple[str | int, ...], expected: str) -> None:
    assert field_path(location) == expected
