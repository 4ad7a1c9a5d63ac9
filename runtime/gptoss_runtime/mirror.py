"""`gptoss-runtime mirror`: a small read-only Hugging Face-compatible Hub for clusters without internet.

Serves every `<org>/<repo>` folder under a root folder at revision `main` and at a commit sha derived
from the folder's content (so a changed file gives a new commit, and clients pinning the old one get a
clear "revision not found"). It answers the endpoints `huggingface_hub.snapshot_download` uses:

    GET       /api/models/<org>/<repo>[/revision/<rev>]   repository info: sha, siblings
    GET       /api/models/<org>/<repo>/tree/<rev>[/<dir>]  file list (recursive, one page)
    HEAD|GET  /<org>/<repo>/resolve/<rev>/<path>           the file; Range requests; ETag, X-Repo-Commit

Errors carry the `X-Error-Code` header huggingface_hub maps onto its exceptions (RepoNotFound,
RevisionNotFound, EntryNotFound). Other methods are refused (405): the mirror never writes. One log
line per request. Air-gapped clusters run it beside their workloads and point the operator's
GPTOSS_WEIGHTS_MIRROR_ENDPOINT (or a CR's spec.weights.huggingFace.endpoint) at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

DEFAULT_REVISION: Final = "main"
CHUNK_BYTES: Final = 1 << 20
_REPO_PART: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RANGE: Final = re.compile(r"^bytes=(\d*)-(\d*)$")


class MirrorError(Exception):
    """A request the mirror answers with an error status (and a Hub error code)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class FileDigest:
    size: int
    sha256: str
    git_sha1: str  # the blob id git (and the Hub's tree listing) gives the file


class ContentDigests:
    """sha256 and git blob ids of files, cached by (path, size, mtime) so big weights are hashed once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], FileDigest] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> FileDigest:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        sha256 = hashlib.sha256()
        git_sha1 = hashlib.sha1(f"blob {stat.st_size}\0".encode(), usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                sha256.update(chunk)
                git_sha1.update(chunk)
        digest = FileDigest(stat.st_size, sha256.hexdigest(), git_sha1.hexdigest())
        with self._lock:
            self._cache[key] = digest
        return digest


class HubMirror:
    """The repositories under `root` and the answers to the Hub's requests (no HTTP here)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests = ContentDigests()

    # --- repositories ------------------------------------------------------------------------------

    def repo_dir(self, repo_id: str) -> Path | None:
        """The folder of `<org>/<repo>`, or None when the mirror has no such repository."""
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_REPO_PART.match(part) for part in parts):
            return None
        folder = self.root / parts[0] / parts[1]
        return folder if folder.is_dir() else None

    def repositories(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            f"{org.name}/{repo.name}"
            for org in self.root.iterdir()
            if org.is_dir()
            for repo in org.iterdir()
            if repo.is_dir() and self.repo_dir(f"{org.name}/{repo.name}") is not None
        )

    def files(self, repo_dir: Path) -> list[str]:
        """Every file of the repository, as posix paths; hidden top-level entries (.cache, ...) are not served."""
        found = []
        for path in repo_dir.rglob("*"):
            relative = path.relative_to(repo_dir)
            if path.is_file() and not relative.parts[0].startswith("."):
                found.append(relative.as_posix())
        return sorted(found)

    def commit(self, repo_dir: Path) -> str:
        """A 40-hex sha of the repository's content: every file's path and sha256."""
        digest = hashlib.sha1(usedforsecurity=False)
        for name in self.files(repo_dir):
            digest.update(f"{name}\0{self.digests.of(repo_dir / name).sha256}\n".encode())
        return digest.hexdigest()

    def resolve(self, repo_id: str, revision: str) -> tuple[Path, str]:
        """(folder, commit) of `repo_id` at `revision` (main or the current commit)."""
        repo_dir = self.repo_dir(repo_id)
        if repo_dir is None:
            raise MirrorError(404, "RepoNotFound", f"repository {repo_id} is not on this mirror")
        commit = self.commit(repo_dir)
        if revision not in (DEFAULT_REVISION, commit):
            raise MirrorError(
                404, "RevisionNotFound", f"{repo_id} has revisions {DEFAULT_REVISION} and {commit}, not {revision}"
            )
        return repo_dir, commit

    # --- answers ------------------------------------------------------------------------------------

    def revision_info(self, repo_id: str, revision: str) -> tuple[dict[str, object], str]:
        repo_dir, commit = self.resolve(repo_id, revision)
        info = {
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit,
            "private": False,
            "gated": False,
            "disabled": False,
            "siblings": [{"rfilename": name} for name in self.files(repo_dir)],
        }
        return info, commit

    def tree(self, repo_id: str, revision: str, folder: str) -> tuple[list[dict[str, object]], str]:
        repo_dir, commit = self.resolve(repo_id, revision)
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: list[dict[str, object]] = []
        for name in self.files(repo_dir):
            if name.startswith(prefix):
                digest = self.digests.of(repo_dir / name)
                entries.append({"type": "file", "path": name, "size": digest.size, "oid": digest.git_sha1})
        return entries, commit

    def file(self, repo_id: str, revision: str, name: str) -> tuple[Path, FileDigest, str]:
        repo_dir, commit = self.resolve(repo_id, revision)
        parts = Path(name).parts
        if not parts or any(part in ("..", "") for part in parts) or name.startswith("/") or parts[0].startswith("."):
            raise MirrorError(404, "EntryNotFound", f"{name} is not a file of {repo_id}")
        path = repo_dir / name
        if not path.is_file():
            raise MirrorError(404, "EntryNotFound", f"{name} is not a file of {repo_id}")
        return path, self.digests.of(path), commit


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a `Range: bytes=...` header, None for the whole file; MirrorError when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise MirrorError(416, "RangeNotSatisfiable", f"unsupported Range {header!r}; use bytes=FIRST-[LAST]")
    first_text, last_text = match.groups()
    if first_text == "":  # a suffix: the last N bytes
        first, last = max(0, size - int(last_text)), size - 1
    else:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size or first > last:
        raise MirrorError(416, "RangeNotSatisfiable", f"Range {header!r} is outside a file of {size} bytes")
    return first, last


class MirrorRequestHandler(BaseHTTPRequestHandler):
    """HTTP for a `HubMirror`; the server it runs in carries the mirror as `server.mirror`."""

    protocol_version = "HTTP/1.1"
    server_version = "gptoss-mirror"

    @property
    def mirror(self) -> HubMirror:
        mirror: HubMirror = self.server.mirror  # type: ignore[attr-defined]
        return mirror

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per request comes from `log_request` instead

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info('%s "%s %s" %s', self.client_address[0], self.command, self.path, code)

    def do_GET(self) -> None:
        self.respond(head=False)

    def do_HEAD(self) -> None:
        self.respond(head=True)

    def do_POST(self) -> None:
        self._refuse_write()

    def do_PUT(self) -> None:
        self._refuse_write()

    def do_DELETE(self) -> None:
        self._refuse_write()

    def _refuse_write(self) -> None:
        self.close_connection = True  # the request body is not read
        self.send_error_json(MirrorError(405, "MethodNotAllowed", "the mirror is read-only"), head=False)

    # --- routing ------------------------------------------------------------------------------------

    def respond(self, *, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        try:
            self.route(path, head=head)
        except MirrorError as error:
            self.send_error_json(error, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def route(self, path: str, *, head: bool) -> None:
        if path in ("/", "/healthz"):
            self.send_json({"repositories": self.mirror.repositories()}, head=head)
            return
        api = re.match(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?$", path)
        if api is not None:
            repo_id, kind, revision, rest = api.groups()
            if kind in (None, "revision"):  # /api/models/<repo> is the info at the default revision
                revision = revision or DEFAULT_REVISION
                info, commit = self.mirror.revision_info(repo_id, revision)
                self.send_json(info, head=head, commit=commit)
            else:
                entries, commit = self.mirror.tree(repo_id, revision, rest or "")
                self.send_json(entries, head=head, commit=commit)
            return
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if resolve is not None:
            repo_id, revision, name = resolve.groups()
            self.send_file(repo_id, revision, name, head=head)
            return
        raise MirrorError(404, "EntryNotFound", f"no such endpoint: {path}")

    # --- responses ----------------------------------------------------------------------------------

    def send_json(self, value: object, *, head: bool, status: int = 200, commit: str | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error_json(self, error: MirrorError, *, head: bool) -> None:
        body = json.dumps({"error": str(error)}).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Code", error.code)
        self.send_header("X-Error-Message", str(error))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_file(self, repo_id: str, revision: str, name: str, *, head: bool) -> None:
        path, digest, commit = self.mirror.file(repo_id, revision, name)
        span = byte_range(self.headers.get("Range"), digest.size)
        first, last = span if span is not None else (0, digest.size - 1)
        length = max(0, last - first + 1)
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{digest.sha256}"')
        self.send_header("X-Repo-Commit", commit)
        if span is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{digest.size}")
        self.end_headers()
        if head:
            return
        for chunk in self.file_chunks(name, path, first, length):
            self.wfile.write(chunk)

    def file_chunks(self, name: str, path: Path, first: int, length: int) -> Iterator[bytes]:
        """The bytes of the response body (a hook: the tests' fake Hub cuts connections here)."""
        with path.open("rb") as handle:
            handle.seek(first)
            left = length
            while left > 0:
                chunk = handle.read(min(CHUNK_BYTES, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


class MirrorServer(ThreadingHTTPServer):
    """A threaded HTTP server carrying a `HubMirror`."""

    daemon_threads = True

    def __init__(
        self,
        mirror: HubMirror,
        address: tuple[str, int],
        handler: type[MirrorRequestHandler] = MirrorRequestHandler,
    ) -> None:
        self.mirror = mirror
        super().__init__(address, handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def run_mirror(root: Path, host: str, port: int) -> None:
    """Serve `root` until interrupted."""
    mirror = HubMirror(root)
    server = MirrorServer(mirror, (host, port))
    repositories = mirror.repositories()
    log.info(
        "serving %d repositories from %s on %s (read-only, revision %s): %s",
        len(repositories),
        root,
        server.url,
        DEFAULT_REVISION,
        ", ".join(repositories) or "none yet",
    )
    if not repositories:
        log.warning("no <org>/<repo> folder under %s; write one with `gptoss-runtime make-tiny-checkpoint`", root)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # PID 1 in a container ignores SIGTERM without a handler; the pod would wait out its grace period.
    raise KeyboardInterrupt
