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
