"""The alerting and recording rules: promtool checks and unit tests, and the conventions every alert keeps."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from monitoring_env import METRICS_DOC, REPO_ROOT, RULE_TESTS_DIR, RULES_FILE, RUNBOOKS

from gptoss_operator import names
from gptoss_runtime import contract

ALERT_DEPLOYMENT = "{{ $labels.namespace }}/{{ $labels.gptoss_deployment }}"
RUNBOOK_BASE = "https://github.com/gpt-oss-operator/gpt-oss-operator/blob/main/docs/runbooks.md#"
REQUIRED_ALERTS = {
    "GptOssReplicasUnavailable",
    "GptOssTimeToFirstTokenHigh",
    "GptOssQueueTimeHigh",
    "GptOssKVCacheSaturated",
    "GptOssCapacityLimited",
    "GptOssWeightsNotReady",
    "GptOssReconcileErrors",
}


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    test_files = sorted(str(p) for p in RULE_TESTS_DIR.glob("*.yaml"))
    assert test_files, f"no promtool tests in {RULE_TESTS_DIR}"
    result = _run(promtool, "test", "rules", *test_files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expectation_makes_promtool_fail(promtool: str, tmp_path: Any) -> None:
    """Guards against tests that cannot fail: flip one expectation and promtool must notice."""
    source = (RULE_TESTS_DIR / "operator-alerts.test.yaml").read_text()
    broken = source.replace("llm/chat has had 1 fewer", "llm/chat has had 7 fewer").replace(
        "../rules/gpt-oss.rules.yaml", str(RULES_FILE)
    )
    assert broken != source
    path = tmp_path / "broken.test.yaml"
    path.write_text(broken)
    assert _run(promtool, "test", "rules", str(path)).returncode != 0


def test_the_required_alerts_exist() -> None:
    assert {alert["alert"] for alert in _alerts()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_severity_summary_deployment_and_runbook(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"warning", "critical"}
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert ALERT_DEPLOYMENT in annotations["description"]
    anchor = alert["alert"].lower()
    assert annotations["runbook_url"] == RUNBOOK_BASE + anchor
    headings = {
        line.removeprefix("## ").strip().lower() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")
    }
    assert anchor in headings, f"docs/runbooks.md has no section '## {alert['alert']}'"


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*.yaml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alert_names = {alert["alert"] for alert in _alerts()}
    assert alert_names - firing == set(), "alerts without a firing test case"
    assert alert_names - silent == set(), "alerts without a not-firing test case"


def test_rules_use_only_metric_names_defined_in_the_code() -> None:
    known = {value for key, value in vars(names).items() if key.startswith("METRIC_")}
    known |= {value for key, value in vars(contract).items() if key.startswith("METRIC_")}
    # Recorded series (level:metric:operation) are not raw metrics: drop them before looking.
    text = re.sub(r"\b\w+:\w+:\w+\b", " ", RULES_FILE.read_text())
    used_operator = set(re.findall(r"\b(gptoss_operator_[a-z_]+?)(?:_bucket|_sum|_count)?\b", text))
    used_runtime = set(re.findall(r"\b(gptoss_(?!operator_|deployment)[a-z_]+?)(?:_bucket)?\b", text))
    assert used_operator - known == set()
    assert used_runtime - known == set()
    assert f'model="{contract.TRITON_MODEL_NAME}"' in text


def test_every_rule_and_metric_is_documented() -> None:
    doc = METRICS_DOC.read_text()
    metric_names = [value for key, value in vars(names).items() if key.startswith("METRIC_")]
    metric_names += [value for key, value in vars(contract).items() if key.startswith("METRIC_")]
    recorded = [rule["record"] for rule in _rules() if "record" in rule]
    missing = [name for name in metric_names + recorded if f"`{name}`" not in doc]
    assert missing == [], "add these to docs/metrics.md"


def test_chart_copies_are_current() -> None:
    result = _run(sys.executable, str(REPO_ROOT / "monitoring" / "sync.py"), "--check")
    assert result.returncode == 0, result.stderr
