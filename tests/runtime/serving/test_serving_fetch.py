"""`gptoss-runtime fetch` against a local fake Hub (no internet): skip, resume, idempotence, failure."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fake_hub import FakeHub
from serving_support import runtime_command

from gptoss_runtime import contract
from gptoss_runtime.checkpoint import MANIFEST_FILE_NAME, check_manifest, make_tiny_checkpoint, verify_checkpoint
from gptoss_runtime.fetch import FetchError, FetchOptions, fetch

REPO = "openai/gpt-oss-20b"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_secret_token_value"
SHARD = "model-00000-of-00001.safetensors"


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = make_tiny_checkpoint(tmp_path_factory.mktemp("hub") / "repo")
    for folder in ("original", "metal"):
        (files / folder).mkdir()
        (files / folder / "model.bin").write_bytes(b"\0" * 4096)
    return files


@pytest.fixture
def hub(hub_files: Path) -> Iterator[FakeHub]:
    server = FakeHub(REPO, COMMIT, hub_files).start()
    yield server
    server.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hf-token"
    path.write_text(TOKEN + "\n")
    return path


def options(hub: FakeHub, dest: Path, **changes: object) -> FetchOptions:
    settings: dict[str, object] = {"endpoint": hub.url, "backoff_s": 0.0, "retries": 2, "timeout_s": 10.0}
    settings.update(changes)
    return FetchOptions(REPO, COMMIT, dest, **settings)  # type: ignore[arg-type]


def test_fetch_downloads_the_checkpoint_without_skipped_folders(
    hub: FakeHub, tmp_path: Path, token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "weights"
    with caplog.at_level(logging.DEBUG):
        fetch(options(hub, dest, token_file=token_file))

    verify_checkpoint(dest)
    assert check_manifest(dest) == len([name for name in hub.files() if not name.startswith(("original/", "metal/"))])
    assert not (dest / "original").exists() and not (dest / "metal").exists()
    assert not [r for r in hub.requests if "/original/" in r.path or "/metal/" in r.path]
    marker = json.loads((dest / contract.WEIGHTS_COMPLETE_MARKER).read_text())
    assert marker["repo"] == REPO and marker["revision"] == COMMIT and marker["model"] == "gpt-oss-20b"
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in caplog.text


def test_second_run_with_the_marker_does_nothing(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    fetch(options(hub, dest))
    hub.requests.clear()

    fetch(options(hub, dest))

    assert hub.requests == []


def test_a_new_revision_is_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    fetch(options(hub, dest))
    marker = dest / contract.WEIGHTS_COMPLETE_MARKER
    marker.write_text(json.dumps({"repo": REPO, "revision": "an-older-revision"}))
    hub.requests.clear()

    fetch(options(hub, dest))

    assert json.loads(marker.read_text())["revision"] == COMMIT


def test_an_interrupted_fetch_resumes_with_the_missing_files(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    hub.fail_paths.add(SHARD)
    with pytest.raises(FetchError, match="failed after 1 attempts"):
        fetch(options(hub, dest, retries=1))
    assert not (dest / contract.WEIGHTS_COMPLETE_MARKER).exists()
    hub.fail_paths.clear()
    hub.requests.clear()

    fetch(options(hub, dest))

    downloaded = {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
    assert downloaded == {SHARD}
    verify_checkpoint(dest)


def test_a_cut_connection_is_retried(hub: FakeHub, hub_files: Path, tmp_path: Path) -> None:
    hub.cut_once.add(SHARD)
    dest = tmp_path / "weights"

    fetch(options(hub, dest))

    assert (dest / SHARD).read_bytes() == (hub_files / SHARD).read_bytes()
    assert (dest / contract.WEIGHTS_COMPLETE_MARKER).is_file()


def test_a_failing_hub_ends_with_a_clear_error_and_no_marker(hub: FakeHub, tmp_path: Path, token_file: Path) -> None:
    hub.fail_all = True
    dest = tmp_path / "weights"
    environment = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    result = subprocess.run(
        runtime_command(
            "fetch",
            f"--repo={REPO}",
            f"--revision={COMMIT}",
            f"--dest={dest}",
            f"--token-file={token_file}",
            "--retries=2",
            "--retry-backoff=0",
            "--timeout=5",
        ),
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )

    assert result.returncode == 1
    assert "failed after 2 attempts" in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert not (dest / contract.WEIGHTS_COMPLETE_MARKER).exists()
    assert not (dest / MANIFEST_FILE_NAME).exists()


def test_an_incomplete_download_is_not_marked_complete(hub: FakeHub, hub_files: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-repo"
    shutil.copytree(hub_files, broken)
    next(broken.glob("model-*.safetensors")).unlink()  # the index names a shard the repository lacks
    hub.files_dir = broken

    with pytest.raises(FetchError, match="not a complete gpt-oss checkpoint"):
        fetch(options(hub, tmp_path / "weights"))
    assert not (tmp_path / "weights" / contract.WEIGHTS_COMPLETE_MARKER).exists()


def test_an_unreadable_token_file_is_named(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="--token-file"):
        fetch(options(hub, tmp_path / "weights", token_file=tmp_path / "missing-token"))
