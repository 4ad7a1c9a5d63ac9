"""Names of the API, labels, annotations, conditions and operator metrics, defined once."""

from __future__ import annotations

from typing import Final

GROUP: Final = "gptoss.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "GptOssDeployment"
PLURAL: Final = "gptossdeployments"
SINGULAR: Final = "gptossdeployment"
SHORT_NAMES: Final = ("gptoss",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "gpt-oss-operator"
# Status is written by server-side apply, one field manager per writer (docs/status.md): the reconcile applies
# its fields and conditions as FIELD_MANAGER, the autoscaler status.autoscaling and its conditions as this one.
FIELD_MANAGER_AUTOSCALER: Final = "gpt-oss-operator-autoscaler"
# Managers whose merge patches (operation Update) wrote status before it moved to server-side apply: the
# operator's own client (its user agent names the manager) and Kopf's. Their status fields are migrated.
LEGACY_STATUS_MANAGERS: Final = (FIELD_MANAGER, "kopf")

# Labels on every child; the selector of the server pods uses LABEL_INSTANCE + LABEL_COMPONENT.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MODEL: Final = f"{GROUP}/model"
LABEL_DEPLOYMENT: Final = f"{GROUP}/deployment"  # the owning GptOssDeployment's name
# A Secret that may serve as a Hugging Face token (spec.weights.huggingFace.tokenSecretRef) carries this label
# with the value "true": the namespace's owner marks which Secrets a GptOssDeployment may hand to the fetcher.
LABEL_WEIGHTS_TOKEN: Final = f"{GROUP}/weights-token"
LABEL_WEIGHTS_TOKEN_VALUE: Final = "true"  # noqa: S105 - a label value, not a secret
APP_NAME: Final = "gpt-oss"
MANAGED_BY: Final = "gpt-oss-operator"
COMPONENT_SERVER: Final = "server"
COMPONENT_WEIGHTS: Final = "weights"

# Annotations
ANNOTATION_GENERATION: Final = f"{GROUP}/generation"  # CR generation a pod template was built from
ANNOTATION_PLAN_HASH: Final = f"{GROUP}/plan-hash"  # rolls pods when the plan changes
# Hash of the whole server pod template (plan hash included): a pod whose value differs from the desired
# Deployment's template is of an older spec. Unlike the CR generation, it does not change on a scale.
ANNOTATION_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
# The engine the server pods run (trtllm, or reference when the CPU stand-in serves); read back by status.
ANNOTATION_ENGINE: Final = f"{GROUP}/engine"
# Operator upgrades (docs/upgrades.md). On the CR: a new value applies a waiting operator update once.
ANNOTATION_APPLY_UPDATE: Final = f"{GROUP}/apply-update"
# On the server Deployment: a hash of the spec its pod template was rendered from, and that template
# (zlib + base64 JSON), so that a later operator version can tell a spec change from its own change.
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
ANNOTATION_RENDERED_TEMPLATE: Final = f"{GROUP}/rendered-template"
KOPF_ANNOTATION_PREFIX: Final = f"kopf.{GROUP}"  # Kopf's own bookkeeping lives under our group

# Status conditions
COND_READY: Final = "Ready"
COND_PROGRESSING: Final = "Progressing"
COND_DEGRADED: Final = "Degraded"
COND_WEIGHTS_READY: Final = "WeightsReady"
COND_CAPACITY_AVAILABLE: Final = "CapacityAvailable"
COND_CAPACITY_LIMITED: Final = "CapacityLimited"  # set by the autoscaler
# Set by the autoscaler: whether the chosen autoscaling mode can act (False: e.g. mode keda without KEDA).
COND_SCALING_ACTIVE: Final = "ScalingActive"
AUTOSCALER_CONDITIONS: Final = (COND_CAPACITY_LIMITED, COND_SCALING_ACTIVE)  # applied by FIELD_MANAGER_AUTOSCALER
# True when the cluster's operator setting GPTOSS_ENGINE_STAND_IN makes the CPU reference engine serve.
COND_ENGINE_STAND_IN: Final = "EngineStandIn"
CONDITION_TYPES: Final = (
    COND_READY,
    COND_PROGRESSING,
    COND_DEGRADED,
    COND_WEIGHTS_READY,
    COND_CAPACITY_AVAILABLE,
    COND_CAPACITY_LIMITED,
    COND_SCALING_ACTIVE,
    COND_ENGINE_STAND_IN,
)
# Set by the reconcile: True while a new operator version's pod template (or image) waits for an opt-in or a
# rollout slot; False when the pods run what this operator would render.
COND_UPDATE_AVAILABLE: Final = "UpdateAvailable"
# Set by the reconcile: False names each child the API server refused (apply or prune) and the server's reason.
COND_CHILDREN_APPLIED: Final = "ChildrenApplied"
REASON_INVALID_SPEC: Final = "InvalidSpec"
# The operator refuses to act as a confused deputy (docs/security.md): WeightsReady=False with these reasons.
REASON_TOKEN_SECRET_NOT_MARKED: Final = "TokenSecretNotMarked"  # noqa: S105 - a condition reason
REASON_ENDPOINT_NOT_ALLOWED: Final = "EndpointNotAllowed"
# ChildrenApplied=False: an object with a child's name exists and is not controlled by the GptOssDeployment.
REASON_ADOPTION_REFUSED: Final = "AdoptionRefused"

# Phases for the printer column
PHASE_PENDING: Final = "Pending"
PHASE_PROGRESSING: Final = "Progressing"
PHASE_READY: Final = "Ready"
PHASE_DEGRADED: Final = "Degraded"
PHASE_FAILED: Final = "Failed"

# GPU scheduling
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_PRODUCT_LABEL: Final = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL: Final = "nvidia.com/gpu.memory"
GPU_COUNT_LABEL: Final = "nvidia.com/gpu.count"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"

# The operator's own Prometheus metrics
METRIC_RECONCILES: Final = "gptoss_operator_reconciles_total"  # label result=success|error|invalid
METRIC_RECONCILE_DURATION: Final = "gptoss_operator_reconcile_duration_seconds"
METRIC_API_REQUESTS: Final = "gptoss_operator_api_requests_total"  # labels verb, code
METRIC_GC_PAUSE: Final = "gptoss_operator_gc_pause_seconds"  # label generation (0, 1, 2)
METRIC_DEPLOYMENTS: Final = "gptoss_operator_deployments"  # label phase
METRIC_DESIRED_REPLICAS: Final = "gptoss_operator_desired_replicas"  # labels namespace, name
METRIC_READY_REPLICAS: Final = "gptoss_operator_ready_replicas"
METRIC_GPUS: Final = "gptoss_operator_gpus"  # GPUs requested by ready+starting replicas
METRIC_AUTOSCALER_DECISIONS: Final = "gptoss_operator_autoscaler_decisions_total"  # direction, reason
METRIC_CAPACITY_LIMITED: Final = "gptoss_operator_capacity_limited"  # 1 while capped, labels ns, name
METRIC_WEIGHTS_READY: Final = "gptoss_operator_weights_ready"  # 1 when weights are in the cache
# The deployment's time-to-first-token target (spec.autoscaling.targets), when it sets one; the alert
# GptOssTimeToFirstTokenHigh compares the p90 with it (default 2 s).
METRIC_TTFT_TARGET: Final = "gptoss_operator_time_to_first_token_target_seconds"
