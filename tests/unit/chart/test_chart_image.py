"""The chart's default operator image is what operator/Dockerfile builds and would be published as.

No Docker here: the checks read the Dockerfile, Chart.yaml, values.yaml and pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "gpt-oss-operator"
DOCKERFILE = REPO / "operator" / "Dockerfile"


def chart_default_image() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    return f"{values['image']['repository']}:{values['image']['tag'] or app_version}"


def test_app_version_follows_the_package_version() -> None:
    package_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == package_version


def test_dockerfile_documents_the_charts_default_image() -> None:
    text = DOCKERFILE.read_text()
    assert f"-t {chart_default_image()} ." in text
    (version,) = re.findall(r"^ARG VERSION=(\S+)$", text, re.MULTILINE)
    assert chart_default_image().endswith(f":{version}")


def test_dockerfile_runs_what_the_chart_expects() -> None:
    text = DOCKERFILE.read_text()
    pod = (CHART / "templates" / "deployment.yaml").read_text()
    assert "runAsUser: 65532" in pod and "runAsGroup: 65532" in pod
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user == "65532:65532"  # numeric, so runAsNonRoot can verify it
    assert re.search(r'^ENTRYPOINT \["gptoss-operator"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["run"\]$', text, re.MULTILINE)
    assert 'command: ["gptoss-operator"]' in pod and 'args: ["run"]' in pod
    assert '".[operator]"' in text
    assert re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE) == ["python:3.11-slim"]
