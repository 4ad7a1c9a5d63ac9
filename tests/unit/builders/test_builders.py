"""What the builders must guarantee, asserted on the built objects (the golden files pin the rest)."""

from __future__ import annotations

from typing import Any

import pytest
from builders_support import SETTINGS, by_kind, children, cr_files, cr_from, fixture, load_cr, one, sample

from gptoss_operator import names
from gptoss_operator.builders import MANAGED_KINDS, BuildContext, ClusterFeatures, build_children
from gptoss_operator.builders.context import child_name, label_value
from gptoss_operator.builders.weights import download_job_name
from gptoss_operator.planner import plan
from gptoss_runtime import contract

NO_FEATURES = ClusterFeatures()


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def server(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(c for c in pod_spec(objects)["containers"] if c["name"] == "server")


def volume(objects: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((v for v in pod_spec(objects)["volumes"] if v["name"] == name), None)


def all_pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["spec"]["template"]["spec"] for item in objects if item["kind"] in ("Deployment", "Job")]


# ------------------------------------------------------------------------------------------ GPUs
def test_two_gpu_sample_asks_two_gpus_and_mounts_a_memory_backed_dev_shm() -> None:
    objects = children(sample("gpt-oss-120b-2xh100"))

    resources = server(objects)["resources"]
    assert resources["limits"][names.GPU_RESOURCE] == "2"
    assert resources["requests"][names.GPU_RESOURCE] == "2"
    shm = volume(objects, "dshm")
    assert shm is not None
    assert shm["emptyDir"]["medium"] == "Memory"
    assert shm["emptyDir"]["sizeLimit"] == "32Gi"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server(objects)["volumeMounts"]


def test_20b_sample_asks_one_gpu() -> None:
    resources = server(children(sample("gpt-oss-20b")))["resources"]
    assert resources["limits"][names.GPU_RESOURCE] == "1"
    assert resources["requests"][names.GPU_RESOURCE] == "1"


def test_pods_require_the_gpu_product_and_tolerate_the_gpu_taint() -> None:
    spec = pod_spec(children(sample("gpt-oss-20b")))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": names.GPU_PRODUCT_LABEL, "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]}
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_user_affinity_terms_each_get_the_gpu_rule_and_placement_passes_through() -> None:
    spec = pod_spec(children(fixture("gpt-oss-20b-hpa")))
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    for term in terms:
        assert term["matchExpressions"][0]["key"] == "topology.kubernetes.io/zone"
        assert term["matchExpressions"][-1]["key"] == names.GPU_PRODUCT_LABEL
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["nodeSelector"] == {"acme.io/pool": "inference"}
    assert spec["priorityClassName"] == "inference-high"
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["imagePullSecrets"] == [{"name": "acme-registry"}]
    assert len(spec["tolerations"]) == 2


def test_alias_gpu_product_matches_both_spellings() -> None:
    cr = cr_from({"model": "gpt-oss-20b", "gpu": {"product": "NVIDIA-H100-SXM5-80GB"}})
    terms = pod_spec(children(cr))["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    values = terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    assert values == ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB"]


# ------------------------------------------------------------------------------- rollout, security
@pytest.mark.parametrize("replicas", [1, 3])
def test_rollout_never_needs_a_spare_gpu(replicas: int) -> None:
    deployment = one(children(cr_from({"model": "gpt-oss-20b", "replicas": replicas})), "Deployment")
    assert deployment["spec"]["replicas"] == replicas
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


@pytest.mark.parametrize("cr_file", cr_files(), ids=lambda path: path.name)
def test_every_container_runs_restricted(cr_file: Any) -> None:
    for spec in all_pod_specs(children(load_cr(cr_file))):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        for item in spec["volumes"]:
            assert set(item) - {"name"} <= {"configMap", "emptyDir", "ephemeral", "persistentVolumeClaim", "secret"}


def test_server_probes_allow_a_long_start() -> None:
    container = server(children(sample("gpt-oss-120b-2xh100")))
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60


def test_with_the_gateway_the_kubelet_probes_the_metrics_port_and_the_gateway_not_triton() -> None:
    objects = children(sample("gpt-oss-20b"))
    container = server(objects)
    # Triton's HTTP port is on the pod's loopback, which the kubelet (calling the pod IP) cannot reach.
    assert container["startupProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert "readinessProbe" not in container  # the gateway's /readyz asks Triton whether the model is ready
    gateway = next(c for c in pod_spec(objects)["containers"] if c["name"] == "gateway")
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "openai"}
    probed = {probe["httpGet"]["port"] for c in pod_spec(objects)["containers"] for probe in _probes(c)}
    assert probed <= {name for c in pod_spec(objects)["containers"] for name in _port_names(c)}


def test_the_grace_period_covers_the_gateway_drain_and_tritons_exit() -> None:
    from gptoss_runtime.gateway.drain import DRAIN_TIMEOUT_SECONDS
    from gptoss_runtime.launcher import DEFAULT_EXIT_TIMEOUT_SECONDS

    objects = children(sample("gpt-oss-20b"))
    grace = pod_spec(objects)["terminationGracePeriodSeconds"]
    gateway = next(c for c in pod_spec(objects)["containers"] if c["name"] == "gateway")
    assert "--drain-timeout" not in gateway["command"]  # the gateway's default applies
    # Both containers get SIGTERM at once: the streams finish inside the drain, Triton waits for them,
    # and both must exit before the kubelet's SIGKILL.
    assert grace > DEFAULT_EXIT_TIMEOUT_SECONDS > DRAIN_TIMEOUT_SECONDS


def test_without_the_gateway_triton_serves_and_is_probed_on_its_http_port() -> None:
    container = server(children(fixture("gpt-oss-20b-hpa")))
    assert "--triton-address" not in container["command"]
    assert _port_names(container) == ["http", "grpc", "metrics"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def _probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return [container[kind] for kind in kinds if "httpGet" in container.get(kind, {})]


def _port_names(container: dict[str, Any]) -> list[str]:
    return [port["name"] for port in container.get("ports", [])]


def test_server_reads_the_plan_and_the_weights_read_only() -> None:
    objects = children(sample("gpt-oss-20b"))
    container = server(objects)
    assert container["command"][:8] == [
        "gptoss-runtime", "serve", "--engine", "trtllm",
        "--plan", contract.PLAN_PATH, "--weights", contract.WEIGHTS_DIR,
    ]  # fmt: skip
    assert "--require-marker" in container["command"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["plan"] == {"name": "plan", "mountPath": contract.PLAN_DIR, "readOnly": True}
    assert mounts["weights"]["readOnly"] is True
    config_map = one(objects, "ConfigMap")
    assert volume(objects, "plan") == {"name": "plan", "configMap": {"name": config_map["metadata"]["name"]}}
    cr = sample("gpt-oss-20b")
    assert config_map["data"] == {contract.PLAN_FILE_NAME: plan(cr.spec, SETTINGS).to_json()}


def test_openai_gateway_is_a_second_container_and_a_service_port() -> None:
    objects = children(sample("gpt-oss-20b"))
    gateway = next(c for c in pod_spec(objects)["containers"] if c["name"] == "gateway")
    assert gateway["command"][:2] == ["gptoss-runtime", "gateway"]
    assert f"127.0.0.1:{contract.GRPC_PORT}" in gateway["command"]
    ports = {p["name"]: p["port"] for p in one(objects, "Service")["spec"]["ports"]}
    assert ports == {"metrics": 8002, "openai": 9000}  # Triton's HTTP and gRPC are the gateway's alone
    command = server(objects)["command"]
    assert command[command.index("--triton-address") + 1] == "127.0.0.1"
    assert _port_names(server(objects)) == ["metrics"]

    without = children(fixture("gpt-oss-20b-hpa"))
    assert [c["name"] for c in pod_spec(without)["containers"]] == ["server"]
    ports = {p["name"]: p["port"] for p in one(without, "Service")["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_pod_template_annotations_roll_on_plan_changes_not_on_scale() -> None:
    base = {"model": "gpt-oss-20b"}
    first = one(children(cr_from({**base, "replicas": 1})), "Deployment")
    scaled = one(children(cr_from({**base, "replicas": 4})), "Deployment")
    replanned = one(children(cr_from({**base, "engine": {"maxSeqLen": 8192}})), "Deployment")

    def annotations(deployment: dict[str, Any]) -> dict[str, str]:
        result: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return result

    assert annotations(first) == annotations(scaled)
    assert annotations(first)[names.ANNOTATION_PLAN_HASH] != annotations(replanned)[names.ANNOTATION_PLAN_HASH]
    assert annotations(first)[names.ANNOTATION_TEMPLATE_HASH] != annotations(replanned)[names.ANNOTATION_TEMPLATE_HASH]
    assert first["metadata"]["annotations"][names.ANNOTATION_GENERATION] == "1"


def test_scrape_annotations_follow_the_spec() -> None:
    on = one(children(sample("gpt-oss-20b")), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    off = one(children(fixture("gpt-oss-120b-keda")), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert on["prometheus.io/scrape"] == "true"
    assert on["prometheus.io/port"] == str(contract.METRICS_PORT)
    assert "prometheus.io/scrape" not in off


def test_resources_default_and_merge_but_gpus_come_from_the_plan() -> None:
    defaults = server(children(cr_from({"model": "gpt-oss-120b"})))["resources"]
    assert defaults["requests"]["cpu"] == "8"  # 4 per GPU x 2
    assert defaults["limits"]["memory"] == defaults["requests"]["memory"]
    custom = server(children(fixture("gpt-oss-20b-hpa")))["resources"]
    assert custom["requests"]["cpu"] == "6"
    assert custom["limits"]["cpu"] == "12"


# ------------------------------------------------------------------------------------------- weights
def test_weights_pvc_and_job_for_a_download() -> None:
    objects = children(fixture("gpt-oss-20b-hpa"))
    pvc = one(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "chat-20b-weights"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "40Gi"
    assert pvc["spec"]["storageClassName"] == "fast-rwx"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    job = one(objects, "Job")
    assert "ttlSecondsAfterFinished" not in job["spec"]
    fetch = job["spec"]["template"]["spec"]["containers"][0]
    assert fetch["image"] == SETTINGS.fetcher_image  # the operator's fetcher, never the CR's image
    command = fetch["command"]
    assert command[:3] == ["gptoss-runtime", "fetch", "--repo"]
    assert "--token-file" in command
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["hf-token"]["secret"]["secretName"] == "hf-token"


def test_no_token_volume_without_a_token_secret() -> None:
    job = one(children(sample("gpt-oss-20b")), "Job")
    assert "--token-file" not in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert all("secret" not in v for v in job["spec"]["template"]["spec"]["volumes"])


def test_job_name_changes_with_the_revision_and_fits_a_label() -> None:
    def job_name(revision: str, name: str = "m") -> str:
        cr = cr_from({"model": "gpt-oss-20b", "weights": {"huggingFace": {"revision": revision}}})
        # Past the API's name bound on purpose (model_copy skips validation): the builder must cope anyway.
        cr = cr.model_copy(update={"metadata": cr.metadata.model_copy(update={"name": name})})
        ctx = BuildContext(cr=cr, plan=plan(cr.spec, SETTINGS), settings=SETTINGS)
        return download_job_name(ctx)

    assert job_name("main") == job_name("main")
    assert job_name("main") != job_name("abc123")
    long_name = job_name("main", name="x" * 200)
    assert len(long_name) <= 63


def test_existing_claim_has_no_pvc_no_job_and_mounts_the_sub_path() -> None:
    objects = children(fixture("gpt-oss-20b-existing-claim"))
    assert by_kind(objects, "PersistentVolumeClaim") == []
    assert by_kind(objects, "Job") == []
    weights = next(m for m in server(objects)["volumeMounts"] if m["name"] == "weights")
    assert weights["subPath"] == "gpt-oss-20b"
    assert volume(objects, "weights") == {
        "name": "weights",
        "persistentVolumeClaim": {"claimName": "shared-models", "readOnly": True},
    }
    assert "--require-marker" not in server(objects)["command"]
    assert "initContainers" not in pod_spec(objects)


def test_pods_wait_for_the_download_marker_before_the_server_starts() -> None:
    objects = children(sample("gpt-oss-20b"))
    (wait,) = pod_spec(objects)["initContainers"]
    marker = {item["name"]: item["value"] for item in wait["env"]}["MARKER"]
    assert marker == "/models/openai--gpt-oss-20b/main/" + contract.WEIGHTS_COMPLETE_MARKER
    assert "nvidia.com/gpu" not in wait["resources"]["requests"]


# ------------------------------------------------------------------------------- budget and network
def test_pdb_only_with_more_than_one_replica() -> None:
    assert by_kind(children(sample("gpt-oss-20b")), "PodDisruptionBudget") == []
    pdb = one(children(fixture("gpt-oss-20b-existing-claim")), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"][names.LABEL_COMPONENT] == names.COMPONENT_SERVER
    disabled = cr_from({"model": "gpt-oss-20b", "replicas": 3, "disruptionBudget": {"enabled": False}})
    assert by_kind(children(disabled), "PodDisruptionBudget") == []


def test_network_policy_allows_own_and_listed_namespaces_and_metrics_from_anywhere() -> None:
    policy = one(children(fixture("gpt-oss-20b-hpa")), "NetworkPolicy")["spec"]
    serving, metrics = policy["ingress"]
    namespaces = serving["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert namespaces == ["clients", "gateway", "llm"]
    assert {p["port"] for p in serving["ports"]} == {8000, 8001}
    assert metrics == {"ports": [{"protocol": "TCP", "port": 8002}]}
    assert policy["policyTypes"] == ["Ingress"]

    with_gateway = one(children(cr_from({"model": "gpt-oss-20b"})), "NetworkPolicy")["spec"]
    assert [p["port"] for p in with_gateway["ingress"][0]["ports"]] == [9000]  # Triton's ports: loopback only
    # A volume per replica (the default): the fetch init container's progress page is open like the metrics.
    assert with_gateway["ingress"][1] == {"ports": [{"protocol": "TCP", "port": p} for p in (8002, 8003)]}

    open_policy = one(children(fixture("gpt-oss-120b-keda")), "NetworkPolicy")["spec"]
    assert "from" not in open_policy["ingress"][0]
    assert by_kind(children(fixture("gpt-oss-20b-existing-claim")), "NetworkPolicy") == []


def test_pod_monitor_only_where_the_crd_exists_and_wanted() -> None:
    cr = sample("gpt-oss-20b")
    assert by_kind(children(cr, NO_FEATURES), "PodMonitor") == []
    monitor = one(children(cr, ClusterFeatures(pod_monitor=True)), "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    assert {rule["targetLabel"] for rule in endpoint["relabelings"]} >= {"gptoss_deployment", "namespace"}
    assert by_kind(children(fixture("gpt-oss-20b-existing-claim")), "PodMonitor") == []


def test_pod_monitor_relabeling_matches_the_monitoring_source_of_truth() -> None:
    import yaml
    from builders_support import REPO

    source = REPO / "monitoring" / "podmonitor_relabel.yaml"
    if not source.exists():
        pytest.skip("monitoring/podmonitor_relabel.yaml is not in this checkout")
    expected = yaml.safe_load(source.read_text(encoding="utf-8"))
    endpoint = one(children(sample("gpt-oss-20b")), "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["relabelings"] == expected["relabelings"]
    assert {key: endpoint[key] for key in expected["endpoint"]} == expected["endpoint"]


# ---------------------------------------------------------------------------------------- autoscaling
def test_hpa_mode_builds_an_hpa_on_the_cr_scale_subresource() -> None:
    objects = children(fixture("gpt-oss-20b-hpa"))
    assert by_kind(objects, "ScaledObject") == []
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "gptoss.io/v1alpha1", "kind": "GptOssDeployment", "name": "chat-20b"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 3)
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"] for m in hpa["metrics"]}
    assert metrics == {
        contract.METRIC_REQUESTS_WAITING: "2",
        contract.METRIC_REQUESTS_RUNNING: "48",
        contract.METRIC_KV_CACHE_UTILIZATION: "800m",
    }
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert hpa["behavior"]["scaleUp"]["policies"][0]["value"] == 2


def test_keda_mode_builds_a_scaled_object_only_where_keda_exists() -> None:
    cr = fixture("gpt-oss-120b-keda")
    assert by_kind(children(cr, NO_FEATURES), "ScaledObject") == []
    objects = children(cr, ClusterFeatures(keda=True))
    assert by_kind(objects, "HorizontalPodAutoscaler") == []
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["kind"] == "GptOssDeployment"
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 6)
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]["policies"][0]["value"] == 3
    waiting = scaled["triggers"][0]["metadata"]
    assert waiting["serverAddress"] == "http://prometheus.monitoring:9090"
    assert waiting["threshold"] == "4"
    assert 'gptoss_deployment="reasoning-120b"' in waiting["query"]
    assert waiting["query"].startswith("sum by (gptoss_deployment)")


def test_operator_mode_and_disabled_autoscaling_build_neither() -> None:
    for cr in (sample("gpt-oss-120b-autoscaling"), sample("gpt-oss-20b")):
        objects = children(cr)
        assert by_kind(objects, "HorizontalPodAutoscaler") == []
        assert by_kind(objects, "ScaledObject") == []


# ------------------------------------------------------------------------------ shared guarantees
@pytest.mark.parametrize("cr_file", cr_files(), ids=lambda path: path.name)
def test_every_child_is_owned_labelled_and_namespaced(cr_file: Any) -> None:
    cr = load_cr(cr_file)
    objects = children(cr)
    assert objects, "no children"
    for item in objects:
        meta = item["metadata"]
        assert meta["namespace"] == cr.namespace
        assert meta["labels"][names.LABEL_DEPLOYMENT] == cr.name
        assert meta["labels"][names.LABEL_MANAGED_BY] == names.MANAGED_BY
        assert meta["ownerReferences"] == [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": cr.name,
                "uid": cr.metadata.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert (item["apiVersion"], item["kind"]) in {(k.api_version, k.kind) for k in MANAGED_KINDS}


def test_children_come_in_a_fixed_order_and_are_deterministic() -> None:
    cr = fixture("gpt-oss-20b-hpa")
    kinds = [item["kind"] for item in children(cr)]
    assert kinds == [
        "PersistentVolumeClaim", "Job", "ConfigMap", "Deployment", "Service",
        "PodDisruptionBudget", "NetworkPolicy", "PodMonitor", "HorizontalPodAutoscaler",
    ]  # fmt: skip
    assert children(cr) == children(cr)


def test_building_does_not_mutate_the_cr() -> None:
    cr = fixture("gpt-oss-20b-hpa")
    before = cr.model_dump()
    build_children(cr, plan(cr.spec, SETTINGS), SETTINGS)
    assert cr.model_dump() == before


def test_long_names_are_shortened_with_a_hash_within_limits() -> None:
    long = "a" * 100
    assert len(child_name(long, "-weights")) <= 63
    assert child_name(long, "-weights").endswith("-weights")
    assert child_name(long, "-weights") != child_name("a" * 99 + "b", "-weights")
    assert len(label_value(long)) <= 63
    assert child_name("short", "-plan") == "short-plan"
