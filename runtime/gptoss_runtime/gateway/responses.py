"""The Responses API (`/v1/responses`), free of HTTP: requests in, response objects and events out.

Input items (`message`, `function_call`, `function_call_output`, `reasoning`) become the model's
messages; `previous_response_id` continues a stored conversation (see `gateway.store`). Output is one
item per harmony message: a `reasoning` item per analysis segment, a `message` item for final text (or a
commentary preamble), a `function_call` item per call. Streaming follows OpenAI's event sequence
(`output_item.added`, `content_part.added`, text or argument deltas, the matching `.done` events, then
`response.completed`, `.incomplete` or `.failed`), every event with its `sequence_number`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gptoss_runtime.gateway.errors import ApiError, invalid
from gptoss_runtime.gateway.openai_api import (
    REASONING_CHANNEL,
    Limits,
    _bool,
    _check_model,
    _effort,
    _max_tokens,
    _number,
    _object,
    _text_content,
    guided_for_response_format,
    new_id,
)
from gptoss_runtime.gateway.store import STORE_SETTING, ResponseStore, StoreError
from gptoss_runtime.gateway.tools import (
    CallNames,
    ToolChoice,
    function_of,
    guided_for_tool_choice,
    model_tools_json,
    parse_tool_choice,
    parse_tools,
    split_channel,
)
from gptoss_runtime.gateway.triton import GenerationInputs, Step

MESSAGE_ROLES: Final = ("system", "developer", "user", "assistant")
TEXT_PARTS: Final = ("input_text", "output_text", "text")
ItemKind = Literal["reasoning", "message", "function_call"]


@dataclass(frozen=True)
class ResponsesRequest:
    inputs: GenerationInputs  # without messages: `conversation` builds them once the history is known
    raw_input: Any
    stream: bool
    store: bool
    previous_response_id: str | None
    instructions: str | None
    echo: dict[str, Any]


def parse_responses(body: Any, limits: Limits) -> ResponsesRequest:
    request = _object(body)
    _check_model(request, limits)
    instructions = request.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid("instructions", "must be a string")
    tools = parse_tools(request.get("tools"), nested=False)
    choice = parse_tool_choice(request.get("tool_choice"), tools)
    reasoning = request.get("reasoning") or {}
    if not isinstance(reasoning, dict):
        raise invalid("reasoning", "must be an object such as {'effort': 'low'}")
    text = request.get("text") or {}
    if not isinstance(text, dict):
        raise invalid("text", "must be an object such as {'format': {'type': 'text'}}")
    previous = request.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise invalid("previous_response_id", "must be the id of a stored response")
    guided = guided_for_tool_choice(tools, choice) or guided_for_response_format(text.get("format"), "text.format")
    return ResponsesRequest(
        inputs=GenerationInputs(
            messages=[],
            max_tokens=_max_tokens(request, ("max_output_tokens",), limits),
            temperature=_number(request, "temperature", 0.0, 2.0),
            top_p=_number(request, "top_p", 0.0, 1.0, low_open=True),
            reasoning_effort=_effort(reasoning.get("effort"), "reasoning.effort"),
            stream=_bool(request, "stream"),
            tools=model_tools_json(tools, choice),
            guided=guided,
        ),
        raw_input=_checked_input(request.get("input")),
        stream=_bool(request, "stream"),
        store=request.get("store", True) is not False,
        previous_response_id=previous,
        instructions=instructions,
        echo=_echo(request, instructions, reasoning, text, choice),
    )


def _echo(
    request: Mapping[str, Any],
    instructions: str | None,
    reasoning: Mapping[str, Any],
    text: Mapping[str, Any],
    choice: ToolChoice,
) -> dict[str, Any]:
    tool_choice: Any = choice.mode if choice.mode != "named" else {"type": "function", "name": choice.name}
    return {
        "instructions": instructions,
        "max_output_tokens": request.get("max_output_tokens"),
        "temperature": request.get("temperature", 1.0),
        "top_p": request.get("top_p", 1.0),
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "tools": request.get("tools") or [],
        "tool_choice": tool_choice,
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "text": {"format": text.get("format") or {"type": "text"}},
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store", True) is not False,
        "metadata": request.get("metadata") or {},
    }


# --- input items -> the model's messages -----------------------------------------------------------


def input_messages(raw: Any, names: CallNames | None = None) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise invalid("input", "is required: a string or a non-empty list of input items")
    reader = _InputReader(names or CallNames())
    for index, item in enumerate(raw):
        reader.read(item, f"input[{index}]")
    return reader.finish()


@dataclass
class _InputReader:
    names: CallNames
    messages: list[dict[str, Any]] = field(default_factory=list)
    pending_reasoning: list[str] = field(default_factory=list)

    def read(self, item: Any, param: str) -> None:
        if not isinstance(item, dict):
            raise invalid(param, "must be an input item object")
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, param)
        elif kind == "reasoning":
            self.pending_reasoning.append(_reasoning_item_text(item, param))
        elif kind == "function_call":
            self._function_call(item, param)
        elif kind == "function_call_output":
            self._function_output(item, param)
        else:
            raise invalid(
                f"{param}.type", "must be message, function_call, function_call_output or reasoning, got " + repr(kind)
            )

    def _message(self, item: Mapping[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in MESSAGE_ROLES:
            raise invalid(f"{param}.role", f"must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}")
        content = _text_content(item.get("content"), f"{param}.content", TEXT_PARTS)
        message: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            self._attach_reasoning(message)
        self.messages.append(message)

    def _function_call(self, item: Mapping[str, Any], param: str) -> None:
        name, arguments = item.get("name"), item.get("arguments", "")
        if not isinstance(name, str) or not name:
            raise invalid(f"{param}.name", "a function_call item needs the function's name")
        if not isinstance(arguments, str):
            raise invalid(f"{param}.arguments", "must be JSON text")
        self.names.add(item.get("call_id"), name)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": name, "arguments": arguments}],
        }
        self._attach_reasoning(message)
        self.messages.append(message)

    def _function_output(self, item: Mapping[str, Any], param: str) -> None:
        output = item.get("output")
        if not isinstance(output, str):
            output = _text_content(output, f"{param}.output", TEXT_PARTS)
        name = self.names.resolve(item.get("call_id"), None, f"{param}.call_id")
        self.messages.append({"role": "tool", "name": name, "content": output})

    def _attach_reasoning(self, message: dict[str, Any]) -> None:
        if self.pending_reasoning:
            message["reasoning"] = "\n".join(self.pending_reasoning)
            self.pending_reasoning = []

    def finish(self) -> list[dict[str, Any]]:
        if self.pending_reasoning:  # reasoning with nothing after it: an analysis message of its own
            self.messages.append(
                {"role": "assistant", "content": "\n".join(self.pending_reasoning), "channel": "analysis"}
            )
        return self.messages


def _reasoning_item_text(item: Mapping[str, Any], param: str) -> str:
    parts = item.get("content") or item.get("summary") or []
    if not isinstance(parts, list):
        raise invalid(f"{param}.content", "must be a list of reasoning_text parts")
    texts = [part.get("text") for part in parts if isinstance(part, dict)]
    if not all(isinstance(text, str) for text in texts):
        raise invalid(f"{param}.content", "each part needs its text")
    return "".join(str(text) for text in texts)


def _checked_input(raw: Any) -> Any:
    if not isinstance(raw, str | list) or not raw:
        raise invalid("input", "is required: a string or a non-empty list of input items")
    return raw


@dataclass(frozen=True)
class Conversation:
    model_messages: list[dict[str, Any]]  # what the model gets: instructions, history, input
    stored: list[dict[str, Any]]  # what a stored response keeps: history and input, no instructions
    call_names: dict[str, str]


def conversation(request: ResponsesRequest, previous: Mapping[str, Any] | None) -> Conversation:
    """This request's input after the stored conversation it continues (if any)."""
    history = list(previous["conversation"]) if previous else []
    names = CallNames(by_id=dict(previous["call_names"]) if previous else {})
    messages = [*history, *input_messages(request.raw_input, names)]
    instructions = [{"role": "developer", "content": request.instructions}] if request.instructions else []
    return Conversation([*instructions, *messages], messages, names.by_id)


# --- output ----------------------------------------------------------------------------------------


@dataclass
class OutputItem:
    kind: ItemKind
    item_id: str
    label: str  # the harmony channel (and recipient) this item came from
    texts: list[str] = field(default_factory=list)
    name: str = ""
    call_id: str = ""
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def shape(self, status: str = "completed") -> dict[str, Any]:
        finished = status != "in_progress"
        if self.kind == "reasoning":
            content = [{"type": "reasoning_text", "text": self.text}] if finished else []
            return {"type": "reasoning", "id": self.item_id, "summary": [], "content": content, "status": status}
        if self.kind == "function_call":
            return {
                "type": "function_call",
                "id": self.item_id,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.text if finished else "",
                "status": status,
            }
        part: dict[str, Any] = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        return {
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": [part] if finished else [],
        }

    def to_model_message(self) -> dict[str, Any]:
        if self.kind == "reasoning":
            return {"role": "assistant", "content": self.text, "channel": "analysis"}
        if self.kind == "function_call":
            return {"role": "assistant", "content": "", "tool_calls": [{"name": self.name, "arguments": self.text}]}
        channel = "commentary" if self.label == "commentary" else "final"
        return {"role": "assistant", "content": self.text, "channel": channel}


class ResponseBuilder:
    """The Responses API object and its streaming events, built as the steps arrive."""

    def __init__(self, model: str, echo: Mapping[str, Any]) -> None:
        self.response_id = new_id("resp_")
        self.created_at = int(time.time())
        self.model = model
        self.echo = dict(echo)
        self.items: list[OutputItem] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason = ""
        self.error: dict[str, Any] | None = None
        self._sequence = 0

    # --- shapes ---

    def final_status(self) -> str:
        if self.error is not None:
            return "failed"
        return "incomplete" if self.finish_reason == "length" else "completed"

    def response(self, status: str) -> dict[str, Any]:
        finished = status != "in_progress"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": [item.shape("completed" if item.done or finished else "in_progress") for item in self.items]
            if finished
            else [],
            "error": self.error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            **self.echo,
            "usage": self._usage() if finished else None,
        }

    def _usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def output_messages(self) -> list[dict[str, Any]]:
        """The output as the model's messages, for a stored conversation."""
        return [item.to_model_message() for item in self.items]

    def call_ids(self) -> dict[str, str]:
        return {item.call_id: item.name for item in self.items if item.kind == "function_call"}

    # --- events ---

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": event_type, "sequence_number": self._sequence - 1, **fields}

    def start_events(self) -> list[dict[str, Any]]:
        return [
            self.event("response.created", response=self.response("in_progress")),
            self.event("response.in_progress", response=self.response("in_progress")),
        ]

    def step_events(self, step: Step) -> list[dict[str, Any]]:
        self.prompt_tokens, self.completion_tokens = step.prompt_tokens, step.completion_tokens
        if step.finish_reason:
            self.finish_reason = step.finish_reason
        if not step.text:
            return []
        events: list[dict[str, Any]] = []
        current = self.items[-1] if self.items and not self.items[-1].done else None
        if current is None or current.label != step.channel:
            if current is not None:
                events += self._close(current)
            current = self._open(step.channel)
            events += self._opened(current)
        current.texts.append(step.text)
        if current.kind == "reasoning":
            self.reasoning_tokens = step.completion_tokens
        events.append(self._delta(current, step.text))
        return events

    def finish_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for item in self.items:
            if not item.done:
                events += self._close(item)
        status = self.final_status()
        events.append(self.event(f"response.{status}", response=self.response(status)))
        return events

    def fail_events(self, message: str, code: str | None) -> list[dict[str, Any]]:
        self.error = {"code": code or "server_error", "message": message}
        return [self.event("response.failed", response=self.response("failed"))]

    # --- one item ---

    def _open(self, label: str) -> OutputItem:
        channel, recipient = split_channel(label)
        if recipient is not None:
            item = OutputItem(
                "function_call", new_id("fc_"), label, name=function_of(recipient), call_id=new_id("call_")
            )
        elif channel == REASONING_CHANNEL:
            item = OutputItem("reasoning", new_id("rs_"), label)
        else:
            item = OutputItem("message", new_id("msg_"), label)
        self.items.append(item)
        return item

    def _where(self, item: OutputItem) -> dict[str, Any]:
        return {"item_id": item.item_id, "output_index": self.items.index(item)}

    def _opened(self, item: OutputItem) -> list[dict[str, Any]]:
        index = self.items.index(item)
        events = [self.event("response.output_item.added", output_index=index, item=item.shape("in_progress"))]
        if item.kind != "function_call":
            events.append(
                self.event(
                    "response.content_part.added", **self._where(item), content_index=0, part=self._part(item, "")
                )
            )
        return events

    def _delta(self, item: OutputItem, text: str) -> dict[str, Any]:
        where = self._where(item)
        if item.kind == "function_call":
            return self.event("response.function_call_arguments.delta", **where, delta=text)
        if item.kind == "reasoning":
            return self.event("response.reasoning_text.delta", **where, content_index=0, delta=text)
        return self.event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])

    def _close(self, item: OutputItem) -> list[dict[str, Any]]:
        item.done = True
        where = self._where(item)
        index = where["output_index"]
        if item.kind == "function_call":
            done = [self.event("response.function_call_arguments.done", **where, name=item.name, arguments=item.text)]
        elif item.kind == "reasoning":
            done = [self.event("response.reasoning_text.done", **where, content_index=0, text=item.text)]
        else:
            done = [self.event("response.output_text.done", **where, content_index=0, text=item.text, logprobs=[])]
        if item.kind != "function_call":
            done.append(
                self.event("response.content_part.done", **where, content_index=0, part=self._part(item, item.text))
            )
        done.append(self.event("response.output_item.done", output_index=index, item=item.shape("completed")))
        return done

    @staticmethod
    def _part(item: OutputItem, text: str) -> dict[str, Any]:
        if item.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


# --- stored conversations --------------------------------------------------------------------------


def stored_record(
    builder: ResponseBuilder, conversation: list[dict[str, Any]], call_names: Mapping[str, str]
) -> dict[str, Any]:
    """What a stored response keeps: the response object, the conversation (this request's history and
    input, then the output, as the model's messages, without the instructions: a follow-up request
    brings its own) and the call ids of the conversation's function calls."""
    status = builder.final_status()
    return {
        "response": builder.response(status),
        "conversation": [*conversation, *builder.output_messages()],
        "call_names": {**call_names, **builder.call_ids()},
    }


class ResponsesState:
    """The gateway's stored responses: loads the conversation a request continues, stores finished ones."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def previous(self, response_id: str | None) -> dict[str, Any] | None:
        if response_id is None:
            return None
        record = await self._get(response_id, "previous_response_id")
        if record is None:
            raise ApiError(
                400,
                f"previous_response_id: no stored response {response_id!r} here. {self._where_hint()}",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return record

    async def save(self, request: ResponsesRequest, builder: ResponseBuilder, talk: Conversation) -> None:
        if request.store:
            await self._call(self.store.put(builder.response_id, stored_record(builder, talk.stored, talk.call_names)))

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        record = await self._get(response_id, "response_id")
        if record is None:
            raise self._not_found(response_id)
        return dict(record["response"])

    async def delete(self, response_id: str) -> dict[str, Any]:
        if not await self._call(self.store.delete(response_id)):
            raise self._not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def _get(self, response_id: str, param: str) -> dict[str, Any] | None:
        return await self._call(self.store.get(response_id))  # type: ignore[no-any-return]

    def _not_found(self, response_id: str) -> ApiError:
        return ApiError(404, f"no stored response {response_id!r} here. {self._where_hint()}", param="response_id")

    def _where_hint(self) -> str:
        if self.store.shared:
            return "It was never stored (store: false), was deleted, or has expired."
        return (
            "This gateway keeps stored responses in its own memory only: a response made by another replica or "
            f"before a restart is not here. Name a shared store in {STORE_SETTING} to keep them across replicas."
        )

    @staticmethod
    async def _call(pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except StoreError as error:
            raise ApiError(503, str(error), error_type="server_error") from error
