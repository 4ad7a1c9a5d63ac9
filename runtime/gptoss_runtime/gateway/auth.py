"""API keys: `Authorization: Bearer <key>` checked against keys read from files.

The keys come from a mounted Kubernetes Secret: `--api-keys PATH` names a folder (each file of the
Secret holds one key, or several, one per line) or a single file. The files are read again at most once
per `RELOAD_SECONDS`, so a key added to or removed from the Secret takes effect without a restart once
the kubelet has updated the mount (rotation: add the new key, move clients over, remove the old one).
With a path given but no key in it, every request is refused: a missing Secret must not open the door.
Errors have OpenAI's 401 shape. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from gptoss_runtime.gateway.openai_api import ApiError

log = logging.getLogger(__name__)

RELOAD_SECONDS: Final = 1.0
_BEARER: Final = "bearer "
_MISSING: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def read_keys(path: Path) -> frozenset[str]:
    """Every non-empty line of the file, or of each visible file in the folder (a Secret mount's
    `..data` links and dot folders are skipped)."""
    files = (
        [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    )
    keys: set[str] = set()
    for file in files:
        keys.update(line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip())
    return frozenset(keys)


class ApiKeys:
    def __init__(self, path: Path, *, reload_s: float = RELOAD_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._path = path
        self._reload_s = reload_s
        self._clock = clock
        self._keys: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def keys(self) -> frozenset[str]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._reload_s:
            self._read_at = now
            try:
                self._keys = read_keys(self._path)
            except OSError as error:  # a Secret mount being swapped, or gone: keep the last keys
                log.warning("api keys: cannot read %s: %s", self._path, error)
        return self._keys

    def check(self, authorization: str | None) -> None:
        """Return if the header carries a valid key, else raise a 401 `ApiError`."""
        if not authorization or not authorization.lower().startswith(_BEARER):
            raise ApiError(401, _MISSING)
        presented = authorization[len(_BEARER) :].strip()
        valid = False
        for key in self.keys():  # no early exit: the time taken does not tell how close a guess was
            valid |= hmac.compare_digest(presented.encode(), key.encode())
        if not valid:
            raise ApiError(401, f"Incorrect API key provided: {_redacted(presented)}.", code="invalid_api_key")


def _redacted(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 10 else "***"
