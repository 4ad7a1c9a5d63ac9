"""Render the pipeline's two configuration files from the project's own sources (called by up.sh).

- ``prometheus OUT DISCOVERY_URL INTERVAL``: prometheus.yml with the ``gpt-oss-pods`` job of
  monitoring/scrape-config.yaml (the scrape config the project ships for clusters without the Prometheus
  Operator: pods found by their prometheus.io/* annotations, relabeled like the PodMonitor), at a shorter
  scrape interval. Its relabeling runs unchanged; only the discovery changes: Debian's Prometheus has no
  Kubernetes discovery, so pod_discovery.py serves the same ``__meta_kubernetes_*`` targets over HTTP
  service discovery.
- ``adapter OUT`` (stdin: ``helm template`` output): the adapter's config.yaml taken out of the chart's
  prometheus-adapter-rules ConfigMap, so that the rules the chart renders are the ones served.

Only PyYAML; no pytest, no cluster access.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parent.parent.parent
SCRAPE_CONFIG: Final = REPO / "monitoring" / "scrape-config.yaml"
POD_JOB: Final = "gpt-oss-pods"
RULES_CONFIGMAP_SUFFIX: Final = "-prometheus-adapter-rules"


class RenderError(RuntimeError):
    """A source did not contain what the pipeline needs; the message names it."""


def prometheus_config(discovery_url: str, interval: str) -> dict[str, Any]:
    jobs = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    pod_jobs = [job for job in jobs if job["job_name"] == POD_JOB]
    if not pod_jobs:
        raise RenderError(f"{SCRAPE_CONFIG} has no job '{POD_JOB}'")
    job = pod_jobs[0]
    job["scrape_interval"] = interval
    job["scrape_timeout"] = interval
    roles = [discovery["role"] for discovery in job.pop("kubernetes_sd_configs")]
    if roles != ["pod"]:
        raise RenderError(f"job '{POD_JOB}' discovers {roles}; pod_discovery.py serves role pod only")
    job["http_sd_configs"] = [{"url": discovery_url, "refresh_interval": interval}]
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": [job]}


def adapter_config(helm_output: str) -> str:
    for document in yaml.safe_load_all(helm_output):
        if not document or document.get("kind") != "ConfigMap":
            continue
        if document["metadata"]["name"].endswith(RULES_CONFIGMAP_SUFFIX):
            text: str = document["data"]["config.yaml"]
            if not yaml.safe_load(text).get("rules"):
                raise RenderError("the chart's prometheus-adapter rules ConfigMap has no rules")
            return text
    raise RenderError(
        "helm template rendered no '*-prometheus-adapter-rules' ConfigMap; "
        "render with --set prometheusAdapter.rules.enabled=true"
    )


def main(argv: list[str]) -> int:
    usage = "usage: render_config.py prometheus OUT DISCOVERY_URL INTERVAL | adapter OUT < helm-template-output"
    if len(argv) == 4 and argv[0] == "prometheus":
        out, discovery_url, interval = argv[1:]
        Path(out).write_text(yaml.safe_dump(prometheus_config(discovery_url, interval), sort_keys=False))
    elif len(argv) == 2 and argv[0] == "adapter":
        Path(argv[1]).write_text(adapter_config(sys.stdin.read()))
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RenderError as error:
        print(f"render_config: {error}", file=sys.stderr)
        sys.exit(1)
