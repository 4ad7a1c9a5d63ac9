"""`/v1/completions`: a raw prompt in, plain text out (benchmark tools and evaluation harnesses use it).

The prompt is tokenized as is, with no harmony rendering, and the generated tokens come back as text
(special tokens carry none; generation still ends at `<|return|>` or `<|call|>`).
"""

from __future__ import annotations

from typing import Any, Final

from gptoss_runtime.gateway.errors import invalid
from gptoss_runtime.gateway.logprobs import completions_logprobs
from gptoss_runtime.gateway.openai_api import (
    Limits,
    ParsedRequest,
    _bool,
    _check_model,
    _int,
    _max_tokens,
    _number,
    _object,
    _stop,
    usage,
)
from gptoss_runtime.gateway.triton import GenerationInputs

DEFAULT_MAX_TOKENS: Final = 16  # OpenAI's default for completions
# Parameters this endpoint refuses unless left at their defaults (a silent no-op would mislead).
_UNSUPPORTED: Final = {"suffix": None, "best_of": 1, "echo": False, "logit_bias": None}


def _prompt(request: dict[str, Any]) -> str:
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise invalid("prompt", "is required: a non-empty string (one prompt per request; token arrays are not taken)")
    return prompt


def parse_completions(body: Any, limits: Limits) -> ParsedRequest:
    request = dict(_object(body))
    _check_model(request, limits)
    for name, default in _UNSUPPORTED.items():
        if request.get(name, default) not in (default, None):
            raise invalid(name, f"is not supported by this gateway; leave it out (default {default!r})")
    n = _int(request, "n", 1, 1_000_000)
    if n is not None and n != 1:
        raise invalid("n", "only n=1 is supported")
    stream_options = request.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("stream_options", "must be an object")
    max_tokens = _max_tokens(request, ("max_tokens",), limits)
    return ParsedRequest(
        inputs=GenerationInputs(
            messages=[],
            raw_prompt=_prompt(request),
            max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            temperature=_number(request, "temperature", 0.0, 2.0),
            top_p=_number(request, "top_p", 0.0, 1.0, low_open=True),
            seed=_int(request, "seed", -(2**63), 2**63 - 1),
            stop=_stop(request),
            stream=_bool(request, "stream"),
            logprobs=completions_logprobs(request),
        ),
        stream=_bool(request, "stream"),
        include_usage=_bool(stream_options, "include_usage"),
    )


def completion_object(
    completion_id: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str | None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def completion_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    counts = usage(prompt_tokens, completion_tokens, 0)
    del counts["completion_tokens_details"]
    return counts
