"""The weight cache: a PersistentVolumeClaim and the Job that downloads the checkpoint into it.

Job pod templates are immutable, so the Job's name carries a hash of what it downloads (repo, revision,
endpoint): a new revision makes a new Job and the old one is pruned. No `ttlSecondsAfterFinished`: the
finished Job stays so its status keeps telling the operator that the weights are there.
"""

from __future__ import annotations

import copy
from typing import Final

from gptoss_operator import names
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


def build_weights_pvc(ctx: BuildContext) -> Manifest | None:
    if not downloads(ctx):
        return None
    cache = ctx.cr.spec.weights.cache
    spec: Manifest = {
        "accessModes": [cache.access_mode],
        "resources": {"requests": {"storage": cache.size or model_facts(ctx.cr.spec.model).default_cache_size}},
        "volumeMode": "Filesystem",
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": ctx.metadata(cache_claim_name(ctx), names.COMPONENT_WEIGHTS),
        "spec": spec,
    }


def build_weights_job(ctx: BuildContext) -> Manifest | None:
    if not downloads(ctx):
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


def _fetch_pod_spec(ctx: BuildContext) -> Manifest:
    token = _token_ref(ctx)
    volumes: list[Manifest] = [
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim_name(ctx)}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": WEIGHTS_VOLUME, "mountPath": contract.WEIGHTS_DIR},
        {"name": TMP_VOLUME, "mountPath": POD_TMP_DIR},
    ]
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
        mounts.append({"name": TOKEN_VOLUME, "mountPath": contract.HF_TOKEN_DIR, "readOnly": True})
    spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": "fetch",
                "image": fetcher_image(ctx),
                "imagePullPolicy": ctx.cr.spec.image_pull_policy,
                "command": fetch_command(ctx),
                "env": _fetch_env(ctx),
                "resources": fetch_resources(ctx),
                "securityContext": container_security_context(),
                "volumeMounts": mounts,
            }
        ],
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


def fetch_resources(ctx: BuildContext) -> Manifest:
    if ctx.settings.stands_in:  # the tiny checkpoint of a stand-in cluster needs little
        return ctx.settings.stand_in_resources.fetch.manifest()
    return copy.deepcopy(FETCH_RESOURCES)


def fetcher_image(ctx: BuildContext) -> str:
    """The operator's fetcher image, else the CR's server image (it ships `gptoss-runtime fetch` too, and a
    cluster that mirrors the server image may reach no other registry), else the default image."""
    return ctx.settings.fetcher_image or ctx.cr.spec.image or ctx.settings.default_image


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
    return env


def _token_ref(ctx: BuildContext) -> tuple[str, str] | None:
    source = ctx.cr.spec.weights.hugging_face
    if source is None or source.token_secret_ref is None:
        return None
    return source.token_secret_ref.name, source.token_secret_ref.key
