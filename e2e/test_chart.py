"""The Helm chart against the real API server: lint, install, upgrade, uninstall, and the operator running
with exactly the chart's RBAC (a kubeconfig holding a token of the chart's ServiceAccount), so a missing
permission fails a test.

The chart's operator pods themselves run under kwok (no container; placed there with the chart's nodeSelector and
tolerations values, away from the cluster's real node): they prove the pods pass Pod Security `restricted`
admission. The real operator process runs locally with the ServiceAccount's identity (the real-pod suite runs
the chart's operator from its image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Kubectl
from operator_process import OperatorProcess, Volumes, condition, load_sample, wait_for_condition

pytestmark = pytest.mark.cluster

# The chart's own placement values put its operator pods on kwok's nodes (kwok plays them Ready).
KWOK_PLACEMENT = (
    "--set", "nodeSelector.type=kwok",
    "--set-json", 'tolerations=[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]',
)  # fmt: skip

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "gpt-oss-operator"
CRD_NAME = "gptossdeployments.gptoss.io"
CRD_FILE = REPO / "crds" / f"{CRD_NAME}.yaml"
CACHE = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))


def helm_binary() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    versions = (REPO / "e2e" / "cluster" / "versions.env").read_text()
    match = re.search(r"^HELM_VERSION=(\S+)", versions, re.MULTILINE)
    pinned = CACHE / "bin" / f"helm-{match.group(1)}" / "helm" if match else None
    if pinned is not None and pinned.exists():
        return str(pinned)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail("helm is not built: run `make cluster-up` (it builds helm into ~/.cache/gpt-oss-operator/bin/)")


class Helm:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [helm_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def helm(kubeconfig: Path) -> Helm:
    return Helm(kubeconfig)


@pytest.fixture
def crd_adoptable(kubectl: Kubectl) -> None:
    """The CRD exists (other tests apply it with kubectl); mark it so that any release may adopt it."""
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=gptoss-e2e-chart", "-f", str(CRD_FILE))
    kubectl.wait(f"crd/{CRD_NAME}", "condition=Established", 60)


def adopt_crd(kubectl: Kubectl, release: str, namespace: str) -> None:
    kubectl("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    kubectl(
        "annotate",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
        "--overwrite",
    )


def service_account_kubeconfig(kubectl: Kubectl, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the same API server that authenticates as the ServiceAccount (and only that)."""
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    cluster = dict(config["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:  # inline it: the token kubeconfig must stand alone
        import base64

        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    token = kubectl("create", "token", account, "--namespace", namespace, "--duration=1h").strip()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e2e", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": account, "namespace": namespace}}],
                "current-context": "e2e",
            }
        )
    )
    path.chmod(0o600)
    return path


def release_name(namespace: str) -> str:
    return f"gptoss-{namespace[-6:]}"


@pytest.fixture
def release(helm: Helm, namespace: str, kubectl: Kubectl) -> Iterator[str]:
    name = release_name(namespace)
    yield name
    helm("uninstall", name, "--namespace", namespace, "--wait", check=False)
    kubectl(
        "delete", "clusterrole,clusterrolebinding", "-l", f"app.kubernetes.io/instance={name}", "--ignore-not-found"
    )


def rbac_denials(operator: OperatorProcess, account: str) -> list[str]:
    """Log lines where the API server refused the ServiceAccount by RBAC (not e.g. a namespace being deleted)."""
    return [
        line
        for line in operator.logs(tail=5000).splitlines()
        if (f':{account}" cannot ' in line or "Not enough permissions" in line)
    ]


def test_lint(helm: Helm) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def run_sample_with_chart_rbac(
    kubectl: Kubectl,
    namespace: str,
    account: str,
    watch: list[str],
    tmp_path: Path,
    kubeconfig: Path,
) -> None:
    token_config = service_account_kubeconfig(kubectl, namespace, account, tmp_path / "sa.kubeconfig")
    kubectl_ns = kubectl.in_namespace(namespace)
    volumes = Volumes(kubectl, namespace)
    try:
        with OperatorProcess(token_config, watch, tmp_path / "operator.log") as operator:
            kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
            cr = wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
            assert condition(cr, "CapacityAvailable")["status"] == "True"  # nodes and pods were readable
            kubectl_ns("scale", "gptoss/gpt-oss-20b", "--replicas=2")
            wait_for_condition(kubectl_ns, "gpt-oss-20b", "Ready", "True", volumes=volumes, operator=operator)
            assert rbac_denials(operator, account) == []
            kubectl_ns("delete", "gptoss", "gpt-oss-20b", "--wait=true", timeout=60)
    finally:
        volumes.delete_all()


def test_install_upgrade_uninstall_with_cluster_wide_rbac(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str, crd_adoptable: None, tmp_path: Path, kubeconfig: Path
) -> None:
    adopt_crd(kubectl, release, namespace)
    helm("install", release, str(CHART), "--namespace", namespace, *KWOK_PLACEMENT, "--wait", "--timeout", "180s")
    fullname = f"{release}-gpt-oss-operator"
    deployment = kubectl.json("get", "deployment", fullname, "--namespace", namespace)
    # Both replicas (a leader and a standby, by default) passed Pod Security "restricted".
    assert deployment["status"].get("availableReplicas") == 2
    crd = kubectl.json("get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep"  # templates/crd.yaml adopted it

    run_sample_with_chart_rbac(kubectl, namespace, fullname, [], tmp_path, kubeconfig)

    helm("upgrade", release, str(CHART), "--namespace", namespace, *KWOK_PLACEMENT, "--set", "operator.logLevel=DEBUG",
         "--wait")  # fmt: skip
    container = kubectl.json("get", "deployment", fullname, "--namespace", namespace)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert {"name": "GPTOSS_LOG_LEVEL", "value": "DEBUG"} in container["env"]

    helm("uninstall", release, "--namespace", namespace, "--wait")
    leftovers = kubectl(
        "get", "deployment,serviceaccount,service,clusterrole,clusterrolebinding",
        "--all-namespaces", "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
    )  # fmt: skip
    assert leftovers.strip() == ""
    assert kubectl.run("get", "crd", CRD_NAME, check=False).returncode == 0  # kept on uninstall


def test_namespaced_rbac_is_enough_for_a_namespaced_operator(
    helm: Helm, kubectl: Kubectl, namespace: str, release: str, crd_adoptable: None, tmp_path: Path, kubeconfig: Path
) -> None:
    helm(
        "install", release, str(CHART), "--namespace", namespace, *KWOK_PLACEMENT,
        "--set", "crds.enabled=false", "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "180s",
    )  # fmt: skip
    fullname = f"{release}-gpt-oss-operator"
    roles = kubectl.json("get", "roles", "--namespace", namespace, "-l", f"app.kubernetes.io/instance={release}")
    # The watched namespace's Role, and the leader-election Lease's.
    assert sorted(r["metadata"]["name"] for r in roles["items"]) == [fullname, f"{fullname}-leader-election"]
    account = f"system:serviceaccount:{namespace}:{fullname}"
    can_cluster_wide = kubectl.run(
        "auth", "can-i", "list", "gptossdeployments", "--all-namespaces", "--as", account, check=False
    )
    assert can_cluster_wide.stdout.strip() == "no"
    # A token Secret's mark is read by GET (metadata only, docs/security.md); Secrets are never listed or watched.
    for verb, expected in (("get", "yes"), ("list", "no"), ("watch", "no")):
        answer = kubectl.run("auth", "can-i", verb, "secrets", "--namespace", namespace, "--as", account, check=False)
        assert answer.stdout.strip() == expected, verb
    finalizers = kubectl.run(
        "auth", "can-i", "update", "gptossdeployments", "--subresource=finalizers", "--namespace", namespace,
        "--as", account, check=False,
    )  # fmt: skip
    assert finalizers.stdout.strip() == "yes"  # blockOwnerDeletion on its children

    run_sample_with_chart_rbac(kubectl, namespace, fullname, [namespace], tmp_path, kubeconfig)
