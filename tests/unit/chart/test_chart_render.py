"""The Helm chart rendered with the real helm for several value sets, every object checked.

Needs the helm binary the cluster tooling builds (~/.cache/gpt-oss-operator/bin/helm-<version>/helm, or
$HELM). Without it these tests skip, except in CI (CI set), where a missing helm is a failure. They carry
the `cluster` marker so that `make test` runs them after that build (they need no running cluster).
manifests/install.yaml is rendered by hack/render-install.py (`make crds` runs it); a test here fails when it drifts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gptoss_operator import names
from gptoss_operator.settings import OperatorSettings, StandInResources

pytestmark = pytest.mark.cluster  # runs once the cluster tooling (helm) is built; needs no API server

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "gpt-oss-operator"
RENDER_INSTALL = REPO / "hack" / "render-install.py"
CACHE = Path(os.environ.get("GPTOSS_CACHE", Path.home() / ".cache" / "gpt-oss-operator"))
RELEASE = "gpt-oss-operator"
RELEASE_NAMESPACE = "gpt-oss-system"
KUBE_SCHEMA_VERSION = "1.36.0"  # the local control plane's minor (e2e/cluster/versions.env)
CRD_FILE = "gptossdeployments.gptoss.io.yaml"
KUBE_VERSION_ARGS = ("--kube-version", f"v{KUBE_SCHEMA_VERSION}")  # offline renders assume an old default


def helm_binary() -> str:
    """The helm the project builds (pinned in e2e/cluster/versions.env), $HELM, or helm on PATH."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    versions = (REPO / "e2e" / "cluster" / "versions.env").read_text()
    match = re.search(r"^HELM_VERSION=(\S+)", versions, re.MULTILINE)
    if match:
        pinned = CACHE / "bin" / f"helm-{match.group(1)}" / "helm"
        if pinned.exists():
            return str(pinned)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    message = "helm is not built yet (make cluster-up builds it into ~/.cache/gpt-oss-operator/bin/helm-<version>/)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(*sets: str, include_crds: bool = False) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *KUBE_VERSION_ARGS]
    if include_crds:
        args.append("--include-crds")
    for value in sets:
        # A label value such as "true" must stay a string: `string:` marks a --set-string value.
        args += ["--set-string", value.removeprefix("string:")] if value.startswith("string:") else ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "namespaced": ("watchNamespaces={team-a,team-b}",),
    "no-crds": ("crds.enabled=false",),
    "crds-not-kept": ("crds.keep=false",),
    "existing-service-account": ("serviceAccount.create=false", "serviceAccount.name=ops"),
    "text-logs": ("operator.logFormat=text", "operator.logLevel=DEBUG", "operator.defaultImage=registry.local/srv:1"),
    "monitoring": ("serviceMonitor.enabled=true", "prometheusRule.enabled=true", "dashboards.enabled=true"),
    # Confined: no cluster-wide pod reads, no aggregated user roles, an endpoint allow-list (docs/security.md).
    "confined": (
        "rbac.clusterWidePodReads=false",
        "rbac.aggregateToDefaultRoles=false",
        "operator.weightsAllowedEndpoints={https://hub.example,http://mirror.example:8080/hf}",
    ),
    # The local cluster with a real node: a locally built image, the CPU stand-in and the in-cluster mirror.
    "cpu-stand-in": (
        "image.repository=localhost/gpt-oss-operator",
        "image.tag=dev",
        "image.pullPolicy=Never",
        "operator.cpuStandIn.enabled=true",
        "operator.cpuStandIn.resources.server.requests.cpu=200m",
        "operator.weightsMirrorEndpoint=http://hf-mirror.gpt-oss-system.svc:8080",
    ),
}


@pytest.fixture(params=sorted(VALUE_SETS), scope="module")
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(*VALUE_SETS[request.param])


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment


# --------------------------------------------------------------------------------------- validity
BUILT_IN_API_GROUPS = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "apiextensions.k8s.io/v1")


def test_every_built_in_object_is_valid(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    assert docs
    for doc in docs:
        if doc["apiVersion"] in BUILT_IN_API_GROUPS:
            kubernetes_validate.validate(doc, KUBE_SCHEMA_VERSION, strict=True)


def test_names_are_unique(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), keys


def test_every_object_carries_the_chart_labels(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/instance") == RELEASE, doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"


# ------------------------------------------------------------------------------------ pod security
def test_operator_pod_meets_restricted_pod_security(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for volume in pod.get("volumes") or []:
        assert "hostPath" not in volume
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        assert context.get("privileged") is not True
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]


def test_operator_probes_use_the_health_port() -> None:
    container = operator_deployment(render())["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_two_replicas_elect_a_leader_spread_over_nodes_with_a_budget() -> None:
    docs = render()
    spec = operator_deployment(docs)["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["GPTOSS_LEADER_ELECTION"] == "true"
    assert env["GPTOSS_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (budget,) = of_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    lease_rules = [r for role in of_kind(docs, "Role") for r in role["rules"] if "leases" in r["resources"]]
    assert {verb for r in lease_rules for verb in r["verbs"]} == {"create", "get", "patch"}


def test_without_leader_election_one_replica_never_overlaps() -> None:
    docs = render("leaderElection.enabled=false,replicas=1")
    spec = operator_deployment(docs)["spec"]
    assert spec["strategy"]["type"] == "Recreate"  # two operators without a Lease must never run at once
    assert not of_kind(docs, "PodDisruptionBudget")
    assert operator_deployment(render("replicas=0"))["spec"]["replicas"] == 0
    result = helm(
        "template", RELEASE, str(CHART), *KUBE_VERSION_ARGS, "--set", "leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0  # the default 2 replicas without a Lease is refused
    assert "replicas" in result.stderr


def test_one_metrics_service_in_every_value_set(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    services = [s["metadata"]["name"] for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert services == [f"{RELEASE}-metrics"]


def test_service_monitor_without_its_service_is_refused() -> None:
    sets = ("--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false")
    result = helm("template", RELEASE, str(CHART), *KUBE_VERSION_ARGS, *sets, check=False)
    assert result.returncode != 0
    assert "metrics.service.enabled=true" in result.stderr


# --------------------------------------------------------------------------------------- settings
def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def settings_of(docs: list[dict[str, Any]], monkeypatch: Any) -> OperatorSettings:
    """The operator's settings from exactly the rendered Deployment's environment (the test's GPTOSS_* cleared)."""
    for key in list(os.environ):
        if key.startswith("GPTOSS_"):
            monkeypatch.delenv(key)
    for key, value in env_of(docs).items():
        monkeypatch.setenv(key, value)
    return OperatorSettings()  # pydantic validates every value the chart passes


def test_env_maps_onto_operator_settings(rendered: tuple[str, list[dict[str, Any]]], monkeypatch: Any) -> None:
    _, docs = rendered
    env = env_of(docs)
    fields = {f"GPTOSS_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= fields, f"env without a settings field: {set(env) - fields}"
    settings = settings_of(docs, monkeypatch)
    assert settings.metrics_port == 8080
    assert settings.health_port == 8081


def test_values_reach_the_settings(monkeypatch: Any) -> None:
    env = env_of(render(*VALUE_SETS["text-logs"], *VALUE_SETS["namespaced"]))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert settings.log_format == "text"
    assert settings.log_level == "DEBUG"
    assert settings.default_image == "registry.local/srv:1"
    assert settings.namespaces == ["team-a", "team-b"]


def test_cpu_stand_in_and_mirror_reach_the_settings(monkeypatch: Any) -> None:
    docs = render(*VALUE_SETS["cpu-stand-in"])
    settings = settings_of(docs, monkeypatch)
    assert settings.engine_stand_in == "reference"
    assert settings.weights_mirror_endpoint == "http://hf-mirror.gpt-oss-system.svc:8080"
    assert settings.stand_in_resources.server.manifest() == {
        "requests": {"cpu": "200m", "memory": "768Mi"},
        "limits": {"memory": "2Gi"},
    }
    assert settings.stand_in_resources.gateway == StandInResources().gateway


def test_placement_values_reach_the_settings(monkeypatch: Any) -> None:
    docs = render(
        "string:operator.serverNodeSelector.gptoss\\.dev/real-node=true",
        "operator.fetch.nodeSelector.role=download",
        "operator.fetch.tolerations[0].key=nvidia.com/gpu",
        "operator.fetch.tolerations[0].operator=Exists",
        "operator.fetch.priorityClassName=low",
    )
    settings = settings_of(docs, monkeypatch)
    assert settings.server_node_selector == {"gptoss.dev/real-node": "true"}
    assert settings.fetch_node_selector == {"role": "download"}
    assert [t.manifest() for t in settings.fetch_tolerations] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert settings.fetch_priority_class_name == "low"


def test_fetch_mirror_values_reach_the_settings(monkeypatch: Any) -> None:
    docs = render(
        "operator.fetcherImage=registry.corp.example/fetcher:1",
        "operator.fetch.proxy=http://proxy.corp.example:3128",
        "operator.fetch.noProxy=.svc\\,.cluster.local",
        "operator.fetch.caBundle.configMapName=corp-ca",
    )
    settings = settings_of(docs, monkeypatch)
    assert settings.fetcher_image == "registry.corp.example/fetcher:1"
    assert settings.fetch_proxy == "http://proxy.corp.example:3128"
    assert settings.fetch_no_proxy == ".svc,.cluster.local"
    assert (settings.fetch_ca_bundle_config_map, settings.fetch_ca_bundle_key) == ("corp-ca", "ca-bundle.crt")


def test_a_proxy_that_is_no_url_is_refused_by_the_chart() -> None:
    sets = ("--set", "operator.fetch.proxy=proxy.corp.example:3128")
    result = helm("template", RELEASE, str(CHART), *KUBE_VERSION_ARGS, *sets, check=False)
    assert result.returncode != 0
    assert "proxy" in result.stderr


def test_defaults_run_tensorrt_llm_from_the_public_hub() -> None:
    env = env_of(render())
    assert not {"GPTOSS_ENGINE_STAND_IN", "GPTOSS_STAND_IN_RESOURCES", "GPTOSS_WEIGHTS_MIRROR_ENDPOINT"} & set(env)


def test_the_operator_runs_from_a_locally_built_image() -> None:
    container = operator_deployment(render(*VALUE_SETS["cpu-stand-in"]))["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "localhost/gpt-oss-operator:dev"
    assert container["imagePullPolicy"] == "Never"


def test_an_unknown_stand_in_value_is_rejected() -> None:
    sets = ("--set", "operator.cpuStandIn.engine=gpu")
    result = helm("template", RELEASE, str(CHART), *KUBE_VERSION_ARGS, *sets, check=False)
    assert result.returncode != 0
    assert "engine" in result.stderr


# -------------------------------------------------------------------------------------------- RBAC
AGGREGATION_LABEL_PREFIX = "rbac.authorization.k8s.io/aggregate-to-"


def is_aggregated(role: dict[str, Any]) -> bool:
    """A ClusterRole that extends the built-in view/edit/admin roles for users (not the operator's)."""
    return any(key.startswith(AGGREGATION_LABEL_PREFIX) for key in role["metadata"].get("labels", {}))


def rules_of(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The rules of the operator's own roles."""
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role") and not is_aggregated(doc):
            for rule in doc["rules"]:
                yield doc, rule


def test_rbac_has_no_wildcards_and_reads_no_secret_data(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for role, rule in rules_of(docs):
        for key in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: wildcard in {key}"
        if "secrets" in rule.get("resources", []):  # a token Secret's mark, read as metadata only
            assert rule["verbs"] == ["get"] and rule["resources"] == ["secrets"]
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
        if "update" in rule["verbs"]:  # only for blockOwnerDeletion on the children
            assert rule["resources"] == ["gptossdeployments/finalizers"]


def granted(docs: list[dict[str, Any]], kind: str, group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for role, rule in rules_of(docs):
        if role["kind"] == kind and group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_cluster_wide_rbac_by_default() -> None:
    docs = render()
    assert granted(docs, "ClusterRole", "gptoss.io", "gptossdeployments") == {"get", "list", "watch", "patch"}
    assert granted(docs, "ClusterRole", "gptoss.io", "gptossdeployments/status") == {"patch"}
    assert granted(docs, "ClusterRole", "apps", "deployments") == {"get", "list", "watch", "create", "patch", "delete"}
    assert granted(docs, "ClusterRole", "", "nodes") == {"list", "watch"}
    assert [r["metadata"]["name"] for r in of_kind(docs, "Role")] == [f"{RELEASE}-leader-election"]  # the Lease
    bindings = of_kind(docs, "ClusterRoleBinding")
    assert {b["subjects"][0]["name"] for b in bindings} == {RELEASE}


def test_namespaced_rbac_when_watching_a_list() -> None:
    docs = render(*VALUE_SETS["namespaced"])
    roles = [r for r in of_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = [b for b in of_kind(docs, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert granted(docs, "ClusterRole", "gptoss.io", "gptossdeployments") == set()  # only in the Roles
    assert granted(docs, "Role", "gptoss.io", "gptossdeployments") == {"get", "list", "watch", "patch"}
    assert granted(docs, "ClusterRole", "", "nodes") == {"list", "watch"}  # capacity is cluster-wide


def test_rbac_covers_every_kind_the_operator_manages() -> None:
    from gptoss_operator import builders

    docs = render()
    for kind in builders.MANAGED_KINDS:
        verbs = granted(docs, "ClusterRole", kind.group, kind.plural)
        assert {"list", "create", "patch", "delete"} <= verbs, f"{kind.kind}: {verbs}"


def test_existing_service_account_is_bound() -> None:
    docs = render(*VALUE_SETS["existing-service-account"])
    assert of_kind(docs, "ServiceAccount") == []
    assert operator_deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert all(b["subjects"][0]["name"] == "ops" for b in of_kind(docs, "ClusterRoleBinding"))


# --------------------------------------------------------------------------------------------- CRD
def test_crd_ships_from_exactly_one_place() -> None:
    assert (CHART / "files" / "crds" / CRD_FILE).is_file(), "run `make crds` (it writes the chart's files/crds/)"
    assert not (CHART / "crds").exists(), (
        "the CRD ships as charts/gpt-oss-operator/files/crds/ (templated: crds.enabled, crds.keep); a crds/ folder "
        "would make helm install it a second time"
    )


def test_crd_template_honours_enabled_and_keep() -> None:
    (crd,) = of_kind(render(), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == names.CRD_NAME
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (not_kept,) = of_kind(render("crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    assert of_kind(render("crds.enabled=false"), "CustomResourceDefinition") == []


# ------------------------------------------------------------------------------------------ values
def walk_schema(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in (node.get("properties") or {}).items():
        yield f"{path}.{key}", child
        yield from walk_schema(child, f"{path}.{key}")


def test_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for path, node in walk_schema(schema, "values"):
        assert node.get("description"), f"{path} has no description"

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)

    def leaves(value: Any, path: str) -> Iterator[str]:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                yield from leaves(child, f"{path}.{key}")
        else:
            yield path

    described = {p for p, _ in walk_schema(schema, "values")}
    for leaf in leaves(values, "values"):
        assert leaf in described or any(leaf.startswith(d + ".") for d in described), f"{leaf} not in the schema"


def test_unknown_value_is_rejected() -> None:
    result = helm("template", RELEASE, str(CHART), *KUBE_VERSION_ARGS, "--set", "watchNamespace=team-a", check=False)
    assert result.returncode != 0
    assert "watchNamespace" in result.stderr


def test_notes_show_the_first_apply() -> None:
    result = helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", RELEASE_NAMESPACE)
    assert "kubectl apply" in result.stdout
    assert "gpt-oss-20b" in result.stdout


def test_lint() -> None:
    result = helm("lint", "--strict", str(CHART), *KUBE_VERSION_ARGS)
    assert "0 chart(s) failed" in result.stdout


# ------------------------------------------------------------------------------------ install.yaml
def test_install_manifest_matches_the_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(RENDER_INSTALL), "--check"],
        env={**os.environ, "HELM": helm_binary()},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"manifests/install.yaml: {result.stderr.strip()}"


def test_install_manifest_ships_the_templated_crd() -> None:
    docs = [doc for doc in yaml.safe_load_all((REPO / "manifests" / "install.yaml").read_text()) if doc]
    assert [doc["kind"] for doc in docs][:1] == ["Namespace"]
    (crd,) = of_kind(docs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
