"""The weight cache: where the checkpoint is downloaded to, and the fetcher that downloads it.

Two layouts (docs/storage.md says why the first is the default):
- A volume per replica (weights.cache.accessMode left out): each server pod carries a generic ephemeral
  volume (a ReadWriteOnce claim the cluster creates with the pod and deletes with it) and a `fetch` init
  container that downloads into it. Works with every StorageClass, for any number of replicas.
- One shared PersistentVolumeClaim (weights.cache.accessMode set): a Job downloads once, the pods mount the
  claim read-only and wait for the Job's completion marker.
Every download runs the operator's fetcher image (settings, never the CR's image) with the cluster
operator's proxy and CA bundle settings.

Job pod templates are immutable, so the Job's name carries a hash of what it downloads (repo, revision,
endpoint): a new revision makes a new Job and the old one is pruned. No `ttlSecondsAfterFinished`: the
finished Job stays so its status keeps telling the operator that the weights are there.
"""

from __future__ import annotations

import copy
from typing import Final

from gptoss_operator import names
from gptoss_operator.api import PER_REPLICA_ACCESS_MODE
from gptoss_operator.builders.context import (
    POD_TMP_DIR,
    BuildContext,
    Manifest,
    container_security_context,
    pod_security_context,
    short_hash,
)
from gptoss_operator.catalog import model_facts
from gptoss_runtime import contract

WEIGHTS_VOLUME: Final = "weights"
TMP_VOLUME: Final = "tmp"
TOKEN_VOLUME: Final = "hf-token"  # noqa: S105 - a volume name, not a secret
CA_BUNDLE_VOLUME: Final = "fetch-ca-bundle"
CA_BUNDLE_DIR: Final = "/etc/gptoss/ca"
CA_BUNDLE_FILE: Final = "ca-bundle.crt"
FETCH_CONTAINER: Final = "fetch"
JOB_BACKOFF_LIMIT: Final = 4
JOB_DEADLINE_SECONDS: Final = 4 * 3600  # 120b is ~65 GB; slow links need hours, a stuck one must end
FETCH_RESOURCES: Final[Manifest] = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"memory": "4Gi"},
}


def cache_claim_name(ctx: BuildContext) -> str:
    return ctx.child_name("-weights")


def downloads(ctx: BuildContext) -> bool:
    """True when the operator downloads the weights (no existing claim)."""
    return ctx.cr.spec.weights.existing_claim is None


def downloads_per_replica(ctx: BuildContext) -> bool:
    """True when each server pod downloads into a volume of its own (no shared claim, no Job)."""
    return downloads(ctx) and not ctx.cr.spec.shares_cache


def weights_source(ctx: BuildContext) -> tuple[str, str, str | None]:
    """(repo, revision, endpoint) of the Hugging Face download.

    The endpoint is the CR's, else the operator's mirror setting (how air-gapped clusters get weights),
    else None (the public Hub).
    """
    source = ctx.cr.spec.weights.hugging_face
    repo = (source.repo if source else None) or model_facts(ctx.cr.spec.model).default_repo
    revision = source.revision if source else "main"
    endpoint = (source.endpoint if source else None) or ctx.settings.weights_mirror_endpoint
    return repo, revision, endpoint


def download_job_name(ctx: BuildContext) -> str:
    repo, revision, endpoint = weights_source(ctx)
    suffix = f"-weights-{short_hash(repo, revision, endpoint or '')}"
    return ctx.child_name(suffix)


def _claim_spec(ctx: BuildContext, access_mode: str) -> Manifest:
    cache = ctx.cr.spec.weights.cache
    spec: Manifest = {
        "accessModes": [access_mode],
        "resources": {"requests": {"storage": cache.size or model_facts(ctx.cr.spec.model).default_cache_size}},
        "volumeMode": "Filesystem",
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    return spec


def build_weights_pvc(ctx: BuildContext) -> Manifest | None:
    access_mode = ctx.cr.spec.weights.cache.access_mode
    if not downloads(ctx) or access_mode is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": ctx.metadata(cache_claim_name(ctx), names.COMPONENT_WEIGHTS),
        "spec": _claim_spec(ctx, access_mode),
    }


def per_replica_weights_volume(ctx: BuildContext) -> Manifest:
    """The pod's own cache: a generic ephemeral volume. The ephemeral-volume controller creates the claim
    `<pod>-weights` owned by the pod, so it follows the pod's node (WaitForFirstConsumer) and goes with the
    pod. Unlabelled on purpose: the claims are the pods' children, not the operator's, and must never look
    like one of its children to pruning."""
    return {
        "name": WEIGHTS_VOLUME,
        "ephemeral": {"volumeClaimTemplate": {"spec": _claim_spec(ctx, PER_REPLICA_ACCESS_MODE)}},
    }


def build_weights_job(ctx: BuildContext) -> Manifest | None:
    if not downloads(ctx) or downloads_per_replica(ctx):
        return None
    labels = ctx.labels(names.COMPONENT_WEIGHTS)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": ctx.metadata(download_job_name(ctx), names.COMPONENT_WEIGHTS),
        "spec": {
            "backoffLimit": JOB_BACKOFF_LIMIT,
            "activeDeadlineSeconds": JOB_DEADLINE_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": _fetch_pod_spec(ctx),
            },
        },
    }


# The Job's fetcher serves its download progress here; the operator reads it for status.weights.
PROGRESS_PORT: Final[Manifest] = {
    "name": contract.FETCH_PROGRESS_PORT_NAME,
    "containerPort": contract.FETCH_PROGRESS_PORT,
    "protocol": "TCP",
}


def _fetch_pod_spec(ctx: BuildContext) -> Manifest:
    volumes: list[Manifest] = [
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim_name(ctx)}},
        {"name": TMP_VOLUME, "emptyDir": {}},
        *fetch_volumes(ctx),
    ]
    spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [{**fetch_container(ctx), "ports": [dict(PROGRESS_PORT)]}],
        "volumes": volumes,
    }
    if ctx.cr.spec.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": ref.name} for ref in ctx.cr.spec.image_pull_secrets]
    spec.update(_fetch_placement(ctx))
    return spec


def _fetch_placement(ctx: BuildContext) -> Manifest:
    """Where the cluster operator runs downloads (its settings): the Job needs no GPU, so by default it has
    no toleration and lands on any untainted node."""
    settings = ctx.settings
    placement: Manifest = {}
    if settings.fetch_node_selector:
        placement["nodeSelector"] = dict(settings.fetch_node_selector)
    if settings.fetch_tolerations:
        placement["tolerations"] = [toleration.manifest() for toleration in settings.fetch_tolerations]
    if settings.fetch_priority_class_name:
        placement["priorityClassName"] = settings.fetch_priority_class_name
    return placement


def fetch_container(ctx: BuildContext) -> Manifest:
    """The download, the same in the Job's pod and as a server pod's init container. The pod provides the
    volumes `weights` (written here), `tmp` (HOME and huggingface_hub's cache) and fetch_volumes()."""
    mounts: list[Manifest] = [
        {"name": WEIGHTS_VOLUME, "mountPath": contract.WEIGHTS_DIR},
        {"name": TMP_VOLUME, "mountPath": POD_TMP_DIR},
    ]
    if _token_ref(ctx) is not None:
        mounts.append({"name": TOKEN_VOLUME, "mountPath": contract.HF_TOKEN_DIR, "readOnly": True})
    if ctx.settings.fetch_ca_bundle_config_map:
        mounts.append({"name": CA_BUNDLE_VOLUME, "mountPath": CA_BUNDLE_DIR, "readOnly": True})
    return {
        "name": FETCH_CONTAINER,
        "image": fetcher_image(ctx),
        "imagePullPolicy": ctx.cr.spec.image_pull_policy,
        "command": fetch_command(ctx),
        "env": _fetch_env(ctx),
        "resources": fetch_resources(ctx),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }


def fetch_volumes(ctx: BuildContext) -> list[Manifest]:
    """The fetch container's volumes besides `weights` and `tmp`: the token, the mirror's CA bundle."""
    volumes: list[Manifest] = []
    token = _token_ref(ctx)
    if token is not None:
        secret_name, key = token
        volumes.append(
            {
                "name": TOKEN_VOLUME,
                "secret": {
                    "secretName": secret_name,
                    "items": [{"key": key, "path": contract.HF_TOKEN_FILE_NAME}],
                    "defaultMode": 0o440,
                },
            }
        )
    config_map = ctx.settings.fetch_ca_bundle_config_map
    if config_map:
        # Not optional: a fetcher without the CA would fail TLS on every attempt; a missing ConfigMap keeps
        # the pod in ContainerCreating with an event that names it.
        items = [{"key": ctx.settings.fetch_ca_bundle_key, "path": CA_BUNDLE_FILE}]
        volumes.append({"name": CA_BUNDLE_VOLUME, "configMap": {"name": config_map, "items": items}})
    return volumes


def fetch_resources(ctx: BuildContext) -> Manifest:
    if ctx.settings.stands_in:  # the tiny checkpoint of a stand-in cluster needs little
        return ctx.settings.stand_in_resources.fetch.manifest()
    return copy.deepcopy(FETCH_RESOURCES)


def fetcher_image(ctx: BuildContext) -> str:
    """Always the operator's fetcher image (settings; the slim runtime/Dockerfile.fetcher by default), never
    the CR's image: whoever writes the CR chooses that image, and a token must only reach code the cluster
    operator chose (docs/security.md); the fetcher is also tens of MB where the server image is many GB."""
    return ctx.settings.fetcher_image


def fetch_command(ctx: BuildContext) -> list[str]:
    repo, revision, _ = weights_source(ctx)
    command = [
        "gptoss-runtime",
        "fetch",
        "--repo",
        repo,
        "--revision",
        revision,
        "--dest",
        f"{contract.WEIGHTS_DIR}/{ctx.plan.weights_subdir}",
    ]
    if _token_ref(ctx) is not None:
        command += ["--token-file", contract.HF_TOKEN_PATH]
    return command


def _fetch_env(ctx: BuildContext) -> list[Manifest]:
    _, _, endpoint = weights_source(ctx)
    env: list[Manifest] = [
        {"name": "HOME", "value": POD_TMP_DIR},
        {"name": "HF_HOME", "value": f"{POD_TMP_DIR}/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    if endpoint:
        env.append({"name": "HF_ENDPOINT", "value": endpoint})
    return env + _mirror_env(ctx)


def _mirror_env(ctx: BuildContext) -> list[Manifest]:
    """The cluster operator's way out (proxy) and trust (CA bundle) for the fetcher. huggingface_hub's HTTP
    clients read the proxy variables; SSL_CERT_FILE is what httpx and OpenSSL read, REQUESTS_CA_BUNDLE and
    CURL_CA_BUNDLE what requests-based code reads. The bundle replaces the public roots, so it must hold
    every CA the downloads meet."""
    settings = ctx.settings
    env: list[Manifest] = []
    if settings.fetch_proxy:
        env += [{"name": name, "value": settings.fetch_proxy} for name in ("HTTPS_PROXY", "HTTP_PROXY")]
    if settings.fetch_no_proxy:
        env.append({"name": "NO_PROXY", "value": settings.fetch_no_proxy})
    if settings.fetch_ca_bundle_config_map:
        bundle = f"{CA_BUNDLE_DIR}/{CA_BUNDLE_FILE}"
        env += [{"name": name, "value": bundle} for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")]
    return env


def _token_ref(ctx: BuildContext) -> tuple[str, str] | None:
    source = ctx.cr.spec.weights.hugging_face
    if source is None or source.token_secret_ref is None:
        return None
    return source.token_secret_ref.name, source.token_secret_ref.key
