"""What every builder receives, and the helpers they share: names, labels, owner references, security.

Pure: no Kubernetes client, no clock, no environment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from gptoss_operator import names
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.settings import OperatorSettings
from gptoss_runtime.plan import ServingPlan

Manifest = dict[str, Any]

MAX_DNS_LABEL: Final = 63  # Services, label values and Job names (the job-name label) must fit in it
# Paths inside the pods (emptyDirs there), not files of the operator process.
POD_TMP_DIR: Final = "/tmp"  # noqa: S108
POD_SHM_DIR: Final = "/dev/shm"  # noqa: S108
RUN_AS_USER: Final = 1000
RUN_AS_GROUP: Final = 1000


@dataclass(frozen=True)
class ClusterFeatures:
    """Which optional CRDs the cluster has."""

    pod_monitor: bool = False  # monitoring.coreos.com/v1 PodMonitor (Prometheus Operator)
    keda: bool = False  # keda.sh/v1alpha1 ScaledObject


# The revision of the server pod template's shape. A builder change that alters the pod template of an
# unchanged CR must bump it and keep the old output for the old revision (tests/unit/builders/
# test_builders_released.py holds the released templates); see docs/upgrades.md.
POD_TEMPLATE_REVISION: Final = 1
RELEASED_TEMPLATE_REVISIONS: Final = (1,)


@dataclass(frozen=True)
class RuntimeInputs:
    """What a CR's pods were resolved with once (status.runtime): they outlive the operator version.

    `image` None means the operator's default image; `template_revision` picks the pod template's shape.
    """

    image: str | None = None
    template_revision: int = POD_TEMPLATE_REVISION

    def __post_init__(self) -> None:
        if self.template_revision not in RELEASED_TEMPLATE_REVISIONS:
            known = ", ".join(str(r) for r in RELEASED_TEMPLATE_REVISIONS)
            raise ValueError(
                f"pod template revision {self.template_revision} is unknown (this operator renders {known})"
            )


@dataclass(frozen=True)
class BuildContext:
    """A custom resource, its plan and the operator settings: everything a builder may look at."""

    cr: GptOssDeployment
    plan: ServingPlan
    settings: OperatorSettings
    features: ClusterFeatures = ClusterFeatures()
    runtime: RuntimeInputs = RuntimeInputs()

    @property
    def name(self) -> str:
        return self.cr.metadata.name

    @property
    def namespace(self) -> str:
        return self.cr.metadata.namespace

    def child_name(self, suffix: str = "", *, limit: int = MAX_DNS_LABEL) -> str:
        return child_name(self.name, suffix, limit=limit)

    def labels(self, component: str) -> dict[str, str]:
        return {
            names.LABEL_NAME: names.APP_NAME,
            names.LABEL_INSTANCE: label_value(self.name),
            names.LABEL_COMPONENT: component,
            names.LABEL_MANAGED_BY: names.MANAGED_BY,
            names.LABEL_PART_OF: names.APP_NAME,
            names.LABEL_MODEL: self.cr.spec.model,
            names.LABEL_DEPLOYMENT: label_value(self.name),
        }

    def selector(self) -> dict[str, str]:
        return server_selector(self.name)

    def metadata(self, name: str, component: str, annotations: dict[str, str] | None = None) -> Manifest:
        meta: Manifest = {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner_reference()],
        }
        if annotations:
            meta["annotations"] = dict(annotations)
        return meta

    def owner_reference(self) -> Manifest:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.cr.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def server_selector(cr_name: str) -> dict[str, str]:
    """Labels that select the server pods of a GptOssDeployment (also the scale subresource's selector)."""
    return {
        names.LABEL_INSTANCE: label_value(cr_name),
        names.LABEL_COMPONENT: names.COMPONENT_SERVER,
        names.LABEL_DEPLOYMENT: label_value(cr_name),
    }


def server_selector_string(cr_name: str) -> str:
    """`status.selector` for the scale subresource."""
    return ",".join(f"{key}={value}" for key, value in sorted(server_selector(cr_name).items()))


def short_hash(*parts: str, length: int = 8) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return digest[:length]


def label_value(text: str) -> str:
    """`text` if it is a valid label value length, else a prefix plus a hash (still unique, still <= 63)."""
    return _fit(text, MAX_DNS_LABEL)


def child_name(base: str, suffix: str = "", *, limit: int = MAX_DNS_LABEL) -> str:
    """`<base><suffix>`, shortened with a hash of `base` when longer than `limit`."""
    full = f"{base}{suffix}"
    if len(full) <= limit:
        return full
    return _fit(base, limit - len(suffix)) + suffix


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    tag = short_hash(text)
    return f"{text[: limit - len(tag) - 1].rstrip('-.')}-{tag}"


def pod_security_context() -> Manifest:
    """Pod Security `restricted`: non-root, RuntimeDefault seccomp; fsGroup makes volumes writable for uid 1000."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def quantity(value: float) -> str:
    """A Kubernetes quantity for a plain number: integers as is, fractions in milli-units (0.85 -> 850m)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"
