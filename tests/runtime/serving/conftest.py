"""Fixtures for the serving tests: a tiny checkpoint and, per test module, a real tritonserver.

Each module that asks for a server gets its own (see `serving_support.start_server`); teardown stops it
with SIGTERM and fails if the stop was not clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import SCRIPTED_TOKEN_DELAY_S, ServerProcess, start_server

from gptoss_runtime.checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "gpt-oss-20b-tiny")


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("scripted"),
        tiny_weights,
        "scripted",
        f"--engine-option=scripted_token_delay_s={SCRIPTED_TOKEN_DELAY_S}",
    )
    yield server
    server.stop_cleanly()


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("reference"), tiny_weights, "reference")
    yield server
    server.stop_cleanly()
