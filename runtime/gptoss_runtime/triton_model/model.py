"""The file Triton loads for the `gpt_oss` model (copied into the model repository as `1/model.py`).

It stays thin: the stub runs the environment's `python3`, which has `gptoss_runtime` installed, and the
implementation lives in `gptoss_runtime.triton_model.backend`.
"""

from gptoss_runtime.triton_model.backend import TritonPythonModel

__all__ = ["TritonPythonModel"]
