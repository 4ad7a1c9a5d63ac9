"""The checked-in CRD copies (crds/ and the Helm chart's files/crds/) equal what the models generate."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptoss_operator.crd import CRD_PATHS, REGENERATE_COMMAND, main, render_crd_yaml, stale_files

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("relative", CRD_PATHS, ids=str)
def test_checked_in_crd_matches_the_models(relative: Path) -> None:
    path = REPO_ROOT / relative
    assert path.is_file(), f"{relative} is missing; run: {REGENERATE_COMMAND}"
    assert path.read_text(encoding="utf-8") == render_crd_yaml(), (
        f"{relative} differs from the CRD generated from gptoss_operator/api.py; run: {REGENERATE_COMMAND}"
    )


def test_check_mode_reports_drift_and_write_mode_repairs_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(stale_files(tmp_path)) == sorted(tmp_path / p for p in CRD_PATHS)

    assert main(["--check", "--root", str(tmp_path)]) == 1
    assert "make crds" in capsys.readouterr().err

    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert stale_files(tmp_path) == []
    (tmp_path / CRD_PATHS[0]).write_text("edited by hand\n", encoding="utf-8")
    assert stale_files(tmp_path) == [tmp_path / CRD_PATHS[0]]


def test_default_mode_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert capsys.readouterr().out == render_crd_yaml()
