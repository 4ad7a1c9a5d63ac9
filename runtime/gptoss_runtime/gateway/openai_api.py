"""OpenAI request validation and response shapes (Chat Completions and Responses), free of HTTP.

Validation is hand-written: it is on the hot path of every request, and each error names the field
the way OpenAI does (`param`), e.g. `messages[1].role`.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gptoss_runtime.gateway.triton import GenerationInputs, Step

CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool")
RESPONSE_INPUT_ROLES: Final = ("system", "developer", "user", "assistant")
REASONING_EFFORTS: Final = ("low", "medium", "high")
MAX_STOP_STRINGS: Final = 4
REASONING_CHANNEL: Final = "analysis"


class ApiError(Exception):
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


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
    raw_messages = request.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("messages", "is required: a non-empty list of {role, content} objects")
    messages = []
    for index, message in enumerate(raw_messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(param, "must be an object with role and content")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise invalid(f"{param}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        content = message.get("content")
        if content is None and role == "assistant":
            content = ""
        entry = {"role": role, "content": _text_content(content, f"{param}.content", ("text",))}
        name = message.get("name")
        if isinstance(name, str) and name:
            entry["name"] = name  # harmony names the function a tool message answers
        messages.append(entry)
    n = _int(request, "n", 1, 1_000_000)
    if n is not None and n != 1:
        raise invalid("n", "only n=1 is supported")
    stream_options = request.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise invalid("stream_options", "must be an object")
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
        ),
        stream=_bool(request, "stream"),
        include_usage=_bool(stream_options, "include_usage"),
    )


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


class Transcript:
    """Accumulates the streamed steps: the answer, the reasoning, the token counts."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason = ""

    def add(self, step: Step) -> None:
        if step.channel == REASONING_CHANNEL:
            self.reasoning.append(step.text)
            self.reasoning_tokens = step.completion_tokens
        elif step.text:
            self.content.append(step.text)
        self.prompt_tokens = step.prompt_tokens
        self.completion_tokens = step.completion_tokens
        if step.finish_reason:
            self.finish_reason = step.finish_reason


def chat_completion(completion_id: str, created: int, model: str, transcript: Transcript) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(transcript.content)}
    if transcript.reasoning:
        message["reasoning_content"] = "".join(transcript.reasoning)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": transcript.finish_reason or "stop"}],
        "usage": usage(transcript.prompt_tokens, transcript.completion_tokens, transcript.reasoning_tokens),
    }


def chat_chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def chat_delta(step: Step) -> dict[str, Any] | None:
    if not step.text:
        return None
    key = "reasoning_content" if step.channel == REASONING_CHANNEL else "content"
    return {key: step.text}


# --- Responses -------------------------------------------------------------------------------------


def parse_responses(body: Any, limits: Limits) -> ParsedRequest:
    request = _object(body)
    _check_model(request, limits)
    messages: list[dict[str, str]] = []
    instructions = request.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "must be a string")
        messages.append({"role": "developer", "content": instructions})
    raw_input = request.get("input")
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    elif isinstance(raw_input, list) and raw_input:
        messages.extend(_response_input_items(raw_input))
    else:
        raise invalid("input", "is required: a string or a non-empty list of message items")
    reasoning = request.get("reasoning") or {}
    if not isinstance(reasoning, dict):
        raise invalid("reasoning", "must be an object such as {'effort': 'low'}")
    if request.get("previous_response_id") is not None:
        raise invalid("previous_response_id", "is not supported: this gateway stores no responses")
    return ParsedRequest(
        inputs=GenerationInputs(
            messages=messages,
            max_tokens=_max_tokens(request, ("max_output_tokens",), limits),
            temperature=_number(request, "temperature", 0.0, 2.0),
            top_p=_number(request, "top_p", 0.0, 1.0, low_open=True),
            reasoning_effort=_effort(reasoning.get("effort"), "reasoning.effort"),
            stream=_bool(request, "stream"),
        ),
        stream=_bool(request, "stream"),
        echo={
            "instructions": instructions,
            "max_output_tokens": request.get("max_output_tokens"),
            "temperature": request.get("temperature", 1.0),
            "top_p": request.get("top_p", 1.0),
            "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        },
    )


def _response_input_items(items: list[Any]) -> list[dict[str, str]]:
    messages = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            raise invalid(param, "only message items ({role, content}) are supported")
        role = item.get("role")
        if role not in RESPONSE_INPUT_ROLES:
            raise invalid(f"{param}.role", f"must be one of {', '.join(RESPONSE_INPUT_ROLES)}, got {role!r}")
        content = _text_content(item.get("content"), f"{param}.content", ("input_text", "output_text"))
        messages.append({"role": role, "content": content})
    return messages


class ResponseBuilder:
    """The Responses API object and its streaming events, built as the steps arrive."""

    def __init__(self, model: str, echo: Mapping[str, Any]) -> None:
        self.response_id = new_id("resp_")
        self.reasoning_id = new_id("rs_")
        self.message_id = new_id("msg_")
        self.created_at = int(time.time())
        self.model = model
        self.echo = dict(echo)
        self.transcript = Transcript()
        self._sequence = 0
        self._reasoning_open = False
        self._message_open = False
        self._reasoning_closed = False

    # Shapes.

    def _reasoning_item(self, status: str) -> dict[str, Any]:
        text = "".join(self.transcript.reasoning)
        content = [{"type": "reasoning_text", "text": text}] if status == "completed" else []
        return {"type": "reasoning", "id": self.reasoning_id, "summary": [], "content": content, "status": status}

    def _message_item(self, status: str) -> dict[str, Any]:
        content = (
            [{"type": "output_text", "text": "".join(self.transcript.content), "annotations": []}]
            if status != "in_progress"
            else []
        )
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    def _output_index(self, kind: str) -> int:
        return 1 if kind == "message" and self.transcript.reasoning else 0

    def response(self, status: str) -> dict[str, Any]:
        output: list[dict[str, Any]] = []
        finished = status != "in_progress"
        if finished and self.transcript.reasoning:
            output.append(self._reasoning_item("completed"))
        if finished:
            output.append(self._message_item(status))
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        transcript = self.transcript
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": incomplete,
            "parallel_tool_calls": False,
            "tool_choice": "none",
            "tools": [],
            "text": {"format": {"type": "text"}},
            **self.echo,
            "usage": {
                "input_tokens": transcript.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": transcript.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": transcript.reasoning_tokens},
                "total_tokens": transcript.prompt_tokens + transcript.completion_tokens,
            }
            if finished
            else None,
        }

    def final_status(self) -> str:
        return "incomplete" if self.transcript.finish_reason == "length" else "completed"

    # Events.

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": event_type, "sequence_number": self._sequence - 1, **fields}

    def start_events(self) -> list[dict[str, Any]]:
        return [
            self.event("response.created", response=self.response("in_progress")),
            self.event("response.in_progress", response=self.response("in_progress")),
        ]

    def step_events(self, step: Step) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        is_reasoning = step.channel == REASONING_CHANNEL
        if step.text and not is_reasoning and self._reasoning_open:
            events.extend(self._close_reasoning())
        self.transcript.add(step)
        if not step.text:
            return events
        if is_reasoning:
            if not self._reasoning_open and not self._reasoning_closed:
                self._reasoning_open = True
                events.append(
                    self.event("response.output_item.added", output_index=0, item=self._reasoning_item("in_progress"))
                )
            events.append(
                self.event(
                    "response.reasoning_text.delta",
                    item_id=self.reasoning_id,
                    output_index=0,
                    content_index=0,
                    delta=step.text,
                )
            )
            return events
        if not self._message_open:
            events.extend(self._open_message())
        events.append(
            self.event(
                "response.output_text.delta",
                item_id=self.message_id,
                output_index=self._output_index("message"),
                content_index=0,
                delta=step.text,
                logprobs=[],
            )
        )
        return events

    def _close_reasoning(self) -> list[dict[str, Any]]:
        self._reasoning_open = False
        self._reasoning_closed = True
        text = "".join(self.transcript.reasoning)
        return [
            self.event(
                "response.reasoning_text.done", item_id=self.reasoning_id, output_index=0, content_index=0, text=text
            ),
            self.event("response.output_item.done", output_index=0, item=self._reasoning_item("completed")),
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        self._message_open = True
        index = self._output_index("message")
        return [
            self.event("response.output_item.added", output_index=index, item=self._message_item("in_progress")),
            self.event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            ),
        ]

    def finish_events(self) -> list[dict[str, Any]]:
        events = self._close_reasoning() if self._reasoning_open else []
        if not self._message_open:
            events.extend(self._open_message())
        index = self._output_index("message")
        text = "".join(self.transcript.content)
        status = self.final_status()
        events += [
            self.event(
                "response.output_text.done",
                item_id=self.message_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self.event(
                "response.content_part.done",
                item_id=self.message_id,
                output_index=index,
                content_index=0,
                part={"type": "output_text", "text": text, "annotations": []},
            ),
            self.event("response.output_item.done", output_index=index, item=self._message_item(status)),
            self.event(f"response.{status}", response=self.response(status)),
        ]
        return events
