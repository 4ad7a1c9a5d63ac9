"""The gateway container's API keys (spec.serving.apiKeysSecret), admission flags and drain-aware probe."""

from __future__ import annotations

from typing import Any

from builders_support import children, cr_from, one

from gptoss_runtime import contract

SPEC: dict[str, Any] = {
    "model": "gpt-oss-20b",
    "gpu": {"product": "NVIDIA-H100-80GB-HBM3"},
    "weights": {"huggingFace": {"revision": "main"}},
}


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = one(children(cr_from(spec)), "Deployment")["spec"]["template"]["spec"]
    return template


def gateway(spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod(spec)["containers"] if c["name"] == "gateway")


def test_the_api_keys_secret_is_mounted_as_a_folder_and_passed_to_the_gateway() -> None:
    spec = SPEC | {"serving": {"apiKeysSecret": "llm-keys"}}
    container = gateway(spec)

    command = container["command"]
    assert command[command.index("--api-keys") + 1] == contract.API_KEYS_DIR
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == contract.API_KEYS_DIR)
    assert mount["readOnly"] is True and "subPath" not in mount  # a subPath mount would never see rotation
    volume = next(v for v in pod(spec)["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "llm-keys"}


def test_without_a_secret_there_is_no_key_flag_or_volume() -> None:
    container = gateway(SPEC)
    assert "--api-keys" not in container["command"]
    assert all(m["mountPath"] != contract.API_KEYS_DIR for m in container["volumeMounts"])


def test_admission_limits_come_from_the_plan_and_readiness_follows_the_drain() -> None:
    container = gateway(SPEC)
    command = container["command"]
    running, queued = command[command.index("--max-running") + 1], command[command.index("--max-queued") + 1]
    assert running == queued and int(running) >= 1
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "openai"}
