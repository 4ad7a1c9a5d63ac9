"""The project's Hub mirror (`gptoss_runtime.mirror`) with faults to inject, for the fetcher's tests.

Serves one repository at one given commit from a folder (`files_dir` may be swapped while it runs). It
records every request, and can fail every request or chosen files, or cut the first download of chosen
files in the middle (to exercise resume). Everything else is the real mirror's behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gptoss_runtime.mirror import HubMirror, MirrorError, MirrorRequestHandler, MirrorServer


@dataclass
class HubRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None


class _OneRepoMirror(HubMirror):
    """The mirror's answers for `hub.repo` only, from `hub.files_dir`, at the fixed `hub.commit`."""

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(hub.files_dir)
        self.hub = hub

    def repo_dir(self, repo_id: str) -> Path | None:
        return self.hub.files_dir if repo_id == self.hub.repo else None

    def commit(self, repo_dir: Path) -> str:
        return self.hub.commit


class _FaultyHandler(MirrorRequestHandler):
    @property
    def hub(self) -> FakeHub:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        return hub

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def respond(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        hub = self.hub
        hub.requests.append(
            HubRequest(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
        )
        resolved_file = path.partition(f"/{hub.repo}/resolve/")[2].partition("/")[2]
        if hub.fail_all or (resolved_file and resolved_file in hub.fail_paths):
            self.send_error_json(MirrorError(hub.fail_status, "ServerError", "server error"), head=head)
            return
        super().respond(head=head)

    def file_chunks(self, name: str, path: Path, first: int, length: int) -> Iterator[bytes]:
        if name not in self.hub.cut_once or first != 0:
            yield from super().file_chunks(name, path, first, length)
            return
        self.hub.cut_once.discard(name)
        yield b"".join(super().file_chunks(name, path, first, length))[: length // 2]
        self.close_connection = True  # the client got half of what Content-Length promised


@dataclass
class FakeHub:
    repo: str
    commit: str
    files_dir: Path
    requests: list[HubRequest] = field(default_factory=list)
    fail_all: bool = False
    cut_once: set[str] = field(default_factory=set)  # paths whose first GET stops half-way
    fail_paths: set[str] = field(default_factory=set)  # paths answered with `fail_status`
    # 501: a server error that huggingface_hub does not retry by itself (it retries 5xx such as 500 for
    # about 20 s), so that the tests exercise the fetcher's own retries quickly.
    fail_status: int = 501
    _server: MirrorServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def files(self) -> list[str]:
        return _OneRepoMirror(self).files(self.files_dir)

    def start(self) -> FakeHub:
        self._server = MirrorServer(_OneRepoMirror(self), ("127.0.0.1", 0), _FaultyHandler)
        self._server.hub = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
