"""Reading a GptOssDeployment as the API server returns it: metadata and spec validated, status tolerated.

The status is written by this operator (two writers: the reconcile and the autoscaler), but possibly by an
older or newer version of it, or edited by hand. Validating it would let one unknown key, a changed
`plan` shape or `conditions: null` turn the CR into `InvalidSpec` for good, so it is never validated: it
is read as plain data, and every reader treats each field as optional and each value as untrusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gptoss_operator.api import GptOssDeployment

Json = dict[str, Any]

VALIDATED_KEYS = ("apiVersion", "kind", "metadata", "spec")
OBJECT_KEYS = frozenset({"plan", "endpoints", "autoscaling", "runtime"})  # status keys whose readers expect an object


def parse_deployment(body: Mapping[str, Any]) -> GptOssDeployment:
    """The CR with only its metadata and spec validated (raises pydantic.ValidationError for a bad spec)."""
    return GptOssDeployment.model_validate({key: body[key] for key in VALIDATED_KEYS if key in body})


def read_status(body: Mapping[str, Any]) -> Json:
    """The CR's status as plain data: {} when absent or not an object; entries of the wrong type dropped."""
    raw = body.get("status")
    if not isinstance(raw, Mapping):
        return {}
    # An object-valued key holding something else is as good as absent (its writer rewrites it).
    status = {k: v for k, v in raw.items() if k not in OBJECT_KEYS or isinstance(v, Mapping)}
    conditions = status.get("conditions")
    status["conditions"] = (
        [dict(c) for c in conditions if isinstance(c, Mapping)] if isinstance(conditions, list) else []
    )
    return status
