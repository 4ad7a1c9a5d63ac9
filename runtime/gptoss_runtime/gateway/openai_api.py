"""OpenAI request validation and response shapes (Chat Completions and Responses), free of HTTP.

Validation is hand-written: it is on the hot path of every request, and each error names the field
the way OpenAI does (`param`), e.g. `messages[1].role`.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gptoss_runtime.engine.guided import GuidedDecoding
from gptoss_runtime.gateway.errors import ApiError as ApiError  # re-exported: the app imports it from here
from gptoss_runtime.gateway.errors import invalid
from gptoss_runtime.gateway.logprobs import chat_entry, chat_top_logprobs
from gptoss_runtime.gateway.tools import (
    CallNames,
    assistant_tool_calls,
    function_of,
    guided_for_tool_choice,
    model_tools_json,
    parse_tool_choice,
    parse_tools,
    reasoning_text,
    split_channel,
)
from gptoss_runtime.gateway.triton import GenerationInputs, Step

CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
RESPONSE_INPUT_ROLES: Final = ("system", "developer", "user", "assistant")
REASONING_EFFORTS: Final = ("low", "medium", "high")
MAX_STOP_STRINGS: Final = 4
REASONING_CHANNEL: Final = "analysis"


@dataclass(frozen=True)
class Limits:
    model_name: str
    max_tokens_limit: int


@dataclass(frozen=True)
class ParsedRequest:
    inputs: GenerationInputs
    stream: bool
    include_usage: bool = False
    echo: dict[str, Any] = field(default_factory=dict)  # request fields echoed in the Responses object


# --- field readers ---------------------------------------------------------------------------------


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", param=None)
    return body


def _check_model(body: Mapping[str, Any], limits: Limits) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", f"is required; this deployment serves {limits.model_name!r}")
    if model != limits.model_name:
        raise ApiError(
            404,
            f"model: {model!r} does not exist here; this deployment serves {limits.model_name!r}",
            param="model",
            code="model_not_found",
        )


def _int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise invalid(name, f"must be between {low} and {high}, got {value}")
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float, *, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"must be a number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise invalid(name, f"must be in {interval}, got {value}")
    return float(value)


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(name, f"must be true or false, got {value!r}")
    return value


def _effort(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise invalid(param, f"must be one of {', '.join(REASONING_EFFORTS)}, got {value!r}")
    return str(value)


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(stop, str) and stop for stop in stops):
        raise invalid("stop", "must be a non-empty string or a list of non-empty strings")
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
    return tuple(stops)


def _text_content(content: Any, param: str, part_types: tuple[str, ...]) -> str:
    """A message's content: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            is_text = isinstance(part, dict) and part.get("type") in part_types and isinstance(part.get("text"), str)
            if not is_text:
                raise invalid(
                    f"{param}[{index}]", f"only text parts are supported: {{'type': {part_types[0]!r}, 'text': ...}}"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(param, "must be a string or a list of text parts")


def _max_tokens(body: Mapping[str, Any], names: tuple[str, ...], limits: Limits) -> int | None:
    for name in names:
        value = _int(body, name, 1, limits.max_tokens_limit)
        if value is not None:
            return value
    return None


# --- Chat Completions ------------------------------------------------------------------------------


def parse_chat(body: Any, limits: Limits) -> ParsedRequest:
    request = _object(body)
    _check_model(request, limits)
    tools = parse_tools(request.get("tools"), nested=True)
    choice = parse_tool_choice(request.get("tool_choice"), tools)
    messages = chat_messages(request.get("messages"))
    n = _int(request, "n", 1, 1_000_000)
    if n is not None and n != 1:
        raise invalid("n", "only n=1 is supported")
    stream_options = request.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("stream_options", "must be an object")
    guided = guided_for_tool_choice(tools, choice) or guided_for_response_format(
        request.get("response_format"), "response_format"
    )
    return ParsedRequest(
        inputs=GenerationInputs(
            messages=messages,
            max_tokens=_max_tokens(request, ("max_completion_tokens", "max_tokens"), limits),
            temperature=_number(request, "temperature", 0.0, 2.0),
            top_p=_number(request, "top_p", 0.0, 1.0, low_open=True),
            seed=_int(request, "seed", -(2**63), 2**63 - 1),
            reasoning_effort=_effort(request.get("reasoning_effort"), "reasoning_effort"),
            stop=_stop(request),
            stream=_bool(request, "stream"),
            tools=model_tools_json(tools, choice),
            guided=guided,
            logprobs=chat_top_logprobs(request),
        ),
        stream=_bool(request, "stream"),
        include_usage=_bool(stream_options, "include_usage"),
    )


def chat_messages(raw_messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages as the model's messages (tool calls and results, reasoning, names)."""
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("messages", "is required: a non-empty list of {role, content} objects")
    names = CallNames()
    messages = []
    for index, message in enumerate(raw_messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(param, "must be an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(f"{param}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        content = message.get("content")
        if content is None and role in ("assistant", "tool"):
            content = ""
        entry: dict[str, Any] = {"role": role, "content": _text_content(content, f"{param}.content", ("text",))}
        name = message.get("name")
        if role == "tool":
            entry["name"] = names.resolve(message.get("tool_call_id"), name, f"{param}.tool_call_id")
        elif isinstance(name, str) and name and role in ("user", "assistant"):
            entry["name"] = name
        if role == "assistant":
            calls = assistant_tool_calls(message.get("tool_calls"), f"{param}.tool_calls", names)
            if calls:
                entry["tool_calls"] = calls
            reasoning = reasoning_text(message, param)
            if reasoning:
                entry["reasoning"] = reasoning
        messages.append(entry)
    return messages


def guided_for_response_format(raw: Any, param: str) -> str | None:
    """`response_format` (Chat) or `text.format` (Responses): JSON mode or a JSON schema, enforced."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid(param, "must be an object such as {'type': 'json_object'}")
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return GuidedDecoding("json_object").to_json()
    if kind == "json_schema":
        wrapper = raw.get("json_schema", raw)  # Chat nests {name, schema, strict}; Responses does not
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if not isinstance(schema, dict):
            raise invalid(f"{param}.json_schema.schema", "is required: the JSON schema the output must match")
        return GuidedDecoding("json_schema", schema).to_json()
    raise invalid(f"{param}.type", f"must be 'text', 'json_object' or 'json_schema', got {kind!r}")


_ID_TAG: Final = secrets.token_hex(8)  # per process, so that ids from different replicas do not collide
_id_numbers = itertools.count()


def new_id(prefix: str) -> str:
    """A unique id: the process's random tag and a counter (uuid4 reads the OS's randomness each call)."""
    return f"{prefix}{_ID_TAG}{next(_id_numbers):016x}"


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


@dataclass
class ToolCallOut:
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    def chat_shape(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "id": self.call_id,
            "type": "function",
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }


class Transcript:
    """Accumulates the streamed steps: the answer (a commentary preamble included), the reasoning, the
    tool calls (a step on `commentary to=functions.NAME` carries a call's arguments), the token counts."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: list[ToolCallOut] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason = ""
        self._last_channel = ""
        # `logprobs.content` entries of the answer (reasoning and tool arguments have none, as OpenAI),
        # all of them and those of the last step.
        self.content_logprobs: list[dict[str, Any]] = []
        self.step_logprobs: list[dict[str, Any]] = []

    def add(self, step: Step) -> dict[str, Any] | None:
        """Take one step; returns its Chat Completions stream delta (None when it carries no text)."""
        self.prompt_tokens = step.prompt_tokens
        self.completion_tokens = step.completion_tokens
        if step.finish_reason:
            self.finish_reason = step.finish_reason
        new_message = step.channel != self._last_channel
        self._last_channel = step.channel or self._last_channel
        channel, recipient = split_channel(step.channel)
        self.step_logprobs = []
        if step.logprobs and recipient is None and channel != REASONING_CHANNEL:
            self.step_logprobs = [chat_entry(entry) for entry in step.logprobs]
            self.content_logprobs.extend(self.step_logprobs)
        if not step.text:
            return None
        if recipient is not None:
            return self._add_call_text(recipient, step.text, new_message)
        if channel == REASONING_CHANNEL:
            self.reasoning.append(step.text)
            self.reasoning_tokens = step.completion_tokens
            return {"reasoning": step.text, "reasoning_content": step.text}
        self.content.append(step.text)
        return {"content": step.text}

    def _add_call_text(self, recipient: str, text: str, new_message: bool) -> dict[str, Any]:
        index = len(self.tool_calls) - 1
        if new_message or not self.tool_calls:
            self.tool_calls.append(ToolCallOut(new_id("call_"), function_of(recipient)))
            index += 1
            self.tool_calls[index].arguments.append(text)
            return {"tool_calls": [self.tool_calls[index].chat_shape(index)]}
        self.tool_calls[index].arguments.append(text)
        return {"tool_calls": [{"index": index, "function": {"arguments": text}}]}

    @property
    def chat_finish_reason(self) -> str:
        if self.tool_calls and self.finish_reason in ("", "stop"):
            return "tool_calls"
        return self.finish_reason or "stop"


def chat_completion(
    completion_id: str, created: int, model: str, transcript: Transcript, *, logprobs: bool = False
) -> dict[str, Any]:
    content = "".join(transcript.content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if content or not transcript.tool_calls else None,
    }
    if transcript.reasoning:
        message["reasoning"] = message["reasoning_content"] = "".join(transcript.reasoning)
    if transcript.tool_calls:
        message["tool_calls"] = [call.chat_shape(index) for index, call in enumerate(transcript.tool_calls)]
        for call in message["tool_calls"]:
            del call["index"]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": transcript.content_logprobs, "refusal": None} if logprobs else None,
                "finish_reason": transcript.chat_finish_reason,
            }
        ],
        "usage": usage(transcript.prompt_tokens, transcript.completion_tokens, transcript.reasoning_tokens),
    }


def chat_chunk(
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs, "refusal": None}
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
