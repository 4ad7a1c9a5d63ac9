"""The autoscaler's orchestration with a fake of the few API calls it makes (no cluster, no network).

Pods, nodes and metrics are data; the fake API applies the autoscaler's status applies and scale calls to an
in-memory GptOssDeployment, so each test reads back what a user would see with kubectl.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from gptoss_operator import metrics, names
from gptoss_operator.autoscaling import record
from gptoss_operator.autoscaling.controller import Autoscaler, metrics_url, own_pods, readiness
from gptoss_operator.autoscaling.policy import Behavior, DecisionHistory, PolicyConfig, Targets, decide
from gptoss_operator.autoscaling.scrape import ScrapeError
from gptoss_operator.autoscaling.signals import MetricsSample, ReplicaSignals
from gptoss_operator.builders.context import server_selector
from gptoss_operator.kube import ApiError, TransientApiError
from gptoss_operator.settings import OperatorSettings

Json = dict[str, Any]

NOW = 1_800_000_000.0
LONG_AGO = "2026-01-01T00:00:00Z"
NAMESPACE = "team"
NAME = "chat"
PRODUCT = "NVIDIA-H100-80GB-HBM3"


# ------------------------------------------------------------------------------------------- fakes
@dataclass
class FakeApi:
    deployments: list[Json]
    node_list: list[Json] = field(default_factory=list)
    pod_list: list[Json] = field(default_factory=list)
    keda: bool = False
    failures: int = 0  # apply_status answers 500 this many times
    forbid_cluster_reads: bool = False
    scaled: list[tuple[str, str, int]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    status_applies: list[Json] = field(default_factory=list)
    patches_before_scale: list[int] = field(default_factory=list)

    def _find(self, namespace: str, name: str) -> Json | None:
        for body in self.deployments:
            if body["metadata"]["namespace"] == namespace and body["metadata"]["name"] == name:
                return body
        return None

    def list_deployments(self, namespaces: Sequence[str]) -> list[Json]:
        return [
            copy.deepcopy(b) for b in self.deployments if not namespaces or b["metadata"]["namespace"] in namespaces
        ]

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        found = self._find(namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def nodes(self) -> list[Json]:
        if self.forbid_cluster_reads:
            raise ApiError("list", "/api/v1/nodes", 403, "forbidden")
        return copy.deepcopy(self.node_list)

    def active_pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[Json]:
        if namespace is None and self.forbid_cluster_reads:
            raise ApiError("list", "/api/v1/pods", 403, "forbidden")
        return [copy.deepcopy(p) for p in self.pod_list if namespace is None or p["metadata"]["namespace"] == namespace]

    def serves_keda(self) -> bool:
        return self.keda

    def apply_status(self, namespace: str, name: str, status_fields: Mapping[str, Any], field_manager: str) -> Json:
        """Server-side apply as the autoscaler's manager: it owns status.autoscaling and its conditions."""
        body = self._find(namespace, name)
        assert body is not None
        assert field_manager == names.FIELD_MANAGER_AUTOSCALER
        if self.failures:
            self.failures -= 1
            raise TransientApiError("apply", "status", 500, "etcd hiccup", 1.0)
        self.status_applies.append(copy.deepcopy(dict(status_fields)))
        status = body.setdefault("status", {})
        status.pop("autoscaling", None)
        if "autoscaling" in status_fields:
            status["autoscaling"] = copy.deepcopy(status_fields["autoscaling"])
        applied = {c["type"]: c for c in status_fields.get("conditions") or []}
        kept = [c for c in status.get("conditions") or [] if c["type"] not in names.AUTOSCALER_CONDITIONS]
        status["conditions"] = kept + [copy.deepcopy(c) for c in applied.values()]
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return body

    def scale(self, namespace: str, name: str, replicas: int) -> Json:
        body = self._find(namespace, name)
        assert body is not None
        self.scaled.append((namespace, name, replicas))
        self.patches_before_scale.append(len(self.status_applies))
        body["spec"]["replicas"] = replicas
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        return {"spec": {"replicas": replicas}}

    def emit_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def body(self) -> Json:
        found = self._find(NAMESPACE, NAME)
        assert found is not None
        return found


def deployment(replicas: int = 1, status: Json | None = None, **autoscaling: Any) -> Json:
    spec = {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "targets": {"requestsRunningPerReplica": 2, "requestsWaitingPerReplica": 4, "kvCacheUtilization": 0.85},
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxStepReplicas": 2},
        "scaleDown": {"stabilizationWindowSeconds": 0, "maxStepReplicas": 1},
        **autoscaling,
    }
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "uid-1", "generation": 1, "resourceVersion": "1"},
        "spec": {"model": "gpt-oss-20b", "replicas": replicas, "autoscaling": spec},
        "status": status or {},
    }


def gpu_node(name: str, gpus: int, product: str = PRODUCT, taints: list[Json] | None = None) -> Json:
    return {
        "metadata": {"name": name, "labels": {names.GPU_PRODUCT_LABEL: product}},
        "spec": {"taints": taints or [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {names.GPU_RESOURCE: str(gpus)}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def server_pod(
    index: int, *, node: str | None = "gpu-a", ready: bool = True, since: str = LONG_AGO, deleting: bool = False
) -> Json:
    pod: Json = {
        "metadata": {
            "name": f"{NAME}-server-{index}",
            "namespace": NAMESPACE,
            "uid": f"pod-{index}",
            "labels": dict(server_selector(NAME)),
        },
        "spec": {"containers": [{"name": "server", "resources": {"limits": {names.GPU_RESOURCE: "1"}}}]},
        "status": {
            "phase": "Running" if node else "Pending",
            "podIP": f"10.0.0.{index}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}],
        },
    }
    if node:
        pod["spec"]["nodeName"] = node
    if deleting:
        pod["metadata"]["deletionTimestamp"] = LONG_AGO
    return pod


def sample(running: float, waiting: float = 0.0, kv: float = 0.1) -> MetricsSample:
    return MetricsSample(requests_waiting=waiting, requests_running=running, kv_cache_utilization=kv)


class Scraper:
    """Metrics by URL; a URL without an entry fails like an unreachable pod."""

    def __init__(self, by_ip: Mapping[str, MetricsSample]) -> None:
        self.by_ip = dict(by_ip)
        self.urls: list[str] = []

    async def __call__(self, url: str) -> MetricsSample:
        self.urls.append(url)
        for ip, found in self.by_ip.items():
            if f"//{ip}:" in url:
                return found
        raise ScrapeError(f"GET {url} failed: connection refused")


def autoscaler(api: FakeApi, scraper: Scraper, now: float = NOW, **settings: Any) -> Autoscaler:
    return Autoscaler(api, OperatorSettings(**settings), scraper, clock=lambda: now)


def condition(body: Json, type_: str) -> Json:
    for cond in body.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


# ------------------------------------------------------------------------------------------- tests
@dataclass(frozen=True)
class Case:
    id: str
    replicas: int
    pods: list[Json]
    nodes: list[Json]
    running: float  # per ready pod
    scaled_to: int | None  # None: no scale call
    capacity_limited: str  # CapacityLimited status afterwards ("" when absent)
    waiting: float = 0.0


CASES = [
    Case("scale-up-step-limited", 1, [server_pod(1)], [gpu_node("gpu-a", 8)], 8, 3, "False"),
    Case("within-tolerance-stays", 2, [server_pod(1), server_pod(2)], [gpu_node("gpu-a", 8)], 2, None, "False"),
    Case("capped-by-free-gpus", 1, [server_pod(1)], [gpu_node("gpu-a", 2)], 8, 2, "True"),
    Case("capped-at-current", 2, [server_pod(1), server_pod(2)], [gpu_node("gpu-a", 2)], 8, None, "True"),
    Case(
        "wrong-product-node-does-not-count",
        1,
        [server_pod(1)],
        [gpu_node("gpu-a", 1), gpu_node("gpu-h200", 8, product="NVIDIA-H200")],
        8,
        None,
        "True",
    ),
    Case("idle-scales-down-one", 3, [server_pod(i) for i in (1, 2, 3)], [gpu_node("gpu-a", 8)], 0, 2, "False"),
    Case("waiting-drives-up", 1, [server_pod(1)], [gpu_node("gpu-a", 8)], 2, 3, "False", waiting=12),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_decision_is_capped_and_applied_through_the_scale_subresource(case: Case) -> None:
    api = FakeApi([deployment(case.replicas)], [*case.nodes], case.pods)
    ips = {p["status"]["podIP"]: sample(case.running, case.waiting) for p in case.pods}
    outcomes = await autoscaler(api, Scraper(ips)).evaluate_all()

    assert api.scaled == ([(NAMESPACE, NAME, case.scaled_to)] if case.scaled_to is not None else [])
    body = api.body()
    assert condition(body, names.COND_CAPACITY_LIMITED).get("status", "") == case.capacity_limited
    autoscaling = body["status"]["autoscaling"]
    assert autoscaling["mode"] == "operator"
    last = autoscaling["decisions"][-1]
    assert last["fromReplicas"] == case.replicas
    assert last["toReplicas"] == (case.scaled_to if case.scaled_to is not None else case.replicas)
    assert outcomes[0].applied == last["toReplicas"]
    assert autoscaling["schedulableReplicas"] >= min(last["toReplicas"], case.replicas)


async def test_capped_scale_up_explains_itself_in_condition_event_and_decision() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 2), gpu_node("gpu-c", 8, taints=[])], [server_pod(1)])
    api.node_list[1]["spec"]["taints"] = [{"key": "maintenance", "effect": "NoSchedule"}]
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()

    limited = condition(api.body(), names.COND_CAPACITY_LIMITED)
    assert limited["status"] == "True"
    assert limited["reason"] == "InsufficientFreeGPUs"
    assert "wanted 3 replicas" in limited["message"]
    assert "only 2 fit: 1 placed + 1 more" in limited["message"]
    assert "gpu-c (taint maintenance:NoSchedule not tolerated)" in limited["message"]
    assert ("Warning", "CapacityLimited", limited["message"]) in api.events
    decision = api.body()["status"]["autoscaling"]["decisions"][-1]
    assert decision["reason"].startswith("scale up 1 -> 2: capped by free GPUs")
    assert decision["signals"]["requestsRunningPerReplica"] == 8
    assert any(e[1] == "Rescaled" and e[2].startswith("scale up 1 -> 2") for e in api.events)
    assert limited["lastTransitionTime"] == "2027-01-15T08:00:00Z"


async def test_capacity_limited_keeps_its_transition_time_and_event_while_unchanged() -> None:
    api = FakeApi([deployment(2)], [gpu_node("gpu-a", 2)], [server_pod(1), server_pod(2)])
    scraper = Scraper({"10.0.0.1": sample(8), "10.0.0.2": sample(8)})
    await autoscaler(api, scraper).evaluate_all()
    first = condition(api.body(), names.COND_CAPACITY_LIMITED)
    await autoscaler(api, scraper, now=NOW + 15).evaluate_all()
    second = condition(api.body(), names.COND_CAPACITY_LIMITED)

    assert first["status"] == second["status"] == "True"
    assert second["lastTransitionTime"] == first["lastTransitionTime"]
    assert [e for e in api.events if e[1] == "CapacityLimited"] == [("Warning", "CapacityLimited", first["message"])]


async def test_capacity_limited_goes_false_when_load_drops() -> None:
    api = FakeApi([deployment(2)], [gpu_node("gpu-a", 2)], [server_pod(1), server_pod(2)])
    await autoscaler(api, Scraper({"10.0.0.1": sample(8), "10.0.0.2": sample(8)})).evaluate_all()
    await autoscaler(api, Scraper({"10.0.0.1": sample(2), "10.0.0.2": sample(2)}), now=NOW + 15).evaluate_all()

    limited = condition(api.body(), names.COND_CAPACITY_LIMITED)
    assert limited["status"] == "False"
    assert limited["lastTransitionTime"] == "2027-01-15T08:00:15Z"


async def test_missing_metrics_hold_and_say_so() -> None:
    api = FakeApi([deployment(2)], [gpu_node("gpu-a", 8)], [server_pod(1), server_pod(2)])
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()  # pod 2 does not answer

    assert api.scaled == []
    active = condition(api.body(), names.COND_SCALING_ACTIVE)
    assert (active["status"], active["reason"]) == ("False", "MissingMetrics")
    assert f"pod {NAME}-server-2 reports no" in active["message"]
    assert ("Warning", "MissingMetrics", active["message"]) in api.events
    assert condition(api.body(), names.COND_CAPACITY_LIMITED) == {}  # a hold says nothing about capacity


async def test_pods_being_deleted_are_left_out_and_unready_pods_not_scraped() -> None:
    pods = [server_pod(1), server_pod(2, deleting=True), server_pod(3, ready=False)]
    api = FakeApi([deployment(2)], [gpu_node("gpu-a", 8)], pods)
    scraper = Scraper({"10.0.0.1": sample(0)})
    await autoscaler(api, scraper).evaluate_all()

    assert scraper.urls == ["http://10.0.0.1:8002/metrics"]
    reason = api.body()["status"]["autoscaling"]["decisions"][-1]["reason"]
    assert reason.startswith("hold at 2: scale-down to 1 deferred while replicas start")
    assert f"pod {NAME}-server-3 not ready" in reason
    assert f"{NAME}-server-2" not in reason
    assert api.scaled == []


async def test_history_in_status_survives_an_operator_restart() -> None:
    # A recommendation of 2 within the 300 s scale-down window, recorded by the previous operator process.
    history = {"recommendations": [[NOW - 100, 2]], "scaleEvents": [], "started": NOW - 1000}
    status = {"autoscaling": {"mode": "operator", "history": history}}
    pods = [server_pod(i) for i in (1, 2, 3)]
    api = FakeApi([deployment(3, status, scaleDown={"stabilizationWindowSeconds": 300, "maxStepReplicas": 2})])
    api.node_list, api.pod_list = [gpu_node("gpu-a", 8)], pods
    idle = Scraper({p["status"]["podIP"]: sample(0) for p in pods})
    await autoscaler(api, idle).evaluate_all()  # a fresh process: only the status remembers

    assert api.scaled == [(NAMESPACE, NAME, 2)]  # the window's highest recommendation, not 1
    stored = api.body()["status"]["autoscaling"]["history"]
    assert stored["started"] == NOW - 1000
    assert stored["recommendations"][-1] == [NOW, 1]


def test_a_stored_run_is_read_back_as_lasting_until_now() -> None:
    status = {"autoscaling": {"history": {"recommendations": [[NOW - 500, 4], [NOW - 200, 2]], "started": NOW - 900}}}
    history = record.stored_history(status, NOW)
    assert [(r.time, r.replicas) for r in history.recommendations] == [
        (NOW - 500, 4),
        (NOW - 200, 4),  # the run of 4 lasted until the run of 2 began
        (NOW - 200, 2),
        (NOW, 2),  # the last run is taken to last until now: the cautious reading after a restart
    ]


async def test_without_history_a_restart_waits_for_the_window_to_fill() -> None:
    pods = [server_pod(i) for i in (1, 2, 3)]
    api = FakeApi([deployment(3, scaleDown={"stabilizationWindowSeconds": 300, "maxStepReplicas": 2})])
    api.node_list, api.pod_list = [gpu_node("gpu-a", 8)], pods
    await autoscaler(api, Scraper({p["status"]["podIP"]: sample(0) for p in pods})).evaluate_all()
    assert api.scaled == []


async def test_steady_runs_are_stored_compactly() -> None:
    api = FakeApi([deployment(2)], [gpu_node("gpu-a", 8)], [server_pod(1), server_pod(2)])
    scraper = Scraper({"10.0.0.1": sample(2), "10.0.0.2": sample(2)})
    controller = autoscaler(api, scraper)
    writes = []
    for step in range(5):
        controller._clock = lambda step=step: NOW + 15 * step  # type: ignore[misc]
        writes.append((await controller.evaluate_all())[0].status_written)
    stored = api.body()["status"]["autoscaling"]
    assert stored["history"]["recommendations"] == [[NOW, 2]]  # the run, by its start
    assert writes == [True, False, False, False, False]  # a steady load writes no status
    assert len(stored["decisions"]) == 1  # the same reason, numbers aside, is recorded once


async def test_the_record_states_only_the_autoscalers_fields() -> None:
    previous = {"conditions": [{"type": "Ready", "status": "True", "reason": "R", "lastTransitionTime": LONG_AGO}]}
    api = FakeApi([deployment(1, previous)], [gpu_node("gpu-a", 8)], [server_pod(1)])
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()
    applied = api.status_applies[0]
    assert set(applied) == {"autoscaling", "conditions"}
    assert {c["type"] for c in applied["conditions"]} == set(names.AUTOSCALER_CONDITIONS)
    assert condition(api.body(), "Ready")["status"] == "True"  # the reconcile's condition is not restated


async def test_no_scale_when_the_decision_could_not_be_recorded() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 8)], [server_pod(1)], failures=1)
    controller = autoscaler(api, Scraper({"10.0.0.1": sample(8)}))
    outcomes = await controller.evaluate_all()
    assert outcomes == []  # this deployment's round failed (logged); the others go on
    assert api.scaled == []
    await controller.evaluate_all()  # the next round records, then scales
    assert api.scaled == [(NAMESPACE, NAME, 3)]
    assert api.patches_before_scale == [1]


async def test_a_status_from_a_future_version_does_not_stop_the_autoscaler() -> None:
    body = deployment(1)
    body["status"] = {"conditions": None, "autoscaling": "from the future", "shards": [1]}
    api = FakeApi([body], [gpu_node("gpu-a", 8)], [server_pod(1)])
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()
    assert api.scaled == [(NAMESPACE, NAME, 3)]


async def test_without_cluster_wide_reads_scale_ups_are_not_capped_and_capacity_is_unknown() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 1)], [server_pod(1)], forbid_cluster_reads=True)
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()
    assert api.scaled == [(NAMESPACE, NAME, 3)]
    assert condition(api.body(), names.COND_CAPACITY_LIMITED)["status"] == "Unknown"


@pytest.mark.parametrize(
    ("mode", "keda", "status", "reason"),
    [
        ("hpa", False, "True", "HorizontalPodAutoscaler"),
        ("keda", True, "True", "ScaledObject"),
        ("keda", False, "False", "KedaNotInstalled"),
    ],
)
async def test_standard_modes_record_the_mode_and_whether_it_can_act(
    mode: str, keda: bool, status: str, reason: str
) -> None:
    previous = {
        "autoscaling": {"mode": "operator", "recommendation": 3, "history": {"recommendations": [[NOW, 3]]}},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasReady", "lastTransitionTime": LONG_AGO},
            {"type": names.COND_CAPACITY_LIMITED, "status": "True", "reason": "x", "lastTransitionTime": LONG_AGO},
        ],
    }
    extra = {"prometheusAddress": "http://prometheus:9090"} if mode == "keda" else {}
    api = FakeApi([deployment(1, previous, mode=mode, **extra)], keda=keda)
    await autoscaler(api, Scraper({})).evaluate_all()

    body = api.body()
    active = condition(body, names.COND_SCALING_ACTIVE)
    assert (active["status"], active["reason"]) == (status, reason)
    assert condition(body, names.COND_CAPACITY_LIMITED) == {}
    assert condition(body, "Ready")["status"] == "True"  # the reconcile's conditions stay as they were
    assert body["status"]["autoscaling"]["mode"] == mode
    assert "history" not in body["status"]["autoscaling"]
    assert "recommendation" not in body["status"]["autoscaling"]
    assert api.scaled == []
    if status == "False":
        assert "install KEDA" in active["message"]
        assert ("Warning", "KedaNotInstalled", active["message"]) in api.events


async def test_disabling_removes_what_the_autoscaler_wrote() -> None:
    previous = {
        "autoscaling": {"mode": "operator", "recommendation": 3},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReplicasReady", "lastTransitionTime": LONG_AGO},
            {"type": names.COND_SCALING_ACTIVE, "status": "True", "reason": "x", "lastTransitionTime": LONG_AGO},
        ],
    }
    api = FakeApi([deployment(1, previous, enabled=False)])
    await autoscaler(api, Scraper({})).evaluate_all()
    body = api.body()
    assert "autoscaling" not in body["status"]
    assert [c["type"] for c in body["status"]["conditions"]] == ["Ready"]
    await autoscaler(api, Scraper({})).evaluate_all()
    assert len(api.status_applies) == 1  # nothing left to remove: no further write


async def test_a_decision_is_counted_in_the_operator_metrics() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 2)], [server_pod(1)])
    counter = metrics.METRICS.autoscaler_decisions.labels(
        namespace=NAMESPACE, name=NAME, direction="up", reason="capacity_limited"
    )
    before = counter._value.get()
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()
    assert counter._value.get() == before + 1
    gauge = metrics.METRICS.capacity_limited.labels(namespace=NAMESPACE, name=NAME, model="gpt-oss-20b")
    assert gauge._value.get() == 1


def test_metrics_url_template_placeholders() -> None:
    pod = server_pod(7)
    assert metrics_url("http://{pod_ip}:{port}/metrics", pod) == "http://10.0.0.7:8002/metrics"
    pod["status"]["podIP"] = "fd00::7"
    assert metrics_url("http://{pod_ip}:{port}/metrics", pod) == "http://[fd00::7]:8002/metrics"
    template = "http://127.0.0.1:9000/{namespace}/{pod_name}"
    assert metrics_url(template, pod) == f"http://127.0.0.1:9000/{NAMESPACE}/{NAME}-server-7"
    del pod["status"]["podIP"]
    with pytest.raises(ScrapeError, match="has no IP yet"):
        metrics_url(template, pod)


def test_bad_metrics_url_template_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"GPTOSS_AUTOSCALER_METRICS_URL_TEMPLATE.*placeholders"):
        OperatorSettings(autoscaler_metrics_url_template="http://{address}/metrics")
    with pytest.raises(ValueError, match="must give an http"):
        OperatorSettings(autoscaler_metrics_url_template="{pod_ip}:{port}")


def test_readiness_and_own_pods() -> None:
    assert readiness(server_pod(1)).ready
    assert readiness(server_pod(1)).since == pytest.approx(1767225600.0)
    assert not readiness(server_pod(1, ready=False)).ready
    assert not readiness(server_pod(1, node=None)).ready
    other = server_pod(9)
    other["metadata"]["labels"]["gptoss.io/deployment"] = "other"
    pods = [server_pod(1), server_pod(2, deleting=True), other]
    assert [p["metadata"]["name"] for p in own_pods(pods, NAMESPACE, server_selector(NAME))] == [f"{NAME}-server-1"]


@pytest.mark.parametrize("seed", range(8))
def test_compacted_history_decides_exactly_like_the_full_history(seed: int) -> None:
    """Runs of one recommendation are kept as their first and latest entries; no decision may change."""
    rng = random.Random(seed)
    config = PolicyConfig(
        min_replicas=1,
        max_replicas=12,
        targets=Targets(requests_waiting_per_replica=None, requests_running_per_replica=1.0, kv_cache_utilization=None),
        scale_up=Behavior(stabilization_window_seconds=rng.choice([0, 30, 60]), max_step_replicas=3),
        scale_down=Behavior(stabilization_window_seconds=rng.choice([30, 120]), max_step_replicas=1),
        startup_grace_seconds=0,
    )
    full, compacted = DecisionHistory(), DecisionHistory()
    replicas, now = 4, 1000.0
    for _ in range(200):
        now += rng.choice([1.0, 5.0, 15.0])
        load = rng.choice([1, 2, 2, 3, 3, 3, 6, 9])  # total running requests, steady runs and spikes
        fleet = [
            ReplicaSignals(pod=f"p{i}", ready=True, started_at=0.0, requests_running=load / replicas)
            for i in range(replicas)
        ]
        with_full = decide(now, replicas, fleet, full, config)
        with_compacted = decide(now, replicas, fleet, compacted, config)
        assert with_compacted == with_full
        full = full.record(now, with_full, config)
        compacted = record.compact(compacted.record(now, with_compacted, config))
        replicas = with_full.desired
    assert len(compacted.recommendations) <= len(full.recommendations)  # it never grows past the full history


async def test_a_deployment_still_starting_is_not_scaled_and_raises_no_warning() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 8)], [server_pod(1, ready=False)])
    await autoscaler(api, Scraper({})).evaluate_all()
    active = condition(api.body(), names.COND_SCALING_ACTIVE)
    assert (active["status"], active["reason"]) == ("False", "NoReadyReplicas")
    assert api.scaled == []
    assert [e for e in api.events if e[0] == "Warning"] == []  # every deployment starts like this


async def test_a_failing_pod_is_logged_as_a_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 8)], [server_pod(1)])
    controller = autoscaler(api, Scraper({}))
    with caplog.at_level("DEBUG", logger="gptoss_operator.autoscaling.controller"):
        for _ in range(3):
            await controller.evaluate_all()
    failures = [r for r in caplog.records if "no metrics from pod" in r.getMessage()]
    assert [r.levelname for r in failures] == ["WARNING", "DEBUG", "DEBUG"]
    assert "connection refused" in failures[0].getMessage()


async def test_the_decision_is_recorded_before_the_scale_for_the_next_generation() -> None:
    api = FakeApi([deployment(1)], [gpu_node("gpu-a", 8)], [server_pod(1)])
    await autoscaler(api, Scraper({"10.0.0.1": sample(8)})).evaluate_all()
    assert api.scaled == [(NAMESPACE, NAME, 3)]
    assert api.patches_before_scale == [1]  # the reconcile the scale triggers reads the record, no 409 race
    assert api.status_applies[0]["autoscaling"]["decisions"][-1]["toReplicas"] == 3
    body = api.body()
    assert body["metadata"]["generation"] == 2
    assert condition(body, names.COND_CAPACITY_LIMITED)["observedGeneration"] == 2
    assert any(e[1] == "Rescaled" for e in api.events)
