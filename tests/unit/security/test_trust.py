"""The operator refuses to be a confused deputy: token Secrets need their mark, endpoints the allow-list."""

from __future__ import annotations

from typing import Any

import pytest

from gptoss_operator import names, trust
from gptoss_operator.api import GptOssDeploymentSpec
from gptoss_operator.settings import OperatorSettings, normalize_endpoint

MARK = {names.LABEL_WEIGHTS_TOKEN: names.LABEL_WEIGHTS_TOKEN_VALUE}


def spec(**hugging_face: Any) -> GptOssDeploymentSpec:
    return GptOssDeploymentSpec.model_validate({"model": "gpt-oss-20b", "weights": {"huggingFace": hugging_face}})


TOKEN = {"tokenSecretRef": {"name": "hf", "key": "token"}}


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://huggingface.co", "https://huggingface.co"),
        ("HTTPS://HuggingFace.co/", "https://huggingface.co"),
        ("https://huggingface.co:443", "https://huggingface.co"),
        ("http://hf-mirror.ns.svc:8080/", "http://hf-mirror.ns.svc:8080"),
        ("http://mirror:80/hub/", "http://mirror/hub"),
    ],
)
def test_endpoints_are_compared_by_scheme_host_port_and_path(url: str, normal: str) -> None:
    assert normalize_endpoint(url) == normal


@pytest.mark.parametrize("url", ["ftp://x", "https://", "https://u:p@host", "https://host/?q=1", "https://h:x"])
def test_what_is_not_an_endpoint_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"endpoint|URL|port"):
        normalize_endpoint(url)


def test_by_default_only_the_public_hub_and_the_mirror_are_allowed() -> None:
    assert OperatorSettings().allowed_endpoints == ("https://huggingface.co",)
    with_mirror = OperatorSettings(weights_mirror_endpoint="http://hf-mirror.ns.svc:8080/")
    assert with_mirror.allowed_endpoints == ("https://huggingface.co", "http://hf-mirror.ns.svc:8080")


def test_the_allow_list_setting_replaces_the_public_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS", "https://a.example, https://b.example/hub/")
    assert OperatorSettings().allowed_endpoints == ("https://a.example", "https://b.example/hub")


def test_a_bad_allow_list_entry_names_the_setting_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS", "huggingface.co")
    with pytest.raises(ValueError, match=r"GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS.*https://huggingface\.co"):
        OperatorSettings()


def test_an_endpoint_off_the_allow_list_is_refused_naming_the_field_and_the_list() -> None:
    refusal = trust.endpoint_refusal(spec(endpoint="https://evil.example"), OperatorSettings())
    assert refusal is not None
    assert refusal.reason == names.REASON_ENDPOINT_NOT_ALLOWED
    assert refusal.field == "spec.weights.huggingFace.endpoint"
    assert "https://evil.example" in refusal.message and "https://huggingface.co" in refusal.message
    assert "GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS" in refusal.message


@pytest.mark.parametrize("endpoint", [None, "https://huggingface.co/", "http://hf-mirror.ns.svc:8080"])
def test_allowed_endpoints_pass(endpoint: str | None) -> None:
    settings = OperatorSettings(weights_mirror_endpoint="http://hf-mirror.ns.svc:8080")
    source = {"endpoint": endpoint} if endpoint else {}
    assert trust.endpoint_refusal(spec(**source), settings) is None


def test_an_unmarked_token_secret_is_refused_with_the_label_to_add() -> None:
    refusal = trust.token_secret_refusal(spec(**TOKEN), "team", {"name": "hf", "labels": {"app": "x"}})
    assert refusal is not None
    assert refusal.reason == names.REASON_TOKEN_SECRET_NOT_MARKED
    assert "spec.weights.huggingFace.tokenSecretRef" in refusal.message
    assert "team/hf" in refusal.message
    assert "kubectl label secret hf -n team gptoss.io/weights-token=true" in refusal.message


@pytest.mark.parametrize(
    "secret",
    [
        {"name": "hf", "labels": MARK},  # metadata
        {"kind": "PartialObjectMetadata", "metadata": {"name": "hf", "labels": MARK}},  # the GET's answer
        None,  # absent: WeightsReady says TokenSecretMissing elsewhere
    ],
)
def test_a_marked_or_absent_secret_is_not_refused_here(secret: dict[str, Any] | None) -> None:
    assert trust.token_secret_refusal(spec(**TOKEN), "team", secret) is None


def test_a_mark_with_another_value_is_no_mark() -> None:
    secret = {"name": "hf", "labels": {names.LABEL_WEIGHTS_TOKEN: "yes"}}
    assert trust.token_secret_refusal(spec(**TOKEN), "team", secret) is not None


def test_no_token_or_no_download_needs_no_secret() -> None:
    assert trust.token_secret_name(spec()) is None
    served = GptOssDeploymentSpec.model_validate(
        {"model": "gpt-oss-20b", "weights": {"existingClaim": {"claimName": "w"}}}
    )
    assert trust.token_secret_name(served) is None
    assert trust.token_secret_name(spec(**TOKEN)) == "hf"


def test_the_endpoint_is_checked_before_the_secret() -> None:
    refusal = trust.weights_refusal(
        spec(endpoint="https://evil.example", **TOKEN), OperatorSettings(), "team", {"name": "hf"}
    )
    assert refusal is not None and refusal.reason == names.REASON_ENDPOINT_NOT_ALLOWED
