"""e2e/images: the image build's cache keys, refs and Dockerfiles, checked without building anything."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "e2e" / "images"
RUNTIME_DOCKERFILE = (REPO / "runtime" / "Dockerfile").read_text()
OPERATOR_DOCKERFILE = (REPO / "operator" / "Dockerfile").read_text()
FETCHER_DOCKERFILE = (REPO / "runtime" / "Dockerfile.fetcher").read_text()


def load_images_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gptoss_e2e_images", IMAGES_DIR / "images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


images = load_images_module()


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A miniature repository with what the Python images copy."""
    write(tmp_path, "pyproject.toml", '[project]\nname = "x"\ndependencies = ["pyyaml"]\n')
    write(tmp_path, "README.md", "readme\n")
    write(tmp_path, "operator/gptoss_operator/__init__.py", "")
    write(tmp_path, "runtime/gptoss_runtime/__init__.py", "")
    write(tmp_path, "runtime/Dockerfile", "FROM scratch\n")
    return tmp_path


def runtime_hash(root: Path, base: str = "base", wheels: str = "wheels") -> str:
    return str(images.project_image_hash(images.RUNTIME_CPU, "runtime/Dockerfile", root, base, wheels))


# --- content hashes --------------------------------------------------------------------------------


def test_content_hash_keeps_names_and_contents_apart() -> None:
    assert images.content_hash([("a", b"bc")]) != images.content_hash([("ab", b"c")])
    assert images.content_hash([("a", b"1"), ("b", b"2")]) != images.content_hash([("a", b"12"), ("b", b"")])
    assert images.content_hash([("a", b"1")]) == images.content_hash([("a", b"1")])


def test_image_hash_follows_every_copied_source(project: Path) -> None:
    before = runtime_hash(project)
    write(project, "runtime/gptoss_runtime/engine.py", "x = 1\n")
    after_new_file = runtime_hash(project)
    write(project, "runtime/gptoss_runtime/engine.py", "x = 2\n")
    assert len({before, after_new_file, runtime_hash(project)}) == 3


def test_image_hash_follows_dockerfile_base_and_wheelhouse(project: Path) -> None:
    before = runtime_hash(project)
    assert runtime_hash(project, base="other-base") != before
    assert runtime_hash(project, wheels="other-wheels") != before
    write(project, "runtime/Dockerfile", "FROM scratch\nUSER 1000\n")
    assert runtime_hash(project) != before


def test_build_leftovers_do_not_change_the_hash(project: Path) -> None:
    before = runtime_hash(project)
    write(project, "runtime/gptoss_runtime/__pycache__/x.cpython-311.pyc", "bytecode")
    write(project, "operator/gpt_oss_operator.egg-info/PKG-INFO", "metadata")
    write(project, "operator/build/lib/x.py", "copy")
    assert runtime_hash(project) == before


def test_a_missing_input_is_named(project: Path) -> None:
    (project / "README.md").unlink()
    with pytest.raises(images.BuildError, match=r"README\.md is missing"):
        runtime_hash(project)


def test_pause_hash_covers_its_program_and_the_go_version() -> None:
    assert images.pause_hash(REPO, "go1.26.8") != images.pause_hash(REPO, "go1.26.9")
    files = images.source_files(REPO, ["e2e/images/pause"])
    assert {path.name for path in files} >= {"main.go", "go.mod", "Containerfile"}


def test_base_key_follows_suite_and_packages() -> None:
    key = images.base_key()
    assert images.base_key("trixie") != key
    assert images.base_key(packages=[*images.DEBIAN_PACKAGES, "curl"]) != key
    assert images.base_key(packages=list(reversed(images.DEBIAN_PACKAGES))) == key  # order is irrelevant


def test_base_has_what_the_triton_stub_and_pip_need() -> None:
    assert {"python3", "python3-venv", "libpython3.11", "ca-certificates"} <= set(images.DEBIAN_PACKAGES)
    assert images.IMAGE_PYTHON == "3.11"
    assert "python_backend_stubs/3.11/" in RUNTIME_DOCKERFILE


# --- the wheelhouse --------------------------------------------------------------------------------


def test_wheelhouse_key_follows_pyproject_pins_and_python() -> None:
    pyproject = (REPO / "pyproject.toml").read_bytes()
    key = images.wheelhouse_key(pyproject)
    assert images.wheelhouse_key(pyproject + b"\n# changed\n") != key
    assert images.wheelhouse_key(pyproject, pins=("nvidia-pytriton==0.7.1",)) != key
    assert images.wheelhouse_key(pyproject, python="3.12") != key


def test_wheelhouse_holds_both_images_requirements_and_the_build_backend() -> None:
    pyproject = b"""
[build-system]
requires = ["setuptools>=77", "wheel"]
[project]
dependencies = ["pyyaml>=6"]
[project.optional-dependencies]
operator = ["kopf>=1.37", "aiohttp>=3.9"]
runtime = ["numpy>=1.26,<2", "aiohttp>=3.9"]
dev = ["pytest"]
"""
    requirements = images.wheelhouse_requirements(pyproject, pins=("nvidia-pytriton==0.7.0",))
    assert requirements == [
        "pyyaml>=6",
        "kopf>=1.37",
        "aiohttp>=3.9",
        "numpy>=1.26,<2",
        "nvidia-pytriton==0.7.0",
        "setuptools>=77",
        "wheel",
    ]


def test_runtime_dependency_layer_installs_only_what_the_runtime_needs() -> None:
    pyproject = b"""
[project]
dependencies = ["pyyaml>=6"]
[project.optional-dependencies]
operator = ["kopf>=1.37"]
runtime = ["numpy>=1.26,<2", "pyyaml>=6"]
"""
    assert images.image_requirements(pyproject, "runtime", ("nvidia-pytriton==0.7.0",)) == [
        "pyyaml>=6",
        "numpy>=1.26,<2",
        "nvidia-pytriton==0.7.0",
    ]
    assert images.image_requirements(pyproject, "operator", ()) == ["pyyaml>=6", "kopf>=1.37"]


def test_staged_context_is_the_hashed_sources_plus_the_wheelhouse(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheelhouse"
    write(wheels, "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl", "wheel")
    write(project, "runtime/gptoss_runtime/__pycache__/x.pyc", "bytecode")
    context = tmp_path / "context"
    pyproject = (project / "pyproject.toml").read_bytes()
    monkeypatch.setattr(images, "REPO_ROOT", project)
    images.stage_context(context, wheels, pyproject)
    staged = {path.relative_to(context).as_posix() for path in context.rglob("*") if path.is_file()}
    assert staged == {
        "pyproject.toml",
        "README.md",
        "operator/gptoss_operator/__init__.py",
        "runtime/gptoss_runtime/__init__.py",
        "runtime/Dockerfile",
        "wheels/numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl",
        "wheels/requirements-runtime.txt",
        "wheels/requirements-operator.txt",
    }
    assert (context / "wheels" / "requirements-runtime.txt").read_text() == "pyyaml\nnvidia-pytriton==0.7.0\n"


def test_layers_are_keyed_by_what_the_mounts_hold() -> None:
    """Builders do not look into bind mounts when they reuse a cached layer: the keys must be ARGs."""
    for key in ("WHEELHOUSE_KEY", "SOURCES_KEY"):
        assert re.search(rf'^ARG {key}=""$', RUNTIME_DOCKERFILE, re.MULTILINE)
        assert f'"{key}"' in (IMAGES_DIR / "images.py").read_text()
    assert RUNTIME_DOCKERFILE.index("ARG SOURCES_KEY") < RUNTIME_DOCKERFILE.index('"/tmp/src[runtime]"')
    # The operator's sources are COPYed (content-checked) before the step that installs them.
    assert OPERATOR_DOCKERFILE.index("ARG WHEELHOUSE_KEY") < OPERATOR_DOCKERFILE.index("requirements-operator.txt")
    assert OPERATOR_DOCKERFILE.index("COPY operator") < OPERATOR_DOCKERFILE.index('".[operator]"')


def test_the_pytriton_the_dockerfile_installs_is_in_the_wheelhouse() -> None:
    """The build is offline: a requirement missing from the wheelhouse fails it."""
    (pinned,) = re.findall(r"^ARG PYTRITON_REQUIREMENT=(\S+)$", RUNTIME_DOCKERFILE, re.MULTILINE)
    assert pinned in images.RUNTIME_PINS


# --- refs and refs.env -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        ("pause", r"localhost/gpt-oss-operator/pause:[0-9a-f]{12}"),
        ("base", r"localhost/gpt-oss-operator/debian-base:bookworm-[0-9a-f]{12}"),
        ("runtime-cpu", r"localhost/gpt-oss-operator/runtime:cpu-[0-9a-f]{12}"),
        ("operator", r"localhost/gpt-oss-operator/operator:[0-9a-f]{12}"),
        ("fetcher", r"localhost/gpt-oss-operator/fetcher:[0-9a-f]{12}"),
    ],
)
def test_refs_are_pinned_by_content(target: str, pattern: str, tmp_path: Path) -> None:
    digest = images.content_hash([("x", b"y")])
    ref = images.TARGETS[target].ref(digest)
    assert re.fullmatch(pattern, ref)
    assert not ref.endswith(":latest")
    archive = images.TARGETS[target].archive(images.Paths(tmp_path), digest)
    assert archive.parent == tmp_path / "images" and digest[:12] in archive.name


def test_refs_env_merges_what_was_built(tmp_path: Path) -> None:
    paths = images.Paths(tmp_path)
    images.record(paths, {images.PAUSE: ("localhost/gpt-oss-operator/pause:aaa", Path("/a/pause.tar"))})
    images.record(paths, {images.OPERATOR: ("localhost/gpt-oss-operator/operator:bbb", Path("/a/op.tar"))})
    assert images.read_refs(paths.refs_env) == {
        "PAUSE_IMAGE": "localhost/gpt-oss-operator/pause:aaa",
        "PAUSE_ARCHIVE": "/a/pause.tar",
        "OPERATOR_IMAGE": "localhost/gpt-oss-operator/operator:bbb",
        "OPERATOR_ARCHIVE": "/a/op.tar",
    }


def test_cache_location_follows_gptoss_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPTOSS_CACHE", str(tmp_path))
    assert images.Paths.from_environment().refs_env == tmp_path / "images" / "refs.env"


def test_unknown_image_is_refused_with_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GPTOSS_CACHE", str(tmp_path))
    assert images.main(["runtime-gpu"]) == 1
    assert "unknown image 'runtime-gpu'" in capsys.readouterr().err


def test_load_without_a_build_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GPTOSS_CACHE", str(tmp_path))
    assert images.main(["load", "--address", str(tmp_path / "none.sock")]) == 1
    assert "build.sh all" in capsys.readouterr().err


# --- the Dockerfiles and the script --------------------------------------------------------------


def test_runtime_dockerfile_builds_both_variants_from_one_file() -> None:
    assert re.search(r"^ARG VARIANT=trtllm$", RUNTIME_DOCKERFILE, re.MULTILINE)
    assert re.search(r"^ARG TRITON_IMAGE=nvcr\.io/nvidia/tritonserver:\S+-trtllm-python-py3$", RUNTIME_DOCKERFILE, re.M)
    assert "FROM ${TRITON_IMAGE} AS base-trtllm" in RUNTIME_DOCKERFILE
    assert "FROM ${BASE_IMAGE} AS base-cpu" in RUNTIME_DOCKERFILE
    assert re.search(r"^FROM base-\$\{VARIANT\}$", RUNTIME_DOCKERFILE, re.MULTILINE)


def test_runtime_image_runs_non_root_with_home_on_tmp() -> None:
    (user,) = re.findall(r"^USER (\S+)$", RUNTIME_DOCKERFILE, re.MULTILINE)
    assert user == "1000:1000"
    assert "HOME=/tmp" in RUNTIME_DOCKERFILE
    # The launcher finds the CPU Triton where it finds NGC's, so it needs no change for the cpu variant.
    assert 'ln -s "$triton_home" /opt/tritonserver' in RUNTIME_DOCKERFILE
    assert "nvidia_pytriton.libs" in RUNTIME_DOCKERFILE
    assert "PATH=/opt/venv/bin:" in RUNTIME_DOCKERFILE


@pytest.mark.parametrize(("dockerfile", "base_arg"), [("runtime", "BASE_IMAGE"), ("operator", "PYTHON_IMAGE")])
def test_the_script_sets_build_args_the_dockerfiles_declare(dockerfile: str, base_arg: str) -> None:
    text = (REPO / dockerfile / "Dockerfile").read_text()
    assert re.search(rf"^ARG {base_arg}=\S+$", text, re.MULTILINE)
    # Offline builds: the wheelhouse is mounted from the build context, and pip falls back to the index.
    assert "--mount=type=bind,target=/context" in text
    assert "--no-index --find-links /context/wheels" in text
    assert f'"{base_arg}"' in (IMAGES_DIR / "images.py").read_text()


def test_the_fetcher_is_a_target_of_all_with_its_own_dockerfile_and_hash(project: Path) -> None:
    assert images.TARGETS["fetcher"] is images.FETCHER and images.FETCHER.env_name == "FETCHER"
    assert images.BUILDERS["fetcher"] is images.build_fetcher
    write(project, "runtime/Dockerfile.fetcher", "FROM scratch\n")
    fetcher = images.project_image_hash(images.FETCHER, "runtime/Dockerfile.fetcher", project, "base", "wheels")
    assert fetcher != runtime_hash(project)
    write(project, "runtime/Dockerfile.fetcher", "FROM scratch\nUSER 1000\n")
    assert images.project_image_hash(images.FETCHER, "runtime/Dockerfile.fetcher", project, "base", "wheels") != fetcher


def test_the_fetcher_image_holds_no_server_stack_and_runs_non_root() -> None:
    assert FETCHER_DOCKERFILE.count("\nFROM ") == 1 and "FROM ${BASE_IMAGE}" in FETCHER_DOCKERFILE
    instructions = "\n".join(line for line in FETCHER_DOCKERFILE.lower().splitlines() if not line.startswith("#"))
    for heavy in ("triton", "tensorrt", "[runtime]", "cuda"):
        assert heavy not in instructions
    assert "--no-deps /tmp/src" in FETCHER_DOCKERFILE  # the project without pydantic, jinja2, ...
    assert '"$site/gptoss_operator"' in FETCHER_DOCKERFILE  # ...and without the operator package
    (user,) = re.findall(r"^USER (\S+)$", FETCHER_DOCKERFILE, re.MULTILINE)
    assert user == "1000:1000"
    assert "HOME=/tmp" in FETCHER_DOCKERFILE
    assert 'ENTRYPOINT ["gptoss-runtime"]' in FETCHER_DOCKERFILE
    assert "--no-index --find-links /context/wheels" in FETCHER_DOCKERFILE
    for key in ("WHEELHOUSE_KEY", "SOURCES_KEY"):
        assert re.search(rf'^ARG {key}=""$', FETCHER_DOCKERFILE, re.MULTILINE)


def test_the_fetcher_installs_exactly_the_runtime_extras_lines_the_fetch_imports(tmp_path: Path) -> None:
    """The Dockerfile's selection, run against the project's pyproject.toml: pyproject stays the one pin."""
    (program,) = re.findall(r"python3 -c '(import re, tomllib;.*?)' \\\n", FETCHER_DOCKERFILE, re.DOTALL)
    program = program.replace("\\\n", "").replace("/context/pyproject.toml", str(REPO / "pyproject.toml"))
    selected = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    lines = selected.stdout.split()
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["runtime"]
    assert lines == [r for r in runtime if r.startswith(("huggingface-hub", "numpy", "tokenizers"))]
    assert len(lines) == 3


def test_pause_program_stops_on_term_and_int_and_reaps_children() -> None:
    source = (IMAGES_DIR / "pause" / "main.go").read_text()
    assert "syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD" in source
    assert "syscall.Wait4(-1" in source and "WNOHANG" in source
    containerfile = (IMAGES_DIR / "pause" / "Containerfile").read_text()
    assert containerfile.count("FROM ") == 1 and "FROM scratch" in containerfile


def test_build_script_documents_its_interface() -> None:
    script = (IMAGES_DIR / "build.sh").read_text()
    for target in images.TARGETS.values():
        assert f"{target.env_name}_IMAGE=" in script and target.name in script
    for needle in ("refs.env", "PAUSE_ARCHIVE=", "build.sh load [--address"):
        assert needle in script
    assert "apt-get install" in script
    for tool in ("buildah", "podman", "skopeo", "umoci", "mmdebstrap"):
        assert tool in script


def test_loading_removes_only_earlier_builds_of_the_same_images_that_no_container_uses() -> None:
    current = "localhost/gpt-oss-operator/runtime:cpu-605f3227ece9"
    listed = [
        current,
        "localhost/gpt-oss-operator/runtime:cpu-101afee77d86",  # an earlier build: removed
        "localhost/gpt-oss-operator/runtime:cpu-13c5daaf19e8",  # an earlier build a container runs: kept
        "localhost/gpt-oss-operator/runtime:gpu-101afee77d86",  # another variant: kept
        "localhost/gpt-oss-operator/runtime:cpu-latest",  # not a content hash: kept
        "localhost/gpt-oss-operator/operator:101afee77d86",  # another image: kept
        "docker.io/library/busybox:1.36",
    ]
    in_use = {"localhost/gpt-oss-operator/runtime:cpu-13c5daaf19e8"}
    assert images.older_builds(images.RUNTIME_CPU, current, listed, in_use) == [
        "localhost/gpt-oss-operator/runtime:cpu-101afee77d86"
    ]


def test_an_image_not_built_here_is_never_pruned() -> None:
    listed = ["registry.example/pause:3.10", "registry.example/pause:101afee77d86"]
    assert images.older_builds(images.PAUSE, "localhost/gpt-oss-operator/pause:605f3227ece9", listed, set()) == []


def test_the_cri_records_of_a_removed_image_go_with_it_unless_a_kept_ref_shares_the_image() -> None:
    digests = {
        "localhost/gpt-oss-operator/operator:101afee77d86": "sha256:aaa",
        "sha256:1111": "sha256:aaa",  # the CRI's record of the same image: removed with it
        "localhost/gpt-oss-operator/operator:605f3227ece9": "sha256:bbb",
        "sha256:2222": "sha256:bbb",  # the kept image's record: kept
        "localhost/gpt-oss-operator/operator:c595d6c71b6b": "sha256:ccc",  # same content as a kept ref
        "localhost/other:1": "sha256:ccc",
        "sha256:3333": "sha256:ccc",
    }
    stale = ["localhost/gpt-oss-operator/operator:101afee77d86", "localhost/gpt-oss-operator/operator:c595d6c71b6b"]
    assert images.with_their_ids(stale, digests) == sorted([*stale, "sha256:1111"])
