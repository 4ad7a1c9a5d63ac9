"""The operator's log lines: one JSON object per event, no Kopf settings dump, secrets masked."""

from __future__ import annotations

import json
import logging
import sys

from gptoss_operator.logging import JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "kopf.objects", "levelno": logging.INFO, "levelname": "INFO", "msg": message, **extra}
    )


def test_kopf_settings_are_not_dumped_and_the_object_is_named() -> None:
    line = JsonFormatter().format(
        record(
            "Handler succeeded", settings=object(), k8s_skip=False, k8s_ref={"namespace": "n", "name": "x", "kind": "K"}
        )
    )
    entry = json.loads(line)
    assert "settings" not in entry and "k8s_skip" not in entry
    assert entry["object"] == {"namespace": "n", "name": "x", "kind": "K"}


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        exc = record("failed", exc_info=sys.exc_info())
    line = JsonFormatter().format(exc)
    assert "\n" not in line
    assert "ValueError" in json.loads(line)["exception"]


def test_extras_are_kept_and_tokens_masked() -> None:
    entry = json.loads(JsonFormatter().format(record("x", key="team/a", header="Bearer abc.def")))
    assert entry["key"] == "team/a"
    assert "abc.def" not in entry["header"]
