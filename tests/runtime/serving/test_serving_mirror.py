"""`gptoss-runtime mirror`: the in-cluster Hugging Face-compatible Hub, and the stand-in pod's path through it.

The end-to-end test runs what the cluster runs, as processes: `make-tiny-checkpoint` into
`ROOT/openai/gpt-oss-20b`, `mirror --root ROOT`, the weights Job's `fetch` (HF_ENDPOINT = the mirror),
then the stand-in server pod's `serve --engine reference --plan <20b plan> --weights --require-marker`.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from serving_support import free_port, http_status, runtime_command, start_server, wait_until

from gptoss_operator.cli import parse_deployment
from gptoss_operator.planner import plan as plan_of
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime import contract
from gptoss_runtime.checkpoint import make_tiny_checkpoint
from gptoss_runtime.fetch import FetchError, FetchOptions, fetch
from gptoss_runtime.launcher import ServeOptions, prepare
from gptoss_runtime.mirror import HubMirror, MirrorServer, byte_range
from gptoss_runtime.plan import ServingPlan

REPO = "openai/gpt-oss-20b"
SAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "samples" / "gpt-oss-20b.yaml"


@pytest.fixture(scope="module")
def mirror_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mirror")
    make_tiny_checkpoint(root / "openai" / "gpt-oss-20b")
    (root / "acme" / "notes").mkdir(parents=True)
    (root / "acme" / "notes" / "README.md").write_text("hello\n")
    (root / "acme" / "notes" / "docs").mkdir()
    (root / "acme" / "notes" / "docs" / "a.txt").write_text("0123456789")
    return root


@pytest.fixture(scope="module")
def mirror(mirror_root: Path) -> Iterator[MirrorServer]:
    server = MirrorServer(HubMirror(mirror_root), ("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def stand_in_plan() -> ServingPlan:
    """The plan the operator writes for the unchanged 20b sample CR (an H100 plan)."""
    cr = parse_deployment(yaml.safe_load(SAMPLE.read_text(encoding="utf-8")), str(SAMPLE))
    return plan_of(cr.spec, OperatorSettings(engine_stand_in="reference"))


# ------------------------------------------------------------------------------------ the protocol
def test_every_repo_is_served_at_main_and_at_its_content_commit(mirror: MirrorServer) -> None:
    api = HfApi(endpoint=mirror.url)
    info = api.repo_info(REPO, revision="main")
    assert info.sha is not None and len(info.sha) == 40
    assert api.repo_info(REPO, revision=info.sha).sha == info.sha
    assert "config.json" in {s.rfilename for s in info.siblings or []}
    notes = {f.path for f in api.list_repo_tree("acme/notes", recursive=True)}
    assert notes == {"README.md", "docs/a.txt"}
    assert {f.path for f in api.list_repo_tree("acme/notes", path_in_repo="docs")} == {"docs/a.txt"}


def test_the_commit_follows_the_content(tmp_path: Path) -> None:
    repo = tmp_path / "acme" / "x"
    repo.mkdir(parents=True)
    (repo / "a.txt").write_text("one")
    mirror = HubMirror(tmp_path)
    before = mirror.commit(repo)
    assert mirror.commit(repo) == before
    (repo / "a.txt").write_text("two")
    assert mirror.commit(repo) != before


def test_unknown_repo_revision_and_file_raise_the_hubs_errors(mirror: MirrorServer, tmp_path: Path) -> None:
    api = HfApi(endpoint=mirror.url)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("openai/gpt-oss-999b")
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(REPO, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", endpoint=mirror.url, local_dir=tmp_path)


def request(
    mirror: MirrorServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = mirror.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_resolve_answers_head_get_and_ranges_with_the_hubs_headers(mirror: MirrorServer, mirror_root: Path) -> None:
    data = (mirror_root / "acme" / "notes" / "docs" / "a.txt").read_bytes()
    status, head_headers, body = request(mirror, "HEAD", "/acme/notes/resolve/main/docs/a.txt")
    assert (status, body) == (200, b"")
    assert head_headers["Content-Length"] == str(len(data))
    assert len(head_headers["X-Repo-Commit"]) == 40
    assert head_headers["ETag"].strip('"')
    status, headers, body = request(mirror, "GET", "/acme/notes/resolve/main/docs/a.txt", {"Range": "bytes=4-"})
    assert (status, body) == (206, data[4:])
    assert headers["Content-Range"] == f"bytes 4-{len(data) - 1}/{len(data)}"
    assert headers["ETag"] == head_headers["ETag"]
    assert request(mirror, "GET", "/acme/notes/resolve/main/docs/a.txt", {"Range": "bytes=2-3"})[2] == data[2:4]
    assert request(mirror, "GET", "/acme/notes/resolve/main/docs/a.txt", {"Range": "bytes=99-"})[0] == 416


def test_byte_ranges() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=0-", 10) == (0, 9)
    assert byte_range("bytes=-3", 10) == (7, 9)
    assert byte_range("bytes=5-100", 10) == (5, 9)


def test_the_mirror_is_read_only_and_stays_inside_its_root(mirror: MirrorServer) -> None:
    status, headers, _ = request(mirror, "PUT", "/acme/notes/resolve/main/README.md")
    assert status == 405
    assert headers["X-Error-Code"] == "MethodNotAllowed"
    for path in ("/acme/notes/resolve/main/../../openai/gpt-oss-20b/config.json", "/acme/notes/resolve/main/%2e%2e/x"):
        status, headers, _ = request(mirror, "GET", path)
        assert status == 404, path
        assert headers["X-Error-Code"] == "EntryNotFound"


def test_one_log_line_per_request(mirror: MirrorServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gptoss_runtime.mirror"):
        request(mirror, "GET", "/api/models/acme/notes/revision/main")
        request(mirror, "GET", "/nowhere")
        wait_until(lambda: len(caplog.records) >= 2, 5, "two log lines")
    lines = [r.getMessage() for r in caplog.records]
    assert any('"GET /api/models/acme/notes/revision/main" 200' in line for line in lines)
    assert any('"GET /nowhere" 404' in line for line in lines)


# ------------------------------------------------------------------- the stand-in pod's path, for real
@pytest.fixture
def mirror_process(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """`gptoss-runtime mirror` serving a root that `make-tiny-checkpoint` wrote; yields (url, root, log)."""
    root = tmp_path / "hf-mirror"
    subprocess.run(runtime_command("make-tiny-checkpoint", str(root / REPO)), check=True, capture_output=True)
    port = free_port()
    log_path = tmp_path / "mirror.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            runtime_command("mirror", f"--root={root}", "--host=127.0.0.1", f"--port={port}"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/healthz") == 200, 30, "the mirror to answer")
        yield url, root, log_path
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log_path.read_text()


@pytest.mark.triton
def test_the_weights_job_and_the_stand_in_server_work_through_the_mirror(
    mirror_process: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, _, mirror_log = mirror_process
    plan = stand_in_plan()
    assert (plan.model, plan.gpus_per_replica) == ("gpt-oss-20b", 1)
    weights_root = tmp_path / "models"  # the PVC, mounted at /models in the pods
    environment = {**os.environ, "HF_ENDPOINT": url, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    fetched = subprocess.run(
        runtime_command("fetch", f"--repo={REPO}", "--revision=main", f"--dest={weights_root / plan.weights_subdir}"),
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    marker = json.loads((weights_root / plan.weights_subdir / contract.WEIGHTS_COMPLETE_MARKER).read_text())
    assert (marker["repo"], marker["revision"], marker["model"]) == (REPO, "main", "gpt-oss-20b")
    assert "/openai/gpt-oss-20b/resolve/" in mirror_log.read_text()

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    server = start_server(
        tmp_path / "server", weights_root, "reference", f"--plan={plan_file}", "--require-marker", "--skip-checksums"
    )
    try:
        assert "engine=reference: the CPU reference engine (numpy) stands in for TensorRT-LLM" in server.log()
        with urllib.request.urlopen(f"{server.http_url}/v2/models/gpt_oss", timeout=5) as response:
            assert json.load(response)["name"] == "gpt_oss"
    finally:
        server.stop_cleanly()


def test_a_20b_plan_with_the_reference_engine_takes_the_tiny_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plan = stand_in_plan()
    weights = make_tiny_checkpoint(tmp_path / "models" / plan.weights_subdir)
    (weights / contract.WEIGHTS_COMPLETE_MARKER).write_text(json.dumps({"repo": REPO, "revision": "main"}))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.model_dump_json(by_alias=True))
    monkeypatch.setenv(contract.ENGINE_STAND_IN_ENV, "reference")
    options = ServeOptions(
        weights=tmp_path / "models",
        engine="reference",
        plan_file=plan_file,
        require_marker=True,
        model_repository=tmp_path / "work" / "model-repository",
    )
    with caplog.at_level(logging.INFO, logger="gptoss_runtime.launcher"):
        prepare(options)
    engine = json.loads((tmp_path / "work" / "model-repository" / "gpt_oss" / "engine.json").read_text())
    assert (engine["engine"], engine["model_name"]) == ("reference", "gpt-oss-20b")
    assert engine["weights_dir"] == str(weights.resolve())
    (notice,) = [r.getMessage() for r in caplog.records if "engine=reference" in r.getMessage()]
    assert "cluster setting GPTOSS_ENGINE_STAND_IN=reference" in notice
    assert "(a tiny checkpoint)" in notice
    assert "1x NVIDIA-H100-80GB-HBM3 GPU(s) are not used" in notice


def test_an_unwritable_weights_volume_is_named_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, data: bytes) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)  # root (the tests' user) could write anywhere
    with pytest.raises(FetchError, match=r"--dest: cannot write .* writable by the pod's user"):
        fetch(FetchOptions(REPO, "main", tmp_path / "models" / "x", endpoint="http://127.0.0.1:9"))
