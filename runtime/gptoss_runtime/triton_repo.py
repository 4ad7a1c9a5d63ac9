"""Writes the Triton model repository for the `gpt_oss` model from a serving plan.

Layout written under the repository folder:

    gpt_oss/config.pbtxt     Python backend, decoupled, the tensors of `triton_model.schema`
    gpt_oss/engine.json      which engine to build and with what options (read by the model)
    gpt_oss/1/model.py       a thin file importing `gptoss_runtime.triton_model.backend`

The text artifacts come from the jinja2 templates in `gptoss_runtime/templates/` (the one place that
renders text for Triton).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import jinja2

from gptoss_runtime import contract
from gptoss_runtime.engine.trtllm import llm_kwargs
from gptoss_runtime.plan import ServingPlan
from gptoss_runtime.triton_model import schema

EngineKind = Literal["reference", "trtllm", "scripted"]
ENGINE_KINDS: Final = ("reference", "trtllm", "scripted")
ENGINE_OPTIONS_FILE: Final = "engine.json"
MODEL_VERSION: Final = "1"

# The reference engine (numpy, CPU) has no plan; these bound it.
REFERENCE_MAX_BATCH_SIZE: Final = 8
REFERENCE_MAX_SEQ_LEN: Final = 4096
REFERENCE_REASONING_EFFORT: Final = "medium"

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gptoss_runtime", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701  (pbtxt and JSON, not HTML)
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["pbtxt_string"] = lambda value: json.dumps(str(value))


@dataclass(frozen=True)
class ModelRepositorySpec:
    engine: EngineKind
    weights_dir: Path
    model_name: str
    plan: ServingPlan | None = None
    extra_options: Mapping[str, Any] = field(default_factory=dict)


def render_config_pbtxt(spec: ModelRepositorySpec) -> str:
    return _TEMPLATES.get_template("config.pbtxt.j2").render(
        triton_model_name=contract.TRITON_MODEL_NAME,
        model_name=spec.model_name,
        engine=spec.engine,
        inputs=schema.INPUTS,
        outputs=schema.OUTPUTS,
        # TensorRT-LLM places its ranks on GPUs itself; Triton must not pin the stub to one device.
        instance_kind="KIND_MODEL" if spec.engine == "trtllm" else "KIND_CPU",
    )


def render_engine_options(spec: ModelRepositorySpec) -> str:
    plan = spec.plan
    if spec.engine == "trtllm" and plan is None:
        raise ValueError("the trtllm engine needs a serving plan")
    max_seq_len = plan.engine.max_seq_len if plan else REFERENCE_MAX_SEQ_LEN
    return _TEMPLATES.get_template("engine.json.j2").render(
        engine=spec.engine,
        model_name=spec.model_name,
        weights_dir=str(spec.weights_dir),
        default_reasoning_effort=plan.default_reasoning_effort if plan else REFERENCE_REASONING_EFFORT,
        max_batch_size=plan.engine.max_batch_size if plan else REFERENCE_MAX_BATCH_SIZE,
        max_seq_len=max_seq_len,
        max_tokens_limit=max_seq_len,
        # What TrtllmEngine passes to LLM(...), recorded for people reading the pod's files.
        llm_args=llm_kwargs(plan, spec.weights_dir) if plan and spec.engine == "trtllm" else None,
        plan=plan.model_dump(mode="json", by_alias=True) if plan else None,
        options=dict(spec.extra_options),
    )


def write_model_repository(repository: Path, spec: ModelRepositorySpec) -> Path:
    """(Re)write the repository folder; returns it. Anything else in the folder is removed."""
    model_dir = repository / contract.TRITON_MODEL_NAME
    if repository.exists():
        shutil.rmtree(repository)
    version_dir = model_dir / MODEL_VERSION
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(render_config_pbtxt(spec), encoding="utf-8")
    (model_dir / ENGINE_OPTIONS_FILE).write_text(render_engine_options(spec), encoding="utf-8")
    shutil.copyfile(Path(__file__).parent / "triton_model" / "model.py", version_dir / "model.py")
    return repository
