"""Build the project's container images without Docker, cached by the content hash of their inputs.

Called through `e2e/images/build.sh` (which installs the Debian tools first); the interface is documented
there. Standard library only, so that it runs with the system's python3 before any virtualenv exists.

Images (all refs are `localhost/gpt-oss-operator/<name>:<tag>-<hash12>`, never `:latest`, so that a pod's
`imagePullPolicy: IfNotPresent` finds them in containerd without a registry):
  pause        FROM scratch + a static Go program (e2e/images/pause): the real node's sandbox image
  base         the Debian root filesystem the others start from (also for helper pods that need /bin/sh)
  runtime-cpu  runtime/Dockerfile with VARIANT=cpu: the inference pod on CPU (Triton from nvidia-pytriton)
  operator     operator/Dockerfile: `gptoss-operator run`
  fetcher      runtime/Dockerfile.fetcher: `gptoss-runtime fetch` with huggingface_hub only (weights downloads)

The CPU images start from a Debian bookworm root filesystem made by mmdebstrap (cached as a tarball keyed
by suite + package list). Python packages come from a host-side wheelhouse (keyed by pyproject.toml and
the pins below), mounted into the build, so no `RUN` step touches the network. Each image is kept as a
docker-archive keyed by the hash of everything that goes into it (Dockerfile, sources, base, wheelhouse);
an existing archive is never rebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(__file__).resolve().parent
REGISTRY_PREFIX = "localhost/gpt-oss-operator"
HASH_LENGTH = 12

# The Debian base of the CPU images. bookworm's python3 is 3.11, the version of the Python-backend stub
# the nvidia-pytriton wheel ships that we use; libstdc++6 is what tritonserver links beyond glibc/zlib.
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "libpython3.11",
    "libstdc++6",
    "passwd",
    "python3",
    "python3-venv",
)
# Documentation, man pages and locales are dead weight in an image.
DPKG_EXCLUDES: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
# Installed beside the project's extras in the CPU runtime image; part of the wheelhouse key.
RUNTIME_PINS: tuple[str, ...] = ("nvidia-pytriton==0.7.0",)
IMAGE_PYTHON = "3.11"
PRINT_PYTHON_VERSION = ("python3", "-c", "import platform; print(platform.python_version())")
# Inside a source tree these are build leftovers, never inputs.
IGNORED_NAMES = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist"})
IGNORED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
# What the Dockerfiles COPY from the repository (the staged build context holds exactly these).
PROJECT_SOURCES: tuple[str, ...] = ("pyproject.toml", "README.md", "operator", "runtime")
# The build's layer cache (untagged images) is trimmed past this many (GPTOSS_IMAGES_CACHE_LIMIT).
DEFAULT_LAYER_CACHE_LIMIT = 80


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Paths:
    """Where everything is cached; `GPTOSS_CACHE` moves it all (default ~/.cache/gpt-oss-operator)."""

    cache: Path

    @classmethod
    def from_environment(cls) -> Paths:
        default = Path.home() / ".cache" / "gpt-oss-operator"
        return cls(Path(os.environ.get("GPTOSS_CACHE") or default))

    @property
    def images(self) -> Path:
        return self.cache / "images"

    @property
    def wheels(self) -> Path:
        return self.cache / "wheels"

    @property
    def refs_env(self) -> Path:
        return self.images / "refs.env"

    @property
    def storage_root(self) -> Path:
        # A containers/storage of our own: it never collides with other users of podman on this machine.
        return self.images / "storage"


@dataclass(frozen=True)
class ImageTarget:
    name: str  # the build.sh argument
    env_name: str  # prefix in refs.env: <env_name>_IMAGE, <env_name>_ARCHIVE
    repository: str  # last part of the image name
    tag_prefix: str  # the tag is <tag_prefix><hash12>

    def ref(self, content_hash: str) -> str:
        return f"{REGISTRY_PREFIX}/{self.repository}:{self.tag_prefix}{content_hash[:HASH_LENGTH]}"

    def archive(self, paths: Paths, content_hash: str) -> Path:
        return paths.images / f"{self.name}-{content_hash[:HASH_LENGTH]}.docker.tar"


PAUSE = ImageTarget("pause", "PAUSE", "pause", "")
# The Debian root filesystem itself, also exported: helper pods that only need /bin/sh (the volume
# provisioner's) run it on the node.
BASE = ImageTarget("base", "BASE", "debian-base", f"{DEBIAN_SUITE}-")
RUNTIME_CPU = ImageTarget("runtime-cpu", "RUNTIME_CPU", "runtime", "cpu-")
OPERATOR = ImageTarget("operator", "OPERATOR", "operator", "")
FETCHER = ImageTarget("fetcher", "FETCHER", "fetcher", "")
TARGETS: dict[str, ImageTarget] = {target.name: target for target in (PAUSE, BASE, RUNTIME_CPU, OPERATOR, FETCHER)}


# --- content hashes (pure: inputs in, hex digest out) -----------------------------------------------


def content_hash(parts: Iterable[tuple[str, bytes]]) -> str:
    """sha256 over (name, content) pairs, each length-prefixed so that no two inputs can run together."""
    digest = hashlib.sha256()
    for name, content in parts:
        for chunk in (name.encode(), content):
            digest.update(len(chunk).to_bytes(8, "big"))
            digest.update(chunk)
    return digest.hexdigest()


def is_ignored(relative: Path) -> bool:
    return any(part in IGNORED_NAMES or part.endswith(IGNORED_SUFFIXES) for part in relative.parts)


def source_files(root: Path, entries: Sequence[str]) -> list[Path]:
    """The files under `entries` (files or folders, relative to root), sorted, leftovers excluded."""
    found: list[Path] = []
    for entry in entries:
        path = root / entry
        if path.is_file():
            found.append(Path(entry))
            continue
        if not path.is_dir():
            raise BuildError(f"{path} is missing: the image needs it as a build input")
        for file in path.rglob("*"):
            relative = file.relative_to(root)
            if file.is_file() and not is_ignored(relative):
                found.append(relative)
    return sorted(found)


def file_parts(root: Path, files: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    for relative in files:
        yield f"file:{relative.as_posix()}", (root / relative).read_bytes()


def base_key(suite: str = DEBIAN_SUITE, packages: Sequence[str] = DEBIAN_PACKAGES) -> str:
    """Key of the mmdebstrap root filesystem: suite, variant, package list and dpkg filters."""
    parts = [("suite", suite.encode()), ("variant", b"minbase"), ("packages", ",".join(sorted(packages)).encode())]
    parts.append(("dpkg", "\n".join(DPKG_EXCLUDES).encode()))
    return content_hash(parts)


def wheelhouse_key(pyproject: bytes, pins: Sequence[str] = RUNTIME_PINS, python: str = IMAGE_PYTHON) -> str:
    """Key of the wheelhouse: the project's requirements (pyproject.toml), the extra pins, the Python."""
    return content_hash([("pyproject", pyproject), ("pins", "\n".join(pins).encode()), ("python", python.encode())])


def wheelhouse_requirements(pyproject: bytes, pins: Sequence[str] = RUNTIME_PINS) -> list[str]:
    """Every requirement either image installs: base dependencies, the operator and runtime extras,
    the pins, and the build backend (the project itself is built offline inside the image)."""
    project = tomllib.loads(pyproject.decode())
    extras = project["project"].get("optional-dependencies", {})
    requirements = list(project["project"].get("dependencies", []))
    for extra in ("operator", "runtime"):
        requirements.extend(extras.get(extra, []))
    requirements.extend(pins)
    requirements.extend(project.get("build-system", {}).get("requires", []))
    return list(dict.fromkeys(requirements))


def pause_hash(root: Path = REPO_ROOT, go_version: str = "") -> str:
    files = source_files(root, ["e2e/images/pause"])
    return content_hash([("target", b"pause"), ("go", go_version.encode()), *file_parts(root, files)])


def project_image_hash(target: ImageTarget, dockerfile: str, root: Path, base: str, wheels: str) -> str:
    """Hash of a Python image: its Dockerfile, the project sources it copies, its base and wheelhouse."""
    files = source_files(root, [dockerfile, *PROJECT_SOURCES])
    parts = [("target", target.name.encode()), ("base", base.encode()), ("wheels", wheels.encode())]
    return content_hash([*parts, *file_parts(root, files)])


# --- running tools ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(argv))
    # Tools' chatter goes to stderr: stdout is left for what a caller captures.
    kwargs.setdefault("stdout", None if kwargs.get("capture_output") else sys.stderr)
    try:
        return subprocess.run(list(argv), check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]
    except FileNotFoundError as error:
        raise BuildError(f"{argv[0]} is not installed (e2e/images/build.sh installs it with apt-get)") from error
    except subprocess.CalledProcessError as error:
        raise BuildError(f"`{' '.join(argv[:3])} ...` failed with exit code {error.returncode}") from error


def buildah(paths: Paths, *args: str) -> list[str]:
    return ["buildah", "--root", str(paths.storage_root), "--runroot", str(runroot(paths)), *args]


def podman(paths: Paths, *args: str) -> list[str]:
    return ["podman", "--root", str(paths.storage_root), "--runroot", str(runroot(paths)), *args]


def runroot(paths: Paths) -> Path:
    # Run state belongs on a tmpfs that a reboot clears (stale locks otherwise survive); keyed by the root.
    key = hashlib.sha256(str(paths.storage_root).encode()).hexdigest()[:8]
    return Path("/run/gptoss-images") / key


def image_exists(paths: Paths, ref: str) -> bool:
    result = subprocess.run(buildah(paths, "inspect", "--type", "image", ref), capture_output=True, check=False)
    return result.returncode == 0


def export_archive(paths: Paths, ref: str, archive: Path) -> None:
    """Write a docker-archive (what `ctr images import` and `podman load` read) atomically."""
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    run(buildah(paths, "push", "--quiet", ref, f"docker-archive:{partial}:{ref}"))
    partial.replace(archive)


def go_version() -> str:
    return run(["go", "env", "GOVERSION"], capture_output=True).stdout.strip()


# --- pause -----------------------------------------------------------------------------------------


def build_pause(paths: Paths) -> tuple[str, Path]:
    digest = pause_hash(REPO_ROOT, go_version())
    ref, archive = PAUSE.ref(digest), PAUSE.archive(paths, digest)
    if archive.is_file():
        log(f"pause cached: {ref}")
        return ref, archive
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gptoss-pause-") as context:
        environment = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false"}
        run(
            [
                "go",
                "build",
                "-trimpath",
                "-ldflags",
                f"-s -w -X main.version={digest[:HASH_LENGTH]}",
                "-o",
                f"{context}/pause",
                ".",
            ],
            cwd=IMAGES_DIR / "pause",
            env=environment,
        )
        shutil.copy2(IMAGES_DIR / "pause" / "Containerfile", Path(context) / "Containerfile")
        run(buildah(paths, "build", "--quiet", "--layers=false", "-f", f"{context}/Containerfile", "-t", ref, context))
    export_archive(paths, ref, archive)
    log(f"pause built in {time.monotonic() - started:.0f}s: {ref}")
    return ref, archive


# --- the Debian base -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    ref: str  # the image in our storage (imported from the tarball when a build needs it)
    tarball: Path
    python_version: str  # its python3's full version; part of the wheelhouse key


def base_ref(key: str) -> str:
    return BASE.ref(key)


def prepare_base(paths: Paths) -> Base:
    """The base, keyed by suite + packages. Warm, this reads one small file: an image whose archive is
    cached is then found without touching containers/storage."""
    key = base_key()
    tarball = paths.images / f"rootfs-{DEBIAN_SUITE}-{key[:HASH_LENGTH]}.tar"
    version_file = tarball.with_suffix(".python-version")
    if not tarball.is_file():
        build_rootfs(tarball)
        version_file.unlink(missing_ok=True)
    if not version_file.is_file():
        ensure_base_image(paths, base_ref(key), tarball)
        version_file.write_text(image_python_version(paths, base_ref(key)) + "\n")
    return Base(base_ref(key), tarball, version_file.read_text().strip())


def build_base_image(paths: Paths) -> tuple[str, Path]:
    base = prepare_base(paths)
    archive = BASE.archive(paths, base_key())
    if archive.is_file():
        log(f"base cached: {base.ref}")
    else:
        ensure_base_image(paths, base.ref, base.tarball)
        export_archive(paths, base.ref, archive)
    return base.ref, archive


def build_rootfs(tarball: Path) -> None:
    started = time.monotonic()
    partial = tarball.with_name(tarball.name + ".partial")
    options = [f"--dpkgopt={option}" for option in DPKG_EXCLUDES]
    packages = f"--include={','.join(DEBIAN_PACKAGES)}"
    run(["mmdebstrap", "--quiet", "--variant=minbase", packages, *options, "--format=tar", DEBIAN_SUITE, str(partial)])
    partial.replace(tarball)
    log(f"root filesystem built in {time.monotonic() - started:.0f}s: {tarball}")


def ensure_base_image(paths: Paths, ref: str, tarball: Path) -> None:
    """Import the root filesystem tarball into our storage as an image (once per storage)."""
    if image_exists(paths, ref):
        return
    container = run(buildah(paths, "from", "--quiet", "scratch"), capture_output=True).stdout.strip()
    try:
        run(buildah(paths, "add", "--quiet", container, str(tarball), "/"))
        path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        run(buildah(paths, "config", "--env", path, "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container))
        run(buildah(paths, "commit", "--quiet", "--rm", container, ref), capture_output=True)
    except BuildError:
        subprocess.run(buildah(paths, "rm", container), capture_output=True, check=False)
        raise


# --- the wheelhouse --------------------------------------------------------------------------------


def image_python_version(paths: Paths, base: str) -> str:
    """The full version of the base image's python3 (3.11.2 on bookworm)."""
    container = run(buildah(paths, "from", "--quiet", "--pull=never", base), capture_output=True).stdout.strip()
    try:
        probe = [*PRINT_PYTHON_VERSION]
        return run(
            buildah(paths, "run", "--isolation=chroot", container, "--", *probe), capture_output=True
        ).stdout.strip()
    finally:
        subprocess.run(buildah(paths, "rm", container), capture_output=True, check=False)


def python_version_of(interpreter: str) -> str | None:
    probe = subprocess.run([interpreter, *PRINT_PYTHON_VERSION[1:]], capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def has_pip(interpreter: str) -> bool:
    return subprocess.run([interpreter, "-m", "pip", "--version"], capture_output=True, check=False).returncode == 0


def resolver_python(paths: Paths, version: str) -> str:
    """A host Python of exactly the image's version, with pip: pip evaluates environment markers such as
    `python_full_version < "3.11.3"` against the interpreter that resolves, so any other version can pick
    a set of wheels the image's pip refuses offline. Debian's own python3 is that version on bookworm."""
    candidates = [str(REPO_ROOT / ".venv" / "bin" / "python"), sys.executable, "/usr/bin/python3"]
    matching = [candidate for candidate in candidates if python_version_of(candidate) == version]
    for candidate in matching:
        if has_pip(candidate):
            return candidate
    if not matching:
        raise BuildError(
            f"no Python {version} (the image's python3) on this machine to build the wheelhouse; install "
            f"Debian's python3 and python3-venv ({', '.join(candidates)} were tried)"
        )
    resolver = paths.wheels / f".resolver-python-{version}"
    if not has_pip(str(resolver / "bin" / "python")):
        run([matching[0], "-m", "venv", "--clear", str(resolver)])
    return str(resolver / "bin" / "python")


def build_wheelhouse(paths: Paths, pyproject: bytes, python_version: str) -> Path:
    """Wheels of every requirement, built on the host once per key (pip reuses its own cache too)."""
    key = wheelhouse_key(pyproject, python=python_version)
    directory = paths.wheels / key[:HASH_LENGTH]
    if (directory / ".complete").is_file():
        return directory
    started = time.monotonic()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    python = resolver_python(paths, python_version)
    run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(partial),
            "pip",
            *wheelhouse_requirements(pyproject),
        ]
    )
    (partial / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    partial.replace(directory)
    log(f"wheelhouse built in {time.monotonic() - started:.0f}s: {directory}")
    # Older wheelhouses belong to older pyproject.toml files; pip's own cache keeps their downloads.
    for stale in paths.wheels.iterdir():
        if stale != directory and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return directory


# --- the Python images -----------------------------------------------------------------------------


def stage_context(destination: Path, wheels: Path, pyproject: bytes) -> None:
    """Exactly the hashed sources, plus the wheelhouse (hard links: no copy) as `wheels/` with the
    requirements the runtime image installs before the project (its dependency layer)."""
    for relative in source_files(REPO_ROOT, PROJECT_SOURCES):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, target)
    shutil.copytree(wheels, destination / "wheels", copy_function=link_or_copy)
    for extra, pins in (("runtime", RUNTIME_PINS), ("operator", ())):
        requirements = "\n".join(image_requirements(pyproject, extra, pins)) + "\n"
        (destination / "wheels" / f"requirements-{extra}.txt").write_text(requirements)


def image_requirements(pyproject: bytes, extra: str, pins: Sequence[str]) -> list[str]:
    """What an image needs besides the project itself: its dependencies, the extra and the pins."""
    project = tomllib.loads(pyproject.decode())["project"]
    extras = project.get("optional-dependencies", {}).get(extra, [])
    return list(dict.fromkeys([*project.get("dependencies", []), *extras, *pins]))


def link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def build_project_image(
    paths: Paths, target: ImageTarget, dockerfile: str, base_arg: str, build_args: dict[str, str]
) -> tuple[str, Path]:
    base = prepare_base(paths)
    pyproject = (REPO_ROOT / "pyproject.toml").read_bytes()
    wheels_key = wheelhouse_key(pyproject, python=base.python_version)
    digest = project_image_hash(target, dockerfile, REPO_ROOT, base.ref, wheels_key)
    ref, archive = target.ref(digest), target.archive(paths, digest)
    if archive.is_file():
        log(f"{target.name} cached: {ref}")
        return ref, archive
    started = time.monotonic()
    ensure_base_image(paths, base.ref, base.tarball)
    wheels = build_wheelhouse(paths, pyproject, base.python_version)
    with tempfile.TemporaryDirectory(prefix=f"gptoss-{target.name}-", dir=paths.images) as context:
        stage_context(Path(context), wheels, pyproject)
        keys = {"WHEELHOUSE_KEY": wheels_key[:HASH_LENGTH], "SOURCES_KEY": digest[:HASH_LENGTH]}
        arguments = [
            f"--build-arg={name}={value}" for name, value in {**build_args, **keys, base_arg: base.ref}.items()
        ]
        # RUN steps stay offline because pip gets --no-index and the mounted wheelhouse (chroot isolation,
        # which needs no runc or cgroups, cannot take --network=none).
        run(
            buildah(
                paths,
                "build",
                "--isolation=chroot",
                "--layers",
                "--pull=never",
                *arguments,
                "-f",
                str(REPO_ROOT / dockerfile),
                "-t",
                ref,
                context,
            )
        )
    export_archive(paths, ref, archive)
    log(f"{target.name} built in {time.monotonic() - started:.0f}s: {ref}")
    return ref, archive


def build_runtime_cpu(paths: Paths) -> tuple[str, Path]:
    return build_project_image(paths, RUNTIME_CPU, "runtime/Dockerfile", "BASE_IMAGE", {"VARIANT": "cpu"})


def build_operator(paths: Paths) -> tuple[str, Path]:
    return build_project_image(paths, OPERATOR, "operator/Dockerfile", "PYTHON_IMAGE", {})


def build_fetcher(paths: Paths) -> tuple[str, Path]:
    return build_project_image(paths, FETCHER, "runtime/Dockerfile.fetcher", "BASE_IMAGE", {})


BUILDERS = {
    PAUSE.name: build_pause,
    BASE.name: build_base_image,
    RUNTIME_CPU.name: build_runtime_cpu,
    OPERATOR.name: build_operator,
    FETCHER.name: build_fetcher,
}


# --- pruning ---------------------------------------------------------------------------------------


def stale_archives(paths: Paths, target: ImageTarget, current: Path) -> list[Path]:
    return sorted(path for path in paths.images.glob(f"{target.name}-*.docker.tar") if path != current)


def prune(paths: Paths, target: ImageTarget, ref: str, archive: Path) -> None:
    """Drop the target's older archives and tags: each input change would otherwise leave ~0.5 GB behind.
    (Images already imported into a containerd stay there; the kubelet's image GC owns those.)"""
    for path in stale_archives(paths, target, archive):
        path.unlink(missing_ok=True)
        log(f"removed stale {path.name}")
    repository = ref.rsplit(":", 1)[0]
    listed = subprocess.run(
        buildah(paths, "images", "--format", "{{.Name}}:{{.Tag}}"), capture_output=True, text=True, check=False
    )
    stale = [name for name in listed.stdout.split() if name.startswith(repository + ":") and name != ref]
    if stale:
        subprocess.run(buildah(paths, "rmi", *stale), capture_output=True, check=False)


def untagged_images(paths: Paths) -> int:
    listed = subprocess.run(
        buildah(paths, "images", "--all", "--format", "{{.Name}}"), capture_output=True, text=True, check=False
    )
    return sum(1 for name in listed.stdout.split() if name in ("<none>", "localhost/<none>"))


def trim_layer_cache(paths: Paths, limit: int) -> None:
    """Untagged images are the layer cache that makes rebuilds fast (the dependency layers), but every
    change of the sources or the wheelhouse leaves some behind (about ten per rebuild). Past the limit,
    drop those no tagged image stands on: the next build of each image reinstalls its dependencies once.
    (Counting images is instant; measuring the storage with du takes seconds.)"""
    count = untagged_images(paths)
    if count <= limit:
        return
    log(f"{count} untagged images (limit {limit}, GPTOSS_IMAGES_CACHE_LIMIT): dropping the layer cache")
    subprocess.run(buildah(paths, "rmi", "--prune"), capture_output=True, check=False)


# --- refs.env --------------------------------------------------------------------------------------


def read_refs(refs_env: Path) -> dict[str, str]:
    if not refs_env.is_file():
        return {}
    pairs = (line.split("=", 1) for line in refs_env.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs if not name.startswith("#")}


def render_refs(values: dict[str, str]) -> str:
    lines = ["# Written by e2e/images/build.sh: the local images and their docker-archives."]
    lines.extend(f"{name}={values[name]}" for name in sorted(values))
    return "\n".join(lines) + "\n"


def record(paths: Paths, built: dict[ImageTarget, tuple[str, Path]]) -> None:
    """Merge what was built into refs.env (a partial build keeps the other images' lines)."""
    values = read_refs(paths.refs_env)
    for target, (ref, archive) in built.items():
        values[f"{target.env_name}_IMAGE"] = ref
        values[f"{target.env_name}_ARCHIVE"] = str(archive)
    paths.refs_env.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.refs_env.with_name("refs.env.partial")
    partial.write_text(render_refs(values))
    partial.replace(paths.refs_env)
    log(f"wrote {paths.refs_env}")


# --- load into containerd --------------------------------------------------------------------------


def older_builds(target: ImageTarget, current: str, listed: Iterable[str], in_use: set[str]) -> list[str]:
    """The refs of `listed` that are other builds of `target` (its name with another content hash) than
    `current`, and that no container uses."""
    stem = target.ref("")
    return sorted(
        ref
        for ref in listed
        if ref != current and ref.startswith(stem) and _is_hash(ref[len(stem) :]) and ref not in in_use
    )


def _is_hash(text: str) -> bool:
    return len(text) == HASH_LENGTH and all(c in "0123456789abcdef" for c in text)


def container_images(ctr: Sequence[str]) -> set[str]:
    """The image of every container containerd holds (a running pod's, or one the kubelet may restart)."""
    listed = run([*ctr, "containers", "list"], capture_output=True).stdout.splitlines()[1:]  # a header first
    return {columns[1] for columns in (line.split() for line in listed) if len(columns) > 1}


def image_digests(ctr: Sequence[str]) -> dict[str, str]:
    """Every image record of containerd: its reference -> the digest of its manifest."""
    listed = run([*ctr, "images", "list"], capture_output=True).stdout.splitlines()[1:]  # a header first
    return {columns[0]: columns[2] for columns in (line.split() for line in listed) if len(columns) > 2}


def with_their_ids(stale: Iterable[str], digests: dict[str, str]) -> list[str]:
    """`stale` and the `sha256:<id>` records containerd's CRI keeps for the same images (each holds the
    image's layers too), unless a kept reference shares the image."""
    stale = set(stale)
    gone = {digests[ref] for ref in stale if ref in digests}
    kept = {digest for ref, digest in digests.items() if ref not in stale and not ref.startswith("sha256:")}
    ids = {ref for ref, digest in digests.items() if ref.startswith("sha256:") and digest in gone - kept}
    return sorted(stale | ids)


def load(paths: Paths, address: str, namespace: str) -> None:
    """Import every archive of refs.env into containerd, skipping refs it already has; then remove the
    earlier builds of the same images that no container uses. (The real node's kubelet has image garbage
    collection off, as its disk is the development machine's: without this, every source change left
    another ~0.5-1 GB image in containerd for good.)"""
    values = read_refs(paths.refs_env)
    if not values:
        raise BuildError(f"{paths.refs_env} is missing: run `e2e/images/build.sh all` first")
    ctr = ["ctr", "--address", address, "--namespace", namespace]
    present = image_digests(ctr)
    current: dict[ImageTarget, str] = {}
    for target in TARGETS.values():
        ref, archive = values.get(f"{target.env_name}_IMAGE"), values.get(f"{target.env_name}_ARCHIVE")
        if not ref or not archive:
            continue
        current[target] = ref
        if ref in present:
            log(f"{ref} already in containerd")
            continue
        if not Path(archive).is_file():
            raise BuildError(f"{archive} is missing: run `e2e/images/build.sh {target.name}` again")
        run([*ctr, "images", "import", archive], capture_output=True)
        log(f"imported {ref}")
    listed, in_use = image_digests(ctr), container_images(ctr)  # after the imports
    stale = {old for target, ref in current.items() for old in older_builds(target, ref, listed, in_use)}
    if stale:
        run([*ctr, "images", "remove", *with_their_ids(stale, listed)], capture_output=True)
        log(f"removed {len(stale)} earlier builds from containerd (kept those containers use)")


# --- command line ----------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="e2e/images/build.sh", description=__doc__.split("\n", 1)[0])
    targets = " | ".join([*TARGETS, "all", "load"])
    parser.add_argument("what", nargs="*", default=["all"], help=targets)
    parser.add_argument("--address", default="/run/gptoss/containerd/containerd.sock", help="load: containerd socket")
    parser.add_argument("--namespace", default="k8s.io", help="load: containerd namespace (the CRI's is k8s.io)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    paths = Paths.from_environment()
    paths.images.mkdir(parents=True, exist_ok=True)
    try:
        if arguments.what == ["load"]:
            load(paths, arguments.address, arguments.namespace)
            return 0
        names = list(TARGETS) if arguments.what == ["all"] else arguments.what
        unknown = [name for name in names if name not in TARGETS]
        if unknown:
            raise BuildError(f"unknown image {unknown[0]!r}: choose from {', '.join(TARGETS)}, all or load")
        started = time.time()
        built = {TARGETS[name]: BUILDERS[name](paths) for name in names}
        record(paths, built)
        for target, (ref, archive) in built.items():
            prune(paths, target, ref, archive)
        if any(archive.stat().st_mtime >= started for _, archive in built.values()):
            trim_layer_cache(paths, int(os.environ.get("GPTOSS_IMAGES_CACHE_LIMIT") or DEFAULT_LAYER_CACHE_LIMIT))
    except BuildError as error:
        log(f"ERROR: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
