"""The chart's ServiceMonitor, PrometheusRule and dashboard ConfigMaps, and the operator's PodMonitor, are
accepted by a real kube-apiserver with the Prometheus Operator's real CRDs installed.

The test starts a private, throwaway control plane (kube-apiserver + etcd through `kwokctl --runtime
binary`, in a temporary work directory, never the shared e2e cluster) from the binaries the project's
tooling caches (`make cluster-binaries`, `make e2e-tools`), installs the upstream CRDs, applies the
objects with kubectl's strict field validation, reads them back, and deletes the cluster. It is skipped
when those binaries or CRDs are not cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_env import CHART_DIR, RELABEL_FILE, REPO_ROOT, RULES_FILE
from prometheus_harness import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CACHE = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
NAMESPACE = "gpt-oss-system"


# The versions the cluster tooling builds, so that a cache holding several (1.34 beside 1.36) is read right.
_VERSION_LINES = (REPO_ROOT / "e2e" / "cluster" / "versions.env").read_text().splitlines()
PINNED = dict(line.split("=", 1) for line in _VERSION_LINES if "=" in line and not line.startswith("#"))


def _cached(component: str, version_key: str) -> Path:
    """`component-<pinned version>` under the cache (e.g. bin/kubernetes-v1.36.3, not the oldest 1.34 beside it)."""
    path = CACHE / f"{component}-{PINNED[version_key]}"
    if not path.exists():
        pytest.skip(f"{path} is not cached: run `make cluster-binaries e2e-tools`")
    return path


LOOPBACK_KWOKCTL_CONFIG = """\
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  bindAddress: 127.0.0.1
"""


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.name = f"gptoss-monitoring-{uuid.uuid4().hex[:6]}"
        self.kubeconfig = workdir / "kubeconfig"
        self.env = {**os.environ, "KWOK_WORKDIR": str(workdir / "kwok"), "KWOK_KUBECTL_BINARY": str(KUBECTL)}
        self.kwokctl = _cached("bin/kwok", "KWOK_VERSION") / "kwokctl"
        kube = _cached("bin/kubernetes", "KUBE_VERSION")
        etcd = _cached("bin/etcd", "ETCD_VERSION")
        kwok = _cached("bin/kwok", "KWOK_VERSION")
        # A control plane of its own, on loopback only (the local cluster's kwokctl.yaml is a template for
        # that cluster, with its real node's addresses).
        config = workdir / "kwokctl.yaml"
        config.write_text(LOOPBACK_KWOKCTL_CONFIG)
        self._run(
            str(self.kwokctl),
            "--config",
            str(config),
            "create",
            "cluster",
            f"--name={self.name}",
            "--runtime=binary",
            f"--kubeconfig={self.kubeconfig}",
            f"--kube-apiserver-binary={kube / 'kube-apiserver'}",
            f"--kube-controller-manager-binary={kube / 'kube-controller-manager'}",
            f"--kube-scheduler-binary={kube / 'kube-scheduler'}",
            f"--etcd-binary={etcd / 'etcd'}",
            f"--kwok-controller-binary={kwok / 'kwok'}",
        )
        wait_for("the API server", lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0 or None)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(args, capture_output=True, text=True, timeout=180, env=self.env, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run(str(KUBECTL), f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", *args, check=check)

    def apply(self, path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Server-side apply with kubectl's default strict field validation: unknown fields are errors.
        return self.kubectl("apply", "--server-side", "--field-manager=monitoring-test", "-f", str(path), check=check)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        output = self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
        document: dict[str, Any] = json.loads(output)
        return document

    def delete(self) -> None:
        self._run(
            str(self.kwokctl),
            "delete",
            "cluster",
            f"--name={self.name}",
            f"--kubeconfig={self.kubeconfig}",
            check=False,
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not KUBECTL.exists():
        pytest.skip(f"{KUBECTL} is missing: make venv")
    crds = _cached("crds/prometheus-operator", "PROMETHEUS_OPERATOR_VERSION")
    created = Cluster(tmp_path_factory.mktemp("apiserver"))
    try:
        for kind in ("podmonitors", "servicemonitors", "prometheusrules"):
            created.apply(crds / f"monitoring.coreos.com_{kind}.yaml")
            created.kubectl("wait", "--for=condition=established", "--timeout=60s", f"crd/{kind}.monitoring.coreos.com")
        created.kubectl("create", "namespace", NAMESPACE)
        created.kubectl("create", "namespace", "llm")
        yield created
    finally:
        created.delete()


def _render_chart(tmp_path: Path) -> Path:
    helm = _cached("bin/helm", "HELM_VERSION") / "helm"
    args = [str(helm), "template", "gpt", str(CHART_DIR), "--namespace", NAMESPACE]
    for value in ("serviceMonitor.enabled=true", "prometheusRule.enabled=true", "dashboards.enabled=true"):
        args += ["--set", value]
    for template in ("servicemonitor", "prometheusrule", "dashboards"):
        args += ["--show-only", f"templates/monitoring-{template}.yaml"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "monitoring.yaml"
    path.write_text(result.stdout)
    return path


def test_chart_monitoring_objects_are_accepted_and_stored_unchanged(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply(_render_chart(tmp_path))
    rule = cluster.get("prometheusrule", "gpt-gpt-oss-operator", NAMESPACE)
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())  # nothing pruned
    monitor = cluster.get("servicemonitor", "gpt-gpt-oss-operator", NAMESPACE)
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    dashboards = cluster.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "grafana_dashboard=1", "-o", "name")
    assert len(dashboards.stdout.split()) == 2


def _pod_monitor(relabelings: list[dict[str, Any]]) -> dict[str, Any]:
    endpoint = yaml.safe_load(RELABEL_FILE.read_text())["endpoint"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "chat", "namespace": "llm"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "chat"}},
            "namespaceSelector": {"matchNames": ["llm"]},
            "podMetricsEndpoints": [{**endpoint, "relabelings": relabelings}],
        },
    }


def test_podmonitor_relabeling_is_accepted_and_a_typo_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    relabelings = yaml.safe_load(RELABEL_FILE.read_text())["relabelings"]
    good = tmp_path / "podmonitor.json"
    good.write_text(json.dumps(_pod_monitor(relabelings)))
    cluster.apply(good)
    stored = cluster.get("podmonitor", "chat", "llm")
    assert stored["spec"]["podMetricsEndpoints"][0]["relabelings"] == relabelings

    misspelt = [{**relabelings[0], "target_label": "namespace"}]
    bad = tmp_path / "misspelt.json"
    bad.write_text(json.dumps(_pod_monitor(misspelt)))
    result = cluster.apply(bad, check=False)
    assert result.returncode != 0
    assert "target_label" in result.stderr
