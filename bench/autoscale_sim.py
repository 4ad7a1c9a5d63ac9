"""Autoscaling simulation: GPU-hours and time-to-first-token SLO misses over a day of LLM traffic.

A discrete-time simulation (1-second ticks, requests aggregated per tick) of one gpt-oss deployment under a
seeded, deterministic day-long trace: a diurnal curve plus bursts, requests of about 1k prompt / 1k output
tokens. Three policies see the very same requests:

- `operator`: this project's autoscaler. Every 5 s it calls the real `gptoss_operator.autoscaling.policy.decide`
  with the per-replica signals a scrape would return (requests waiting and running, KV cache utilization,
  TTFT histogram windows), then caps the result with the real `capacity.replicas_that_fit` over a GPU pool.
- `static`: a fleet at maxReplicas all day.
- `hpa-queue-ratio`: the HorizontalPodAutoscaler of Triton's published autoscaling tutorial, on
  `triton:queue_compute:ratio`, i.e. rate(nv_inference_queue_duration_us[1m]) over
  rate(nv_inference_compute_infer_duration_us[1m]), with target averageValue 1 and HPA defaults otherwise
  (15 s sync, 10% tolerance, scale-up 0 s stabilization and max(4 pods, 100%) per 15 s, scale-down 300 s
  stabilization, unready pods count as 0 when scaling up). It sees its metric without Prometheus' scrape lag.

The model of a replica (the same for every policy):
- Throughput at full batch from NVIDIA's TensorRT-LLM H100 figures at ISL/OSL 1k/1k: gpt-oss-20b 11,403 output
  tok/s per GPU (1 GPU per replica), gpt-oss-120b 4,715 per GPU (2 GPUs per replica, TP2).
- A concurrency limit (64 sequences, the CUDA-graph batch of NVIDIA's Hopper recipe); each running request
  decodes at throughput / limit tokens per second, so it runs output_tokens / that seconds.
- A request waits in a FIFO queue while every ready replica is at its limit; TTFT = queue wait + prefill
  (a base time that grows with the batch). A replica takes a cold start of several minutes before it is
  ready; a removed replica holds its GPUs while it drains.

Run: `python bench/autoscale_sim.py [--model gpt-oss-20b] [--hours 24] [--seed 7] [--slo-seconds 2] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_REPO = Path(__file__).resolve().parent.parent
for _package_root in (_REPO / "operator", _REPO / "runtime"):
    if str(_package_root) not in sys.path:
        sys.path.insert(0, str(_package_root))

from gptoss_operator.api import AutoscalingSpec  # noqa: E402
from gptoss_operator.autoscaling import capacity, policy  # noqa: E402
from gptoss_operator.autoscaling.config import policy_config  # noqa: E402
from gptoss_operator.autoscaling.signals import Histogram, ReplicaSignals  # noqa: E402
from gptoss_runtime.contract import TIME_TO_FIRST_TOKEN_BUCKETS  # noqa: E402

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

DAY_SECONDS = 86_400
OPERATOR_INTERVAL_SECONDS = 5
HPA_SYNC_SECONDS = 15
HPA_RATE_WINDOW_SECONDS = 60
GPUS_PER_NODE = 4


@dataclass(frozen=True)
class ModelProfile:
    name: str
    gpus_per_replica: int
    output_tokens_per_second_per_gpu: float  # NVIDIA TensorRT-LLM perf overview, H100, ISL/OSL 1k/1k
    concurrency_limit: int
    prefill_seconds: float  # TTFT of a 1k prompt on an idle replica
    cold_start_seconds: float  # pod scheduled -> Ready: image and weights cached, model load, warm-up
    kv_cache_tokens: float  # KV cache capacity of a replica (free_gpu_memory_fraction 0.85)
    max_replicas: int

    @property
    def replica_tokens_per_second(self) -> float:
        return self.output_tokens_per_second_per_gpu * self.gpus_per_replica


PROFILES = {
    "gpt-oss-20b": ModelProfile("gpt-oss-20b", 1, 11_403, 64, 0.15, 300, 1.0e6, 8),
    "gpt-oss-120b": ModelProfile("gpt-oss-120b", 2, 4_715, 64, 0.30, 420, 1.0e6, 4),
}


# ------------------------------------------------------------------------------------------------ trace
@dataclass(frozen=True)
class Trace:
    ticks: int
    arrivals_by_tick: IntArray  # cumulative: requests arrived before tick t ends is cum[t + 1]
    arrival_time: FloatArray  # per request, seconds
    service_ticks: IntArray  # per request: ticks it decodes once admitted
    context_tokens: FloatArray  # per request: prompt + output tokens (KV cache footprint at the end)
    rate: FloatArray  # requests per second, per tick (the intended curve)


def make_trace(profile: ModelProfile, hours: float, seed: int) -> Trace:
    """A diurnal day (trough near 04:00, peak near 15:00) with seeded bursts; Poisson arrivals per second."""
    rng = np.random.default_rng(seed)
    ticks = int(hours * 3600)
    t = np.arange(ticks, dtype=np.float64)
    fleet_requests_per_second = profile.max_replicas * profile.replica_tokens_per_second / 1000.0
    trough, peak = 0.08 * fleet_requests_per_second, 0.60 * fleet_requests_per_second
    phase = 2 * np.pi * ((t % DAY_SECONDS) - 4 * 3600) / DAY_SECONDS  # 0 at 04:00
    diurnal = trough + (peak - trough) * (0.5 - 0.5 * np.cos(phase)) ** 1.5
    wobble = 1 + 0.05 * np.sin(2 * np.pi * t / 1800 + rng.uniform(0, 2 * np.pi))
    rate = diurnal * wobble
    bursts = rng.poisson(8 * hours / 24)
    for _ in range(max(bursts, 1 if hours >= 1 else 0)):
        start = rng.uniform(0, max(1.0, ticks - 600))
        length = rng.uniform(300, 1200)
        height = rng.uniform(0.3, 0.8)
        ramp = np.clip((t - start) / 60, 0, 1) * np.clip((start + length - t) / 60, 0, 1)
        rate = rate * (1 + height * ramp)
    counts = rng.poisson(rate)
    total = int(counts.sum())
    arrival_tick = np.repeat(np.arange(ticks), counts)
    arrival_time = arrival_tick + rng.uniform(0, 1, total)
    output_tokens = np.clip(rng.lognormal(np.log(1000) - 0.045, 0.3, total), 50, 4000)
    prompt_tokens = np.clip(rng.lognormal(np.log(1000) - 0.045, 0.3, total), 50, 8000)
    per_slot_tokens_per_second = profile.replica_tokens_per_second / profile.concurrency_limit
    service_ticks = np.maximum(1, np.ceil(output_tokens / per_slot_tokens_per_second)).astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    context_tokens = (prompt_tokens + output_tokens).astype(np.float64)
    return Trace(ticks, cumulative, arrival_time, service_ticks, context_tokens, rate)


# ------------------------------------------------------------------------------------------------ fleet
@dataclass
class Replica:
    name: str
    node: int
    created: float
    ready_at: float

    def ready(self, now: float) -> bool:
        return now >= self.ready_at


@dataclass
class Fleet:
    profile: ModelProfile
    node_gpus: tuple[int, ...]  # allocatable GPUs per node of the pool
    replicas: list[Replica] = field(default_factory=list)
    serial: int = 0
    scale_events: int = 0
    drain_gpu_seconds: float = 0.0
    _ready_cache: tuple[float, int] = (math.nan, 0)

    def node_used(self, node: int) -> int:
        return sum(self.profile.gpus_per_replica for r in self.replicas if r.node == node)

    def scale_to(self, desired: int, now: float) -> None:
        before = len(self.replicas)
        if desired == before:
            return
        self._ready_cache = (math.nan, 0)
        while len(self.replicas) < desired:
            node = next(
                (
                    n
                    for n, gpus in enumerate(self.node_gpus)
                    if gpus - self.node_used(n) >= self.profile.gpus_per_replica
                ),
                None,
            )
            if node is None:
                break  # unschedulable: in a cluster the pod would stay Pending (the HPA does not know)
            self.serial += 1
            self.replicas.append(Replica(f"pod-{self.serial}", node, now, now + self.profile.cold_start_seconds))
        while len(self.replicas) > desired:
            # The ReplicaSet removes not-ready pods first, then the newest.
            victim = max(self.replicas, key=lambda r: (not r.ready(now), r.created))
            if victim.ready(now):
                self.drain_gpu_seconds += DRAIN_SECONDS * self.profile.gpus_per_replica
            self.replicas.remove(victim)
        self.scale_events += int(len(self.replicas) != before)

    def ready_count(self, now: float) -> int:
        if self._ready_cache[0] != now:
            self._ready_cache = (now, sum(1 for r in self.replicas if r.ready(now)))
        return self._ready_cache[1]


DRAIN_SECONDS = 10.0  # a removed replica finishes its running requests (about one output length)


# ------------------------------------------------------------------------------------------- controllers
@dataclass
class View:
    """What a controller may look at, at one tick."""

    now: int
    fleet: Fleet
    queued: int
    running: int
    ttft_window: FloatArray  # TTFT of the requests admitted since this controller last looked
    queue_seconds_last_minute: float
    compute_seconds_last_minute: float
    mean_context_tokens: float


Controller = Callable[[View], int]


def static_controller(view: View) -> int:
    return view.fleet.profile.max_replicas


@dataclass
class OperatorController:
    """The project's policy with the spec's defaults; only deployment facts (bounds, batch size) are set."""

    profile: ModelProfile
    min_replicas: int
    node_gpus: tuple[int, ...]
    config: policy.PolicyConfig = field(init=False)
    history: policy.DecisionHistory = field(default_factory=policy.DecisionHistory)
    capped: int = 0

    def __post_init__(self) -> None:
        # A GptOssDeployment that sets only enabled, minReplicas and maxReplicas: every other value is the
        # spec's default, mapped by the same adapter the operator uses.
        spec = AutoscalingSpec(enabled=True, min_replicas=self.min_replicas, max_replicas=self.profile.max_replicas)
        self.config = policy_config(spec, max_batch_size=self.profile.concurrency_limit)
        self.bounds = tuple(TIME_TO_FIRST_TOKEN_BUCKETS)

    def __call__(self, view: View) -> int:
        fleet, now = view.fleet, float(view.now)
        ready = max(1, fleet.ready_count(now))
        window = self._window(view.ttft_window, ready)
        signals = [
            ReplicaSignals(
                pod=r.name,
                ready=r.ready(now),
                started_at=r.ready_at if r.ready(now) else None,
                requests_waiting=view.queued / ready if r.ready(now) else None,
                requests_running=view.running / ready if r.ready(now) else None,
                kv_cache_utilization=(
                    min(1.0, view.running / ready * view.mean_context_tokens / self.profile.kv_cache_tokens)
                    if r.ready(now)
                    else None
                ),
                ttft_window=window if r.ready(now) else None,
            )
            for r in fleet.replicas
        ]
        decision = policy.decide(now, len(fleet.replicas), signals, self.history, self.config)
        fit = capacity.replicas_that_fit(*self._cluster(fleet), self._placement())
        result = capacity.cap(decision.desired, len(fleet.replicas), fit)
        self.capped += int(result.limited)
        self.history = self.history.record(now, decision, self.config, applied=result.replicas)
        return result.replicas

    def _window(self, ttft: FloatArray, ready: int) -> Histogram:
        counts = np.histogram(ttft, bins=[-np.inf, *self.bounds, np.inf])[0] / ready
        cumulative = tuple(float(c) for c in np.cumsum(counts))
        return Histogram((*self.bounds, math.inf), cumulative, cumulative[-1], float(ttft.sum()) / ready)

    def _placement(self) -> capacity.Placement:
        return capacity.Placement(
            gpus_per_replica=self.profile.gpus_per_replica,
            gpu_product="NVIDIA-H100-80GB-HBM3",
            tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
            own_pod_labels={"app": "sim"},
        )

    def _cluster(self, fleet: Fleet) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nodes = [
            {
                "metadata": {"name": f"gpu-{n}", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
                "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                "status": {
                    "allocatable": {"nvidia.com/gpu": str(gpus)},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            for n, gpus in enumerate(self.node_gpus)
        ]
        gpus = str(self.profile.gpus_per_replica)
        pods = [
            {
                "metadata": {"name": r.name, "labels": {"app": "sim"}},
                "spec": {
                    "nodeName": f"gpu-{r.node}",
                    "containers": [{"resources": {"limits": {"nvidia.com/gpu": gpus}}}],
                },
                "status": {"phase": "Running"},
            }
            for r in fleet.replicas
        ]
        return nodes, pods


@dataclass
class HpaQueueRatioController:
    """Triton tutorial's HPA: Pods metric triton:queue_compute:ratio, averageValue 1, HPA v2 defaults."""

    profile: ModelProfile
    min_replicas: int
    target: float = 1.0
    tolerance: float = 0.1
    scale_down_window: float = 300.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time, delta) within the last 15 s

    def __call__(self, view: View) -> int:
        now, fleet = float(view.now), view.fleet
        current = len(fleet.replicas)
        ready = fleet.ready_count(now)
        if ready == 0:
            return current
        metric = view.queue_seconds_last_minute / max(view.compute_seconds_last_minute, 1e-6)
        raw = self._raw(metric, ready, current - ready, current)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - self.scale_down_window]
        self.recommendations.append((now, raw))
        # HPA stabilization: scale-up window 0 s (raw), scale-down to the highest recommendation of 300 s.
        highest = max(r for _, r in self.recommendations)
        stabilized = raw if raw >= current else min(current, highest)
        desired = self._rate_limited(now, current, stabilized)
        desired = min(self.profile.max_replicas, max(self.min_replicas, desired))
        if desired != current:
            self.changes.append((now, desired - current))
        return desired

    def _raw(self, metric: float, ready: int, unready: int, current: int) -> int:
        ratio = metric / self.target
        if abs(ratio - 1) <= self.tolerance:
            return current
        if ratio > 1 and unready > 0:  # unready pods count as 0 when scaling up
            ratio = metric * ready / (self.target * (ready + unready))
            if abs(ratio - 1) <= self.tolerance or ratio < 1:
                return current
            return math.ceil(ratio * (ready + unready))
        return math.ceil(ratio * ready)

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        self.changes = [(t, d) for t, d in self.changes if t > now - HPA_SYNC_SECONDS]
        added = sum(d for _, d in self.changes if d > 0)
        removed = -sum(d for _, d in self.changes if d < 0)
        if desired > current:
            start = current - added
            return min(desired, max(start + 4, 2 * start))
        del removed  # the default scale-down policy (100% per 15 s) allows any step down
        return desired


# --------------------------------------------------------------------------------------------- simulate
@dataclass(frozen=True)
class Result:
    gpu_hours: float
    slo_miss_fraction: float
    ttft_p50: float
    ttft_p99: float
    mean_replicas: float
    peak_replicas: int
    scale_events: int
    capacity_limited_decisions: int
    ttft: FloatArray = field(
        repr=False, compare=False, default_factory=lambda: np.zeros(0)
    )  # per request, NaN: unserved

    def summary(self) -> dict[str, float]:
        return {"gpu_hours": round(self.gpu_hours, 3), "slo_miss_fraction": round(self.slo_miss_fraction, 5)}


def simulate(
    trace: Trace,
    profile: ModelProfile,
    controller: Controller,
    interval: int,
    slo_seconds: float,
    initial_replicas: int,
    node_gpus: tuple[int, ...],
) -> Result:
    fleet = Fleet(profile, node_gpus)
    fleet.scale_to(initial_replicas, -profile.cold_start_seconds)  # warm at the start of the trace
    fleet.scale_events = 0
    total = len(trace.arrival_time)
    horizon = trace.ticks + int(trace.service_ticks.max(initial=1)) + 2
    done = np.zeros(horizon, dtype=np.int64)
    compute_done = np.zeros(horizon, dtype=np.float64)
    queue_by_tick = np.zeros(horizon, dtype=np.float64)
    ttft = np.full(total, np.nan)
    mean_context = float(trace.context_tokens.mean()) if total else 1.0
    head = running = 0
    looked_at = 0  # first request admitted since the controller last looked
    gpu_seconds = 0.0
    replica_seconds = 0.0
    peak = len(fleet.replicas)
    limit = profile.concurrency_limit
    for now in range(trace.ticks):
        running -= int(done[now])
        arrived = int(trace.arrivals_by_tick[now + 1])
        ready = fleet.ready_count(now)
        free = ready * limit - running
        if free > 0 and arrived > head:
            take = min(free, arrived - head)
            chunk = slice(head, head + take)
            waited = np.maximum(0.0, now - trace.arrival_time[chunk])
            ttft[chunk] = waited + profile.prefill_seconds * (1 + running / max(1, ready * limit))
            service = trace.service_ticks[chunk]
            np.add.at(done, now + service, 1)
            np.add.at(compute_done, now + service, service.astype(np.float64))
            queue_by_tick[now] = float(waited.sum())
            running += take
            head += take
        gpu_seconds += len(fleet.replicas) * profile.gpus_per_replica
        replica_seconds += len(fleet.replicas)
        if now % interval == 0:
            lo = max(0, now - HPA_RATE_WINDOW_SECONDS + 1)
            view = View(
                now=now,
                fleet=fleet,
                queued=arrived - head,
                running=running,
                ttft_window=ttft[looked_at:head],
                queue_seconds_last_minute=float(queue_by_tick[lo : now + 1].sum()),
                compute_seconds_last_minute=float(compute_done[lo : now + 1].sum()),
                mean_context_tokens=mean_context,
            )
            looked_at = head
            fleet.scale_to(controller(view), now)
            peak = max(peak, len(fleet.replicas))
    # Requests still queued at the end count as misses once they have waited past the SLO.
    unserved_late = int(np.sum(trace.ticks - trace.arrival_time[head:] > slo_seconds))
    served = ttft[:head]
    misses = int(np.sum(served > slo_seconds)) + unserved_late
    capped = getattr(controller, "capped", 0)
    return Result(
        gpu_hours=(gpu_seconds + fleet.drain_gpu_seconds) / 3600,
        slo_miss_fraction=misses / total if total else 0.0,
        ttft_p50=float(np.percentile(served, 50)) if head else 0.0,
        ttft_p99=float(np.percentile(served, 99)) if head else 0.0,
        mean_replicas=replica_seconds / max(1, trace.ticks),
        peak_replicas=peak,
        scale_events=fleet.scale_events,
        capacity_limited_decisions=int(capped),
        ttft=ttft,
    )


def gpu_pool_nodes(gpus: int) -> tuple[int, ...]:
    """A pool of `gpus` GPUs on nodes of GPUS_PER_NODE (the last one may hold fewer)."""
    full, rest = divmod(gpus, GPUS_PER_NODE)
    return (GPUS_PER_NODE,) * full + ((rest,) if rest else ())


def run_all(
    model: str, hours: float, seed: int, slo_seconds: float, min_replicas: int = 1, gpu_pool: int | None = None
) -> dict[str, Result]:
    """All three policies over the same trace and GPU pool (default: enough GPUs for maxReplicas)."""
    profile = PROFILES[model]
    trace = make_trace(profile, hours, seed)
    nodes = gpu_pool_nodes(gpu_pool if gpu_pool is not None else profile.max_replicas * profile.gpus_per_replica)
    needed_at_start = math.ceil(trace.rate[0] * 1000 / profile.replica_tokens_per_second / 0.6)
    start = min(max(min_replicas, needed_at_start), profile.max_replicas)
    operator = OperatorController(profile, min_replicas, nodes)
    hpa = HpaQueueRatioController(profile, min_replicas)
    return {
        "operator": simulate(trace, profile, operator, OPERATOR_INTERVAL_SECONDS, slo_seconds, start, nodes),
        "static": simulate(trace, profile, static_controller, 3600, slo_seconds, profile.max_replicas, nodes),
        "hpa-queue-ratio": simulate(trace, profile, hpa, HPA_SYNC_SECONDS, slo_seconds, start, nodes),
    }


def print_table(results: dict[str, Result], model: str, hours: float, seed: int, slo: float, elapsed: float) -> None:
    static = results["static"].gpu_hours
    print(f"{model}, {hours:g} h trace, seed {seed}, TTFT SLO {slo:g} s (simulated in {elapsed:.1f} s)")
    header = (
        f"{'policy':<17}{'GPU-hours':>10}{'vs static':>11}{'SLO miss':>10}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'mean repl':>11}{'peak':>6}{'scalings':>10}{'capped':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<17}{r.gpu_hours:>10.1f}{(r.gpu_hours / static - 1) * 100:>10.1f}%"
            f"{r.slo_miss_fraction * 100:>9.2f}%{r.ttft_p50:>9.2f}s{r.ttft_p99:>9.2f}s"
            f"{r.mean_replicas:>11.2f}{r.peak_replicas:>6}{r.scale_events:>10}{r.capacity_limited_decisions:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--model", choices=sorted(PROFILES), default="gpt-oss-20b")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the trace (default 24)")
    parser.add_argument("--seed", type=int, default=7, help="trace seed (default 7)")
    parser.add_argument("--slo-seconds", type=float, default=2.0, help="time-to-first-token SLO (default 2)")
    parser.add_argument("--min-replicas", type=int, default=1, help="autoscalers' minReplicas (default 1)")
    parser.add_argument(
        "--gpu-pool", type=int, default=None, help="GPUs in the cluster (default: enough for maxReplicas)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.hours <= 0:
        parser.error("--hours must be > 0")
    if args.slo_seconds <= 0:
        parser.error("--slo-seconds must be > 0")
    if args.gpu_pool is not None and args.gpu_pool < PROFILES[args.model].gpus_per_replica:
        parser.error(f"--gpu-pool must hold at least one replica ({PROFILES[args.model].gpus_per_replica} GPUs)")
    started = time.perf_counter()
    results = run_all(args.model, args.hours, args.seed, args.slo_seconds, args.min_replicas, args.gpu_pool)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({name: r.summary() for name, r in results.items()}))
    else:
        print_table(results, args.model, args.hours, args.seed, args.slo_seconds, elapsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
