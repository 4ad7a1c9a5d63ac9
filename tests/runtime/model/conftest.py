"""Fixtures of the model-internals tests: one tiny checkpoint per session (about 0.5 MB, 0.3 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptoss_runtime.checkpoint import make_tiny_checkpoint
from gptoss_runtime.engine.numpy_model import GptOssNumpyModel
from gptoss_runtime.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-20b"), "gpt-oss-20b", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir: Path) -> GptOssNumpyModel:
    return GptOssNumpyModel.from_checkpoint(tiny_dir)
