"""A local stand-in for the Hugging Face Hub: the few HTTP endpoints `snapshot_download` uses.

Serves one repository at one commit from a folder: revision info, the recursive file tree, and
`resolve` (HEAD and GET with Range). It records every request, and can fail every request or chosen files, or cut
the first download of chosen files in the middle (to exercise resume).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class HubRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None


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
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def files(self) -> list[str]:
        return sorted(
            path.relative_to(self.files_dir).as_posix() for path in self.files_dir.rglob("*") if path.is_file()
        )

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                hub._handle(self, head=False)

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- request handling --------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(
            HubRequest(handler.command, path, handler.headers.get("Range"), handler.headers.get("Authorization"))
        )
        if self.fail_all:
            self._send_json(handler, {"error": "server error"}, status=self.fail_status, head=head)
            return
        api_prefix = f"/api/models/{self.repo}/"
        resolve_prefix = f"/{self.repo}/resolve/"
        if path.startswith(api_prefix + "revision/"):
            self._send_json(handler, self._revision_info(), head=head)
        elif path.startswith(api_prefix + "tree/"):
            self._send_json(handler, self._tree(), head=head)
        elif path.startswith(resolve_prefix):
            _revision, _, file_path = path[len(resolve_prefix) :].partition("/")
            if file_path in self.fail_paths:
                self._send_json(handler, {"error": "server error"}, status=self.fail_status, head=head)
                return
            self._send_file(handler, file_path, head=head)
        else:
            self._send_json(handler, {"error": f"not found: {path}"}, status=404, head=head)

    def _revision_info(self) -> dict[str, object]:
        return {
            "id": self.repo,
            "modelId": self.repo,
            "sha": self.commit,
            "siblings": [{"rfilename": name} for name in self.files()],
        }

    def _tree(self) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        for name in self.files():
            data = (self.files_dir / name).read_bytes()
            entries.append({"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
        return entries

    def _send_json(
        self, handler: BaseHTTPRequestHandler, value: object, *, status: int = 200, head: bool = False
    ) -> None:
        body = json.dumps(value).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Repo-Commit", self.commit)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _send_file(self, handler: BaseHTTPRequestHandler, name: str, *, head: bool) -> None:
        path = self.files_dir / name
        if not path.is_file():
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data = path.read_bytes()
        start = 0
        requested = handler.headers.get("Range")
        if requested and requested.startswith("bytes="):
            start = int(requested[len("bytes=") :].split("-", 1)[0] or 0)
        body = data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("X-Repo-Commit", self.commit)
        handler.send_header("Accept-Ranges", "bytes")
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if head:
            return
        if name in self.cut_once and not start:
            self.cut_once.discard(name)
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(body)
