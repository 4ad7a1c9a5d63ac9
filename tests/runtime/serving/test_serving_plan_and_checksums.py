"""Rollouts without outages, runtime side: plans from newer operators, checksums verified once at fetch."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_fake_hub import FakeHub
from test_serving_launcher import a_plan

from gptoss_runtime import contract
from gptoss_runtime.checkpoint import (
    ChecksumMismatchError,
    file_digests,
    make_tiny_checkpoint,
    write_manifest,
    write_verified_manifest,
)
from gptoss_runtime.fetch import FetchError, FetchOptions, fetch
from gptoss_runtime.launcher import LaunchError, ServeOptions, prepare
from gptoss_runtime.plan import PLAN_SCHEMA_VERSION, PlanVersionError, ServingPlan

REPO = "openai/gpt-oss-20b"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


# --- plans written by a newer operator ---------------------------------------------------------------
def plan_document(**top: object) -> dict[str, object]:
    document: dict[str, object] = json.loads(a_plan().to_json())
    document.update(top)
    return document


def test_unknown_fields_of_a_newer_plan_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    document = plan_document(speculativeDecoding={"draft": "eagle3"})
    document["engine"] = {**document["engine"], "fp8Attention": True}  # type: ignore[dict-item]

    with caplog.at_level(logging.INFO, logger="gptoss_runtime.plan"):
        plan = ServingPlan.from_json(json.dumps(document))

    assert plan == a_plan()
    assert "speculativeDecoding" in caplog.text and "engine.fp8Attention" in caplog.text


def test_a_plan_without_unknown_fields_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gptoss_runtime.plan"):
        assert ServingPlan.from_json(a_plan().to_json()) == a_plan()
    assert caplog.text == ""


def test_a_newer_major_version_is_refused_with_the_fix() -> None:
    document = plan_document(schemaVersion=PLAN_SCHEMA_VERSION + 1)
    with pytest.raises(PlanVersionError, match=r"schemaVersion: .*version 2.*up to version 1.*server image"):
        ServingPlan.from_json(json.dumps(document))


@pytest.mark.parametrize("version", [0, "1", True, None])
def test_a_version_that_is_not_a_positive_integer_is_refused(version: object) -> None:
    with pytest.raises(PlanVersionError, match="schemaVersion"):
        ServingPlan.from_json(json.dumps(plan_document(schemaVersion=version)))


def test_the_launcher_names_the_plan_file_for_a_newer_version(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan_document(schemaVersion=PLAN_SCHEMA_VERSION + 1)))
    options = ServeOptions(weights=tmp_path, engine="reference", plan_file=plan_file, model_repository=tmp_path / "r")
    with pytest.raises(LaunchError, match=r"--plan: .*schemaVersion"):
        prepare(options)


def test_the_models_stay_strict_where_the_operator_builds_a_plan() -> None:
    with pytest.raises(ValueError, match="extra"):
        ServingPlan.model_validate({**plan_document(), "typoField": 1})


# --- checksums, once ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "repo")


@pytest.fixture
def weights(checkpoint_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "weights"
    shutil.copytree(checkpoint_dir, copy)
    return copy


def test_a_manifest_is_verified_against_sha256_and_git_blob_etags(weights: Path) -> None:
    sha256, _ = file_digests(weights / "config.json")
    _, git_blob = file_digests(weights / "tokenizer.json")
    etags = {"config.json": f'"{sha256}"', "tokenizer.json": git_blob, "generation_config.json": "W/abc-123"}

    summary = write_verified_manifest(weights, etags)

    assert summary.verified_files == 2  # the third ETag is not a checksum
    assert summary.files == len([p for p in weights.iterdir() if p.is_file() and not p.name.startswith(".")])


def test_a_file_that_differs_from_its_published_checksum_is_named(weights: Path) -> None:
    with pytest.raises(ChecksumMismatchError, match=r"config\.json does not match") as caught:
        write_verified_manifest(weights, {"config.json": "0" * 64})
    assert caught.value.path == weights / "config.json"


def _same_size_change(path: Path) -> None:
    """Flip one byte, keeping size and modification time (what a bad disk or a torn copy may leave)."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _mark(weights: Path, *, verified: bool) -> None:
    record: dict[str, object] = {"repo": REPO, "revision": "abc"}
    if verified:
        record[contract.MARKER_CHECKSUMS_KEY] = {"algorithm": "sha256", "files": 1}
    (weights / contract.WEIGHTS_COMPLETE_MARKER).write_text(json.dumps(record))


def test_a_start_after_a_verified_fetch_checks_sizes_not_hashes(weights: Path, tmp_path: Path) -> None:
    write_manifest(weights)
    _mark(weights, verified=True)
    _same_size_change(weights / "tokenizer_config.json")
    options = ServeOptions(weights=weights, engine="reference", model_repository=tmp_path / "r", require_marker=True)

    prepare(options)  # no re-hash: the fetcher vouched for the checksums

    (weights / "tokenizer_config.json").write_text("{}")  # a size change is still caught
    with pytest.raises(LaunchError, match=r"tokenizer_config\.json has \d+ bytes"):
        prepare(options)


def test_a_start_without_a_verified_marker_still_hashes(weights: Path, tmp_path: Path) -> None:
    write_manifest(weights)
    _mark(weights, verified=False)  # written by an older fetcher
    _same_size_change(weights / "tokenizer_config.json")
    options = ServeOptions(weights=weights, engine="reference", model_repository=tmp_path / "r", require_marker=True)
    with pytest.raises(LaunchError, match=r"tokenizer_config\.json does not match its sha256"):
        prepare(options)


@pytest.fixture
def hub(checkpoint_dir: Path) -> Iterator[FakeHub]:
    server = FakeHub(REPO, COMMIT, checkpoint_dir).start()
    yield server
    server.stop()


def test_fetch_records_checksums_checked_against_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    fetch(FetchOptions(REPO, COMMIT, dest, endpoint=hub.url, backoff_s=0.0, retries=2, timeout_s=10.0))

    marker = json.loads((dest / contract.WEIGHTS_COMPLETE_MARKER).read_text())
    checksums = marker[contract.MARKER_CHECKSUMS_KEY]
    assert checksums["algorithm"] == "sha256"
    assert checksums["matchedSource"] == checksums["files"] == len(hub.files())


def test_a_corrupt_download_fails_then_the_next_attempt_fetches_it_again(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    opts = FetchOptions(REPO, COMMIT, dest, endpoint=hub.url, backoff_s=0.0, retries=2, timeout_s=10.0)
    fetch(opts)
    (dest / contract.WEIGHTS_COMPLETE_MARKER).unlink()
    shard = next(dest.glob("model-*.safetensors"))
    _same_size_change(shard)  # huggingface_hub trusts its record of the file and does not download it again

    with pytest.raises(FetchError, match=r"does not match the checksum its source published .*deleted"):
        fetch(opts)
    assert not shard.exists() and not (dest / contract.WEIGHTS_COMPLETE_MARKER).exists()

    fetch(opts)
    assert (dest / contract.WEIGHTS_COMPLETE_MARKER).is_file()
