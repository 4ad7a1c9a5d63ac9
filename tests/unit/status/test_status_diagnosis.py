"""Status that says what is wrong: WeightsReady reasons, download progress, server pods that wait (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from test_status_compute import capacity, compute, cond, observe, pod

from gptoss_operator import diagnosis, names, status
from gptoss_operator.diagnosis import DownloadProgress, StorageClassFacts, WeightsFacts

JOB = {"metadata": {"name": "demo-weights-abc"}, "status": {"active": 1}}
LOCAL_PATH = StorageClassFacts("local-path", "rancher.io/local-path", is_default=True, wait_for_first_consumer=True)
FAST = StorageClassFacts("fast", "ebs.csi.aws.com", is_default=False, wait_for_first_consumer=False)


def claim(phase: str = "Pending", class_name: str | None = "fast") -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"]}
    if class_name is not None:
        spec["storageClassName"] = class_name
    return {"metadata": {"name": "demo-weights"}, "spec": spec, "status": {"phase": phase}}


def job_pod(
    name: str = "demo-weights-abc-x1",
    *,
    phase: str = "Pending",
    node: str | None = None,
    scheduled: dict[str, str] | None = None,
    waiting: tuple[str, str] | None = None,
    terminated: tuple[int, str] | None = None,
    started: str = "2026-11-25T10:00:00Z",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "fetch", "image": "registry.example/fetcher:1.0", "state": {}}
    if waiting:
        container["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if terminated:
        container["state"] = {"terminated": {"exitCode": terminated[0], "message": terminated[1], "reason": "Error"}}
    conditions = [{"type": "PodScheduled", **scheduled}] if scheduled else []
    return {
        "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": "demo-weights-abc"}},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "startTime": started, "conditions": conditions, "containerStatuses": [container]},
    }


def verdict(job: dict[str, Any] | None = None, **facts: Any) -> diagnosis.Verdict:
    return diagnosis.job_verdict(job or JOB, WeightsFacts(**facts))


# ------------------------------------------------------------------------------------------- volumes
def test_a_class_that_does_not_exist_is_named_with_the_classes_there_are() -> None:
    result = verdict(claim=claim(class_name="premium-rwx"), storage_classes=[LOCAL_PATH, FAST])
    assert (result.status, result.reason) == ("False", "VolumePending")
    assert "StorageClass premium-rwx" in result.message
    assert "does not exist" in result.message
    assert "fast, local-path (default)" in result.message
    assert diagnosis.CACHE_CLASS_FIELD in result.message


def test_no_class_and_no_default_class_says_so_and_the_fix() -> None:
    result = verdict(claim=claim(class_name=None), storage_classes=[FAST])
    assert result.reason == "VolumePending"
    assert "no StorageClass is marked default" in result.message
    assert "storageclass.kubernetes.io/is-default-class" in result.message


def test_a_cluster_without_any_class() -> None:
    result = verdict(claim=claim(class_name=None), storage_classes=[])
    assert "the cluster has no StorageClass" in result.message


def test_an_immediate_class_that_has_not_bound_names_its_provisioner() -> None:
    result = verdict(claim=claim(class_name="fast"), storage_classes=[FAST])
    assert result.reason == "VolumePending"
    assert "provisioner ebs.csi.aws.com" in result.message


def test_wait_for_first_consumer_lets_the_pod_speak_first() -> None:
    unschedulable = job_pod(scheduled={"status": "False", "reason": "Unschedulable", "message": "0/3 nodes: taints"})
    result = verdict(claim=claim(class_name="local-path"), storage_classes=[LOCAL_PATH], job_pods=[unschedulable])
    assert result.reason == "FetcherUnschedulable"
    # Once the pod is on a node, a claim still Pending is the volume's problem.
    scheduled = job_pod(node="node-1", phase="Pending")
    result = verdict(claim=claim(class_name="local-path"), storage_classes=[LOCAL_PATH], job_pods=[scheduled])
    assert result.reason == "VolumePending"


def test_unknown_classes_still_say_the_claim_is_pending() -> None:
    result = verdict(claim=claim(class_name="x"), storage_classes=None)
    assert result.reason == "VolumePending"
    assert "kubectl describe pvc demo-weights" in result.message


def test_a_bound_claim_is_no_problem() -> None:
    assert verdict(claim=claim(phase="Bound"), storage_classes=[]).reason == "Downloading"


# ------------------------------------------------------------------------------------------- fetcher
def test_unschedulable_download_pod_quotes_the_scheduler() -> None:
    message = "0/4 nodes are available: 4 node(s) had untolerated taint {nvidia.com/gpu: present}"
    result = verdict(job_pods=[job_pod(scheduled={"status": "False", "reason": "Unschedulable", "message": message})])
    assert (result.status, result.reason) == ("False", "FetcherUnschedulable")
    assert message in result.message


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_an_image_that_cannot_be_pulled_is_named(reason: str) -> None:
    pending = job_pod(node="node-1", waiting=(reason, "Back-off pulling image"))
    result = verdict(job_pods=[pending])
    assert result.reason == "FetcherImagePull"
    assert "registry.example/fetcher:1.0" in result.message
    assert reason in result.message


def test_a_missing_token_secret_is_named_with_the_field() -> None:
    result = verdict(token_secret="hf-token", token_secret_found=False, job_pods=[job_pod(node="n")])
    assert (result.status, result.reason) == ("False", "TokenSecretMissing")
    assert "Secret hf-token" in result.message
    assert "tokenSecretRef" in result.message
    assert verdict(token_secret="hf-token", token_secret_found=None).reason == "Downloading"  # not checked


def test_a_failed_job_quotes_the_fetchers_last_words() -> None:
    failed_job = {
        "metadata": {"name": "demo-weights-abc"},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    pods = [
        job_pod("a", phase="Failed", terminated=(1, "gptoss-runtime fetch: earlier"), started="2026-11-25T09:00:00Z"),
        job_pod("b", phase="Failed", terminated=(1, "traceback\ngptoss-runtime fetch: --repo: x is not accessible")),
    ]
    result = verdict(failed_job, job_pods=pods)
    assert (result.status, result.reason) == ("False", "DownloadFailed")
    assert result.message.endswith("gptoss-runtime fetch: --repo: x is not accessible")
    without_pods = verdict(failed_job)
    assert "BackoffLimitExceeded" in without_pods.message
    assert "kubectl logs job/demo-weights-abc" in without_pods.message


def test_a_retried_attempt_is_mentioned_while_downloading() -> None:
    pods = [job_pod("a", phase="Failed", terminated=(1, "timed out")), job_pod("b", phase="Running", node="n")]
    result = verdict(job_pods=pods)
    assert result.reason == "Downloading"
    assert "an earlier attempt failed: timed out" in result.message


def test_a_complete_job_wins_over_everything() -> None:
    done = {"metadata": {"name": "j"}, "status": {"succeeded": 1}}
    result = verdict(done, claim=claim(), storage_classes=[], token_secret="t", token_secret_found=False)
    assert (result.status, result.reason) == ("True", "Downloaded")


# ------------------------------------------------------------------------------------------ progress
def test_eta_needs_a_total_and_a_positive_rate() -> None:
    assert diagnosis.eta_seconds(DownloadProgress(100, 1000, 50.0)) == 18
    assert diagnosis.eta_seconds(DownloadProgress(100, None, 50.0)) is None
    assert diagnosis.eta_seconds(DownloadProgress(100, 1000, 0.0)) is None
    assert diagnosis.eta_seconds(DownloadProgress(100, 1000, None)) is None
    assert diagnosis.eta_seconds(DownloadProgress(2000, 1000, 5.0)) == 0


def test_progress_message_reads_well() -> None:
    progress = DownloadProgress(3 * 2**30, 12 * 2**30, 48 * 2**20)
    assert diagnosis.progress_message(progress) == "3.0 GiB of 12.0 GiB (25%) at 48.0 MiB/s, about 3m12s left"
    assert diagnosis.progress_message(DownloadProgress(512, None, None)) == "512 B"
    assert diagnosis.human_duration(3725) == "1h02m"


def test_downloading_carries_progress_in_the_message_and_status_weights() -> None:
    progress = DownloadProgress(250 * 2**20, 1000 * 2**20, 25 * 2**20)
    obs = observe(
        pods=[],
        weights_job=JOB,
        weights_facts=WeightsFacts(job_pods=[job_pod(phase="Running", node="n")], progress=progress),
    )
    result = compute(obs)
    weights = cond(result, names.COND_WEIGHTS_READY)
    assert weights["reason"] == "Downloading"
    assert "250.0 MiB of 1000.0 MiB (25%) at 25.0 MiB/s, about 30s left" in weights["message"]
    assert result["weights"] == {
        "bytesDone": 250 * 2**20,
        "bytesTotal": 1000 * 2**20,
        "bytesPerSecond": 25 * 2**20,
        "etaSeconds": 30,
    }


def test_status_weights_is_removed_once_downloaded() -> None:
    done = {"metadata": {"name": "j"}, "status": {"succeeded": 1}}
    result = compute(observe(weights_job=done, weights_facts=WeightsFacts(progress=DownloadProgress(1, 1, 1.0))))
    assert result["weights"] is None


# ---------------------------------------------------------------------------------------- server pods
def unschedulable_pod(name: str, message: str) -> dict[str, Any]:
    waiting = pod(name, ready=False, node=None)
    waiting["status"]["conditions"].append(
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    )
    return waiting


def test_server_pods_on_an_absent_gpu_product() -> None:
    pods = [unschedulable_pod("a", "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector")]
    result = compute(observe(pods=pods, capacity=capacity(fit=0, nodes=0, free=0)))
    ready = cond(result, names.COND_READY)
    assert (ready["status"], ready["reason"]) == ("False", "GPUProductAbsent")
    assert "NVIDIA-H100-80GB-HBM3" in ready["message"]
    progressing = cond(result, names.COND_PROGRESSING)
    assert (progressing["status"], progressing["reason"]) == ("True", "GPUProductAbsent")


def test_server_pods_short_of_gpus() -> None:
    pods = [unschedulable_pod("a", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu")]
    result = compute(observe(pods=pods, capacity=capacity(fit=0, nodes=3, free=0)))
    ready = cond(result, names.COND_READY)
    assert ready["reason"] == "InsufficientGPUs"
    assert "the 3 node(s) with NVIDIA-H100-80GB-HBM3 lack free GPUs" in ready["message"]


def test_server_pods_unschedulable_for_another_reason_quote_the_scheduler() -> None:
    pods = [unschedulable_pod("a", "0/3 nodes are available: 3 Insufficient memory")]
    result = compute(observe(pods=pods, capacity=capacity(fit=1, nodes=3, free=4)))
    ready = cond(result, names.COND_READY)
    assert ready["reason"] == "Unschedulable"
    assert "Insufficient memory" in ready["message"]


def test_server_pod_image_pull_names_the_image() -> None:
    pulling = pod("a", ready=False, waiting="ImagePullBackOff")
    pulling["status"]["containerStatuses"][0]["image"] = "registry.example/runtime:bad"
    result = compute(observe(pods=[pulling]))
    ready = cond(result, names.COND_READY)
    assert ready["reason"] == "ImagePullFailed"
    assert "registry.example/runtime:bad" in ready["message"]


def test_a_pending_volume_is_said_once_by_weights_not_by_unschedulable_pods() -> None:
    pods = [unschedulable_pod("a", "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims")]
    facts = WeightsFacts(claim=claim(class_name="nope"), storage_classes=[FAST])
    result = compute(observe(pods=pods, weights_job=JOB, weights_facts=facts))
    assert cond(result, names.COND_WEIGHTS_READY)["reason"] == "VolumePending"
    ready = cond(result, names.COND_READY)
    assert ready["reason"] == "WeightsNotReady"
    assert "StorageClass nope" in ready["message"]


# ---------------------------------------------------------------------------------- a volume per replica
def test_per_replica_volumes_of_a_missing_class_are_pending_without_any_claim_seen() -> None:
    facts = WeightsFacts(claim_template={"storageClassName": "gone"}, storage_classes=[LOCAL_PATH])
    result = compute(observe(pods=[pod("a", ready=False, node=None)], weights_facts=facts))
    weights = cond(result, names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("False", "VolumePending")
    assert "StorageClass gone" in weights["message"]
    assert "<pod>-weights" in weights["message"]
    assert cond(result, names.COND_READY)["reason"] == "WeightsNotReady"


def test_per_replica_download_in_the_init_container_is_downloading() -> None:
    fetching = pod("a", ready=False)
    fetching["status"]["initContainerStatuses"] = [{"name": "fetch", "state": {"running": {}}}]
    facts = WeightsFacts(claim_template={}, storage_classes=[LOCAL_PATH], fetch_container="fetch")
    weights = cond(compute(observe(pods=[fetching], weights_facts=facts)), names.COND_WEIGHTS_READY)
    assert weights["reason"] == "Downloading"
    assert "1 replica(s) are downloading" in weights["message"]


def test_per_replica_missing_token_secret() -> None:
    facts = WeightsFacts(token_secret="hf", token_secret_found=False, claim_template={})
    weights = cond(compute(observe(pods=[pod("a", ready=False)], weights_facts=facts)), names.COND_WEIGHTS_READY)
    assert weights["reason"] == "TokenSecretMissing"


def test_a_ready_replica_has_loaded_the_weights_whatever_else() -> None:
    facts = WeightsFacts(token_secret="hf", token_secret_found=False, claim_template={"storageClassName": "gone"})
    weights = cond(compute(observe(weights_facts=facts)), names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("True", "Loaded")


def test_a_weights_problem_emits_one_warning_when_it_starts() -> None:
    facts = WeightsFacts(claim=claim(class_name="nope"), storage_classes=[FAST])
    first = compute(observe(weights_job=JOB, weights_facts=facts))
    events = status.transition_events(None, first)
    assert [e.reason for e in events if e.type == "Warning"] == ["VolumePending"]
    again = compute(observe(weights_job=JOB, weights_facts=facts), previous=first)
    assert [e.reason for e in status.transition_events(first, again)] == []


# ------------------------------------------------------------------ a volume per replica: progress, token key
def fetching_pod(name: str, *, ready: bool = False) -> dict[str, Any]:
    """A server pod whose `fetch` init container downloads (the pod is Pending, but has its IP)."""
    fetching = pod(name, ready=ready)
    fetching["status"]["phase"] = "Pending"
    fetching["status"]["podIP"] = "10.1.0.9"
    fetching["status"]["initContainerStatuses"] = [{"name": "fetch", "state": {"running": {}}}]
    return fetching


def per_replica(**facts: Any) -> WeightsFacts:
    return WeightsFacts(claim_template={}, storage_classes=[LOCAL_PATH], fetch_container="fetch", **facts)


def test_per_replica_progress_reports_the_replica_furthest_behind() -> None:
    ahead = DownloadProgress(900 * 2**20, 1000 * 2**20, 50 * 2**20)  # 2 s left
    behind = DownloadProgress(100 * 2**20, 1000 * 2**20, 10 * 2**20)  # 90 s left
    facts = per_replica(replica_progress={"a": ahead, "b": behind})
    result = compute(observe(pods=[fetching_pod("a"), fetching_pod("b")], weights_facts=facts))
    weights = cond(result, names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("False", "Downloading")
    assert weights["message"].startswith("2 replica(s) are downloading the weights into their own volumes")
    assert (
        "furthest behind, pod b has 100.0 MiB of 1000.0 MiB (10%) at 10.0 MiB/s, about 1m30s left"
        in (weights["message"])
    )
    assert result["weights"] == {
        "bytesDone": 100 * 2**20,
        "bytesTotal": 1000 * 2**20,
        "bytesPerSecond": 10 * 2**20,
        "etaSeconds": 90,
        "replicasDownloading": 2,
    }


def test_per_replica_progress_of_one_replica_and_of_silent_fetchers() -> None:
    only = DownloadProgress(512, 2048, None)
    weights = cond(
        compute(observe(pods=[fetching_pod("a")], weights_facts=per_replica(replica_progress={"a": only}))),
        names.COND_WEIGHTS_READY,
    )
    assert (
        weights["message"]
        == "1 replica(s) are downloading the weights into their own volumes: pod a has 512 B of 2.0 KiB (25%)"
    )
    silent = compute(observe(pods=[fetching_pod("a")], weights_facts=per_replica()))
    assert "(e.g. pod a)" in cond(silent, names.COND_WEIGHTS_READY)["message"]
    assert silent["weights"] is None  # nothing reported: no figures rather than made-up ones


def test_progress_of_pods_that_no_longer_fetch_is_ignored() -> None:
    done = pod("a", ready=False)
    done["status"]["initContainerStatuses"] = [{"name": "fetch", "state": {"terminated": {"exitCode": 0}}}]
    facts = per_replica(replica_progress={"a": DownloadProgress(1, 1, 1.0)})
    result = compute(observe(pods=[done], weights_facts=facts))
    assert cond(result, names.COND_WEIGHTS_READY)["reason"] != "Downloading"
    assert result["weights"] is None


def test_a_ready_replica_has_loaded_while_added_replicas_download() -> None:
    facts = per_replica(replica_progress={"b": DownloadProgress(10, 100, 5.0)})
    result = compute(observe(pods=[pod("a"), fetching_pod("b")], weights_facts=facts))
    weights = cond(result, names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("True", "Loaded")
    assert "1 more replica(s) still downloading their own copy" in weights["message"]
    assert result["weights"] is not None and result["weights"]["replicasDownloading"] == 1


def test_the_furthest_behind_without_etas_has_the_fewest_bytes() -> None:
    found = diagnosis.furthest_behind({"a": DownloadProgress(5, None, None), "b": DownloadProgress(3, None, None)})
    assert found is not None and found[0] == "b"
    assert diagnosis.furthest_behind({}) is None


MOUNT_FAILED = 'MountVolume.SetUp failed for volume "hf-token" : references non-existent secret key: token'


def stuck_server_pod(name: str = "a") -> dict[str, Any]:
    stuck = pod(name, ready=False)
    stuck["status"]["phase"] = "Pending"
    stuck["status"]["initContainerStatuses"] = [{"name": "fetch", "state": {"waiting": {"reason": "PodInitializing"}}}]
    return stuck


def test_a_token_secret_without_the_key_is_named_with_the_key_and_the_fix() -> None:
    facts = per_replica(
        token_secret="hf", token_secret_found=True, token_key="token", mount_failures={"a": MOUNT_FAILED}
    )
    result = compute(observe(pods=[stuck_server_pod("a")], weights_facts=facts))
    weights = cond(result, names.COND_WEIGHTS_READY)
    assert (weights["status"], weights["reason"]) == ("False", "TokenSecretKeyMissing")
    assert "Secret hf (spec.weights.huggingFace.tokenSecretRef.name) has no key token" in weights["message"]
    assert "references non-existent secret key: token" in weights["message"]
    assert "--from-literal=token=<token>" in weights["message"]
    events = status.transition_events(None, result)
    assert [e.reason for e in events if e.type == "Warning"] == ["TokenSecretKeyMissing"]


def test_the_download_jobs_pod_without_the_key_is_said_before_downloading() -> None:
    stuck = job_pod(node="n", waiting=("ContainerCreating", ""))
    result = verdict(
        job_pods=[stuck],
        token_secret="hf",
        token_secret_found=True,
        token_key="hf-token",
        mount_failures={stuck["metadata"]["name"]: MOUNT_FAILED.replace("key: token", "key: hf-token")},
    )
    assert result.reason == "TokenSecretKeyMissing"
    assert f"pod {stuck['metadata']['name']}" in result.message


def test_a_key_taken_into_the_environment_is_said_from_the_pod_status() -> None:
    message = "couldn't find key token in Secret team/hf"
    result = verdict(
        job_pods=[job_pod(node="n", waiting=("CreateContainerConfigError", message))],
        token_secret="hf",
        token_secret_found=True,
        token_key="token",
    )
    assert result.reason == "TokenSecretKeyMissing"
    assert message in result.message


def test_other_mount_failures_and_crs_without_a_token_are_not_a_missing_key() -> None:
    other = {"a": 'MountVolume.SetUp failed for volume "weights" : some other trouble'}
    facts = per_replica(token_secret="hf", token_secret_found=True, token_key="token", mount_failures=other)
    assert diagnosis.token_key_missing(facts, [stuck_server_pod("a")]) is None
    no_token = per_replica(mount_failures={"a": MOUNT_FAILED})
    assert diagnosis.token_key_missing(no_token, [stuck_server_pod("a")]) is None


def test_which_pods_count_as_not_started() -> None:
    assert diagnosis.not_started(stuck_server_pod("a"), "fetch")
    assert not diagnosis.not_started(fetching_pod("a"), "fetch")  # it runs
    assert not diagnosis.not_started(pod("a", ready=False, node=None), "fetch")  # not scheduled: the scheduler says
    unreported = pod("a", ready=False)
    unreported["status"]["containerStatuses"] = []
    assert diagnosis.not_started(unreported, "fetch")  # scheduled, nothing reported yet


# ------------------------------------------------------------------------------------------- rollouts
def server_deployment(*, surge: int | str, revision: str, reason: str, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2, "annotations": {diagnosis.REVISION_ANNOTATION: revision}},
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 1}}},
        "status": {"observedGeneration": observed, "conditions": [{"type": "Progressing", "reason": reason}]},
    }


@pytest.mark.parametrize(
    ("deployment", "replicas", "per_replica_download", "outage"),
    [
        (server_deployment(surge=0, revision="2", reason="ReplicaSetUpdated"), 1, True, True),
        (server_deployment(surge="0%", revision="1", reason="NewReplicaSetAvailable", observed=1), 1, True, True),
        (server_deployment(surge=1, revision="2", reason="ReplicaSetUpdated"), 1, True, False),  # a surge pod serves
        (server_deployment(surge=0, revision="2", reason="ReplicaSetUpdated"), 2, True, False),  # the other serves
        (server_deployment(surge=0, revision="2", reason="ReplicaSetUpdated"), 1, False, False),  # shared cache
        (server_deployment(surge=0, revision="1", reason="ReplicaSetUpdated"), 1, True, False),  # the first start
        (server_deployment(surge=0, revision="3", reason="NewReplicaSetAvailable"), 1, True, False),  # done
        (None, 1, True, False),
    ],
    ids=["rolling", "not-yet-observed", "surge", "two-replicas", "shared-cache", "first", "finished", "none"],
)
def test_a_rollout_of_the_only_replica_without_a_surge_is_an_outage_with_a_volume_per_replica(
    deployment: dict[str, Any] | None, replicas: int, per_replica_download: bool, outage: bool
) -> None:
    said = diagnosis.rollout_outage(deployment, desired_replicas=replicas, per_replica_download=per_replica_download)
    assert (said is not None) == outage
    if said is not None:
        assert "nothing serves until then" in said
        assert "spec.weights.cache.accessMode: ReadWriteMany" in said
