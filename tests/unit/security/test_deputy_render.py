"""`gptoss-operator render`/`plan` refuse what the operator would refuse; the token only meets the fetcher image."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from gptoss_operator import names
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import build_children
from gptoss_operator.cli import EXIT_BAD_INPUT, main
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

TOKEN_REF = {"name": "hf", "key": "token"}


def cr(**hugging_face: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "demo", "namespace": "team"},
        "spec": {
            "model": "gpt-oss-20b",
            "image": "registry.example/users-own:1",
            "weights": {"huggingFace": hugging_face},
        },
    }


def secret(labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hf", "namespace": "team", "labels": labels},
        "stringData": {"token": "hf_not_a_real_token"},
    }


def run(tmp_path: Path, *documents: dict[str, Any], command: str = "render") -> tuple[int, str, str]:
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    out, err = io.StringIO(), io.StringIO()
    code = main([command, "-f", str(path)], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", ["render", "plan"])
def test_an_unmarked_token_secret_in_the_input_is_refused(tmp_path: Path, command: str) -> None:
    code, out, err = run(tmp_path, cr(tokenSecretRef=TOKEN_REF), secret({"app": "x"}), command=command)
    assert code == EXIT_BAD_INPUT and out == ""
    assert "spec.weights.huggingFace.tokenSecretRef" in err
    assert "kubectl label secret hf -n team gptoss.io/weights-token=true" in err
    assert "hf_not_a_real_token" not in err


def test_a_marked_token_secret_renders(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, cr(tokenSecretRef=TOKEN_REF), secret({names.LABEL_WEIGHTS_TOKEN: "true"}))
    assert code == 0
    assert "secretName: hf" in out and "hf_not_a_real_token" not in out


def test_a_token_secret_absent_from_the_input_renders_with_a_note(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, cr(tokenSecretRef=TOKEN_REF))
    assert code == 0 and "secretName: hf" in out
    assert "note:" in err and "gptoss.io/weights-token=true" in err


def test_an_endpoint_off_the_allow_list_is_refused(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, cr(endpoint="https://collector.example"))
    assert code == EXIT_BAD_INPUT
    assert "spec.weights.huggingFace.endpoint" in err and "https://huggingface.co" in err


def test_the_allow_list_setting_admits_an_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS", "https://mirror.example")
    code, out, _ = run(tmp_path, cr(endpoint="https://mirror.example/"))
    assert code == 0 and "https://mirror.example" in out


def pod_specs(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["spec"]["template"]["spec"] for c in children if c["kind"] in ("Job", "Deployment")]


@pytest.mark.parametrize("cache", [{}, {"accessMode": "ReadWriteMany"}])
def test_a_token_is_mounted_only_into_the_operators_fetcher_image(cache: dict[str, Any]) -> None:
    """Per-replica cache (init container) and shared cache (Job): only the fetcher container sees the token."""
    body = cr(tokenSecretRef=TOKEN_REF)
    body["spec"]["weights"]["cache"] = cache
    body["metadata"] |= {"uid": "u", "generation": 1}
    deployment = GptOssDeployment.model_validate(body)
    settings = OperatorSettings()
    token_volumes: set[str] = set()
    seen = 0
    for pod in pod_specs(build_children(deployment, plan(deployment.spec, settings), settings)):
        token_volumes |= {
            v["name"] for v in pod.get("volumes", []) if (v.get("secret") or {}).get("secretName") == "hf"
        }
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            if {m["name"] for m in container.get("volumeMounts", [])} & token_volumes:
                seen += 1
                assert container["image"] == settings.fetcher_image, container["name"]
    assert token_volumes and seen == 1
