"""Custom resources the builder tests render: every sample plus the fixtures under crs/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gptoss_operator.api import GptOssDeployment
from gptoss_operator.builders import ClusterFeatures, build_children
from gptoss_operator.cli import parse_deployment
from gptoss_operator.planner import plan
from gptoss_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]
SAMPLES_DIR = REPO / "manifests" / "samples"
FIXTURES_DIR = Path(__file__).parent / "crs"
GOLDEN_DIR = Path(__file__).parent / "golden"
SETTINGS = OperatorSettings()
ALL_FEATURES = ClusterFeatures(pod_monitor=True, keda=True)


def cr_files() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.yaml")) + sorted(FIXTURES_DIR.glob("*.yaml"))


def load_cr(path: Path) -> GptOssDeployment:
    return parse_deployment(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


def sample(name: str) -> GptOssDeployment:
    return load_cr(SAMPLES_DIR / f"{name}.yaml")


def fixture(name: str) -> GptOssDeployment:
    return load_cr(FIXTURES_DIR / f"{name}.yaml")


def cr_from(spec: dict[str, Any], name: str = "test", namespace: str = "ns") -> GptOssDeployment:
    document = {
        "apiVersion": "gptoss.io/v1alpha1",
        "kind": "GptOssDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return parse_deployment(document)


def children(cr: GptOssDeployment, features: ClusterFeatures = ALL_FEATURES) -> list[dict[str, Any]]:
    return build_children(cr, plan(cr.spec, SETTINGS), SETTINGS, features)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
