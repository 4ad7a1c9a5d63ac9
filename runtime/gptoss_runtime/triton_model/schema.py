"""The `gpt_oss` Triton model's tensors, defined once (config.pbtxt, the model, the gateway use them).

Inputs (all `[1]`-shaped unless noted; give either `text_input` or `messages`):

| name               | type   | meaning                                                                  |
|--------------------|--------|--------------------------------------------------------------------------|
| `text_input`       | BYTES  | a prompt, sent as one user message                                       |
| `messages`         | BYTES  | chat messages as JSON: `[{"role": "user", "content": "..."}, ...]`       |
| `max_tokens`       | INT32  | most tokens to generate (default and bound: the deployment's max_seq_len)       |
| `temperature`      | FP32   | sampling temperature (default 1.0; 0 = greedy)                           |
| `top_p`            | FP32   | nucleus sampling mass (default 1.0)                                      |
| `seed`             | INT64  | sampling seed                                                            |
| `reasoning_effort` | BYTES  | `low`, `medium` or `high` (default: the plan's)                          |
| `stop`             | BYTES  | `[-1]`: stop strings; generation ends before the first match in the text |
| `stream`           | BOOL   | default true: a response per step; false: the text gathered per channel  |
| `tools`            | BYTES  | function tools as JSON: `[{"name", "description", "parameters"}, ...]`  |
| `current_date`     | BYTES  | the system message's `Current date:` (default: today, UTC)               |
| `raw`              | BOOL   | `text_input` is a raw prompt: tokenized as is, the output plain text     |
| `guided`           | BYTES  | JSON: `{"json_schema": {...}}`, `{"json_object": true}` or `{"tool": NAME}` |
| `logprobs`         | INT32  | k in 0..20: send each generated token's logprob and the k most likely    |

A message in `messages` may carry `name`, `channel`, `reasoning` (analysis text) and, for an assistant,
`tool_calls: [{"name", "arguments"}]`; a `tool` message names the function it answers in `name`.

Outputs, one response per streamed step (the last one carries `finish_reason` and the final flag).
With `stream` false the steps are gathered: one response per run of text in the same channel, sent when
generation ends (far fewer responses for a client that wants the whole answer at once):

| name                | type  | meaning                                                             |
|---------------------|-------|---------------------------------------------------------------------|
| `text_output`       | BYTES | the new text of this step                                           |
| `channel`           | BYTES | its harmony channel: `analysis` (reasoning), `commentary`, `final`; |
|                     |       | a tool call reads `commentary to=functions.NAME` (text = arguments) |
| `prompt_tokens`     | INT32 | tokens of the rendered prompt                                       |
| `completion_tokens` | INT32 | tokens generated so far                                             |
| `finish_reason`     | BYTES | empty until the last response: `stop`, `length` or `cancelled`      |
| `logprobs`          | BYTES | only when asked for: JSON, one `[token, logprob, [[token, logprob], |
|                     |       | ...]]` per token whose text is in `text_output` (see `logprob_json`)|
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton's config type, e.g. TYPE_STRING
    dims: tuple[int, ...] = (1,)
    optional: bool = True


# Input names.
TEXT_INPUT: Final = "text_input"
MESSAGES: Final = "messages"
MAX_TOKENS: Final = "max_tokens"
TEMPERATURE: Final = "temperature"
TOP_P: Final = "top_p"
SEED: Final = "seed"
REASONING_EFFORT: Final = "reasoning_effort"
STOP: Final = "stop"
STREAM: Final = "stream"
TOOLS: Final = "tools"
CURRENT_DATE: Final = "current_date"
GUIDED: Final = "guided"
RAW: Final = "raw"
LOGPROBS: Final = "logprobs"  # an input (how many top tokens) and an output (the values)

# Output names.
TEXT_OUTPUT: Final = "text_output"
CHANNEL: Final = "channel"
PROMPT_TOKENS: Final = "prompt_tokens"
COMPLETION_TOKENS: Final = "completion_tokens"
FINISH_REASON: Final = "finish_reason"

INPUTS: Final = (
    TensorSpec(TEXT_INPUT, "TYPE_STRING"),
    TensorSpec(MESSAGES, "TYPE_STRING"),
    TensorSpec(MAX_TOKENS, "TYPE_INT32"),
    TensorSpec(TEMPERATURE, "TYPE_FP32"),
    TensorSpec(TOP_P, "TYPE_FP32"),
    TensorSpec(SEED, "TYPE_INT64"),
    TensorSpec(REASONING_EFFORT, "TYPE_STRING"),
    TensorSpec(STOP, "TYPE_STRING", dims=(-1,)),
    TensorSpec(STREAM, "TYPE_BOOL"),
    TensorSpec(TOOLS, "TYPE_STRING"),
    TensorSpec(CURRENT_DATE, "TYPE_STRING"),
    TensorSpec(GUIDED, "TYPE_STRING"),
    TensorSpec(RAW, "TYPE_BOOL"),
    TensorSpec(LOGPROBS, "TYPE_INT32"),
)
OUTPUTS: Final = (
    TensorSpec(TEXT_OUTPUT, "TYPE_STRING", optional=False),
    TensorSpec(CHANNEL, "TYPE_STRING", optional=False),
    TensorSpec(PROMPT_TOKENS, "TYPE_INT32", optional=False),
    TensorSpec(COMPLETION_TOKENS, "TYPE_INT32", optional=False),
    TensorSpec(FINISH_REASON, "TYPE_STRING", optional=False),
    # Sent only in responses to a request that asked for logprobs (no cost for the others).
    TensorSpec(LOGPROBS, "TYPE_STRING"),
)

# Finish reasons.
FINISH_STOP: Final = "stop"
FINISH_LENGTH: Final = "length"
FINISH_CANCELLED: Final = "cancelled"

CHANNELS: Final = ("analysis", "commentary", "final")

# An input error reads `<input>: <problem>`; where OpenAI has an error code for it, the message ends with
# ` [code: <code>]` (the gateway turns it back into the error's `code`).
CONTEXT_LENGTH_EXCEEDED: Final = "context_length_exceeded"
_CODE_OPEN: Final = " [code: "


def with_error_code(message: str, code: str | None) -> str:
    return message if code is None else f"{message}{_CODE_OPEN}{code}]"


def error_code(message: str) -> str | None:
    """The code `with_error_code` put at the end of a message, if any."""
    start = message.rfind(_CODE_OPEN)
    if start < 0 or not message.endswith("]"):
        return None
    return message[start + len(_CODE_OPEN) : -1] or None


# --- the `logprobs` output -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenLogprobOut:
    """One generated token as the client sees it: its bytes, its logprob, the most likely tokens there."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


def _token_json(token: bytes) -> str | list[int]:
    """A token's text, or its bytes as numbers when they are not whole UTF-8 (part of a character)."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return list(token)


def _token_bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def logprob_json(entries: Sequence[TokenLogprobOut]) -> str:
    return json.dumps(
        [
            [_token_json(entry.token), entry.logprob, [[_token_json(token), logprob] for token, logprob in entry.top]]
            for entry in entries
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def parse_logprob_json(text: str) -> tuple[TokenLogprobOut, ...]:
    return tuple(
        TokenLogprobOut(
            _token_bytes(token), float(logprob), tuple((_token_bytes(alt), float(value)) for alt, value in top)
        )
        for token, logprob, top in json.loads(text)
    )
