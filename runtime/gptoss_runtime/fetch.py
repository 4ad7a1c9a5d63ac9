"""`gptoss-runtime fetch`: download a pinned checkpoint revision onto the weights volume.

- `huggingface_hub.snapshot_download` into `--dest`, skipping OpenAI's reference layout and the Metal
  build (`contract.SKIPPED_CHECKPOINT_FOLDERS`), which serving never reads. Resumable: files already
  downloaded (recorded under `<dest>/.cache/huggingface/`) are kept and only the missing ones fetched;
  within a run huggingface_hub retries a broken transfer (with a range request when bytes arrived).
  huggingface_hub >= 2 no longer continues another process's partial file, so a file cut by a crash
  starts over.
- Per-request timeouts; whole attempts retried with exponential backoff; a progress line at most every
  few seconds per progress bar.
- Then the checkpoint is verified (config, index, shards), every file hashed once and checked against
  the checksum the Hub published for it (the ETag huggingface_hub records per file: sha256 for LFS files,
  the git blob id for small ones), a sha256 manifest written, and the completion marker
  `contract.WEIGHTS_COMPLETE_MARKER` written last, atomically; the marker records that the checksums were
  verified, so server pods check only sizes against the manifest. A corrupt file is deleted (with its
  download record) and the run fails, so the Job's next attempt downloads it again. A run that finds the
  marker for the same repository and revision does nothing.
- The Hugging Face token is read from a file (a mounted Secret); it is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gptoss_runtime import checkpoint, contract, fetch_progress

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS: Final = 10.0


class FetchError(Exception):
    """The download failed or its result is not a usable checkpoint; the message says why."""


@dataclass(frozen=True)
class FetchOptions:
    repo: str
    revision: str
    dest: Path
    token_file: Path | None = None
    retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    endpoint: str | None = None  # default: huggingface_hub's (HF_ENDPOINT or the public Hub)
    max_workers: int = 8
    progress_port: int | None = None  # serve download progress there (`fetch_progress`); None: do not


def skipped_patterns() -> list[str]:
    return [f"{folder}*" for folder in contract.SKIPPED_CHECKPOINT_FOLDERS]


def marker_path(dest: Path) -> Path:
    return dest / contract.WEIGHTS_COMPLETE_MARKER


def completed_revision(dest: Path, repo: str) -> str | None:
    """The revision recorded by a finished fetch of `repo` into `dest`, if any."""
    try:
        recorded = json.loads(marker_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("repo") != repo:
        return None
    revision = recorded.get("revision")
    return revision if isinstance(revision, str) else None


def read_token(token_file: Path | None) -> str | None:
    if token_file is None:
        return None
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise FetchError(
            f"--token-file: cannot read {token_file} ({error.strerror}); mount the Hugging Face token Secret there"
        ) from error
    if not token:
        raise FetchError(f"--token-file: {token_file} is empty; the Secret must hold a Hugging Face token")
    return token


class _LogProgress:
    """Progress as log lines (tqdm's carriage-return bars make unreadable container logs).

    Built by huggingface_hub for each progress bar; a class that is not a tqdm subclass gets only the
    standard tqdm keyword arguments and must provide what the library calls on a bar.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.desc = str(kwargs.get("desc") or "download")
        self.total = kwargs.get("total")
        self.n = kwargs.get("initial") or 0
        self.unit = str(kwargs.get("unit") or "it")
        self._last_report = 0.0
        self.postfix = ""

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Any:
        return iter(())

    def update(self, n: float | None = 1) -> None:
        self.n += n or 0
        if time.monotonic() - self._last_report >= PROGRESS_INTERVAL_SECONDS:
            self._report()

    def _report(self) -> None:
        self._last_report = time.monotonic()
        if self.unit == "B":
            done = f"{self.n / 2**20:.1f} MiB"
            total = f" of {self.total / 2**20:.1f} MiB" if self.total else ""
        else:
            done, total = f"{self.n:g}", f" of {self.total:g}" if self.total else ""
        log.info("%s: %s%s", self.desc, done, total)

    def close(self) -> None:
        if self.n:
            self._report()

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        return

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def reset(self, total: float | None = None) -> None:
        self.n, self.total = 0, total

    def __getattr__(self, name: str) -> Any:
        # tqdm internals a library helper may touch (format_dict, ...): harmless empties.
        if name == "format_dict":
            return {"n": self.n, "total": self.total, "elapsed": 0, "rate": None}
        raise AttributeError(name)


def fetch(options: FetchOptions, *, sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download, verify, mark complete. Returns the destination folder."""
    dest = options.dest
    if completed_revision(dest, options.repo) == options.revision:
        log.info("%s@%s is already complete in %s; nothing to do", options.repo, options.revision, dest)
        return dest
    ensure_writable(dest)
    marker_path(dest).unlink(missing_ok=True)  # another revision (or a corrupt marker): fetch anew
    token = read_token(options.token_file)
    with fetch_progress.reporting(dest, options.progress_port, lambda: _repository_bytes(options, token)):
        _download_with_retries(options, token, sleep)
    _verify_and_mark(options)
    return dest


def _repository_bytes(options: FetchOptions, token: str | None) -> int:
    return fetch_progress.repository_bytes(
        options.repo,
        options.revision,
        endpoint=options.endpoint,
        token=token,
        skipped_prefixes=contract.SKIPPED_CHECKPOINT_FOLDERS,
    )


def ensure_writable(dest: Path) -> None:
    """Create `dest`, or say plainly that the weights volume is not writable by this user (and how to fix it)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = dest / ".gptoss-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except PermissionError as error:
        raise FetchError(
            f"--dest: cannot write {dest} as uid {os.getuid()} ({error.strerror}): the weights volume must be "
            "writable by the pod's user; the operator sets fsGroup 1000, which hostPath-backed volumes ignore, so "
            "such a provisioner must create its directories writable (local-path-provisioner's default setup "
            "script does: mkdir -m 0777)"
        ) from error


def _download_with_retries(options: FetchOptions, token: str | None, sleep: Callable[[float], None]) -> None:
    # Read by huggingface_hub when it is first imported; an explicit setting in the environment wins.
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(max(1, int(options.timeout_s))))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(max(1, int(options.timeout_s))))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    options.dest.mkdir(parents=True, exist_ok=True)
    attempts = max(1, options.retries)
    for attempt in range(1, attempts + 1):
        log.info(
            "fetching %s@%s into %s (attempt %d of %d)", options.repo, options.revision, options.dest, attempt, attempts
        )
        try:
            snapshot_download(
                options.repo,
                revision=options.revision,
                local_dir=options.dest,
                ignore_patterns=skipped_patterns(),
                token=token,
                etag_timeout=options.timeout_s,
                max_workers=options.max_workers,
                tqdm_class=_LogProgress,
                endpoint=options.endpoint,
            )
            return
        except (RepositoryNotFoundError, GatedRepoError) as error:
            raise FetchError(
                f"--repo: {options.repo} is not accessible ({type(error).__name__}); check the name, and for a "
                "gated or private repository the token in --token-file"
            ) from error
        except RevisionNotFoundError as error:
            raise FetchError(f"--revision: {options.revision} does not exist in {options.repo}") from error
        except Exception as error:  # network, timeouts, 5xx: retried
            if attempt == attempts:
                raise FetchError(
                    f"downloading {options.repo}@{options.revision} failed after {attempts} attempts: "
                    f"{type(error).__name__}: {error}"
                ) from error
            delay = min(options.max_backoff_s, options.backoff_s * 2 ** (attempt - 1))
            log.warning("attempt %d failed (%s: %s); retrying in %.1f s", attempt, type(error).__name__, error, delay)
            sleep(delay)


def _verify_and_mark(options: FetchOptions) -> None:
    try:
        info = checkpoint.verify_checkpoint(options.dest)
    except checkpoint.CheckpointError as error:
        raise FetchError(f"the download is not a complete gpt-oss checkpoint: {error}") from error
    log.info(
        "verified %d shards (%.1f GiB); checking checksums and writing the sha256 manifest",
        len(info.shard_files),
        info.total_bytes / 2**30,
    )
    try:
        summary = checkpoint.write_verified_manifest(options.dest, source_etags(options.dest))
    except checkpoint.ChecksumMismatchError as error:
        forget_download(options.dest, error.path)
        raise FetchError(f"{error} (deleted; the next attempt downloads it again)") from error
    log.info("%d of %d files matched the checksum their source published", summary.verified_files, summary.files)
    record = {
        "repo": options.repo,
        "revision": options.revision,
        "model": info.model_name,
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # Read by the server's start: with it, sizes against the manifest suffice (no re-hash).
        contract.MARKER_CHECKSUMS_KEY: {
            "algorithm": "sha256",
            "manifest": checkpoint.MANIFEST_FILE_NAME,
            "files": summary.files,
            "bytes": summary.total_bytes,
            "matchedSource": summary.verified_files,
        },
    }
    marker = marker_path(options.dest)
    partial = marker.with_name(marker.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(marker)  # atomic: the marker exists only once everything before it is done
    log.info("%s@%s is complete in %s", options.repo, options.revision, options.dest)


def source_etags(dest: Path) -> dict[str, str]:
    """The ETag huggingface_hub recorded for each file it downloaded into `dest` (relative path -> ETag).

    Read with huggingface_hub's reader of its local-dir records (`.cache/huggingface/download/`), a
    private module: should a release move it, the files are still hashed into the manifest, only not
    compared with the Hub's checksums (logged).
    """
    try:
        from huggingface_hub._local_folder import read_download_metadata
    except ImportError:
        log.warning("this huggingface_hub keeps no readable download records; checksums not compared with the Hub")
        return {}

    etags: dict[str, str] = {}
    for path in sorted(dest.rglob("*")):
        relative = path.relative_to(dest)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        metadata = read_download_metadata(dest, relative.as_posix())
        if metadata is not None and metadata.etag:
            etags[relative.as_posix()] = metadata.etag
    return etags


def forget_download(dest: Path, path: Path) -> None:
    """Delete a corrupt file and huggingface_hub's record of it, so that the next run downloads it anew."""
    path.unlink(missing_ok=True)
    from huggingface_hub._local_folder import get_local_download_paths  # present: source_etags found a record

    get_local_download_paths(dest, path.relative_to(dest).as_posix()).metadata_path.unlink(missing_ok=True)
