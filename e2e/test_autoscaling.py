"""Autoscaling on the real control plane: the operator's autoscaler, the capacity cap, HPA and KEDA objects.

Nodes and pods are kwok's (pods become Running and Ready without containers, with fake IPs), so the
operator's metrics address template (GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE, a testing/proxy aid) points
every server pod at one local metrics endpoint:

- the capacity cap reads a fixed metrics page that asks for many replicas: the subject is the GPU
  arithmetic, on a simulated node of this test's own (2 GPUs), so other tests' pods cannot change it;
- scale-up and scale-down read a REAL tritonserver (reference engine, tiny checkpoint) under load from a
  bounded load generator: every replica reports that one server, so the fleet's load is the server's;
- a restarted operator (SIGKILL) resumes its scale-down stabilization window from status.autoscaling.history
  instead of waiting a whole window again (the metrics page switches from busy to idle);
- modes hpa and keda: the API server accepts the HorizontalPodAutoscaler (the controller manager resolves
  its target through the CR's scale subresource) and, with KEDA's real CRDs installed from the Go module,
  the ScaledObject; switching modes removes the previous mode's object.

Every wait has a deadline; windows and intervals are shortened through the spec and operator settings.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import CACHE_DIR, CLUSTER_DIR, Kubectl, wait_until
from operator_process import OperatorProcess, Volumes, condition, get_cr, load_sample, wait_for_condition

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
CRD_FILE = REPO / "crds" / "gptossdeployments.gptoss.io.yaml"
SERVING_TESTS = REPO / "tests" / "runtime" / "serving"
PRODUCT = "NVIDIA-H100-80GB-HBM3"
POOL_LABEL = "gptoss.dev/pool"
INTERVAL_S = "1"  # the autoscaler's period in these tests
STARTUP_GRACE_S = "2"  # kwok pods are Ready at once; the default 60 s would only slow the test down
READY_TIMEOUT_S = 180


def _serving_module(name: str) -> ModuleType:
    """A helper module of the runtime serving tests (launcher, load generator), loaded by path."""
    if str(SERVING_TESTS) not in sys.path:
        sys.path.append(str(SERVING_TESTS))  # their modules import each other by plain name
    spec = importlib.util.spec_from_file_location(f"serving_{name}", SERVING_TESTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-e2e-operator", "-f", str(CRD_FILE))
    kubectl.wait("crd/gptossdeployments.gptoss.io", "condition=Established", 60)


@pytest.fixture
def volumes(kubectl: Kubectl, namespace: str) -> Iterator[Volumes]:
    provided = Volumes(kubectl, namespace)
    yield provided
    provided.delete_all()


def start_operator(kubeconfig: Path, namespace: str, tmp_path: Path, metrics_url: str) -> OperatorProcess:
    env = {
        "GPTOSS_AUTOSCALER_INTERVAL_SECONDS": INTERVAL_S,
        "GPTOSS_AUTOSCALER_STARTUP_GRACE_SECONDS": STARTUP_GRACE_S,
        "GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE": metrics_url,
    }
    return OperatorProcess(kubeconfig, [namespace], tmp_path / "operator.log", extra_env=env).start()


@pytest.fixture
def operator_factory(kubeconfig: Path, namespace: str, crd: None, tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    started: list[OperatorProcess] = []

    def start(metrics_url: str) -> OperatorProcess:
        started.append(start_operator(kubeconfig, namespace, tmp_path, metrics_url))
        return started[-1]

    yield start
    for process in started:
        code = process.stop()
        print(f"--- operator log ({process.log_path}), exit {code} ---\n{process.logs()}")


class StaticMetrics:
    """A local HTTP server answering /metrics with a given Prometheus text (what a busy replica reports)."""

    def __init__(self, text: str) -> None:
        self.text = text  # what the next request gets (tests switch it from busy to idle)
        page = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = page.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


BUSY_METRICS = "\n".join(
    [
        "# TYPE gptoss_requests_running gauge",
        'gptoss_requests_running{model="gpt-oss-20b"} 40',
        "# TYPE gptoss_requests_waiting gauge",
        'gptoss_requests_waiting{model="gpt-oss-20b"} 30',
        "# TYPE gptoss_kv_cache_utilization_ratio gauge",
        'gptoss_kv_cache_utilization_ratio{model="gpt-oss-20b"} 0.5',
        "",
    ]
)

IDLE_METRICS = BUSY_METRICS.replace("} 40", "} 0").replace("} 30", "} 0").replace("} 0.5", "} 0.01")


@pytest.fixture
def busy_metrics() -> Iterator[StaticMetrics]:
    server = StaticMetrics(BUSY_METRICS)
    yield server
    server.close()


@pytest.fixture
def own_gpu_node(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """A simulated 2-GPU H100 node only this test's pods select and tolerate (gptoss.dev/pool=<namespace>)."""
    name = f"gpu-{namespace}"[:63]
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "2"}
    kubectl.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "type": "kwok",
                    "gptoss.dev/simulated": "true",
                    POOL_LABEL: namespace,
                    "nvidia.com/gpu.product": PRODUCT,
                    "nvidia.com/gpu.count": "2",
                    "nvidia.com/gpu.memory": "81559",
                },
            },
            "spec": {
                "taints": [
                    {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                    # Only this test's pods tolerate it: other tests' capacity arithmetic never sees this node.
                    {"key": POOL_LABEL, "value": namespace, "effect": "NoSchedule"},
                ]
            },
            "status": {"capacity": resources, "allocatable": resources},
        }
    )
    wait_until(
        lambda: condition(kubectl.json("get", "node", name), "Ready").get("status") == "True",
        timeout_s=60,
        what=f"node {name} Ready",
    )
    yield name
    kubectl("delete", "node", name, "--wait=false", "--ignore-not-found")


# ------------------------------------------------------------------------------------------- helpers
def autoscaled(name: str, replicas: int = 1, **autoscaling: Any) -> dict[str, Any]:
    """gpt-oss-20b (1 GPU per replica) with the operator's autoscaler and short windows."""
    cr = load_sample("gpt-oss-20b.yaml")
    cr["metadata"]["name"] = name
    cr["spec"]["replicas"] = replicas
    cr["spec"]["resources"] = {"requests": {"cpu": "1", "memory": "1Gi"}}
    cr["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 3,
        "targets": {"requestsRunningPerReplica": 4, "requestsWaitingPerReplica": 4, "kvCacheUtilization": 0.85},
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxStepReplicas": 2},
        "scaleDown": {"stabilizationWindowSeconds": 5, "maxStepReplicas": 2},
        **autoscaling,
    }
    return cr


def server_pods(kubectl_ns: Kubectl, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/component=server,gptoss.io/deployment={name}"
    return [
        p for p in kubectl_ns.json("get", "pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")
    ]


def events(kubectl_ns: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    found = kubectl_ns.json("get", "events", "--field-selector", f"involvedObject.name={name},reason={reason}")
    return list(found["items"])


def autoscaling_status(kubectl_ns: Kubectl, name: str) -> dict[str, Any]:
    return dict(get_cr(kubectl_ns, name).get("status", {}).get("autoscaling") or {})


def wait_for(
    predicate: Callable[[], bool], what: str, timeout_s: float = 90, dump: Callable[[], str] | None = None
) -> None:
    try:
        wait_until(predicate, timeout_s=timeout_s, interval_s=0.5, what=what)
    except BaseException:
        if dump is not None:
            print(dump())
        raise


def autoscaler_rounds_after(operator: OperatorProcess, namespace: str, rounds: int) -> Callable[[], bool]:
    """True once the autoscaler made `rounds` more decisions in `namespace` (its decisions counter).

    The status is no clock: a steady load writes no status, so rounds are counted on the operator's metrics.
    """
    decisions = "gptoss_operator_autoscaler_decisions_total"
    start = operator.counter(decisions, namespace=namespace)

    def check() -> bool:
        return operator.counter(decisions, namespace=namespace) >= start + rounds

    return check


# --------------------------------------------------------------------------------------------- tests
def test_capacity_cap_stops_at_what_fits_and_says_so(
    kubectl_ns: Kubectl,
    namespace: str,
    operator_factory: Callable[[str], OperatorProcess],
    volumes: Volumes,
    busy_metrics: StaticMetrics,
    own_gpu_node: str,
) -> None:
    operator = operator_factory(busy_metrics.url)
    cr = autoscaled("capped", maxReplicas=6, scaleUp={"stabilizationWindowSeconds": 0, "maxStepReplicas": 5})
    kubectl_ns.apply(on_own_node(cr, namespace))

    def dump() -> str:
        return json.dumps(get_cr(kubectl_ns, "capped").get("status", {}), indent=2) + "\n" + operator.logs()

    def capped() -> bool:
        volumes.bind_pending()  # no provisioner: bind the weights cache claim as one would
        return condition(get_cr(kubectl_ns, "capped"), "CapacityLimited").get("status") == "True"

    wait_for(capped, "CapacityLimited=True", timeout_s=READY_TIMEOUT_S, dump=dump)
    seen = get_cr(kubectl_ns, "capped")
    limited = condition(seen, "CapacityLimited")
    assert limited["reason"] == "InsufficientFreeGPUs", dump()
    assert "wanted 6 replicas (6 GPUs at 1 per replica) but only 2 fit" in limited["message"], dump()
    assert seen["spec"]["replicas"] == 2, dump()
    assert seen["status"]["autoscaling"]["schedulableReplicas"] == 2, dump()
    wait_for(lambda: bool(events(kubectl_ns, "capped", "CapacityLimited")), "a CapacityLimited Event", dump=dump)
    assert events(kubectl_ns, "capped", "CapacityLimited")[0]["type"] == "Warning"
    decisions = "gptoss_operator_autoscaler_decisions_total"
    assert operator.counter(decisions, namespace=namespace, direction="up", reason="capacity_limited") >= 1
    wait_for(
        lambda: operator.counter("gptoss_operator_capacity_limited", namespace=namespace) == 1,
        "gptoss_operator_capacity_limited 1",
        dump=operator.metrics,
    )

    def placed() -> list[str | None]:
        return [p["spec"].get("nodeName") for p in server_pods(kubectl_ns, "capped")]

    wait_for(lambda: placed() == [own_gpu_node, own_gpu_node], "both replicas bound to the test's node", dump=dump)
    # Several more rounds under the same pressure: the replicas stay at what fits and no pod waits for a GPU.
    wait_for(autoscaler_rounds_after(operator, namespace, 3), "three more autoscaler rounds", dump=dump)
    assert get_cr(kubectl_ns, "capped")["spec"]["replicas"] == 2, dump()
    pods = server_pods(kubectl_ns, "capped")
    assert [p["spec"].get("nodeName") for p in pods] == [own_gpu_node, own_gpu_node], dump()
    assert all(p["status"].get("phase") == "Running" for p in pods), json.dumps([p["status"] for p in pods])


def on_own_node(cr: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The deployment placed on the test's own simulated node only."""
    cr["spec"]["nodeSelector"] = {POOL_LABEL: namespace}
    cr["spec"]["tolerations"] = [{"key": POOL_LABEL, "operator": "Equal", "value": namespace, "effect": "NoSchedule"}]
    return cr


def test_a_restarted_operator_resumes_its_stabilization_window(
    kubectl_ns: Kubectl,
    namespace: str,
    operator_factory: Callable[[str], OperatorProcess],
    volumes: Volumes,
    busy_metrics: StaticMetrics,
    own_gpu_node: str,
) -> None:
    window_s = 30
    first = operator_factory(busy_metrics.url)
    cr = autoscaled("steady", maxReplicas=2, scaleDown={"stabilizationWindowSeconds": window_s, "maxStepReplicas": 1})
    kubectl_ns.apply(on_own_node(cr, namespace))

    def dump() -> str:
        return json.dumps(get_cr(kubectl_ns, "steady").get("status", {}), indent=2)

    def replicas() -> int:
        volumes.bind_pending()
        return int(get_cr(kubectl_ns, "steady")["spec"]["replicas"])

    wait_for(lambda: replicas() == 2, "scale-up to 2 under load", timeout_s=READY_TIMEOUT_S, dump=dump)
    busy_metrics.text = IDLE_METRICS

    def idle_for(seconds: float) -> bool:
        """The stored history shows an idle run after the busy one, begun at least `seconds` ago.

        The history keeps each run by its start (a steady load writes no status), so the run's age is
        read against the clock the operator uses, the same machine's.
        """
        recommendations = (autoscaling_status(kubectl_ns, "steady").get("history") or {}).get("recommendations") or []
        busy = [t for t, n in recommendations if n > 2]
        idle = [t for t, n in recommendations if n <= 1]
        return bool(busy and idle) and max(idle) > max(busy) and time.time() - max(idle) >= seconds

    wait_for(lambda: idle_for(window_s - 12), f"{window_s - 12} s of idle recommendations", dump=dump)
    assert replicas() == 2  # the window still holds the busy recommendations
    first.kill()  # no goodbye: only the status remembers
    restarted = time.monotonic()
    operator_factory(busy_metrics.url)
    wait_for(lambda: replicas() == 1, "scale-down by the restarted operator", timeout_s=60, dump=dump)
    # Without the stored history the new process would wait a whole window from its start.
    assert time.monotonic() - restarted < window_s - 6, dump()
    last = autoscaling_status(kubectl_ns, "steady")["decisions"][-1]
    assert (last["fromReplicas"], last["toReplicas"]) == (2, 1)
    assert last["reason"].startswith("scale down 2 -> 1")


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real tritonserver with the reference engine on the tiny checkpoint."""
    launcher = _serving_module("conftest")
    from gptoss_runtime.checkpoint import make_tiny_checkpoint

    weights = make_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "gpt-oss-20b-tiny")
    server = launcher.start_server(tmp_path_factory.mktemp("triton"), weights, "reference")
    yield server
    server.stop()


def test_scale_up_under_real_load_and_down_after_it(
    kubectl_ns: Kubectl, operator_factory: Callable[[str], OperatorProcess], volumes: Volumes, triton: Any
) -> None:
    load_generator = _serving_module("load_generator")
    operator = operator_factory(triton.metrics_url)
    kubectl_ns.apply(autoscaled("chat"))
    wait_for_condition(kubectl_ns, "chat", "Ready", "True", volumes=volumes, operator=operator)

    def dump() -> str:
        return json.dumps(get_cr(kubectl_ns, "chat").get("status", {}), indent=2) + "\n" + operator.logs(60)

    def decisions() -> list[dict[str, Any]]:
        return list(autoscaling_status(kubectl_ns, "chat").get("decisions") or [])

    wait_for(lambda: bool(decisions()), "a first autoscaler decision", dump=dump)
    assert get_cr(kubectl_ns, "chat")["spec"]["replicas"] == 1  # idle: nothing to do

    with load_generator.LoadGenerator(triton.grpc_url, concurrency=12, max_tokens=128):
        wait_for(lambda: get_cr(kubectl_ns, "chat")["spec"]["replicas"] == 3, "scale-up to 3", dump=dump)
        wait_for(lambda: len(server_pods(kubectl_ns, "chat")) == 3, "three server pods", dump=dump)
    ups = [d for d in decisions() if d["toReplicas"] > d["fromReplicas"]]
    assert ups, decisions()
    assert ups[-1]["reason"].startswith(f"scale up {ups[-1]['fromReplicas']} -> ")
    seen = ups[-1]["signals"]  # what Triton reported under the load: above a target (4 per replica, 10% tolerance)
    assert max(seen["requestsRunningPerReplica"], seen["requestsWaitingPerReplica"]) > 4.4, ups[-1]
    assert "> target" in ups[-1]["reason"]
    assert autoscaling_status(kubectl_ns, "chat").get("lastScaleTime")
    assert events(kubectl_ns, "chat", "Rescaled")

    wait_for(lambda: get_cr(kubectl_ns, "chat")["spec"]["replicas"] == 1, "scale-down to 1", timeout_s=120, dump=dump)
    downs = [d for d in decisions() if d["toReplicas"] < d["fromReplicas"]]
    assert downs and downs[-1]["reason"].startswith("scale down"), decisions()
    assert downs[-1]["signals"]["requestsRunningPerReplica"] == 0
    wait_for(lambda: len(server_pods(kubectl_ns, "chat")) == 1, "one server pod", dump=dump)
    active = condition(get_cr(kubectl_ns, "chat"), "ScalingActive")
    assert (active["status"], active["reason"]) == ("True", "OperatorAutoscaler")


def hpa_of(kubectl_ns: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", "horizontalpodautoscalers", "-l", f"gptoss.io/deployment={name}")["items"])


def scaled_objects_of(kubectl_ns: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl_ns.json("get", "scaledobjects.keda.sh", "-l", f"gptoss.io/deployment={name}")["items"])


def keda_crd_dir() -> Path:
    versions = dict(
        line.split("=", 1) for line in (CLUSTER_DIR / "versions.env").read_text().splitlines() if "=" in line
    )
    version = versions["KEDA_VERSION"].strip().strip('"')
    directory = CACHE_DIR / "crds" / f"keda-{version}"
    if not (directory / ".complete").exists():
        pytest.fail(f"KEDA {version} CRDs are not in {directory}: run `make e2e-tools` (e2e/cluster/upstream-crds.sh)")
    return directory


def install_keda_crds(kubectl: Kubectl) -> None:
    """KEDA's real CRDs, from the kedacore/keda Go module (server-side apply: they are large)."""
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-e2e", "-f", str(keda_crd_dir()))
    wait_until(  # `kubectl wait` fails on a CRD whose status has no conditions yet
        lambda: condition(kubectl.json("get", "crd", "scaledobjects.keda.sh"), "Established").get("status") == "True",
        timeout_s=60,
        what="KEDA's ScaledObject CRD Established",
    )


def test_hpa_mode_targets_the_scale_subresource(
    kubectl_ns: Kubectl, operator_factory: Callable[[str], OperatorProcess], volumes: Volumes
) -> None:
    operator = operator_factory("http://127.0.0.1:9/metrics")  # mode hpa never scrapes
    kubectl_ns.apply(autoscaled("web", mode="hpa"))
    wait_for_condition(kubectl_ns, "web", "Ready", "True", volumes=volumes, operator=operator)

    def dump() -> str:
        return json.dumps(hpa_of(kubectl_ns, "web"), indent=2) + "\n" + operator.logs(60)

    wait_for(lambda: len(hpa_of(kubectl_ns, "web")) == 1, "the HorizontalPodAutoscaler", dump=dump)
    hpa = hpa_of(kubectl_ns, "web")[0]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "gptoss.io/v1alpha1",
        "kind": "GptOssDeployment",
        "name": "web",
    }
    assert {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]} >= {"gptoss_requests_running"}
    assert "web" in kubectl_ns("get", "hpa")

    def able_to_scale() -> bool:
        found = hpa_of(kubectl_ns, "web")
        return bool(found) and condition(found[0], "AbleToScale").get("status") == "True"

    # The controller manager's HPA controller read the CR's scale subresource (no metrics server needed).
    wait_for(able_to_scale, "the HPA controller to resolve its scale target", timeout_s=120, dump=dump)
    assert condition(hpa_of(kubectl_ns, "web")[0], "AbleToScale")["reason"] == "SucceededGetScale"
    active = condition(get_cr(kubectl_ns, "web"), "ScalingActive")
    assert (active["status"], active["reason"]) == ("True", "HorizontalPodAutoscaler")
    assert autoscaling_status(kubectl_ns, "web")["mode"] == "hpa"


def test_keda_mode_and_switching_modes_cleans_up(
    kubectl: Kubectl,
    kubectl_ns: Kubectl,
    operator_factory: Callable[[str], OperatorProcess],
    volumes: Volumes,
    busy_metrics: StaticMetrics,
) -> None:
    keda_present = kubectl.run("get", "crd", "scaledobjects.keda.sh", check=False).returncode == 0
    operator = operator_factory(busy_metrics.url)
    keda = {"mode": "keda", "prometheusAddress": "http://prometheus.monitoring:9090"}

    def dump() -> str:
        return json.dumps(get_cr(kubectl_ns, "switch").get("status", {}), indent=2) + "\n" + operator.logs(60)

    if not keda_present:  # a shared cluster may have them already; then this half is covered by unit tests
        kubectl_ns.apply(autoscaled("switch", **keda))
        wait_for(
            lambda: condition(get_cr(kubectl_ns, "switch"), "ScalingActive").get("reason") == "KedaNotInstalled",
            "ScalingActive=False/KedaNotInstalled",
            dump=dump,
        )
        assert events(kubectl_ns, "switch", "KedaNotInstalled")
    install_keda_crds(kubectl)

    kubectl_ns.apply(autoscaled("switch", mode="hpa"))
    wait_for(lambda: len(hpa_of(kubectl_ns, "switch")) == 1, "the HPA of mode hpa", dump=dump)

    kubectl_ns.apply(autoscaled("switch", **keda))
    # The operator re-discovers APIs every minute, so a freshly installed KEDA may take that long.
    wait_for(lambda: len(scaled_objects_of(kubectl_ns, "switch")) == 1, "the ScaledObject", timeout_s=150, dump=dump)
    wait_for(lambda: not hpa_of(kubectl_ns, "switch"), "the HPA removed after the switch to keda", dump=dump)
    scaled = scaled_objects_of(kubectl_ns, "switch")[0]
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "GptOssDeployment"
    assert {t["type"] for t in scaled["spec"]["triggers"]} == {"prometheus"}
    wait_for(
        lambda: condition(get_cr(kubectl_ns, "switch"), "ScalingActive").get("reason") == "ScaledObject",
        "ScalingActive=True/ScaledObject",
        timeout_s=90,
        dump=dump,
    )

    kubectl_ns.apply(autoscaled("switch"))  # back to mode operator
    wait_for(lambda: not scaled_objects_of(kubectl_ns, "switch"), "the ScaledObject removed", dump=dump)
    assert not hpa_of(kubectl_ns, "switch")
    wait_for(lambda: autoscaling_status(kubectl_ns, "switch").get("mode") == "operator", "mode operator", dump=dump)
