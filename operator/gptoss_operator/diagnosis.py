"""What keeps the weights or the server pods from progressing, in words (pure).

`status` asks this module for the `WeightsReady` verdict and for the reason server pods wait. Inputs are
facts the reconcile observed (the cache PVC, the StorageClasses, the download Job and its pods, whether
the token Secret exists, the fetcher's progress); outputs are (status, reason, message) triples with the
fix named. No clock, no API call, no kopf: rate and ETA arithmetic is here too, tested without a cluster.

Order of the weights verdict, first match wins: done, failed, token Secret absent, token Secret without
the key (the kubelet cannot mount it), volume pending (a class that does not exist, no default class, a
provisioner that has not bound it), download pod unschedulable, download image not pullable, then
downloading (with progress when the fetcher reported it). A PVC of a `WaitForFirstConsumer` class is
Pending until its first pod is scheduled: that is normal, so the download pod's own state speaks first there.

With a volume per replica the same facts come from the server pods' `fetch` init containers: each replica
downloads its own copy, so the replica furthest behind (the longest wait) is the one status reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gptoss_operator import names

DEFAULT_CLASS_ANNOTATIONS: Final = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
IMAGE_PULL_REASONS: Final = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
JOB_NAME_LABELS: Final = ("batch.kubernetes.io/job-name", "job-name")
CACHE_CLASS_FIELD: Final = "spec.weights.cache.storageClassName"
TOKEN_FIELD: Final = "spec.weights.huggingFace.tokenSecretRef"  # noqa: S105 - a field path, not a secret
MAX_MESSAGE: Final = 1024  # a condition message stays readable (the API allows 32 KiB)

REASON_DOWNLOADED: Final = "Downloaded"
REASON_DOWNLOADING: Final = "Downloading"
REASON_DOWNLOAD_FAILED: Final = "DownloadFailed"
REASON_VOLUME_PENDING: Final = "VolumePending"
REASON_FETCHER_UNSCHEDULABLE: Final = "FetcherUnschedulable"
REASON_FETCHER_IMAGE_PULL: Final = "FetcherImagePull"
REASON_TOKEN_SECRET_MISSING: Final = "TokenSecretMissing"  # noqa: S105 - a condition reason, not a secret
REASON_TOKEN_SECRET_KEY_MISSING: Final = "TokenSecretKeyMissing"  # noqa: S105 - a condition reason, not a secret
# WeightsReady reasons that need someone to act: a Warning Event when the condition turns to one of them.
WAITING_REASONS: Final = frozenset(
    {
        REASON_VOLUME_PENDING,
        REASON_FETCHER_UNSCHEDULABLE,
        REASON_FETCHER_IMAGE_PULL,
        REASON_TOKEN_SECRET_MISSING,
        REASON_TOKEN_SECRET_KEY_MISSING,
    }
)
# What the kubelet says when a Secret lacks a key the pod asks for: the volume's items (a FailedMount Event)
# or an environment variable's secretKeyRef (the container waits in CreateContainerConfigError).
MISSING_KEY_PHRASES: Final = ("non-existent secret key", "couldn't find key")
# A container that has not started yet: what a pod whose volumes cannot be mounted shows, and nothing more.
NOT_STARTED_REASONS: Final = frozenset({"ContainerCreating", "PodInitializing"})
# Server pods.
REASON_GPU_PRODUCT_ABSENT: Final = "GPUProductAbsent"
REASON_INSUFFICIENT_GPUS: Final = "InsufficientGPUs"
REASON_UNSCHEDULABLE: Final = "Unschedulable"
REASON_IMAGE_PULL_FAILED: Final = "ImagePullFailed"

Json = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    status: str  # True, False or Unknown
    reason: str
    message: str


@dataclass(frozen=True)
class StorageClassFacts:
    name: str
    provisioner: str
    is_default: bool
    wait_for_first_consumer: bool

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> StorageClassFacts:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        return cls(
            name=str(meta.get("name", "")),
            provisioner=str(obj.get("provisioner", "")),
            is_default=any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS),
            wait_for_first_consumer=obj.get("volumeBindingMode") == "WaitForFirstConsumer",
        )


@dataclass(frozen=True)
class DownloadProgress:
    """What the fetcher last reported: bytes done, bytes total (None: not yet known), bytes per second."""

    bytes_done: int
    bytes_total: int | None
    bytes_per_second: float | None


@dataclass(frozen=True)
class WeightsFacts:
    """What the reconcile observed about the weights download (defaults: nothing known)."""

    claim: Mapping[str, Any] | None = None  # the cache PVC the operator created
    storage_classes: Sequence[StorageClassFacts] | None = None  # None: not readable (RBAC) or not synced
    job_pods: Sequence[Mapping[str, Any]] = ()  # pods of the current download Job (any phase)
    token_secret: str | None = None  # name of the tokenSecretRef Secret, when one is named
    token_secret_found: bool | None = None  # None: not checked
    token_key: str | None = None  # the key of that Secret the download mounts
    # The kubelet's FailedMount messages about download pods that have not started (pod name -> message).
    mount_failures: Mapping[str, str] = field(default_factory=dict)
    progress: DownloadProgress | None = None
    # A volume per replica (no Job): the desired pods' claim template, and their download init container.
    claim_template: Mapping[str, Any] | None = None
    fetch_container: str | None = None
    # What each server pod's fetcher reported (pod name -> progress); pods that did not answer are absent.
    replica_progress: Mapping[str, DownloadProgress] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- progress
def eta_seconds(progress: DownloadProgress) -> int | None:
    """Seconds left at the current rate, or None when the total or a positive rate is unknown."""
    if progress.bytes_total is None or not progress.bytes_per_second or progress.bytes_per_second <= 0:
        return None
    left = max(0, progress.bytes_total - progress.bytes_done)
    return math.ceil(left / progress.bytes_per_second)


def progress_status(progress: DownloadProgress | None, replicas_downloading: int | None = None) -> Json | None:
    """`status.weights` while a download runs (None: nothing reported, the key is removed).

    `replicas_downloading` is set with a volume per replica; the figures are then the replica furthest behind.
    """
    if progress is None:
        return None
    rate = progress.bytes_per_second
    figures: Json = {
        "bytesDone": progress.bytes_done,
        "bytesTotal": progress.bytes_total,
        "bytesPerSecond": None if rate is None else round(rate),
        "etaSeconds": eta_seconds(progress),
    }
    if replicas_downloading is not None:
        figures["replicasDownloading"] = replicas_downloading
    return figures


def furthest_behind(progress_by_pod: Mapping[str, DownloadProgress]) -> tuple[str, DownloadProgress] | None:
    """The replica whose download ends last: the longest ETA; without ETAs, the fewest bytes done (ties: name)."""
    if not progress_by_pod:
        return None

    def wait(item: tuple[str, DownloadProgress]) -> tuple[int, int, str]:
        name, progress = item
        eta = eta_seconds(progress)
        return (-1 if eta is None else eta, -progress.bytes_done, name)

    return max(sorted(progress_by_pod.items()), key=wait)


def weights_status(facts: WeightsFacts, server_pods: Sequence[Mapping[str, Any]]) -> Json | None:
    """`status.weights` while weights download: the Job's fetcher, or the replica furthest behind."""
    if facts.fetch_container is None:
        return progress_status(facts.progress)
    fetching = fetching_pods(server_pods, facts.fetch_container)
    reported = {name: facts.replica_progress[name] for name in map(_name, fetching) if name in facts.replica_progress}
    behind = furthest_behind(reported)
    return None if behind is None else progress_status(behind[1], len(fetching))


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def human_duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_message(progress: DownloadProgress) -> str:
    """`3.2 GiB of 12.8 GiB (25%) at 45.1 MiB/s, about 3m38s left`, with what is unknown left out."""
    text = human_bytes(progress.bytes_done)
    if progress.bytes_total:
        percent = min(100, math.floor(100 * progress.bytes_done / progress.bytes_total))
        text += f" of {human_bytes(progress.bytes_total)} ({percent}%)"
    if progress.bytes_per_second is not None:
        text += f" at {human_bytes(progress.bytes_per_second)}/s"
    eta = eta_seconds(progress)
    if eta is not None:
        text += f", about {human_duration(eta)} left"
    return text


# ----------------------------------------------------------------------------------------------- pods
def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _pod_condition(pod: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond  # type: ignore[no-any-return]
    return None


def unschedulable_message(pod: Mapping[str, Any]) -> str | None:
    """The scheduler's message when it cannot place the pod (PodScheduled=False), else None."""
    if (pod.get("spec") or {}).get("nodeName"):
        return None
    cond = _pod_condition(pod, "PodScheduled")
    if cond is None or cond.get("status") != "False":
        return None
    return str(cond.get("message") or cond.get("reason") or "unschedulable")


def _statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def image_pull_problem(pod: Mapping[str, Any]) -> str | None:
    """`image X: ErrImagePull (message)` when a container of the pod cannot get its image, else None."""
    for container in _statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            image = container.get("image") or "?"
            detail = f" ({waiting['message']})" if waiting.get("message") else ""
            return f"image {image}: {waiting['reason']}{detail}"
    return None


def termination_message(pod: Mapping[str, Any]) -> str | None:
    """The last line of a failed container's termination message (the fetcher writes its error there)."""
    for container in _statuses(pod):
        for state_key in ("state", "lastState"):
            terminated = (container.get(state_key) or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode") not in (None, 0):
                text = str(terminated.get("message") or "").strip()
                last = text.splitlines()[-1] if text else ""
                return last or f"exit code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
    return None


def _active(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        p
        for p in pods
        if _phase(p) not in ("Succeeded", "Failed") and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]


def _failed(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in pods if _phase(p) == "Failed"]


def _latest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently started pod (pods that have not started sort last: they are newest)."""
    if not pods:
        return None
    return max(pods, key=lambda p: str((p.get("status") or {}).get("startTime") or "9999"))


def is_job_pod(pod: Mapping[str, Any], job_name: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return any(labels.get(key) == job_name for key in JOB_NAME_LABELS)


# ------------------------------------------------------------------------------------------- volumes
def _claim_phase(claim: Mapping[str, Any]) -> str:
    return str((claim.get("status") or {}).get("phase") or "Pending")


def _class_list(classes: Sequence[StorageClassFacts]) -> str:
    if not classes:
        return "the cluster has no StorageClass"
    listed = ", ".join(f"{c.name} (default)" if c.is_default else c.name for c in sorted(classes, key=lambda c: c.name))
    return f"the cluster has: {listed}"


def _class_problem(subject: str, class_name: str | None, classes: Sequence[StorageClassFacts]) -> str | None:
    """Why no volume can be provisioned for a claim of `class_name`, when that is certain from the classes."""
    if class_name == "":
        return (
            f'{subject} asks for no StorageClass (storageClassName ""), so only a pre-created PersistentVolume can '
            f"bind it; create one, or set {CACHE_CLASS_FIELD} to a class with a provisioner"
        )
    if class_name is None:
        if any(c.is_default for c in classes):
            return None
        return (
            f"{subject}: {CACHE_CLASS_FIELD} is not set and no StorageClass is marked default "
            f"({_class_list(classes)}); set {CACHE_CLASS_FIELD} or mark a class default "
            f'(annotation {DEFAULT_CLASS_ANNOTATIONS[0]}="true")'
        )
    if not any(c.name == class_name for c in classes):
        return (
            f"{subject}: StorageClass {class_name} ({CACHE_CLASS_FIELD}) does not exist ({_class_list(classes)}); "
            "create it, or re-create the GptOssDeployment with an existing class (the field is immutable)"
        )
    return None


def volume_problem(facts: WeightsFacts, pod_scheduled: bool) -> Verdict | None:
    """VolumePending when the cache PVC is not bound for a reason the user must fix or should know."""
    claim = facts.claim
    if claim is None or _claim_phase(claim) == "Bound":
        return None
    name = _name(claim)
    if _claim_phase(claim) == "Lost":
        return _pending(f"PersistentVolumeClaim {name} lost its volume; delete the claim so the operator re-creates it")
    class_name = (claim.get("spec") or {}).get("storageClassName")
    classes = facts.storage_classes
    if classes is None and class_name != "":
        return _pending(f"PersistentVolumeClaim {name} is Pending; see `kubectl describe pvc {name}`")
    certain = _class_problem(f"PersistentVolumeClaim {name} is Pending", class_name, classes or ())
    if certain is not None:
        return _pending(certain)
    found = next((c for c in classes or () if c.name == class_name), None)
    if found is None:
        return None  # no class named: the default class is being assigned to the claim; the next event tells
    if found.wait_for_first_consumer and not pod_scheduled:
        return None  # binds once the download pod is scheduled: the pod's state says what waits
    return _pending(
        f"PersistentVolumeClaim {name} is Pending: waiting for provisioner {found.provisioner or '?'} of "
        f"StorageClass {class_name} to create a volume; see `kubectl describe pvc {name}` and that provisioner's logs"
    )


def _pending(message: str) -> Verdict:
    return Verdict("False", REASON_VOLUME_PENDING, message[:MAX_MESSAGE])


# ------------------------------------------------------------------------------------------- weights
def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond  # type: ignore[no-any-return]
    return None


def _download_failed(job: Mapping[str, Any], facts: WeightsFacts) -> Verdict:
    failed = _job_condition(job, "Failed") or {}
    why = termination_message(_latest(_failed(facts.job_pods)) or {})
    job_reason = f" ({failed['reason']}: {failed.get('message', '')})" if failed.get("reason") else ""
    detail = f": {why}" if why else f"{job_reason}; see `kubectl logs job/{_name(job)}`"
    return Verdict(
        "False", REASON_DOWNLOAD_FAILED, f"the weights download Job {_name(job)} failed{detail}"[:MAX_MESSAGE]
    )


def _downloading(job: Mapping[str, Any], facts: WeightsFacts) -> Verdict:
    if facts.progress is not None:
        message = f"downloading the weights: {progress_message(facts.progress)}"
    else:
        message = f"the weights download Job {_name(job)} is running"
    retried = termination_message(_latest(_failed(facts.job_pods)) or {})
    if retried:
        message += f"; an earlier attempt failed: {retried}"
    return Verdict("False", REASON_DOWNLOADING, message[:MAX_MESSAGE])


def _token_missing(facts: WeightsFacts) -> Verdict | None:
    if facts.token_secret is None or facts.token_secret_found is not False:
        return None
    return Verdict(
        "False",
        REASON_TOKEN_SECRET_MISSING,
        f"Secret {facts.token_secret} ({TOKEN_FIELD}.name) does not exist in this namespace; create it with "
        f"the Hugging Face token under the key {TOKEN_FIELD}.key names, or remove {TOKEN_FIELD}",
    )


def _missing_key_text(pod: Mapping[str, Any], facts: WeightsFacts) -> str | None:
    """The kubelet's words when the pod cannot start because a Secret lacks a key, else None."""
    for container in _statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        message = str(waiting.get("message") or "")
        if waiting.get("reason") == "CreateContainerConfigError" and any(p in message for p in MISSING_KEY_PHRASES):
            return message
    message = facts.mount_failures.get(_name(pod), "")
    return message if any(phrase in message for phrase in MISSING_KEY_PHRASES) else None


def token_key_missing(facts: WeightsFacts, pods: Sequence[Mapping[str, Any]]) -> Verdict | None:
    """TokenSecretKeyMissing when a download pod cannot start because the token Secret lacks the key.

    The operator reads only the Secret's metadata (never its data, docs/security.md), so the kubelet is the
    one who finds the key missing: a FailedMount Event (the token is a Secret volume item) or, for a key
    taken into an environment variable, CreateContainerConfigError.
    """
    if facts.token_secret is None:
        return None
    for pod in _active(pods):
        said = _missing_key_text(pod, facts)
        if said is None:
            continue
        key = facts.token_key or "?"
        return Verdict(
            "False",
            REASON_TOKEN_SECRET_KEY_MISSING,
            f"Secret {facts.token_secret} ({TOKEN_FIELD}.name) has no key {key} ({TOKEN_FIELD}.key), so the weights "
            f"download in pod {_name(pod)} cannot start (kubelet: {said.strip()}); put the Hugging Face token under "
            f"the key {key} (kubectl create secret generic {facts.token_secret} --from-literal={key}=<token> "
            f"--dry-run=client -o yaml | kubectl apply -f -) or set {TOKEN_FIELD}.key to the key that holds it; "
            "the pod starts once the key exists"[:MAX_MESSAGE],
        )
    return None


def fetching_pods(server_pods: Sequence[Mapping[str, Any]], fetch_container: str | None) -> list[Mapping[str, Any]]:
    """Server pods whose download init container is running now (a volume per replica), by name."""
    if fetch_container is None:
        return []
    return sorted((p for p in _active(server_pods) if _runs(p, fetch_container)), key=_name)


def not_started(pod: Mapping[str, Any], container: str | None) -> bool:
    """A scheduled pod whose download container has not started: what a volume that cannot mount looks like."""
    if container is None or not (pod.get("spec") or {}).get("nodeName") or not _active([pod]):
        return False
    for status in _statuses(pod):
        if status.get("name") == container:
            waiting = (status.get("state") or {}).get("waiting")
            return waiting is not None and waiting.get("reason") in NOT_STARTED_REASONS
    return True  # the kubelet has not reported the container yet


def per_replica_verdict(facts: WeightsFacts, server_pods: Sequence[Mapping[str, Any]]) -> Verdict | None:
    """WeightsReady while each server pod downloads into a volume of its own (None: nothing to say).

    The claims are the pods' (`<pod>-weights`), not the operator's: what is certain is read from the claim
    template and the StorageClasses; an unschedulable or image-pulling pod is said by Ready.
    """
    token = _token_missing(facts) or token_key_missing(facts, server_pods)
    if token is not None:
        return token
    template = facts.claim_template
    if template is not None and facts.storage_classes is not None:
        subject = "the replicas' own weights volumes (claims <pod>-weights) cannot be provisioned"
        certain = _class_problem(subject, template.get("storageClassName"), facts.storage_classes)
        if certain is not None:
            return _pending(certain)
    fetching = fetching_pods(server_pods, facts.fetch_container)
    if not fetching:
        return None
    message = f"{len(fetching)} replica(s) are downloading the weights into their own volumes"
    reported = {name: facts.replica_progress[name] for name in map(_name, fetching) if name in facts.replica_progress}
    behind = furthest_behind(reported)
    if behind is None:
        message += f" (e.g. pod {_name(fetching[0])})"
    elif len(fetching) == 1:
        message += f": pod {behind[0]} has {progress_message(behind[1])}"
    else:
        message += f"; furthest behind, pod {behind[0]} has {progress_message(behind[1])}"
    return Verdict("False", REASON_DOWNLOADING, message[:MAX_MESSAGE])


def _runs(pod: Mapping[str, Any], init_container: str | None) -> bool:
    for container in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if container.get("name") == init_container and (container.get("state") or {}).get("running") is not None:
            return True
    return False


def job_verdict(job: Mapping[str, Any], facts: WeightsFacts) -> Verdict:
    """WeightsReady while the operator downloads: the first thing that is true of the list in the module doc."""
    if _job_condition(job, "Complete") or int((job.get("status") or {}).get("succeeded") or 0) > 0:
        return Verdict("True", REASON_DOWNLOADED, f"the weights download Job {_name(job)} completed")
    if _job_condition(job, "Failed"):
        return _download_failed(job, facts)
    token = _token_missing(facts) or token_key_missing(facts, facts.job_pods)
    if token is not None:
        return token
    pod = _latest(_active(facts.job_pods))
    pod_scheduled = pod is not None and bool((pod.get("spec") or {}).get("nodeName"))
    volume = volume_problem(facts, pod_scheduled)
    if volume is not None:
        return volume
    if pod is not None:
        unschedulable = unschedulable_message(pod)
        if unschedulable is not None:
            return Verdict(
                "False",
                REASON_FETCHER_UNSCHEDULABLE,
                f"the weights download pod {_name(pod)} cannot be scheduled: {unschedulable}; the download runs "
                "where the operator's fetch placement settings (node selector, tolerations) allow"[:MAX_MESSAGE],
            )
        pull = image_pull_problem(pod)
        if pull is not None:
            return Verdict(
                "False",
                REASON_FETCHER_IMAGE_PULL,
                f"the weights download pod {_name(pod)} cannot pull its {pull}; check the image name, the "
                "registry's reachability and spec.imagePullSecrets"[:MAX_MESSAGE],
            )
    return _downloading(job, facts)


# ------------------------------------------------------------------------------------------- rollouts
REASON_ROLLOUT_OUTAGE: Final = "RollingOutWithOutage"
REVISION_ANNOTATION: Final = "deployment.kubernetes.io/revision"
SHARED_CACHE_FIELD: Final = "spec.weights.cache.accessMode"


def _no_surge(deployment: Mapping[str, Any]) -> bool:
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge")
    return strategy.get("type") == "Recreate" or str(surge) in ("0", "0%")


def _replacing_template(deployment: Mapping[str, Any]) -> bool:
    """The Deployment rolls a template it had not run before (not its first ReplicaSet, not finished)."""
    meta = deployment.get("metadata") or {}
    state = deployment.get("status") or {}
    conditions = state.get("conditions") or []
    progressing: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Progressing"), {})
    if int(state.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return bool(progressing)  # a new template waits for the controller (a first Deployment has no status)
    revision = str((meta.get("annotations") or {}).get(REVISION_ANNOTATION) or "1")
    finished = progressing.get("reason") in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded")
    return revision.isdigit() and int(revision) >= 2 and not finished


def rollout_outage(
    deployment: Mapping[str, Any] | None, *, desired_replicas: int, per_replica_download: bool
) -> str | None:
    """Why a rollout leaves nothing serving, when it does: the only replica of a volume-per-replica CR is
    replaced without a surge pod (no spare GPU), and the new pod must download its own copy of the weights
    and start before anything serves again. A new revision cannot be downloaded ahead into a volume that
    belongs to a pod not yet created; the shared cache can (rollout.py), so the message names it."""
    if deployment is None or not per_replica_download or desired_replicas != 1:
        return None
    if not _no_surge(deployment) or not _replacing_template(deployment):
        return None
    return (
        "the only replica is replaced without a surge pod (no spare GPU for one when the rollout started), and "
        "with a volume per replica the new pod downloads the weights into its own volume and starts before it "
        "serves: nothing serves until then. To roll without an outage free a GPU for a surge pod, run 2 or more "
        f"replicas, or use the shared cache ({SHARED_CACHE_FIELD}: ReadWriteMany), whose new weights download "
        "while the old pod serves (docs/rollouts.md)"
    )


# ---------------------------------------------------------------------------------------- server pods
def server_pods_waiting(
    pods: Sequence[Mapping[str, Any]], *, gpu_product: str | None, matching_nodes: int | None
) -> Verdict | None:
    """Why server pods wait, when they cannot schedule or pull their image (None: nothing of the sort).

    `matching_nodes` is how many schedulable nodes offer the GPU product (from the capacity snapshot):
    none means the product is absent from the cluster, some means GPUs are short there.
    """
    active = _active(pods)
    for pod in active:
        pull = image_pull_problem(pod)
        if pull is not None:
            return Verdict(
                "False",
                REASON_IMAGE_PULL_FAILED,
                f"server pod {_name(pod)} cannot pull its {pull}; check spec.image and spec.imagePullSecrets"[
                    :MAX_MESSAGE
                ],
            )
    unschedulable = [(pod, message) for pod in active if (message := unschedulable_message(pod)) is not None]
    if not unschedulable:
        return None
    pod, message = unschedulable[0]
    count = f"{len(unschedulable)} server pod(s) cannot be scheduled (e.g. {_name(pod)}: {message})"
    if matching_nodes == 0:
        return Verdict(
            "False",
            REASON_GPU_PRODUCT_ABSENT,
            f"{count}; no schedulable node offers GPU product {gpu_product} (label {names.GPU_PRODUCT_LABEL} "
            "and allocatable GPUs); fix spec.gpu.product or add such nodes"[:MAX_MESSAGE],
        )
    if matching_nodes and "nvidia.com/" in message and "Insufficient" in message:
        return Verdict(
            "False",
            REASON_INSUFFICIENT_GPUS,
            f"{count}; the {matching_nodes} node(s) with {gpu_product} lack free GPUs; lower spec.replicas or "
            "spec.gpu.count, or add GPU nodes"[:MAX_MESSAGE],
        )
    return Verdict("False", REASON_UNSCHEDULABLE, count[:MAX_MESSAGE])
