"""Optional cross-check: transformers' GptOssForCausalLM loads the tiny checkpoint as published gpt-oss
weights (its own MXFP4 dequantization) and computes the same logits as the numpy reference model.

Skipped where torch or transformers is not installed (the CI machine); run it where they are:
`PYTHONPATH=runtime python3 -m pytest -q tests/runtime/model/test_model_transformers_crosscheck.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gptoss_runtime.engine.numpy_model import GptOssNumpyModel, Segment

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _load_transformers_model(directory: Path) -> Any:
    quantization = transformers.Mxfp4Config(dequantize=True)  # MXFP4 kernels need a GPU; dequantize instead
    options: dict[str, Any] = {"quantization_config": quantization, "attn_implementation": "eager"}
    try:
        model = transformers.GptOssForCausalLM.from_pretrained(directory, dtype=torch.float32, **options)
    except TypeError:  # transformers 4.x names it torch_dtype
        model = transformers.GptOssForCausalLM.from_pretrained(directory, torch_dtype=torch.float32, **options)
    return model.to("cpu").float().eval()


def test_transformers_computes_the_same_logits(tiny_dir: Path, tiny_model: GptOssNumpyModel) -> None:
    model = _load_transformers_model(tiny_dir)
    tokens = [int(i) for i in np.random.default_rng(0).integers(0, 500, 24)]  # 3 sliding windows long
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].float().numpy()
    actual = tiny_model.forward([Segment(tokens, tiny_model.new_cache(64))], all_logits=True)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)  # measured: ~1e-5
    assert (actual.argmax(axis=-1) == expected.argmax(axis=-1)).all()


def test_transformers_greedy_generation_matches(tiny_dir: Path, tiny_model: GptOssNumpyModel) -> None:
    model = _load_transformers_model(tiny_dir)
    prompt = [5, 17, 42, 99, 3, 250, 7]
    with torch.no_grad():
        generated = model.generate(torch.tensor([prompt]), max_new_tokens=16, do_sample=False, eos_token_id=None)
    theirs = generated[0, len(prompt) :].tolist()
    cache = tiny_model.new_cache(64)
    ours: list[int] = []
    logits = tiny_model.forward([Segment(prompt, cache)])[0]
    for _ in range(16):
        ours.append(int(np.argmax(logits)))
        logits = tiny_model.forward([Segment(ours[-1:], cache)])[0]
    assert ours == theirs
