"""Function calling in OpenAI's shapes: `tools`, `tool_choice`, tool-call history in, `tool_calls` out.

The model's messages travel to Triton as JSON (see `triton_model.schema`): an assistant turn carries
`tool_calls: [{"name", "arguments"}]` and its `reasoning`, a tool result names its function. OpenAI
clients name a tool result by `tool_call_id` only, so the ids of the earlier calls are mapped to their
function names here. Out of the model, a step whose channel reads `commentary to=functions.NAME` is
the JSON arguments of a call to NAME.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gptoss_runtime.engine.guided import for_tools
from gptoss_runtime.gateway.errors import invalid

ToolChoiceMode = Literal["auto", "none", "required", "named"]
FUNCTIONS_PREFIX: Final = "functions."
TOOL_CHANNEL_MARK: Final = " to="


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    def to_model(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolChoice:
    mode: ToolChoiceMode = "auto"
    name: str | None = None  # for `named`


def _function_name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value or any(char.isspace() or char in "<>" for char in value):
        raise invalid(param, f"must be a function name without spaces, got {value!r}")
    return value


def parse_tools(raw: Any, *, nested: bool) -> list[FunctionTool]:
    """Chat Completions nests each function (`{"type": "function", "function": {...}}`); the Responses
    API does not (`{"type": "function", "name": ...}`)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("tools", "must be a list of function tools")
    tools = []
    for index, tool in enumerate(raw):
        param = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f"{param}.type", "only function tools are supported: {'type': 'function', ...}")
        function = tool.get("function") if nested else tool
        if not isinstance(function, dict):
            raise invalid(f"{param}.function", "must be an object with name, description and parameters")
        where = f"{param}.function" if nested else param
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid(f"{where}.parameters", "must be a JSON schema object")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise invalid(f"{where}.description", "must be a string")
        tools.append(FunctionTool(_function_name(function.get("name"), f"{where}.name"), description, parameters))
    return tools


def parse_tool_choice(raw: Any, tools: list[FunctionTool]) -> ToolChoice:
    if raw is None:
        return ToolChoice("auto")
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise invalid("tool_choice", "'required' needs at least one tool in tools")
        return ToolChoice(raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        nested = raw.get("function")  # Chat nests {"function": {"name"}}; Responses has {"name"}
        function: dict[str, Any] = nested if isinstance(nested, dict) else raw
        name = _function_name(function.get("name"), "tool_choice.function.name")
        if name not in {tool.name for tool in tools}:
            raise invalid("tool_choice.function.name", f"{name!r} is not one of the functions in tools")
        return ToolChoice("named", name)
    raise invalid("tool_choice", "must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name'}}")


def model_tools_json(tools: list[FunctionTool], choice: ToolChoice) -> str | None:
    """The model's `tools` input; with `tool_choice: none` the functions are not offered at all."""
    if not tools or choice.mode == "none":
        return None
    return json.dumps([tool.to_model() for tool in tools], separators=(",", ":"))


def guided_for_tool_choice(tools: list[FunctionTool], choice: ToolChoice) -> str | None:
    """`required` and a named function are enforced by the engine's token masks (see `engine.guided`)."""
    if choice.mode == "required":
        return for_tools([(tool.name, tool.parameters) for tool in tools]).to_json()
    if choice.mode == "named":
        tool = next(tool for tool in tools if tool.name == choice.name)
        return for_tools([(tool.name, tool.parameters)]).to_json()
    return None


# --- history -------------------------------------------------------------------------------------


@dataclass
class CallNames:
    """Tool-call ids seen in the history, and the function each one called."""

    by_id: dict[str, str] = field(default_factory=dict)
    last: str | None = None

    def add(self, call_id: str | None, name: str) -> None:
        if call_id:
            self.by_id[call_id] = name
        self.last = name

    def resolve(self, call_id: Any, name: Any, param: str) -> str:
        if isinstance(call_id, str) and call_id in self.by_id:
            return self.by_id[call_id]
        if isinstance(name, str) and name:
            return name
        if call_id is None and self.last is not None:
            return self.last
        raise invalid(
            param,
            f"{call_id!r} matches no tool call of an earlier assistant message; give the id of one of its "
            "tool_calls (or the function's name)",
        )


def assistant_tool_calls(raw: Any, param: str, names: CallNames) -> list[dict[str, str]]:
    """An assistant message's `tool_calls` (Chat Completions shape) as the model's `{name, arguments}`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid(param, "must be a list of {id, type: 'function', function: {name, arguments}}")
    calls = []
    for index, call in enumerate(raw):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise invalid(f"{where}.function", "must be an object with name and arguments")
        name = _function_name(function.get("name"), f"{where}.function.name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        names.add(call.get("id"), name)
        calls.append({"name": name, "arguments": arguments})
    return calls


def reasoning_text(message: Mapping[str, Any], param: str) -> str | None:
    """Reasoning sent back on an assistant message: `reasoning` (vLLM) or `reasoning_content`."""
    for key in ("reasoning", "reasoning_content"):
        value = message.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise invalid(f"{param}.{key}", "must be a string")
            return value
    return None


# --- model output --------------------------------------------------------------------------------


def split_channel(channel: str) -> tuple[str, str | None]:
    """`commentary to=functions.x` -> (`commentary`, `functions.x`)."""
    base, mark, recipient = channel.partition(TOOL_CHANNEL_MARK)
    return base, (recipient or None) if mark else None


def function_of(recipient: str) -> str:
    return recipient.removeprefix(FUNCTIONS_PREFIX)
