"""Real pods on the real node: the whole loop with containers that run.

The operator runs in-cluster from its image, installed by `helm install` of the chart (so its RBAC is
exactly the chart's), with the CPU stand-in (the reference engine instead of TensorRT-LLM) and the
in-cluster Hugging Face mirror as cluster settings. The GptOssDeployments are the samples' H100 specs; only
GPUs are simulated (the real node advertises `nvidia.com/gpu`). Each module shares one installation and one
served deployment (`basic`); tests that disturb it restore it. Every wait has a deadline.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import realpods
from conftest import Kubectl, wait_until
from operator_process import condition, get_cr, load_sample

from gptoss_operator import names

# Image builds (cached by content) and pod starts on a busy 2-core machine take minutes, not seconds.
pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(2400)]

NAMESPACE = "e2e-realpods"
OPERATOR_NAMESPACE = "e2e-realpods-operator"
RELEASE = "gptoss-e2e"
OWNER_LABEL = "gptoss.io/deployment"
SERVER_SELECTOR = "app.kubernetes.io/component=server"
READY_TIMEOUT_S = 600  # image import, the download Job and Triton's start on a busy 2-core machine
CHILD_KINDS = "deployments,services,configmaps,persistentvolumeclaims,jobs,poddisruptionbudgets,networkpolicies"


@dataclass
class RealCluster:
    kubectl: Kubectl  # cluster-wide
    ns: Kubectl  # the test namespace
    images: realpods.Images
    helm: Path
    kubeconfig: Path
    operator_namespace: str = OPERATOR_NAMESPACE

    def kubectl_argv(self) -> list[str]:
        return [str(self.kubectl.binary), "--kubeconfig", str(self.kubeconfig)]


def _run(argv: Sequence[str], what: str) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=3000, check=False)
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def _helm_binary() -> Path:
    import demo

    helm = demo.helm_binary(build=True)
    if not helm.exists():
        pytest.fail(f"helm is not built at {helm}: run e2e/cluster/build.sh helm")
    return helm


def installed(
    kubeconfig: Path, kubectl: Kubectl, where: realpods.Installation, *, crd_field_manager: str
) -> Iterator[RealCluster]:
    """The body of a real-pod module's `real` fixture: images, the chart installed for `where`, and afterwards
    the suite's CRs, release and namespaces removed."""
    images = realpods.ensure_images(_run)
    helm = _helm_binary()
    realpods.install_operator(kubectl, helm, kubeconfig, images, _run, where, crd_field_manager=crd_field_manager)
    yield RealCluster(
        kubectl, kubectl.in_namespace(where.namespace), images, helm, kubeconfig, where.operator_namespace
    )
    realpods.uninstall_operator(kubectl, helm, kubeconfig, where)


@pytest.fixture(scope="module")
def real(kubeconfig: Path, kubectl: Kubectl) -> Iterator[RealCluster]:
    nodes = kubectl.json("get", "nodes", "-l", f"{realpods.REAL_NODE_LABEL}=true")["items"]
    if not nodes:
        pytest.fail("the cluster has no real node (label gptoss.dev/real-node=true): e2e/cluster/up.sh starts it")
    where = realpods.Installation(NAMESPACE, OPERATOR_NAMESPACE, RELEASE)
    yield from installed(kubeconfig, kubectl, where, crd_field_manager="gptoss-e2e-realpods")


# ------------------------------------------------------------------------------------------------ helpers
def sample_20b(name: str, **spec: Any) -> dict[str, Any]:
    """The gpt-oss-20b sample as a user writes it for an H100 cluster, under another name."""
    cr = load_sample("gpt-oss-20b.yaml", **spec)
    cr["metadata"]["name"] = name
    return cr


def server_pods(ns: Kubectl, name: str) -> list[dict[str, Any]]:
    selector = f"{SERVER_SELECTOR},{OWNER_LABEL}={name}"
    return [p for p in ns.json("get", "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return next((dict(s) for s in statuses if s["name"] == name), {})


def wait_ready(real: RealCluster, name: str, replicas: int = 1, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ready() -> bool:
        seen.clear()
        seen.update(get_cr(real.ns, name))
        status = seen.get("status") or {}
        current = condition(seen, "Ready")
        return bool(
            current.get("status") == "True"
            and current.get("observedGeneration") == seen["metadata"]["generation"]
            and status.get("readyReplicas") == replicas
        )

    try:
        wait_until(ready, timeout_s=timeout_s, interval_s=2, what=f"{name} Ready with {replicas} ready replicas")
    except BaseException:
        print(json.dumps(seen.get("status", {}), indent=2))
        print(real.ns.diagnostics())
        print(operator_logs(real))
        raise
    return seen


def operator_logs(real: RealCluster, tail: int = 80) -> str:
    selector = "app.kubernetes.io/name=gpt-oss-operator"
    return real.kubectl(
        "logs",
        "--namespace",
        real.operator_namespace,
        "-l",
        selector,
        f"--tail={tail}",
        "--all-containers",
        check=False,
    )


def service_url(real: RealCluster, name: str) -> str:
    """The Service's ClusterIP: this machine is the node, and kube-proxy's rules carry it to the pods."""
    service = real.ns.json("get", "service", name)
    return f"http://{service['spec']['clusterIP']}:{realpods.OPENAI_PORT}"


def metrics_of(real: RealCluster, pod: dict[str, Any]) -> str:
    url = f"http://{pod['status']['podIP']}:{realpods.METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:  # the pod IP is on this machine's bridge
        return str(response.read().decode())


def counter_total(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def served_model(real: RealCluster, name: str) -> str:
    return realpods.served_model(service_url(real, name))


@pytest.fixture(scope="module")
def basic(real: RealCluster) -> str:
    """One gpt-oss-20b sample served by a real pod for the tests that only read."""
    name = "basic"
    real.ns.apply(sample_20b(name))
    wait_ready(real, name)
    return name


# ------------------------------------------------------------------------------------------------ tests
def test_the_weights_job_downloads_from_the_mirror_before_the_server_starts(real: RealCluster, basic: str) -> None:
    jobs = real.ns.json("get", "jobs", "-l", f"{OWNER_LABEL}={basic}")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    job = jobs[0]
    assert job["status"].get("succeeded") == 1, job["status"]
    job_logs = real.ns("logs", f"job/{job['metadata']['name']}", check=False)
    assert realpods.MIRROR_NAME in job_logs or "openai/gpt-oss-20b" in job_logs, job_logs
    (pod,) = server_pods(real.ns, basic)
    cr = get_cr(real.ns, basic)
    assert condition(cr, "WeightsReady")["status"] == "True"
    markers = real.ns("exec", pod["metadata"]["name"], "-c", "server", "--", "find", "/models", "-name", ".gptoss-*")
    assert ".gptoss-complete" in markers, markers
    # The download ended when the fetcher wrote its completion marker (the Job's completionTime comes
    # later: the Job controller sets it once it has seen the pod exit). startedAt has whole seconds.
    complete = next(line for line in markers.split() if line.endswith("/.gptoss-complete"))
    written = int(real.ns("exec", pod["metadata"]["name"], "-c", "server", "--", "stat", "-c", "%Y", complete))
    server_started = container_status(pod, "server")["state"]["running"]["startedAt"]
    started = int(datetime.strptime(server_started, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    assert started >= written, f"server started {server_started}, before the download ended ({complete} at {written})"


def test_status_and_the_pod_log_say_the_cpu_stand_in_serves(real: RealCluster, basic: str) -> None:
    cr = get_cr(real.ns, basic)
    text = json.dumps(cr["status"]).lower()
    assert "stand" in text and "reference" in text, cr["status"]
    (pod,) = server_pods(real.ns, basic)
    log = real.ns("logs", pod["metadata"]["name"], "-c", "server")
    assert "reference" in log.lower() and "stand" in log.lower(), log[-2000:]


def test_chat_streaming_and_a_refused_request_through_the_service(real: RealCluster, basic: str) -> None:
    from openai import BadRequestError, OpenAI

    url = service_url(real, basic)
    model = served_model(real, basic)
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    streamed = realpods.stream_chat(url, model, "A haiku?", max_tokens=256, response_format=realpods.HAIKU_FORMAT)
    assert streamed.chunks > 2 and streamed.first_token_s <= streamed.total_s
    assert isinstance(json.loads(streamed.text)["haiku"], str), streamed  # the schema held, token by token
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=[], max_tokens=16)
    assert "messages" in str(refused.value)
    (pod,) = server_pods(real.ns, basic)
    metrics = metrics_of(real, pod)
    assert counter_total(metrics, "nv_inference_request_success") >= 2, metrics[:2000]
    assert "gptoss_" in metrics


def _kill_container(real: RealCluster, pod: dict[str, Any], container: str) -> None:
    """SIGKILL a container's task in the node's containerd, as an OOM kill or a crash would end it."""
    container_id = container_status(pod, container)["containerID"].removeprefix("containerd://")
    subprocess.run(
        [
            "ctr",
            "--address",
            realpods.CONTAINERD_ADDRESS,
            "--namespace",
            "k8s.io",
            "tasks",
            "kill",
            "--signal",
            "SIGKILL",
            container_id,
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )


def test_a_killed_server_restarts_and_a_deleted_pod_is_replaced(real: RealCluster, basic: str) -> None:
    (pod,) = server_pods(real.ns, basic)
    name = pod["metadata"]["name"]
    restarts = container_status(pod, "server").get("restartCount", 0)
    _kill_container(real, pod, "server")
    saw_unready = False

    def restarted_and_ready() -> bool:
        nonlocal saw_unready
        current = real.ns.json("get", "pod", name)
        saw_unready = saw_unready or not pod_ready(current)
        return container_status(current, "server").get("restartCount", 0) > restarts and pod_ready(current)

    wait_until(restarted_and_ready, timeout_s=300, interval_s=0.5, what="the killed server container back and Ready")
    assert saw_unready, "the pod never reported Ready=False while its server was down"
    wait_ready(real, basic)
    real.ns("delete", "pod", name, "--wait=false")
    wait_until(
        lambda: any(p["metadata"]["name"] != name and pod_ready(p) for p in server_pods(real.ns, basic)),
        timeout_s=READY_TIMEOUT_S,
        interval_s=1,
        what="a replacement server pod Ready",
    )
    wait_ready(real, basic)


def test_scaled_to_two_both_real_pods_serve_through_the_service(real: RealCluster) -> None:
    name = "scaled"
    real.ns.apply(sample_20b(name))
    wait_ready(real, name)
    real.ns("scale", f"gptoss/{name}", "--replicas=2")
    wait_ready(real, name, replicas=2)
    pods = server_pods(real.ns, name)
    assert len(pods) == 2
    assert_every_pod_serves(real, name, pods)
    real.ns("delete", "gptoss", name, "--wait=false")


def assert_every_pod_serves(real: RealCluster, name: str, pods: list[dict[str, Any]]) -> None:
    """Chat requests through the Service until each pod's success counter moved (bounded in count and time)."""
    before = {p["metadata"]["name"]: counter_total(metrics_of(real, p), "nv_inference_request_success") for p in pods}
    from openai import OpenAI

    client = OpenAI(base_url=f"{service_url(real, name)}/v1", api_key="unused", max_retries=0, timeout=60)
    model = served_model(real, name)
    deadline = time.monotonic() + 120
    served: set[str] = set()
    requests = 0
    while len(served) < 2 and requests < 60 and time.monotonic() < deadline:
        # A new connection per request: kube-proxy balances connections, not requests.
        client.with_options(max_retries=0).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            extra_headers={"Connection": "close"},
        )
        requests += 1
        for pod in pods:
            if counter_total(metrics_of(real, pod), "nv_inference_request_success") > before[pod["metadata"]["name"]]:
                served.add(pod["metadata"]["name"])
    assert served == set(before), f"after {requests} requests only {served} of {set(before)} served"


def test_the_default_cache_scales_to_two_pods_that_each_download_and_serve(real: RealCluster) -> None:
    """The default weights cache, a volume per replica (docs/storage.md), on the real node, whose only
    StorageClass (local-path) is ReadWriteOnce: each pod's fetcher fills its own claim, and both serve."""
    name = "per-replica"
    cr = sample_20b(name)
    del cr["spec"]["weights"]["cache"]["accessMode"]  # the sample asks for a shared claim; the default does not
    real.ns.apply(cr)
    wait_ready(real, name)
    real.ns("scale", f"gptoss/{name}", "--replicas=2")
    wait_ready(real, name, replicas=2)
    pods = server_pods(real.ns, name)
    assert len(pods) == 2
    claims = {c["metadata"]["name"]: c for c in real.ns.json("get", "persistentvolumeclaims")["items"]}
    assert f"{name}-weights" not in claims  # no shared claim...
    assert real.ns.json("get", "jobs", "-l", f"{OWNER_LABEL}={name}")["items"] == []  # ...and no download Job
    for pod in pods:
        claim = claims[f"{pod['metadata']['name']}-weights"]
        assert claim["status"]["phase"] == "Bound", claim["status"]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert [owner["kind"] for owner in claim["metadata"]["ownerReferences"]] == ["Pod"]
        (fetch,) = pod["spec"]["initContainers"]
        assert fetch["image"] == real.images.fetcher, fetch["image"]
        (fetched,) = pod["status"]["initContainerStatuses"]
        assert fetched["state"]["terminated"]["exitCode"] == 0, fetched
    assert_every_pod_serves(real, name, pods)
    real.ns("delete", "gptoss", name, "--wait=false")


def test_a_marked_token_secret_without_the_key_is_named_from_the_kubelets_words(real: RealCluster) -> None:
    """Only the kubelet can tell that a Secret lacks the key (the operator never reads Secret data): the pod
    waits in Init with a FailedMount Event, which the operator turns into WeightsReady=TokenSecretKeyMissing."""
    name, secret = "no-token-key", "hf-token-without-key"
    real.ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "labels": {names.LABEL_WEIGHTS_TOKEN: names.LABEL_WEIGHTS_TOKEN_VALUE}},
            "stringData": {"not-the-token": "x"},
        }
    )
    cr = sample_20b(name)
    del cr["spec"]["weights"]["cache"]["accessMode"]  # a volume per replica: the init container mounts the token
    cr["spec"]["weights"]["huggingFace"]["tokenSecretRef"] = {"name": secret, "key": "token"}
    real.ns.apply(cr)
    seen: dict[str, Any] = {}

    def told() -> bool:
        seen.clear()
        seen.update(get_cr(real.ns, name))
        return condition(seen, "WeightsReady").get("reason") == "TokenSecretKeyMissing"

    try:  # the Event comes seconds after the pod's last change: a resync (every minute) reads it
        wait_until(told, timeout_s=300, interval_s=2, what="WeightsReady=TokenSecretKeyMissing")
    except BaseException:
        print(json.dumps(seen.get("status", {}), indent=2), real.ns.diagnostics(), operator_logs(real))
        raise
    message = condition(seen, "WeightsReady")["message"]
    assert f"Secret {secret}" in message and "has no key token" in message, message
    assert "non-existent secret key: token" in message, message  # the kubelet's own words
    real.ns("delete", "gptoss", name, "--wait=false")
    real.ns("delete", "secret", secret, "--wait=false")


def _children(real: RealCluster, name: str) -> list[dict[str, Any]]:
    return list(real.ns.json("get", CHILD_KINDS, "-l", f"{OWNER_LABEL}={name}")["items"])


def test_the_operator_killed_mid_reconcile_is_replaced_and_finishes_the_work(real: RealCluster) -> None:
    name = "after-crash"
    operator_ns = real.kubectl.in_namespace(OPERATOR_NAMESPACE)
    (operator_pod,) = operator_ns.json("get", "pods", "-l", "app.kubernetes.io/name=gpt-oss-operator")["items"]
    restarts = container_status(operator_pod, "operator").get("restartCount", 0)
    real.ns.apply(sample_20b(name))
    wait_until(lambda: bool(_children(real, name)), timeout_s=60, interval_s=0.2, what="the first child of the CR")
    _kill_container(real, operator_pod, "operator")
    wait_until(
        lambda: (
            container_status(operator_ns.json("get", "pod", operator_pod["metadata"]["name"]), "operator").get(
                "restartCount", 0
            )
            > restarts
        ),
        timeout_s=120,
        what="the operator container restarted",
    )
    cr = wait_ready(real, name)
    children = _children(real, name)
    kinds = [child["kind"] for child in children]
    for kind in set(kinds):
        assert kinds.count(kind) == 1 or kind == "ConfigMap", f"{kind} duplicated: {kinds}"
    for child in children:
        owners = child["metadata"].get("ownerReferences") or []
        assert [o["uid"] for o in owners if o.get("controller")] == [cr["metadata"]["uid"]], child["metadata"]
    real.ns("delete", "gptoss", name, "--wait=false")


def test_every_pod_the_operator_creates_is_admitted_under_restricted(real: RealCluster, basic: str) -> None:
    labels = real.kubectl.json("get", "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    events = real.ns.json("get", "events", "--field-selector", "reason=FailedCreate")["items"]
    assert not [e["message"] for e in events if "violates PodSecurity" in e["message"]]
    pods = real.ns.json("get", "pods")["items"]
    assert pods, "no pod in the namespace"
    for pod in pods:
        assert pod["status"]["phase"] in ("Running", "Succeeded"), (pod["metadata"]["name"], pod["status"]["phase"])
