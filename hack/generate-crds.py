#!/usr/bin/env python3
"""Regenerate the GptOssDeployment CRD from the pydantic models into crds/ and the Helm chart's
files/crds/ (read by the chart's templates/crd.yaml).

Usage: hack/generate-crds.py [--check]   (or `make crds`)
--check exits 1, naming the stale files, when a checked-in copy differs from the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gptoss_operator.crd import main

REPO_ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    raise SystemExit(main(["--root", str(REPO_ROOT), *(sys.argv[1:] or ["--write"])]))
