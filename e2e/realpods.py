"""Real pods on the real node: the images, the in-cluster weights mirror, the operator installed by Helm,
port-forwards and an OpenAI client. Shared by `make demo` (e2e/demo.py) and the real-pod tests.

Nothing here uses pytest. The cluster is the local one (e2e/cluster/up.sh), whose real node
(`gptoss.dev/real-node=true`: kubelet + containerd + runc + CNI, simulated `nvidia.com/gpu`) runs containers;
the kwok nodes beside it only pretend to. Images are built here from the project's Dockerfiles
(e2e/images/build.sh) and imported into the node's containerd; no registry is involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parent.parent
CHART: Final = REPO / "charts" / "gpt-oss-operator"
CRD_FILE: Final = REPO / "crds" / "gptossdeployments.gptoss.io.yaml"
IMAGES_SCRIPT: Final = REPO / "e2e" / "images" / "build.sh"
CACHE: Final = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
REFS_FILE: Final = CACHE / "images" / "refs.env"
CONTAINERD_ADDRESS: Final = "/run/gptoss/containerd/containerd.sock"

REAL_NODE_LABEL: Final = "gptoss.dev/real-node"
REAL_NODE: Final = {REAL_NODE_LABEL: "true"}
MIRROR_NAMESPACE: Final = "gptoss-mirror"
MIRROR_NAME: Final = "hf-mirror"
MIRROR_PORT: Final = 8080
MIRROR_ROOT: Final = "/srv/hf"
# The tiny random checkpoint in the official layout, served under the official repository names so that
# the samples' `weights.huggingFace.repo` stays as a user writes it.
MIRRORED_REPOS: Final = ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
OPENAI_PORT: Final = 9000
METRICS_PORT: Final = 8002


class RealPodsError(RuntimeError):
    """Setting up real pods failed; the message says what and where to look."""


# ------------------------------------------------------------------------------------------------ images
@dataclass(frozen=True)
class Images:
    runtime_cpu: str
    operator: str
    fetcher: str  # the slim weights fetcher the operator runs for every download

    def split(self, ref: str) -> tuple[str, str]:
        repository, _, tag = ref.rpartition(":")
        return repository, tag


def read_refs(path: Path = REFS_FILE) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip().strip("'\"") for key, value in pairs}


def ensure_images(run: Callable[[Sequence[str], str], None]) -> Images:
    """Build what is missing (cached by content), import it into the real node's containerd."""
    run([str(IMAGES_SCRIPT), "all"], "building the images (e2e/images/build.sh all)")
    run([str(IMAGES_SCRIPT), "load", "--address", CONTAINERD_ADDRESS], "importing the images into the node")
    refs = read_refs()
    missing = [key for key in ("RUNTIME_CPU_IMAGE", "OPERATOR_IMAGE", "FETCHER_IMAGE") if not refs.get(key)]
    if missing:
        raise RealPodsError(f"{REFS_FILE} lacks {', '.join(missing)} after e2e/images/build.sh all")
    return Images(runtime_cpu=refs["RUNTIME_CPU_IMAGE"], operator=refs["OPERATOR_IMAGE"], fetcher=refs["FETCHER_IMAGE"])


# ------------------------------------------------------------------------------------------------ mirror
def mirror_endpoint() -> str:
    return f"http://{MIRROR_NAME}.{MIRROR_NAMESPACE}.svc.cluster.local:{MIRROR_PORT}"


def mirror_manifests(image: str) -> list[dict[str, Any]]:
    """A Hugging Face-compatible mirror (`gptoss-runtime mirror`) serving tiny checkpoints, as a restricted
    Deployment + Service. An init container writes the checkpoints into an emptyDir."""
    labels = {"app.kubernetes.io/name": MIRROR_NAME}
    make = " && ".join(f"gptoss-runtime make-tiny-checkpoint {MIRROR_ROOT}/{repo}" for repo in MIRRORED_REPOS)
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = [{"name": "data", "mountPath": MIRROR_ROOT}, {"name": "tmp", "mountPath": "/tmp"}]
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": REAL_NODE,
        "initContainers": [
            {
                "name": "checkpoints",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", make],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "securityContext": security,
                "volumeMounts": mounts,
            }
        ],
        "containers": [
            {
                "name": "mirror",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["gptoss-runtime", "mirror", "--root", MIRROR_ROOT, "--port", str(MIRROR_PORT)],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "ports": [{"name": "http", "containerPort": MIRROR_PORT}],
                "readinessProbe": {"tcpSocket": {"port": MIRROR_PORT}, "periodSeconds": 2},
                "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
                "securityContext": security,
                "volumeMounts": mounts,
            }
        ],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": MIRROR_NAME, "namespace": MIRROR_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": MIRROR_NAME, "namespace": MIRROR_NAMESPACE, "labels": labels},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": MIRROR_PORT, "targetPort": "http"}]},
        },
    ]


def restricted_namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {**restricted, "pod-security.kubernetes.io/enforce-version": "latest", **(labels or {})},
        },
    }


# ------------------------------------------------------------------------------------------------ operator
def operator_values(images: Images, watch_namespaces: Sequence[str]) -> list[str]:
    """`helm --set` arguments that run the operator in-cluster from the local image, with the CPU stand-in."""
    repository, tag = images.split(images.operator)
    return [
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        f"operator.defaultImage={images.runtime_cpu}",
        "--set",
        f"operator.fetcherImage={images.fetcher}",
        "--set",
        "operator.cpuStandIn.enabled=true",
        "--set",
        f"operator.weightsMirrorEndpoint={mirror_endpoint()}",
        # Only the real node runs containers: the model servers and the downloads go there, not to kwok's.
        "--set-json",
        f"operator.serverNodeSelector={json.dumps(REAL_NODE)}",
        "--set-json",
        f"operator.fetch.nodeSelector={json.dumps(REAL_NODE)}",
        "--set",
        f"watchNamespaces={{{','.join(watch_namespaces)}}}",
        "--set",
        "replicas=1",
    ]


@dataclass(frozen=True)
class Installation:
    """Where one real-pod suite runs: its namespace, the operator's, and the Helm release."""

    namespace: str
    operator_namespace: str
    release: str


def install_operator(
    kubectl: Any,
    helm: Path,
    kubeconfig: Path,
    images: Images,
    run: Callable[[Sequence[str], str], None],
    where: Installation,
    *,
    crd_field_manager: str,
) -> None:
    """The CRD, restricted namespaces, the weights mirror, then the chart (`helm upgrade --install`) with the
    operator watching `where.namespace`; returns once the operator's Deployment has rolled out.

    `kubectl` is a conftest.Kubectl (cluster-wide); `run` runs a command and raises when it fails."""
    kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={crd_field_manager}", "-f", str(CRD_FILE))
    kubectl.wait("crd/gptossdeployments.gptoss.io", "condition=Established", 60)
    for name in (where.namespace, where.operator_namespace, MIRROR_NAMESPACE):
        kubectl.apply(restricted_namespace(name))
    kubectl.wait("serviceaccount/default", "create", 60, "--namespace", where.namespace)
    kubectl.apply(mirror_manifests(images.runtime_cpu))
    kubectl.in_namespace(MIRROR_NAMESPACE).rollout_status(MIRROR_NAME, timeout_s=300)
    install = [str(helm), "--kubeconfig", str(kubeconfig), "upgrade", "--install", where.release, str(CHART)]
    install += ["--namespace", where.operator_namespace, "--set", "crds.enabled=false"]
    install += operator_values(images, [where.namespace])
    run(install, "helm upgrade --install of the chart")
    kubectl.in_namespace(where.operator_namespace).rollout_status(f"{where.release}-gpt-oss-operator", timeout_s=300)


def uninstall_operator(kubectl: Any, helm: Path, kubeconfig: Path, where: Installation) -> None:
    """Delete the suite's GptOssDeployments (waiting for them), the release and both namespaces (best effort)."""
    kubectl("delete", "gptoss", "--all", "--namespace", where.namespace, "--wait=true", timeout=300, check=False)
    subprocess.run(
        [
            str(helm),
            "--kubeconfig",
            str(kubeconfig),
            "uninstall",
            where.release,
            "--namespace",
            where.operator_namespace,
        ],
        capture_output=True,
        check=False,
        timeout=120,
    )
    kubectl(
        "delete",
        "namespace",
        where.namespace,
        where.operator_namespace,
        "--wait=false",
        "--ignore-not-found",
        check=False,
    )


# ------------------------------------------------------------------------------------------------ access
class PortForward:
    """`kubectl port-forward TARGET :PORT` in the background; `local_port` once it listens."""

    _LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")

    def __init__(self, kubectl: Sequence[str], namespace: str, target: str, port: int) -> None:
        self._argv = [*kubectl, "port-forward", "--namespace", namespace, "--address", "127.0.0.1", target, f":{port}"]
        self._process: subprocess.Popen[str] | None = None
        self.local_port = 0

    def __enter__(self) -> PortForward:
        self._process = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        found = threading.Event()
        output: list[str] = []

        def read() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                output.append(line)
                match = self._LINE.search(line)
                if match and not found.is_set():
                    self.local_port = int(match.group(1))
                    found.set()

        threading.Thread(target=read, name="port-forward-output", daemon=True).start()
        if not found.wait(timeout=30):
            self.__exit__()
            raise RealPodsError(f"{' '.join(self._argv)} did not start listening:\n{''.join(output)}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            if self._process.poll() is None:
                self._process.kill()
            self._process = None


@dataclass
class StreamedAnswer:
    text: str
    reasoning: str
    first_token_s: float
    total_s: float
    chunks: int


# The tiny random checkpoint writes random tokens; a JSON schema (enforced by the engine's token masks) makes
# them a well-formed final-channel answer that a person can see, and a test can parse.
HAIKU_FORMAT: Final = {
    "type": "json_schema",
    "json_schema": {
        "name": "haiku",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"haiku": {"type": "string", "maxLength": 40}},
            "required": ["haiku"],
            "additionalProperties": False,
        },
    },
}


def stream_chat(
    base_url: str,
    model: str,
    prompt: str,
    *,
    max_tokens: int = 48,
    api_key: str = "unused",
    response_format: dict[str, Any] | None = None,
) -> StreamedAnswer:
    """One streamed chat completion with the `openai` client; times the first token."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, timeout=120, max_retries=0)
    started = time.monotonic()
    first: float | None = None
    text: list[str] = []
    reasoning: list[str] = []
    chunks = 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        stream=True,
        temperature=0,
        **({"response_format": response_format} if response_format else {}),  # type: ignore[arg-type]
    )
    for chunk in stream:
        chunks += 1
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        piece = delta.content or ""
        thought = str(getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None) or "")
        if (piece or thought) and first is None:
            first = time.monotonic() - started
        text.append(piece)
        reasoning.append(thought)
    total = time.monotonic() - started
    return StreamedAnswer("".join(text), "".join(reasoning), first if first is not None else total, total, chunks)


def served_model(base_url: str, timeout_s: float = 60) -> str:
    """The model an OpenAI endpoint serves, once it answers. A Service's ClusterIP refuses connections until
    kube-proxy has programmed its rules, a moment after the endpoints turn ready: callers wait for that."""
    from openai import APIConnectionError, OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30)
    models: list[str] = []

    def answered() -> bool:
        try:
            models.extend(model.id for model in client.models.list().data)
        except APIConnectionError:
            return False
        return bool(models)

    wait_for(answered, timeout_s, f"{base_url} to answer")
    return models[0]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RealPodsError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def pods_on_real_node(pods: list[dict[str, Any]], real_nodes: set[str]) -> list[dict[str, Any]]:
    return [p for p in pods if p.get("spec", {}).get("nodeName") in real_nodes]


def real_node_names(nodes: dict[str, Any]) -> set[str]:
    return {
        n["metadata"]["name"]
        for n in nodes.get("items", [])
        if (n["metadata"].get("labels") or {}).get(REAL_NODE_LABEL) == "true"
    }


def load_module(path: Path, name: str) -> Any:
    """A module of a folder of scripts (e2e/metrics, bench) loaded by path, registered under `name`."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def metrics_pipeline() -> Any:
    """e2e/metrics/pipeline.py: the custom metrics API (Prometheus + Prometheus Adapter with the chart's rules)."""
    return load_module(REPO / "e2e" / "metrics" / "pipeline.py", "gptoss_metrics_pipeline")


def to_yaml(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)
