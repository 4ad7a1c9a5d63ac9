"""`parsing`: metadata and spec validated, the status read as untrusted data (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_support import sample

from gptoss_operator.parsing import parse_deployment, read_status


def test_parse_ignores_the_status_entirely() -> None:
    cr = sample()
    cr["status"] = {"conditions": None, "unknown": {"deep": [1]}}
    parsed = parse_deployment(cr)
    assert parsed.status is None and parsed.spec.model == "gpt-oss-20b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("a string", {}),
        ({"conditions": None}, {"conditions": []}),
        ({"conditions": [1, {"type": "Ready"}]}, {"conditions": [{"type": "Ready"}]}),
        ({"phase": "Ready"}, {"phase": "Ready", "conditions": []}),
    ],
)
def test_read_status_tolerates_any_shape(raw: Any, expected: dict[str, Any]) -> None:
    assert read_status({"status": raw}) == expected
