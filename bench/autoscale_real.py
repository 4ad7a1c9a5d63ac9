"""Autoscaling on real load: the operator's autoscaler against the HorizontalPodAutoscaler, same load, real pods.

On the local cluster's real node (e2e/cluster/up.sh), with the operator installed in-cluster by the chart
(the CPU stand-in serves; GPUs are simulated), one GptOssDeployment per mode is driven through its Service
by a bounded load generator: a busy phase (N concurrent streaming chat completions) then an idle phase.
Each mode is measured the same way:

- replica-seconds: the server Deployment's replicas, sampled every second and summed over the run;
- SLO misses: the fraction of requests whose time to first token exceeded the target the CR declares
  (`spec.autoscaling.targets.timeToFirstTokenSeconds`);
- the replica timeline (when each mode scaled up and back down).

`hpa` mode needs the custom metrics pipeline of e2e/metrics (Prometheus from Debian + Prometheus Adapter with
the chart's rules); the run starts it. Every loop is bounded in count and time; traffic goes only to the
Service's ClusterIP on this machine.

Run: `python bench/autoscale_real.py [--busy-seconds 90] [--idle-seconds 90] [--streams 8] [--modes operator,hpa]
[--json]`. With `--json` the last line is
`{"operator": {"replica_seconds": R, "slo_miss_fraction": F}, "hpa": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "e2e"))

import realpods  # noqa: E402

NAMESPACE = "bench-autoscale-real"
OPERATOR_NAMESPACE = "bench-autoscale-real-operator"
RELEASE = "gptoss-bench"
KUBECONFIG = realpods.CACHE / "kubeconfig"
TTFT_TARGET_S = 1.0
MAX_REQUESTS = 20_000  # a bound on the load loop whatever the durations say
MAX_RUN_S = 1800.0


@dataclass
class Outcome:
    mode: str
    replica_seconds: float = 0.0
    requests: int = 0
    slo_misses: int = 0
    errors: int = 0
    max_replicas: int = 0
    timeline: list[tuple[float, int]] = field(default_factory=list)
    scaled_up_at_s: float | None = None
    scaled_down_at_s: float | None = None

    @property
    def slo_miss_fraction(self) -> float:
        return self.slo_misses / self.requests if self.requests else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "replica_seconds": round(self.replica_seconds, 1),
            "slo_miss_fraction": round(self.slo_miss_fraction, 4),
            "requests": self.requests,
            "errors": self.errors,
            "max_replicas": self.max_replicas,
            "scaled_up_after_s": self.scaled_up_at_s,
            "scaled_down_after_idle_s": self.scaled_down_at_s,
        }


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.argv = [str(REPO / ".venv" / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig)]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=300, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))


def autoscaled_cr(name: str, mode: str, max_replicas: int) -> dict[str, Any]:
    """The gpt-oss-20b sample with autoscaling on short windows, so that one run shows both directions."""
    import yaml

    cr: dict[str, Any] = yaml.safe_load((REPO / "manifests" / "samples" / "gpt-oss-20b.yaml").read_text())
    cr["metadata"]["name"] = name
    cr["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": mode,
        "minReplicas": 1,
        "maxReplicas": max_replicas,
        "targets": {
            "requestsRunningPerReplica": 2,
            "requestsWaitingPerReplica": 2,
            "timeToFirstTokenSeconds": TTFT_TARGET_S,
        },
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxStepReplicas": 2},
        "scaleDown": {"stabilizationWindowSeconds": 20, "maxStepReplicas": 1},
    }
    return cr


class Load:
    """`streams` workers, each sending one streamed chat completion after the other until stopped."""

    def __init__(self, url: str, model: str, streams: int, outcome: Outcome, deadline_s: float) -> None:
        self.url, self.model, self.streams, self.outcome = url, model, streams, outcome
        self.deadline = time.monotonic() + deadline_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(streams)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _worker(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            with self._lock:
                if self.outcome.requests + self.outcome.errors >= MAX_REQUESTS:
                    return
            try:
                answer = realpods.stream_chat(self.url, self.model, "Tell a long story.", max_tokens=64)
            except Exception:  # every failure counts; the load goes on
                with self._lock:
                    self.outcome.errors += 1
                time.sleep(0.5)
                continue
            with self._lock:
                self.outcome.requests += 1
                self.outcome.slo_misses += answer.first_token_s > TTFT_TARGET_S


def replicas_of(kubectl: Kubectl, name: str) -> int:
    """Ready replicas; 0 until the operator has created the Deployment (right after the CR is applied)."""
    found = kubectl.run("get", "deployment", name, "--namespace", NAMESPACE, "--ignore-not-found", "-o", "json")
    if not found.strip():
        return 0
    return int(json.loads(found).get("status", {}).get("readyReplicas") or 0)


def sample_replicas(
    kubectl: Kubectl, name: str, outcome: Outcome, seconds: float, started: float, stop_when: Callable[[int], bool]
) -> None:
    """Sample ready replicas each second for `seconds` (or until `stop_when`), adding replica-seconds."""
    end = time.monotonic() + seconds
    last = time.monotonic()
    while time.monotonic() < end:
        replicas = replicas_of(kubectl, name)
        now = time.monotonic()
        outcome.replica_seconds += replicas * (now - last)
        last = now
        outcome.timeline.append((round(now - started, 1), replicas))
        outcome.max_replicas = max(outcome.max_replicas, replicas)
        if stop_when(replicas):
            return
        time.sleep(1.0)


def measure(kubectl: Kubectl, mode: str, args: argparse.Namespace, *, stop_early: bool = False) -> Outcome:
    """One mode's run: ready, busy (load through the Service), idle. `stop_early` ends each phase once its
    scaling happened (the e2e test's reduced run); the benchmark runs both phases whole."""
    name = f"auto-{mode}"
    kubectl.run("apply", "--namespace", NAMESPACE, "-f", "-", stdin=json.dumps(autoscaled_cr(name, mode, args.max)))
    outcome = Outcome(mode)
    try:
        realpods.wait_for(lambda: replicas_of(kubectl, name) >= 1, 900, f"{name} ready", interval_s=2)
        service = kubectl.json("get", "service", name, "--namespace", NAMESPACE)
        url = f"http://{service['spec']['clusterIP']}:{realpods.OPENAI_PORT}"
        model = realpods.served_model(url)
        started = time.monotonic()
        with Load(url, model, args.streams, outcome, args.busy_seconds + 30):
            sample_replicas(kubectl, name, outcome, args.busy_seconds, started, lambda r: stop_early and r > 1)
        up = [t for t, r in outcome.timeline if r > 1]
        outcome.scaled_up_at_s = up[0] if up else None
        idle_started = time.monotonic() - started
        sample_replicas(kubectl, name, outcome, args.idle_seconds, started, lambda r: stop_early and r == 1)
        down = [t for t, r in outcome.timeline if t >= idle_started and r == 1]
        outcome.scaled_down_at_s = round(down[0] - idle_started, 1) if down and up else None
    finally:
        kubectl.run("delete", "gptoss", name, "--namespace", NAMESPACE, "--wait=true", check=False)
    return outcome


def install(kubectl: Kubectl, modes: list[str]) -> None:
    images = realpods.ensure_images(_run)
    kubectl.run("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-bench", "-f",
                str(REPO / "crds" / "gptossdeployments.gptoss.io.yaml"))  # fmt: skip
    for name in (NAMESPACE, OPERATOR_NAMESPACE, realpods.MIRROR_NAMESPACE):
        kubectl.run("apply", "-f", "-", stdin=json.dumps(realpods.restricted_namespace(name)))
    kubectl.run("apply", "-f", "-", stdin=realpods.to_yaml(realpods.mirror_manifests(images.runtime_cpu)))
    helm = _helm()
    values = realpods.operator_values(images, [NAMESPACE])
    values += ["--set", "crds.enabled=false", "--set", "operator.autoscalerIntervalSeconds=5"]
    _run([helm, "--kubeconfig", str(KUBECONFIG), "upgrade", "--install", RELEASE, str(realpods.CHART),
          "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout=5m", *values], "helm install")  # fmt: skip
    if "hpa" in modes:
        realpods.metrics_pipeline().ensure_up()


def uninstall(kubectl: Kubectl) -> None:
    """Remove the benchmark's release and namespaces (the metrics pipeline stays for other users)."""
    kubectl.run("delete", "gptoss", "--all", "--namespace", NAMESPACE, "--wait=true", check=False)
    subprocess.run(
        [_helm(), "--kubeconfig", str(KUBECONFIG), "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE],
        capture_output=True,
        timeout=120,
        check=False,
    )
    kubectl.run("delete", "namespace", NAMESPACE, OPERATOR_NAMESPACE, "--wait=false", "--ignore-not-found", check=False)


def _helm() -> str:
    import demo

    return str(demo.helm_binary(build=True))


def _run(argv: Any, what: str) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=3000, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy-seconds", type=float, default=90)
    parser.add_argument("--idle-seconds", type=float, default=90)
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams in the busy phase")
    parser.add_argument("--max", type=int, default=3, help="maxReplicas of the autoscaled deployment")
    parser.add_argument("--modes", default="operator,hpa")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.busy_seconds + args.idle_seconds > MAX_RUN_S or args.streams > 64:
        parser.error(f"keep busy+idle under {MAX_RUN_S:.0f}s and streams at most 64")
    modes = [m for m in args.modes.split(",") if m]
    kubectl = Kubectl(KUBECONFIG)
    install(kubectl, modes)
    results = {mode: measure(kubectl, mode, args) for mode in modes}
    for mode, outcome in results.items():
        print(f"{mode:>8}: {json.dumps(outcome.summary())}")
        print(f"{'':>8}  replicas over time (s, ready): {outcome.timeline[:: max(1, len(outcome.timeline) // 20)]}")
    if args.json:
        print(json.dumps({mode: outcome.summary() for mode, outcome in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
