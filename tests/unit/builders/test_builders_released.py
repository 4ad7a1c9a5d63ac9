"""Released pod templates never change: an operator upgrade must not restart running servers by accident.

`golden/released/r<N>/` holds the server pod template of every sample and fixture CR as pod template
revision N renders it for a CR whose status recorded `runtime: {image: RECORDED_IMAGE, templateRevision: N}`.
A builder change that alters one of them fails here. The fix is not to regenerate the file: bump
`POD_TEMPLATE_REVISION`, add the new revision to `RELEASED_TEMPLATE_REVISIONS`, keep the old output for
the old revision (`ctx.runtime.template_revision`), and create the new revision's files with
`UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/builders` (it writes missing files only). See docs/upgrades.md.
Until revision 1 ships in a release, its files may be deleted and recreated the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from builders_support import GOLDEN_DIR, SETTINGS, cr_files, load_cr

from gptoss_operator import upgrades
from gptoss_operator.builders import ClusterFeatures, RuntimeInputs, build_children
from gptoss_operator.builders.context import POD_TEMPLATE_REVISION, RELEASED_TEMPLATE_REVISIONS
from gptoss_operator.planner import plan
from gptoss_operator.upgrades import server_deployment

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
RELEASED_DIR = GOLDEN_DIR / "released"
RECORDED_IMAGE = "ghcr.io/gpt-oss-operator/runtime:recorded-by-an-older-release"
CASES = [(revision, path) for revision in RELEASED_TEMPLATE_REVISIONS for path in cr_files()]


def golden_path(revision: int, cr_file: Path) -> Path:
    return RELEASED_DIR / f"r{revision}" / cr_file.name


def case_id(case: object) -> str:
    return case.name if isinstance(case, Path) else f"r{case}"


def pod_template(children: list[dict[str, object]]) -> object:
    deployment = server_deployment(children)
    assert deployment is not None
    return deployment["spec"]["template"]  # type: ignore[index]


def stored(revision: int, cr_file: Path, rendered: object) -> object:
    golden = golden_path(revision, cr_file)
    if UPDATE and not golden.exists():  # write-once: a released template is never regenerated
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(yaml.safe_dump(rendered, sort_keys=True), encoding="utf-8")
    assert golden.exists(), f"{golden} is missing; create it with UPDATE_GOLDEN=1 .venv/bin/pytest {__file__}"
    return yaml.safe_load(golden.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("revision", "cr_file"), CASES, ids=case_id)
def test_a_released_pod_template_renders_exactly_as_stored(revision: int, cr_file: Path) -> None:
    cr = load_cr(cr_file)
    runtime = RuntimeInputs(image=RECORDED_IMAGE, template_revision=revision)
    rendered = pod_template(build_children(cr, plan(cr.spec, SETTINGS), SETTINGS, ClusterFeatures(), runtime))
    assert rendered == stored(revision, cr_file, rendered), (
        f"the pod template of {cr_file.name} at released revision {revision} changed: running pods would restart "
        "on upgrade. Gate the change behind a new POD_TEMPLATE_REVISION (see this file's docstring)"
    )


@pytest.mark.parametrize(("revision", "cr_file"), CASES, ids=case_id)
def test_this_operator_keeps_the_template_a_release_recorded(revision: int, cr_file: Path) -> None:
    """A CR reconciled by an older release (its status.runtime) gets exactly that release's template from
    this operator, whose own default image differs."""
    cr = load_cr(cr_file)
    recorded = {"runtime": {"image": RECORDED_IMAGE, "templateRevision": revision, "operatorVersion": "0.0.1"}}
    rendered = upgrades.render(
        cr,
        plan(cr.spec, SETTINGS),
        SETTINGS,
        ClusterFeatures(),
        recorded,
        None,
        operator_version="this",
        admit=lambda _key: (False, upgrades.SlotView(frozenset(), 1)),
    )
    assert pod_template(rendered.children) == stored(revision, cr_file, None)
    if cr.spec.image is None:
        assert rendered.condition.status == "True"  # this release's default image waits for an opt-in


def test_the_current_revision_is_released_and_an_unknown_one_is_refused() -> None:
    assert POD_TEMPLATE_REVISION in RELEASED_TEMPLATE_REVISIONS
    with pytest.raises(ValueError, match="revision 99 is unknown"):
        RuntimeInputs(template_revision=99)


def test_no_stale_released_files() -> None:
    expected = {golden_path(revision, path) for revision, path in CASES}
    assert set(RELEASED_DIR.glob("r*/*.yaml")) <= expected
