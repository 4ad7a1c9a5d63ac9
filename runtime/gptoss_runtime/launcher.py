"""`gptoss-runtime serve`: verify the weights, write the model repository, become tritonserver.

The launcher prepares everything and then replaces itself with tritonserver (`os.execvpe`), so that
tritonserver is the process the container runtime signals (PID 1 in the pod): SIGTERM reaches it
directly, it drains and stops its Python-backend stubs, and the container exits with its exit code.
Nothing of the launcher stays behind to forward signals or to outlive the server.

Tensor parallelism (2 GPUs, TP2/EP2) needs no wrapper either: the `gpt_oss` model builds TensorRT-LLM's
LLM API object inside its Python-backend stub, and the LLM API spawns its own MPI worker processes
(one per rank, through mpi4py's MPIPoolExecutor; for one GPU too). So tritonserver is started once,
without `mpirun`, for 1 and 2 GPUs. Why not `mpirun -n 1` as NVIDIA's `launch_triton_server.py` does by
default: that script launches one tritonserver per rank for the C++ TensorRT-LLM backend (its
`--world_size`); for the LLM-API model it runs a single rank, which is exactly what an exec gives, and
NVIDIA's own gpt-oss recipes run the same LLM API (`trtllm-serve --tp_size N`) without mpirun. As
PID 1, Open MPI's mpirun answers SIGTERM by sending the job SIGTERM and, a few seconds later, SIGKILL
(its documented signal propagation), which would cut the graceful drain short. What the MPI spawn from a
non-mpirun process needs is `PMIX_HOSTNAME` (Open MPI 5/PMIx fail on long pod host names otherwise, as
llm-d documents for TensorRT-LLM): `tensorrt_llm_environment` sets it.

Triton's HTTP and gRPC ports can be bound to the pod's loopback (`--triton-address=127.0.0.1`) so that
only the gateway (same pod) reaches them; the metrics port stays on all addresses for scraping.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gptoss_runtime import checkpoint, contract
from gptoss_runtime.checkpoint import CheckpointInfo
from gptoss_runtime.engine.trtllm import TrtllmConfigError
from gptoss_runtime.plan import ServingPlan
from gptoss_runtime.triton_repo import EngineKind, ModelRepositorySpec, write_model_repository

log = logging.getLogger(__name__)

NGC_TRITON_HOME = Path("/opt/tritonserver")
TRITONSERVER_ENV = "GPTOSS_TRITONSERVER"  # optional override: path to a tritonserver binary
SHM_PREFIX_TEMPLATE = "gptoss_{pid}_"  # Python-backend shared-memory files: /dev/shm/<prefix>*
# How long tritonserver waits for in-flight requests and model unload on SIGTERM; below Kubernetes'
# default 30 s grace period so that it exits on its own before the kubelet sends SIGKILL.
DEFAULT_EXIT_TIMEOUT_SECONDS = 25
# A short host name for PMIx when the pod's is long (only set if the pod has not set one itself).
PMIX_HOSTNAME = "localhost"
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104 - tritonserver's own default, made explicit


class LaunchError(Exception):
    """The server cannot start; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class TritonInstallation:
    """Where tritonserver and its backends are, and the environment it needs."""

    server_binary: Path
    backend_directory: Path
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeOptions:
    weights: Path
    engine: EngineKind
    plan_file: Path | None = None
    http_port: int = contract.HTTP_PORT
    grpc_port: int = contract.GRPC_PORT
    metrics_port: int = contract.METRICS_PORT
    model_repository: Path = Path(contract.MODEL_REPOSITORY_DIR)
    require_marker: bool = False
    verify_checksums: bool = True
    model_name: str | None = None
    log_verbose: int = 0
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_SECONDS
    triton_address: str = ALL_ADDRESSES  # HTTP and gRPC; 127.0.0.1 leaves them to the pod itself
    extra_engine_options: Mapping[str, object] = field(default_factory=dict)


# --- locating tritonserver -------------------------------------------------------------------------


def locate_tritonserver(work_dir: Path) -> TritonInstallation:
    """Find tritonserver: an explicit override, the NGC image, or the `nvidia-pytriton` wheel."""
    override = os.environ.get(TRITONSERVER_ENV)
    if override:
        binary = Path(override)
        return TritonInstallation(binary, binary.parent.parent / "backends", _python_environment())
    ngc_binary = NGC_TRITON_HOME / "bin" / "tritonserver"
    if ngc_binary.is_file():
        return TritonInstallation(ngc_binary, NGC_TRITON_HOME / "backends", {})
    return _pytriton_installation(work_dir)


def _pytriton_installation(work_dir: Path) -> TritonInstallation:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError(
            "tritonserver not found: not in /opt/tritonserver (the NGC image) and the nvidia-pytriton "
            f"wheel is not installed; install it (pip install nvidia-pytriton) or set {TRITONSERVER_ENV}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    home = package_dir / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise LaunchError(f"the nvidia-pytriton wheel has no Python-backend stub for Python {version}")
    backends = work_dir / "backends"
    python_backend = backends / "python"
    # The wheel keeps one stub per Python version apart from the backend; Triton looks for the stub
    # next to libtriton_python.so, so assemble a backend folder of our own.
    if not (python_backend / stub.name).is_file():
        shutil.rmtree(python_backend, ignore_errors=True)
        shutil.copytree(home / "backends" / "python", python_backend)
        shutil.copy2(stub, python_backend / stub.name)
    libs = package_dir.parent / "nvidia_pytriton.libs"
    environment = _python_environment()
    environment["LD_LIBRARY_PATH"] = _join_paths(
        [str(libs), environment["LD_LIBRARY_PATH"]] if environment.get("LD_LIBRARY_PATH") else [str(libs)]
    )
    return TritonInstallation(home / "bin" / "tritonserver", backends, environment)


def _python_environment() -> dict[str, str]:
    """The stub runs the first `python3` on PATH and needs libpython: point both at this Python."""
    python_lib = Path(sys.base_prefix) / "lib"
    existing_ld = os.environ.get("LD_LIBRARY_PATH", "")
    return {
        "PATH": _join_paths([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "LD_LIBRARY_PATH": _join_paths([str(python_lib), existing_ld]),
    }


def _join_paths(parts: Sequence[str]) -> str:
    return os.pathsep.join(part for part in parts if part)


# --- weights ---------------------------------------------------------------------------------------


def verify_weights(
    weights_dir: Path, *, require_marker: bool, revision: str | None, verify_checksums: bool = True
) -> CheckpointInfo:
    """Config, index and shard sizes; the manifest when one exists; the marker when required.

    The manifest's sha256s are checked only when the fetcher did not record that it verified them already
    (its marker's `checksums`): a start then costs a directory listing, not a re-hash of 13 or 65 GB.
    """
    try:
        info = checkpoint.verify_checkpoint(weights_dir)
        if (weights_dir / checkpoint.MANIFEST_FILE_NAME).is_file():
            rehash = verify_checksums and not checksums_verified_at_fetch(weights_dir)
            checkpoint.check_manifest(weights_dir, verify_hashes=rehash)
    except checkpoint.CheckpointError as error:
        raise LaunchError(f"--weights: {error}") from error
    if require_marker:
        _check_marker(weights_dir, revision)
    return info


def checksums_verified_at_fetch(weights_dir: Path) -> bool:
    """Whether the completion marker says the fetcher verified every file's checksum after the download."""
    try:
        recorded = json.loads((weights_dir / contract.WEIGHTS_COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and isinstance(recorded.get(contract.MARKER_CHECKSUMS_KEY), dict)


def _check_marker(weights_dir: Path, revision: str | None) -> None:
    marker = weights_dir / contract.WEIGHTS_COMPLETE_MARKER
    if not marker.is_file():
        raise LaunchError(
            f"--require-marker: {marker} is missing, so the download did not finish; run "
            "`gptoss-runtime fetch` again (it resumes)"
        )
    if revision is None:
        return
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("revision")
    except (ValueError, AttributeError) as error:
        raise LaunchError(f"--require-marker: {marker} is not the JSON that fetch writes") from error
    if recorded != revision:
        raise LaunchError(
            f"weights revision mismatch: the plan pins {revision!r} but {weights_dir} holds {recorded!r}; "
            "fetch the pinned revision"
        )


# --- serve -----------------------------------------------------------------------------------------


def prepare(options: ServeOptions) -> tuple[list[str], dict[str, str]]:
    """Everything up to starting the server; returns tritonserver's argv and environment."""
    plan = _load_plan(options)
    weights_dir = options.weights / plan.weights_subdir if plan else options.weights
    info = verify_weights(
        weights_dir,
        require_marker=options.require_marker,
        revision=plan.weights_revision if plan else None,
        verify_checksums=options.verify_checksums,
    )
    model_name = options.model_name or (plan.model if plan else info.model_name)
    if model_name is None:
        raise LaunchError(f"--weights: cannot tell which gpt-oss model {weights_dir} holds; pass --model-name")
    if options.engine == "reference":
        log.info(reference_engine_notice(model_name, weights_dir, plan, info))
    spec = ModelRepositorySpec(
        engine=options.engine,
        weights_dir=weights_dir.resolve(),
        model_name=model_name,
        plan=plan,
        extra_options=dict(options.extra_engine_options),
    )
    try:
        repository = write_model_repository(options.model_repository, spec)
    except TrtllmConfigError as error:
        raise LaunchError(f"--plan: {error}") from error
    installation = locate_tritonserver(options.model_repository.resolve().parent)
    environment = dict(os.environ)
    environment.update(installation.environment)
    if plan:
        environment.update(plan.engine.environment)
    if options.engine == "trtllm":
        environment.update(tensorrt_llm_environment(environment))
    argv = tritonserver_argv(installation, repository, options, shm_prefix(os.getpid()))
    return argv, environment


def reference_engine_notice(model_name: str, weights_dir: Path, plan: ServingPlan | None, info: CheckpointInfo) -> str:
    """One line saying plainly that the CPU reference engine serves, not TensorRT-LLM (and what that means)."""
    setting = os.environ.get(contract.ENGINE_STAND_IN_ENV)
    why = f" (cluster setting {contract.ENGINE_STAND_IN_ENV}={setting})" if setting else ""
    gpus = f"; the plan's {plan.gpus_per_replica}x {plan.gpu_product} GPU(s) are not used" if plan else ""
    tiny = " (a tiny checkpoint)" if info.is_tiny else ""
    return (
        f"engine=reference: the CPU reference engine (numpy) stands in for TensorRT-LLM{why}, serving "
        f"{model_name} from {weights_dir}{tiny}{gpus}"
    )


def _load_plan(options: ServeOptions) -> ServingPlan | None:
    if options.plan_file is None:
        if options.engine == "trtllm":
            raise LaunchError("--plan is required with --engine trtllm (the operator mounts it)")
        return None
    try:
        return ServingPlan.load(options.plan_file)
    except FileNotFoundError as error:
        raise LaunchError(f"--plan: {options.plan_file} does not exist") from error
    except ValueError as error:
        raise LaunchError(f"--plan: {options.plan_file} is not a valid serving plan: {error}") from error


def tensorrt_llm_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """What TensorRT-LLM's MPI spawn needs in a pod: a short PMIx host name unless one is set."""
    return {} if environment.get("PMIX_HOSTNAME") else {"PMIX_HOSTNAME": PMIX_HOSTNAME}


def shm_prefix(pid: int) -> str:
    return SHM_PREFIX_TEMPLATE.format(pid=pid)


def tritonserver_argv(
    installation: TritonInstallation, repository: Path, options: ServeOptions, shm_region_prefix: str
) -> list[str]:
    return [
        str(installation.server_binary),
        f"--model-repository={repository}",
        f"--backend-directory={installation.backend_directory}",
        f"--http-address={options.triton_address}",
        f"--http-port={options.http_port}",
        f"--grpc-address={options.triton_address}",
        f"--grpc-port={options.grpc_port}",
        # The metrics address defaults to the HTTP one: keep metrics reachable for scraping.
        f"--metrics-address={ALL_ADDRESSES}",
        f"--metrics-port={options.metrics_port}",
        "--allow-metrics=true",
        "--disable-auto-complete-config",
        "--strict-readiness=true",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        f"--log-verbose={options.log_verbose}",
        # A prefix of our own keeps parallel servers (and tests) from sharing /dev/shm names.
        f"--backend-config=python,shm-region-prefix-name={shm_region_prefix}",
    ]


def serve(options: ServeOptions) -> None:
    """Prepare, then exec tritonserver in place of this process (never returns)."""
    argv, environment = prepare(options)
    log.info("starting %s", " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, environment)  # noqa: S606  (argv is built above, not from user text)
