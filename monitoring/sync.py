"""Write the chart's copies of the monitoring sources, or check that they are current.

Sources (monitoring/): rules/gpt-oss.rules.yaml and the dashboards defined in dashboards.py.
Copies (charts/gpt-oss-operator/files/): rules/gpt-oss.rules.yaml and dashboards/*.json, which the
chart's PrometheusRule and dashboard ConfigMaps embed (Helm cannot read files outside the chart).

    python monitoring/sync.py          # rewrite the copies
    python monitoring/sync.py --check  # exit 1 and name the stale copies (run by the tests)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dashboards import DASHBOARDS

MONITORING_DIR = Path(__file__).resolve().parent
REPO_ROOT = MONITORING_DIR.parent
CHART_FILES_DIR = REPO_ROOT / "charts" / "gpt-oss-operator" / "files"
RULES_SOURCE = MONITORING_DIR / "rules" / "gpt-oss.rules.yaml"
RULES_COPY = CHART_FILES_DIR / "rules" / "gpt-oss.rules.yaml"
DASHBOARDS_DIR = CHART_FILES_DIR / "dashboards"


def expected_files() -> dict[Path, str]:
    """Every chart file this script owns, with the content it must have."""
    files = {RULES_COPY: RULES_SOURCE.read_text(encoding="utf-8")}
    for file_name, build in DASHBOARDS.items():
        files[DASHBOARDS_DIR / file_name] = json.dumps(build(), indent=2) + "\n"
    return files


def stale_files() -> list[Path]:
    return [
        path
        for path, content in expected_files().items()
        if not path.exists() or path.read_text(encoding="utf-8") != content
    ]


def write_files() -> list[Path]:
    written = []
    for path, content in expected_files().items():
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a copy is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        if stale:
            print("fix: run `python monitoring/sync.py` and commit the result", file=sys.stderr)
            return 1
        return 0
    for path in write_files():
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
