"""Log set-up for the operator process: one JSON object per line (or plain text), secrets redacted.

Kopf attaches the object it works on to its records (`k8s_ref`); it becomes the `object` field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

# Anything that looks like a credential is masked before a record leaves the process.
_SECRET_PATTERNS: Final = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:token|password|secret|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"hf_[A-Za-z0-9]{20,}"),
)
REDACTED: Final = "<redacted>"
# Kopf's object loggers attach its whole settings object to every record (~2.4 kB a line): never logged.
_KOPF_ATTRS: Final = frozenset({"k8s_skip", "k8s_ref", "settings"})
_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"} | _KOPF_ATTRS


def redact(text: str) -> str:
    """`text` with bearer tokens, `token=...`-style values and Hugging Face tokens masked."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, object (when Kopf names one), extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["object"] = {k: ref[k] for k in ("namespace", "name", "kind") if k in ref}
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool | type(None)) else redact(str(value))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class RedactingFormatter(logging.Formatter):
    """Plain text for people at a terminal, with the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class QuietChildEvents(logging.Filter):
    """Drop Kopf's "Handler 'child-...' succeeded" lines: one per event of every child, pure noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno <= logging.INFO and message.startswith("Handler 'child-"))


def configure(log_format: str = "json", level: str = "INFO") -> None:
    """Route every logger (ours, Kopf's, the clients') to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler.addFilter(QuietChildEvents())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "aiohttp.access", "kubernetes.client.rest"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
