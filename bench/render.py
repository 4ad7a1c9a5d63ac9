"""Plan + build of one GptOssDeployment, and of 1,000 varied ones: median time per CR.

    .venv/bin/python bench/render.py [--count 1000] [--repeat 200] [--json]

Goal: under 5 ms per CR (plan + every child, from a validated CR). Validation of the CR itself (pydantic)
is measured separately, since the reconciler receives each CR once per event.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from gptoss_operator.builders import ClusterFeatures, build_children
from gptoss_operator.cli import parse_deployment
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

GOAL_MS = 5.0
SAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "samples"
FEATURES = ClusterFeatures(pod_monitor=True, keda=True)


def varied_documents(count: int) -> list[dict[str, Any]]:
    """`count` distinct CRs cycling through the samples, models, GPUs, modes and replicas."""
    samples = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in sorted(SAMPLES.glob("*.yaml"))]
    products = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL", "NVIDIA-H200"]
    modes = ["operator", "hpa", "keda"]
    documents = []
    for index in range(count):
        document = json.loads(json.dumps(samples[index % len(samples)]))
        document["metadata"] = {"name": f"bench-{index}", "namespace": f"team-{index % 17}", "uid": f"uid-{index}"}
        spec = document["spec"]
        if spec["model"] == "gpt-oss-20b" or spec.get("gpu", {}).get("count") == 2:
            spec.setdefault("gpu", {})["product"] = products[index % len(products)]
        spec["replicas"] = 1 + index % 3
        spec["autoscaling"] = {
            "enabled": index % 2 == 0,
            "mode": modes[index % 3],
            "minReplicas": 1,
            "maxReplicas": 4,
            "prometheusAddress": "http://prometheus.monitoring:9090",
        }
        documents.append(document)
    return documents


def per_cr_ms(crs: list[Any], settings: OperatorSettings) -> float:
    start = time.perf_counter()
    for cr in crs:
        build_children(cr, plan(cr.spec, settings), settings, FEATURES)
    return (time.perf_counter() - start) * 1000 / len(crs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="CRs in the batch")
    parser.add_argument("--repeat", type=int, default=200, help="timed runs of the single CR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    settings = OperatorSettings()
    documents = varied_documents(args.count)
    start = time.perf_counter()
    crs = [parse_deployment(document) for document in documents]
    validate_ms = (time.perf_counter() - start) * 1000 / len(crs)

    single = [per_cr_ms([crs[0]], settings) for _ in range(args.repeat)]
    batches = [per_cr_ms(crs, settings) for _ in range(5)]
    result = {
        "single_cr_median_ms": round(statistics.median(single), 3),
        "batch_size": args.count,
        "batch_median_ms_per_cr": round(statistics.median(batches), 3),
        "validate_ms_per_cr": round(validate_ms, 3),
        "goal_ms_per_cr": GOAL_MS,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"plan + build, one CR:        {result['single_cr_median_ms']:.3f} ms (median of {args.repeat})")
    print(f"plan + build, {args.count} CRs:    {result['batch_median_ms_per_cr']:.3f} ms per CR (median of 5 runs)")
    print(f"CR validation (pydantic):    {result['validate_ms_per_cr']:.3f} ms per CR")
    verdict = "meets" if max(result["single_cr_median_ms"], result["batch_median_ms_per_cr"]) < GOAL_MS else "MISSES"
    print(f"goal: under {GOAL_MS} ms per CR: {verdict}")


if __name__ == "__main__":
    main()
