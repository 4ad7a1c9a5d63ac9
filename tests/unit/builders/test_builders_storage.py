"""The weights cache's two layouts (docs/storage.md) and the fetcher's image, proxy and CA bundle."""

from __future__ import annotations

from typing import Any

import pytest
from builders_support import by_kind, cr_from, one

from gptoss_operator.builders import build_children
from gptoss_operator.planner import plan
from gptoss_operator.settings import DEFAULT_FETCHER_IMAGE, OperatorSettings
from gptoss_runtime import contract

SETTINGS = OperatorSettings()
MIRROR = OperatorSettings(
    fetch_proxy="http://proxy.corp.example:3128",
    fetch_no_proxy=".svc,.cluster.local,10.0.0.0/8",
    fetch_ca_bundle_config_map="corp-ca",
    fetch_ca_bundle_key="bundle.pem",
)
H100 = {"product": "NVIDIA-H100-80GB-HBM3"}
TOKEN = {"huggingFace": {"tokenSecretRef": {"name": "hf", "key": "token"}}}


def build(spec: dict[str, Any], settings: OperatorSettings = SETTINGS) -> list[dict[str, Any]]:
    cr = cr_from({"model": "gpt-oss-20b", "gpu": H100, **spec})
    return build_children(cr, plan(cr.spec, settings), settings)


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name)


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def mounts(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in item["volumeMounts"]}


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in item["env"]}


def fetch_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every download container: the Job's and the server pod's init container."""
    found = [c for job in by_kind(objects, "Job") for c in job["spec"]["template"]["spec"]["containers"]]
    found += [c for c in pod_spec(objects).get("initContainers", []) if c["name"] == "fetch"]
    return found


# ------------------------------------------------------------------------------ a volume per replica
def test_the_default_cache_is_a_volume_per_replica_with_no_claim_and_no_job() -> None:
    objects = build({"replicas": 3, "weights": {"cache": {"size": "60Gi", "storageClassName": "gp3"}}})
    assert by_kind(objects, "PersistentVolumeClaim") == []
    assert by_kind(objects, "Job") == []
    pod = pod_spec(objects)
    assert volumes(pod)["weights"] == {
        "name": "weights",
        "ephemeral": {
            "volumeClaimTemplate": {
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "60Gi"}},
                    "volumeMode": "Filesystem",
                    "storageClassName": "gp3",
                }
            }
        },
    }


def test_each_pod_downloads_before_its_server_starts_and_serves_read_only() -> None:
    pod = pod_spec(build({}))
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch"
    assert fetch["image"] == DEFAULT_FETCHER_IMAGE
    assert fetch["command"][:2] == ["gptoss-runtime", "fetch"]
    assert "readOnly" not in mounts(fetch)["weights"]  # the download writes here
    assert mounts(container(pod, "server"))["weights"]["readOnly"] is True
    assert "--require-marker" in container(pod, "server")["command"]  # a cut download is never served


def test_the_token_reaches_only_the_fetch_container_of_the_pod() -> None:
    pod = pod_spec(build({"weights": TOKEN}))
    assert volumes(pod)["hf-token"]["secret"]["secretName"] == "hf"
    assert "hf-token" in mounts(container(pod, "fetch"))
    assert "--token-file" in container(pod, "fetch")["command"]
    for name in ("server", "gateway"):
        assert "hf-token" not in mounts(container(pod, name))


def test_the_default_cache_admits_many_replicas_and_autoscaling() -> None:
    spec = {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}}
    assert "ephemeral" in volumes(pod_spec(build(spec)))["weights"]


# --------------------------------------------------------------------------------- a shared claim
@pytest.mark.parametrize("mode", ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"])
def test_an_access_mode_asks_for_one_shared_claim_filled_by_a_job(mode: str) -> None:
    objects = build({"weights": {"cache": {"accessMode": mode}}})
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == [mode]
    job_pod = one(objects, "Job")["spec"]["template"]["spec"]
    assert volumes(job_pod)["weights"]["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    pod = pod_spec(objects)
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-weights"]
    assert volumes(pod)["weights"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


# ------------------------------------------------------------------------------------ the fetcher
@pytest.mark.parametrize("cache", [{}, {"accessMode": "ReadWriteMany"}])
def test_every_download_runs_the_operators_fetcher_never_the_crs_image(cache: dict[str, Any]) -> None:
    own = OperatorSettings(fetcher_image="registry.corp.example/gpt-oss/fetcher:1")
    objects = build({"image": "attacker.example/anything:1", "weights": {**TOKEN, "cache": cache}}, own)
    (fetch,) = fetch_containers(objects)
    assert fetch["image"] == "registry.corp.example/gpt-oss/fetcher:1"


def test_an_empty_fetcher_image_setting_means_the_default() -> None:
    assert OperatorSettings(fetcher_image="").fetcher_image == DEFAULT_FETCHER_IMAGE


# --------------------------------------------------------------------------------- proxy and CA
@pytest.mark.parametrize("cache", [{}, {"accessMode": "ReadWriteMany"}])
def test_the_proxy_and_ca_bundle_reach_every_download(cache: dict[str, Any]) -> None:
    objects = build({"weights": {"cache": cache}}, MIRROR)
    (fetch,) = fetch_containers(objects)
    env = env_of(fetch)
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://proxy.corp.example:3128"
    assert env["NO_PROXY"] == ".svc,.cluster.local,10.0.0.0/8"
    bundle = "/etc/gptoss/ca/ca-bundle.crt"
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == bundle
    assert mounts(fetch)["fetch-ca-bundle"] == {
        "name": "fetch-ca-bundle",
        "mountPath": "/etc/gptoss/ca",
        "readOnly": True,
    }
    pods = [pod_spec(objects), *(job["spec"]["template"]["spec"] for job in by_kind(objects, "Job"))]
    holder = next(pod for pod in pods if "fetch-ca-bundle" in volumes(pod))
    assert volumes(holder)["fetch-ca-bundle"]["configMap"] == {
        "name": "corp-ca",
        "items": [{"key": "bundle.pem", "path": "ca-bundle.crt"}],
    }


def test_without_mirror_settings_the_fetcher_has_no_proxy_and_no_bundle() -> None:
    (fetch,) = fetch_containers(build({}))
    assert not {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "SSL_CERT_FILE"} & set(env_of(fetch))
    assert "fetch-ca-bundle" not in mounts(fetch)


def test_the_server_never_gets_the_proxy_or_the_bundle() -> None:
    pod = pod_spec(build({}, MIRROR))
    for name in ("server", "gateway"):
        assert "HTTPS_PROXY" not in env_of(container(pod, name))
        assert "fetch-ca-bundle" not in mounts(container(pod, name))


def test_empty_mirror_settings_from_the_chart_mean_none() -> None:
    blank = OperatorSettings(fetch_proxy="", fetch_no_proxy="", fetch_ca_bundle_config_map="")
    assert (blank.fetch_proxy, blank.fetch_no_proxy, blank.fetch_ca_bundle_config_map) == (None, None, None)


def test_a_proxy_that_is_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="fetch_proxy"):
        OperatorSettings(fetch_proxy="proxy.corp.example:3128")


def test_the_weights_dir_is_the_contracts() -> None:
    pod = pod_spec(build({}))
    assert mounts(container(pod, "fetch"))["weights"]["mountPath"] == contract.WEIGHTS_DIR
