"""Operator upgrades that restart nothing: which pod template a CR gets, and when an update may roll (pure).

A new operator version may bring a new default image, a new pod template shape (builder code) or new
settings; any of them changes the server Deployment's pod template and so restarts every GPU pod of the
fleet. Instead (docs/upgrades.md):
- The default image and the template revision are resolved once per CR and recorded in `status.runtime`;
  later renders use the recorded ones (`pinned_runtime`), not the operator's new defaults.
- The server Deployment carries the hash of the spec its template was rendered from and that template
  (annotations). While the spec hash is unchanged the template is kept as it is (`frozen_template`), so a
  change the spec did not cause (operator code, settings) changes no pod. An edit of the spec renders anew
  (with the recorded image and revision): the user asked for a roll.
- A waiting update is applied when the CR says so: policy Automatic (when a rollout slot is free,
  `admit_rollout`) or a new value of the annotation `gptoss.io/apply-update` (at once).
- `surge_fits` picks `maxSurge: 1` when a spare replica fits on free GPUs (no replica goes dark), else 0.

Everything here is data in, data out: no Kubernetes client, no clock, no environment. `RolloutSlots` only
holds the set of rollouts this process admitted, behind a lock.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gptoss_operator import names
from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import ClusterFeatures, build_children
from gptoss_operator.builders.context import POD_TEMPLATE_REVISION, RELEASED_TEMPLATE_REVISIONS, RuntimeInputs
from gptoss_operator.builders.deployment import SERVER_CONTAINER, rolling_update_strategy
from gptoss_operator.settings import OperatorSettings
from gptoss_operator.status import Capacity, ConditionValue
from gptoss_runtime.plan import ServingPlan

Json = dict[str, Any]
Key = tuple[str, str]

POLICY_AUTOMATIC: Final = "Automatic"
# Spec fields that never reach the pod template: editing them must not apply a waiting operator update.
SPEC_FIELDS_OUTSIDE_TEMPLATE: Final = frozenset({"replicas", "update_policy"})
MAX_MESSAGE: Final = 1024

REASON_UP_TO_DATE: Final = "UpToDate"
REASON_AWAITING_OPT_IN: Final = "AwaitingOptIn"
REASON_AWAITING_ROLLOUT_SLOT: Final = "AwaitingRolloutSlot"


# ----------------------------------------------------------------------------------------- recorded state
@dataclass(frozen=True)
class Recorded:
    """`status.runtime` as read back (any field may be missing or wrong: it is never validated)."""

    image: str | None = None  # the operator default image pinned for this CR (used while spec.image is empty)
    template_revision: int | None = None
    operator_version: str | None = None
    applied_update: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Recorded:
        raw = status.get("runtime")
        if not isinstance(raw, Mapping):
            return cls()
        revision = raw.get("templateRevision")

        def text(key: str) -> str | None:
            value = raw.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            image=text("image"),
            template_revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else None,
            operator_version=text("operatorVersion"),
            applied_update=text("appliedUpdate"),
        )

    def to_status(self) -> Json:
        return {
            "image": self.image,
            "templateRevision": self.template_revision,
            "operatorVersion": self.operator_version,
            "appliedUpdate": self.applied_update,
        }


def spec_hash(cr: GptOssDeployment) -> str:
    """A hash of the spec as the user wrote it, without the fields that never reach the pod template.

    Defaults are left out, so a new operator version that adds a field (with its default) or changes a
    default does not look like an edit of the spec.
    """
    spec = cr.spec.model_dump(mode="json", exclude_defaults=True, exclude=set(SPEC_FIELDS_OUTSIDE_TEMPLATE))
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_template(template: Mapping[str, Any]) -> str:
    """A pod template as an annotation value: compact JSON, zlib, base64 (a few hundred bytes)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return base64.b64encode(zlib.compress(canonical.encode(), 9)).decode()


def decode_template(value: str) -> Json | None:
    try:
        decoded = json.loads(zlib.decompress(base64.b64decode(value, validate=True)))
    except (binascii.Error, zlib.error, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


@dataclass(frozen=True)
class FrozenTemplate:
    """The pod template a live server Deployment was rendered with, and the spec hash it came from."""

    spec_hash: str | None
    template: Json


def frozen_template(live: Mapping[str, Any] | None) -> FrozenTemplate | None:
    """The template last rendered for the live Deployment (its annotation), or None when there is none.

    The annotation, not the live template, is what the operator wants: the live one may lag behind (a
    rollout holding the old template) or carry a hand edit, which the apply reverts. A Deployment written
    before templates were recorded keeps its live template (once; then it is recorded).
    """
    if live is None:
        return None
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    encoded = annotations.get(names.ANNOTATION_RENDERED_TEMPLATE)
    template = decode_template(encoded) if isinstance(encoded, str) else None
    if template is None:
        live_template = (live.get("spec") or {}).get("template")
        if not isinstance(live_template, Mapping):
            return None
        template = copy.deepcopy(dict(live_template))
        (template.get("metadata") or {}).pop("creationTimestamp", None)
    recorded_hash = annotations.get(names.ANNOTATION_SPEC_HASH)
    return FrozenTemplate(recorded_hash if isinstance(recorded_hash, str) else None, template)


def template_hash(template: Mapping[str, Any] | None) -> str | None:
    value = (((template or {}).get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_TEMPLATE_HASH)
    return value if isinstance(value, str) else None


def server_image(deployment: Mapping[str, Any] | None, container: str) -> str | None:
    """The image of container `container` in a Deployment's pod template."""
    spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for item in spec.get("containers") or []:
        if isinstance(item, Mapping) and item.get("name") == container and isinstance(item.get("image"), str):
            return str(item["image"])
    return None


def pinned_runtime(
    recorded: Recorded, live_image: str | None, cr: GptOssDeployment, default_image: str
) -> RuntimeInputs:
    """What a CR's pods keep across operator versions: the recorded default image and template revision.

    Without a record (a CR from before this version) the live server image stands in for it, unless the
    spec names the image itself.
    """
    image = recorded.image or (live_image if cr.spec.image is None else None) or default_image
    revision = recorded.template_revision
    if revision not in RELEASED_TEMPLATE_REVISIONS:
        revision = POD_TEMPLATE_REVISION  # none recorded, or one this version cannot render
    return RuntimeInputs(image=image, template_revision=int(revision or POD_TEMPLATE_REVISION))


def current_runtime(default_image: str) -> RuntimeInputs:
    """What this operator renders for a new CR, or when an update is applied."""
    return RuntimeInputs(image=default_image, template_revision=POD_TEMPLATE_REVISION)


# ------------------------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class UpdateRequest:
    """Whether the CR asks for a waiting update now, and how."""

    automatic: bool  # spec.updatePolicy.operatorUpdates is Automatic
    opt_in: str | None  # a value of gptoss.io/apply-update not applied yet


def update_request(cr: GptOssDeployment, recorded: Recorded) -> UpdateRequest:
    token = cr.metadata.annotations.get(names.ANNOTATION_APPLY_UPDATE, "").strip()
    fresh_token = token if token and token != recorded.applied_update else None
    return UpdateRequest(cr.spec.update_policy.operator_updates == POLICY_AUTOMATIC, fresh_token)


def update_changes(pinned: RuntimeInputs, current: RuntimeInputs, cr: GptOssDeployment, templates_differ: bool) -> str:
    """What applying the update would change, in words (empty: nothing)."""
    changes = []
    if cr.spec.image is None and pinned.image != current.image:
        changes.append(f"image {pinned.image} -> {current.image}")
    if pinned.template_revision != current.template_revision:
        changes.append(f"pod template revision {pinned.template_revision} -> {current.template_revision}")
    if templates_differ and not changes:
        changes.append("the pod template (operator version or operator settings)")
    return ", ".join(changes)


def waiting_message(changes: str, request: UpdateRequest, operator_version: str, slots: SlotView | None) -> str:
    how = (
        f"set spec.updatePolicy.operatorUpdates: Automatic, or annotate the GptOssDeployment "
        f"{names.ANNOTATION_APPLY_UPDATE}=<any new value> to restart the pods with it now"
    )
    if request.automatic and slots is not None:
        waiting = (
            f"waiting for a rollout slot: {len(slots.rolling)} of at most {slots.limit} deployments are rolling "
            f"({', '.join('/'.join(key) for key in sorted(slots.rolling)[:5])})"
        )
        return f"operator {operator_version} would change {changes}; {waiting}"[:MAX_MESSAGE]
    return f"operator {operator_version} would change {changes}; the pods keep running as they are. To apply: {how}"[
        :MAX_MESSAGE
    ]


# ------------------------------------------------------------------------------------------ rollout slots
@dataclass(frozen=True)
class SlotView:
    """The deployments rolling now (seen or just admitted) and the most that may roll at once."""

    rolling: frozenset[Key]
    limit: int


def admit_rollout(key: Key, view: SlotView) -> bool:
    """Whether `key` may start an automatic rollout: it holds a slot already, or one is free."""
    return key in view.rolling or len(view.rolling) < view.limit


def rollout_in_progress(deployment: Mapping[str, Any] | None) -> bool:
    """A Deployment whose controller has not yet observed or finished its latest template.

    One stalled past its progress deadline, or merely short of ready pods after its rollout completed (a
    scale-up waiting for GPUs), is not rolling: it must not hold a fleet rollout slot indefinitely.
    """
    if deployment is None:
        return False
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    state = deployment.get("status") or {}
    if int(state.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return True
    progressing = _deployment_condition(state, "Progressing")
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False
    replicas = spec.get("replicas")
    desired = int(replicas) if isinstance(replicas, int) else 1
    updated = int(state.get("updatedReplicas") or 0)
    if updated < desired or int(state.get("replicas") or 0) > updated:
        return True  # old pods remain, or new ones are still to be created
    completed = progressing.get("reason") == "NewReplicaSetAvailable"
    return int(state.get("availableReplicas") or 0) < desired and not completed


def _deployment_condition(state: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for item in state.get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return {}


def rolling_owners(deployments: Iterable[Mapping[str, Any]]) -> frozenset[Key]:
    """(namespace, GptOssDeployment) of every server Deployment mid-rollout."""
    keys = set()
    for deployment in deployments:
        meta = deployment.get("metadata") or {}
        labels = meta.get("labels") or {}
        owner = labels.get(names.LABEL_DEPLOYMENT)
        if labels.get(names.LABEL_COMPONENT) != names.COMPONENT_SERVER or not owner:
            continue
        if rollout_in_progress(deployment):
            keys.add((str(meta.get("namespace")), str(owner)))
    return frozenset(keys)


class RolloutSlots:
    """The automatic rollouts this process admitted, until their Deployment is seen to finish.

    The watch-fed cache shows a rollout only after its write echoes back; holding admitted keys here keeps
    two reconciles that run at once from both taking the last slot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: set[Key] = set()

    def try_admit(self, key: Key, seen_rolling: frozenset[Key], limit: int) -> tuple[bool, SlotView]:
        with self._lock:
            view = SlotView(seen_rolling | frozenset(self._admitted), limit)
            admitted = admit_rollout(key, view)
            if admitted:
                self._admitted.add(key)
            return admitted, view

    def view(self, seen_rolling: frozenset[Key], limit: int) -> SlotView:
        with self._lock:
            return SlotView(seen_rolling | frozenset(self._admitted), limit)

    def release(self, key: Key) -> None:
        with self._lock:
            self._admitted.discard(key)


# ------------------------------------------------------------------------------------------- max surge
def surge_fits(*, additional: int, placed: int, desired_replicas: int) -> bool:
    """Whether one replica more than desired fits on free GPUs (after the replicas still to be placed)."""
    still_to_place = max(0, desired_replicas - placed)
    return additional - still_to_place >= 1


def live_strategy(deployment: Mapping[str, Any] | None) -> Json | None:
    strategy = ((deployment or {}).get("spec") or {}).get("strategy")
    return copy.deepcopy(dict(strategy)) if isinstance(strategy, Mapping) else None


def strategy_for(
    live: Mapping[str, Any] | None, capacity: Capacity | None, desired_replicas: int, *, template_changes: bool
) -> Json:
    """The server Deployment's rollout strategy: surge when a spare replica fits, decided when a rollout starts.

    The strategy matters only to a rollout, so it is decided when the pod template is about to change (or
    the Deployment is new) and otherwise kept: free GPUs come and go with every other deployment, and
    following them would write every Deployment of the fleet for nothing. A rollout in progress keeps the
    strategy it started with: its surge pod takes the spare GPUs, after which no spare fits.
    """
    kept = live_strategy(live)
    if kept is not None and (rollout_in_progress(live) or not template_changes):
        return kept
    if capacity is None:  # capacity unknown: the safe choice
        return rolling_update_strategy(spare_replica_fits=False)
    fits = surge_fits(
        additional=capacity.replicas_that_fit, placed=capacity.scheduled_replicas, desired_replicas=desired_replicas
    )
    return rolling_update_strategy(spare_replica_fits=fits)


# ------------------------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Rendered:
    """The desired children of a CR across operator versions, what to record, and UpdateAvailable."""

    children: list[Json]
    runtime: Recorded
    condition: ConditionValue
    applied_update: bool  # a waiting update is applied by this render (the pods roll)


Admit = Callable[[Key], tuple[bool, SlotView]]


def server_deployment(children: Iterable[Json]) -> Json | None:
    for child in children:
        labels = (child.get("metadata") or {}).get("labels") or {}
        if child.get("kind") == "Deployment" and labels.get(names.LABEL_COMPONENT) == names.COMPONENT_SERVER:
            return child
    return None


def render(
    cr: GptOssDeployment,
    plan: ServingPlan,
    settings: OperatorSettings,
    features: ClusterFeatures,
    previous_status: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    *,
    operator_version: str,
    admit: Admit,
) -> Rendered:
    """The children to apply: what this operator renders when nothing runs yet, when the spec asks for nothing
    this operator would change, or when the CR accepts the waiting update; else the recorded template."""
    recorded = Recorded.from_status(previous_status)
    request = update_request(cr, recorded)
    current = current_runtime(settings.default_image)
    fresh = build_children(cr, plan, settings, features, current)
    token = request.opt_in or recorded.applied_update
    applied = Recorded(current.image, current.template_revision, operator_version, token)
    if live is None and recorded.image is None:  # a new CR
        return _rendered(fresh, cr, applied, ConditionValue("False", REASON_UP_TO_DATE, CURRENT_MESSAGE))
    pinned = pinned_runtime(recorded, server_image(live, SERVER_CONTAINER), cr, settings.default_image)
    kept = build_children(cr, plan, settings, features, pinned)
    frozen = frozen_template(live)
    if frozen is not None and frozen.spec_hash in (None, spec_hash(cr)):  # the spec asks for no new template
        (server_deployment(kept) or {}).setdefault("spec", {})["template"] = copy.deepcopy(frozen.template)
    fresh_hash, kept_hash = server_template_hash(fresh), server_template_hash(kept)
    if fresh_hash == kept_hash:  # nothing waits: the pods already run what this operator renders
        return _rendered(kept, cr, applied, ConditionValue("False", REASON_UP_TO_DATE, CURRENT_MESSAGE))
    changes = update_changes(pinned, current, cr, templates_differ=True)
    if request.opt_in is not None:
        message = f"applied on request ({names.ANNOTATION_APPLY_UPDATE}={request.opt_in}): {changes}"
        return _rendered(fresh, cr, applied, ConditionValue("False", REASON_UP_TO_DATE, message), rolls=True)
    keep = Recorded(pinned.image, pinned.template_revision, recorded.operator_version or operator_version, token)
    if not request.automatic:
        waiting = waiting_message(changes, request, operator_version, None)
        return _rendered(kept, cr, keep, ConditionValue("True", REASON_AWAITING_OPT_IN, waiting))
    admitted, view = admit((cr.namespace, cr.name))
    if admitted:
        message = f"applied automatically (spec.updatePolicy.operatorUpdates: Automatic): {changes}"
        return _rendered(fresh, cr, applied, ConditionValue("False", REASON_UP_TO_DATE, message), rolls=True)
    waiting = waiting_message(changes, request, operator_version, view)
    return _rendered(kept, cr, keep, ConditionValue("True", REASON_AWAITING_ROLLOUT_SLOT, waiting))


def server_template_hash(children: Iterable[Json]) -> str | None:
    return template_hash(((server_deployment(children) or {}).get("spec") or {}).get("template"))


def _rendered(
    children: list[Json], cr: GptOssDeployment, record: Recorded, condition: ConditionValue, *, rolls: bool = False
) -> Rendered:
    return Rendered(_with_record(children, cr), record, condition, rolls)


CURRENT_MESSAGE: Final = "the pods run what this operator version renders"


def _with_record(children: list[Json], cr: GptOssDeployment) -> list[Json]:
    """The server Deployment annotated with the spec hash and the template it carries."""
    deployment = server_deployment(children)
    if deployment is not None:
        template = (deployment.get("spec") or {}).get("template") or {}
        annotations = deployment.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[names.ANNOTATION_SPEC_HASH] = spec_hash(cr)
        annotations[names.ANNOTATION_RENDERED_TEMPLATE] = encode_template(template)
    return children
