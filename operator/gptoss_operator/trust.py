"""What a GptOssDeployment may make the operator do on its behalf (pure; docs/security.md).

Whoever may create a GptOssDeployment must not gain, through the operator, more than they could do
themselves. Two fields would let them:

- `spec.weights.huggingFace.tokenSecretRef`: the download Job mounts that Secret key. Only Secrets the
  namespace's owner marked for this purpose (label `gptoss.io/weights-token: "true"`) are used; the
  operator learns the label from the Secret's metadata alone (it never reads Secret data).
- `spec.weights.huggingFace.endpoint`: the Job sends the token (and its traffic) there. Only endpoints on the
  cluster operator's allow-list (operator setting `weights_allowed_endpoints`, plus the mirror setting).

A refusal names the field, what is wrong and the fix. Inputs in, data out: no client, clock or environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gptoss_operator import names
from gptoss_operator.api import GptOssDeploymentSpec
from gptoss_operator.settings import OperatorSettings, normalize_endpoint

ENDPOINT_FIELD: Final = "spec.weights.huggingFace.endpoint"
TOKEN_FIELD: Final = "spec.weights.huggingFace.tokenSecretRef"  # noqa: S105 - a field path
ALLOWED_ENDPOINTS_SETTING: Final = "GPTOSS_WEIGHTS_ALLOWED_ENDPOINTS (chart value operator.weightsAllowedEndpoints)"


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not download the weights as the spec asks."""

    reason: str  # a condition reason (CamelCase)
    field: str  # the spec field at fault
    message: str  # names the field, the object and the fix


def token_secret_name(spec: GptOssDeploymentSpec) -> str | None:
    """The Secret the download Job would mount, or None (no token, or no download)."""
    source = spec.weights.hugging_face
    if spec.weights.existing_claim is not None or source is None or source.token_secret_ref is None:
        return None
    return source.token_secret_ref.name


def token_secret_key(spec: GptOssDeploymentSpec) -> str | None:
    """The key of the token Secret the download mounts, or None (no token, or no download)."""
    source = spec.weights.hugging_face
    if token_secret_name(spec) is None or source is None or source.token_secret_ref is None:
        return None
    return source.token_secret_ref.key


def is_marked(metadata: Mapping[str, Any]) -> bool:
    """Whether a Secret's metadata carries the weights-token label with the value "true"."""
    labels = metadata.get("labels") or {}
    return labels.get(names.LABEL_WEIGHTS_TOKEN) == names.LABEL_WEIGHTS_TOKEN_VALUE


def token_secret_refusal(
    spec: GptOssDeploymentSpec, namespace: str, secret: Mapping[str, Any] | None
) -> Refusal | None:
    """A refusal when the token Secret exists but is not marked; None when marked, absent or not needed.

    `secret` is the Secret's metadata (a PartialObjectMetadata or an object's `metadata`), None when absent;
    an absent Secret is reported elsewhere (WeightsReady reason TokenSecretMissing).
    """
    name = token_secret_name(spec)
    if name is None or secret is None:
        return None
    nested = secret.get("metadata")
    if is_marked(nested if isinstance(nested, Mapping) else secret):
        return None
    label = f"{names.LABEL_WEIGHTS_TOKEN}={names.LABEL_WEIGHTS_TOKEN_VALUE}"
    return Refusal(
        names.REASON_TOKEN_SECRET_NOT_MARKED,
        TOKEN_FIELD,
        f"{TOKEN_FIELD}: Secret {namespace}/{name} is not marked as a Hugging Face token, so the operator will not "
        f"mount it into the weights download Job; if it is meant for this, label it: "
        f"kubectl label secret {name} -n {namespace} {label}",
    )


def endpoint_refusal(spec: GptOssDeploymentSpec, settings: OperatorSettings) -> Refusal | None:
    """A refusal when the spec names a download endpoint outside the cluster operator's allow-list."""
    source = spec.weights.hugging_face
    if spec.weights.existing_claim is not None or source is None or source.endpoint is None:
        return None
    allowed = settings.allowed_endpoints
    try:
        endpoint = normalize_endpoint(source.endpoint)
    except ValueError as error:
        return Refusal(names.REASON_ENDPOINT_NOT_ALLOWED, ENDPOINT_FIELD, f"{ENDPOINT_FIELD}: {error}")
    if endpoint in allowed:
        return None
    return Refusal(
        names.REASON_ENDPOINT_NOT_ALLOWED,
        ENDPOINT_FIELD,
        f"{ENDPOINT_FIELD}: {source.endpoint} is not on the cluster's allow-list of weights endpoints "
        f"({', '.join(allowed)}); use one of those, remove the field to use the cluster's default, or ask the "
        f"cluster operator to add it to {ALLOWED_ENDPOINTS_SETTING}",
    )


def weights_refusal(
    spec: GptOssDeploymentSpec, settings: OperatorSettings, namespace: str, secret: Mapping[str, Any] | None
) -> Refusal | None:
    """The first refusal of the weights source (the endpoint, then the token Secret), or None."""
    return endpoint_refusal(spec, settings) or token_secret_refusal(spec, namespace, secret)
