"""An operator upgrade restarts nothing until the GptOssDeployment opts in (docs/upgrades.md), on kwok.

"A new operator version" is the operator restarted with another default runtime image
(GPTOSS_DEFAULT_IMAGE), which changes the pod template every CR without `spec.image` would get. The
server Deployment must keep its pod template and generation, the CR must say UpdateAvailable=True, and
the annotation gptoss.io/apply-update must then roll the pods to the new image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Kubectl, wait_until
from operator_process import OperatorProcess, Volumes, condition, get_cr, load_sample, wait_for_condition

pytestmark = pytest.mark.cluster

NAME = "gpt-oss-20b"
OLD_IMAGE = "registry.example/gpt-oss-runtime:old-release"
NEW_IMAGE = "registry.example/gpt-oss-runtime:new-release"
APPLY_UPDATE = "gptoss.io/apply-update"


def operator_with_image(kubeconfig: Path, namespace: str, log: Path, image: str) -> OperatorProcess:
    return OperatorProcess(kubeconfig, [namespace], log, extra_env={"GPTOSS_DEFAULT_IMAGE": image}).start()


def server_images(deployment: dict[str, Any]) -> set[str]:
    pod = deployment["spec"]["template"]["spec"]
    return {c["image"] for c in [*pod.get("initContainers", []), *pod["containers"]]}


def test_a_new_operator_version_changes_no_pod_template_until_the_cr_opts_in(
    kubeconfig: Path, kubectl_ns: Kubectl, namespace: str, crd: None, volumes: Volumes, tmp_path: Path
) -> None:
    old = operator_with_image(kubeconfig, namespace, tmp_path / "old-operator.log", OLD_IMAGE)
    try:
        kubectl_ns.apply(load_sample("gpt-oss-20b.yaml"))
        cr = wait_for_condition(kubectl_ns, NAME, "Ready", "True", volumes=volumes, operator=old)
        assert cr["status"]["runtime"]["image"] == OLD_IMAGE
        assert condition(cr, "UpdateAvailable")["status"] == "False"
    finally:
        print(f"--- old operator, exit {old.stop()} ---\n{old.logs()}")
    before = kubectl_ns.json("get", "deployment", NAME)
    assert server_images(before) == {OLD_IMAGE}

    new = operator_with_image(kubeconfig, namespace, tmp_path / "new-operator.log", NEW_IMAGE)
    try:
        cr = wait_for_condition(kubectl_ns, NAME, "UpdateAvailable", "True", reason="AwaitingOptIn", operator=new)
        message = condition(cr, "UpdateAvailable")["message"]
        assert f"{OLD_IMAGE} -> {NEW_IMAGE}" in message and APPLY_UPDATE in message
        assert cr["status"]["runtime"]["image"] == OLD_IMAGE
        after = kubectl_ns.json("get", "deployment", NAME)
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert after["spec"]["template"] == before["spec"]["template"]
        assert condition(get_cr(kubectl_ns, NAME), "Ready")["status"] == "True"

        kubectl_ns("annotate", "gptoss", NAME, f"{APPLY_UPDATE}=e2e-1")
        wait_until(
            lambda: server_images(kubectl_ns.json("get", "deployment", NAME)) == {NEW_IMAGE},
            timeout_s=60,
            interval_s=0.5,
            what="the opted-in update to put the new image into the pod template",
        )
        cr = wait_for_condition(kubectl_ns, NAME, "UpdateAvailable", "False", reason="UpToDate", operator=new)
        assert cr["status"]["runtime"]["image"] == NEW_IMAGE
        assert cr["status"]["runtime"]["appliedUpdate"] == "e2e-1"
        wait_for_condition(kubectl_ns, NAME, "Ready", "True", volumes=volumes, operator=new)
    finally:
        print(f"--- new operator, exit {new.stop()} ---\n{new.logs()}")
