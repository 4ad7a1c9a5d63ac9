"""Golden YAML: `render --pod-monitor --keda` of every sample and fixture, byte for byte.

After an intended change, regenerate with:  UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/builders
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from builders_support import GOLDEN_DIR, SAMPLES_DIR, children, cr_files, load_cr

from gptoss_operator.cli import dump_yaml_documents

UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden_path(cr_file: Path) -> Path:
    prefix = "sample-" if cr_file.parent == SAMPLES_DIR else "fixture-"
    return GOLDEN_DIR / f"{prefix}{cr_file.name}"


def test_every_sample_is_covered() -> None:
    samples = {path.name for path in SAMPLES_DIR.glob("*.yaml")}
    assert {"gpt-oss-20b.yaml", "gpt-oss-120b-1xh100.yaml", "gpt-oss-120b-2xh100.yaml"} <= samples
    covered = {path.name for path in cr_files() if path.parent == SAMPLES_DIR}
    assert covered == samples


@pytest.mark.parametrize("cr_file", cr_files(), ids=lambda path: path.name)
def test_rendered_children_match_the_golden_file(cr_file: Path) -> None:
    rendered = dump_yaml_documents(children(load_cr(cr_file)))
    golden = golden_path(cr_file)
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"{golden} is missing; create it with UPDATE_GOLDEN=1 .venv/bin/pytest {__file__}"
    assert rendered == golden.read_text(encoding="utf-8"), (
        f"children of {cr_file.name} differ from {golden.name}; if the change is intended, regenerate with "
        f"UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/unit/builders and review the diff"
    )


def test_no_stale_golden_files() -> None:
    expected = {golden_path(path).name for path in cr_files()}
    expected.add("standin-sample-gpt-oss-20b.yaml")  # test_builders_stand_in.py: the CPU stand-in's pods
    assert {path.name for path in GOLDEN_DIR.glob("*.yaml")} <= expected
