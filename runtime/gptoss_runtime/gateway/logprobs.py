"""Log probabilities in OpenAI's shapes: Chat Completions' `logprobs.content[]` and the legacy
Completions' `tokens`/`token_logprobs`/`top_logprobs`/`text_offset`.

The model sends, per step, the tokens whose text the step carries with their logprob and the k most
likely tokens at that position (`triton_model.schema.TokenLogprobOut`). A token that holds part of a
multi-byte character has no text of its own: its `token` shows the replacement character and `bytes`
the exact bytes (join the `bytes` of consecutive tokens to rebuild the text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from gptoss_runtime.engine.base import MAX_TOP_LOGPROBS
from gptoss_runtime.gateway.errors import invalid
from gptoss_runtime.triton_model.schema import TokenLogprobOut

MAX_COMPLETIONS_LOGPROBS: Final = MAX_TOP_LOGPROBS  # OpenAI stops at 5; vLLM and this gateway take 20


def token_text(token: bytes) -> str:
    return token.decode("utf-8", errors="replace")


def chat_top_logprobs(body: Mapping[str, Any]) -> int | None:
    """`logprobs` (bool) and `top_logprobs` (0..20, needs logprobs) of a chat request: None when off."""
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise invalid("logprobs", f"must be true or false, got {wanted!r}")
    top = body.get("top_logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise invalid("top_logprobs", f"must be an integer between 0 and {MAX_TOP_LOGPROBS}, got {top!r}")
        if not wanted:
            raise invalid("top_logprobs", "needs logprobs: true")
    return (top or 0) if wanted else None


def completions_logprobs(body: Mapping[str, Any]) -> int | None:
    """`logprobs` of a completions request: how many most likely tokens to list (None: off)."""
    value = body.get("logprobs")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COMPLETIONS_LOGPROBS:
        raise invalid("logprobs", f"must be an integer between 0 and {MAX_COMPLETIONS_LOGPROBS}, got {value!r}")
    return value


def chat_entry(entry: TokenLogprobOut) -> dict[str, Any]:
    return {
        "token": token_text(entry.token),
        "logprob": entry.logprob,
        "bytes": list(entry.token),
        "top_logprobs": [
            {"token": token_text(token), "logprob": logprob, "bytes": list(token)} for token, logprob in entry.top
        ],
    }


class CompletionLogprobs:
    """Builds `choices[].logprobs` of `/v1/completions`; `text_offset` counts from the completion's
    start across streamed chunks."""

    def __init__(self) -> None:
        self._offset = 0

    def shape(self, entries: Sequence[TokenLogprobOut]) -> dict[str, Any]:
        tokens, offsets = [], []
        for entry in entries:
            text = token_text(entry.token)
            tokens.append(text)
            offsets.append(self._offset)
            self._offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": [entry.logprob for entry in entries],
            # As OpenAI and vLLM: the sampled token is always listed, so up to logprobs + 1 entries.
            "top_logprobs": [
                {token_text(token): logprob for token, logprob in entry.top} | {token_text(entry.token): entry.logprob}
                for entry in entries
            ],
            "text_offset": offsets,
        }
