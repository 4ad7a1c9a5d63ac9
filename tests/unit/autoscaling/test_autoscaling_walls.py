"""The pure autoscaling modules import no cluster client, no I/O library, no clock and no environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "operator" / "gptoss_operator" / "autoscaling"
PURE_MODULES = ("signals.py", "policy.py", "capacity.py", "config.py")
FORBIDDEN = {"kopf", "kubernetes", "aiohttp", "time", "datetime", "os", "random", "asyncio", "socket"}


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {sorted(imported & FORBIDDEN)}"
