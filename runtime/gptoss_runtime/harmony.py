"""OpenAI's harmony chat format for gpt-oss, rendered and parsed with the checkpoint's own tokenizer.

(The `openai-harmony` package and `tiktoken` download vocabularies at run time; this module needs only
`tokenizer.json`.) A prompt is a sequence of messages `<|start|>{header}<|message|>{content}<|end|>`:
the system message (identity, dates, `Reasoning: <effort>`, the valid channels), an optional developer
message (`# Instructions` and function tools), the conversation, and finally `<|start|>assistant`, after
which the model writes `<|channel|>analysis<|message|>...<|end|><|start|>assistant<|channel|>final
<|message|>...<|return|>` (or a tool call ending in `<|call|>`).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gptoss_runtime.tokenizer import Tokenizer, TokenizerError

ReasoningEffort = Literal["low", "medium", "high"]
REASONING_EFFORTS: Final = ("low", "medium", "high")
ROLES: Final = ("system", "developer", "user", "assistant", "tool")
CHANNELS: Final = ("analysis", "commentary", "final")
FINAL_CHANNEL: Final = "final"
ANALYSIS_CHANNEL: Final = "analysis"
COMMENTARY_CHANNEL: Final = "commentary"

DEFAULT_MODEL_IDENTITY: Final = "You are ChatGPT, a large language model trained by OpenAI."
DEFAULT_KNOWLEDGE_CUTOFF: Final = "2024-06"
DEFAULT_MAX_HEADER_TOKENS: Final = 64  # a real header is about 10 tokens

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
STRUCTURE_TOKENS: Final = (START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL)


class HarmonyError(ValueError):
    """A conversation that cannot be rendered; the message names the field."""


@dataclass(frozen=True)
class ToolCall:
    name: str  # function name, without the `functions.` namespace
    arguments: str  # JSON text


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None  # JSON schema of the arguments object


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat. `system` and `developer` messages become the developer instructions;
    `tool` messages carry a function's output (`name` is the function); for `user` and `assistant`
    messages `name` is the author's name (`user:alice`). An assistant message may name its `channel`
    (default final), carry `tool_calls` (its content is then a commentary preamble) and the `reasoning`
    that led to it (rendered as analysis while no later final answer exists, upstream's rule)."""

    role: str
    content: str = ""
    name: str | None = None
    channel: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None


@dataclass(frozen=True)
class ChannelDelta:
    """New text of the assistant message being generated; `recipient` is set for a tool call
    (e.g. `functions.get_weather`, the text is then its JSON arguments, `content_type` e.g. `json`)."""

    channel: str
    text: str
    recipient: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class ParsedMessage:
    channel: str
    text: str
    recipient: str | None = None
    content_type: str | None = None


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []

    def special(self, token: str) -> None:
        self.ids.append(self.tokenizer.token_id(token))

    def text(self, text: str) -> None:
        if text:
            self.ids.extend(self.tokenizer.encode(text))

    def message(
        self,
        author: str,
        content: str,
        *,
        channel: str | None = None,
        recipient: str | None = None,
        constrain: str | None = None,
        end: str = END,
    ) -> None:
        """`<|start|>{author}<|channel|>{channel} to={recipient} <|constrain|>{type}<|message|>...{end}`:
        every structure token by id, never through the text encoder."""
        self.special(START)
        self.text(author)
        if channel is not None:
            self.special(CHANNEL)
            self.text(channel)
        if recipient is not None:
            self.text(f" to={recipient}")
        if constrain is not None:
            self.text(" ")
            self.special(CONSTRAIN)
            self.text(constrain)
        self.special(MESSAGE)
        self.text(content)
        self.special(end)


def system_message_text(
    reasoning_effort: str,
    *,
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF,
    current_date: str | None = None,
    model_identity: str = DEFAULT_MODEL_IDENTITY,
    has_functions: bool = False,
) -> str:
    lines = [model_identity]
    if knowledge_cutoff:
        lines.append(f"Knowledge cutoff: {knowledge_cutoff}")
    if current_date:
        lines.append(f"Current date: {current_date}")
    lines += ["", f"Reasoning: {reasoning_effort}", ""]
    lines.append("# Valid channels: analysis, commentary, final. Channel must be included for every message.")
    if has_functions:
        lines.append("Calls to these tools must go to the commentary channel: 'functions'.")
    return "\n".join(lines)


def developer_message_text(instructions: str, tools: Sequence[ToolDefinition]) -> str:
    sections = []
    if instructions:
        sections.append(f"# Instructions\n\n{instructions}")
    if tools:
        sections.append("# Tools\n\n## functions\n\n" + _functions_namespace(tools))
    return "\n\n".join(sections)


def _functions_namespace(tools: Sequence[ToolDefinition]) -> str:
    parts = ["namespace functions {", ""]
    for tool in tools:
        parts += _comment_lines(tool.description, "")
        if tool.parameters is not None:
            parts.append(f"type {tool.name} = (_: {typescript_type(tool.parameters)}) => any;")
        else:
            parts.append(f"type {tool.name} = () => any;")
        parts.append("")
    parts.append("} // namespace functions")
    return "\n".join(parts)


# --- JSON schema -> TypeScript, as OpenAI's harmony renderer (`json_schema_to_typescript`) writes it ---


def _comment_lines(text: str, indent: str) -> list[str]:
    """Every line of a (possibly multi-line) description as a `//` comment."""
    return [f"{indent}// {line}" for line in text.splitlines()] if text else []


def _json_literal(value: Any) -> str:
    """JSON as the renderer writes it: `true`, `null`, compact lists, characters unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _has_enum(schema: Mapping[str, Any]) -> bool:
    return isinstance(schema.get("enum"), list) and bool(schema["enum"])


def _default_comment(schema: Mapping[str, Any]) -> str | None:
    """`default: "text"` for a free string, `default: text` for an enum value, JSON otherwise."""
    if "default" not in schema:
        return None
    default = schema["default"]
    if isinstance(default, str):
        return f"default: {default}" if _has_enum(schema) else f'default: "{default}"'
    return f"default: {_json_literal(default)}"


def _variants(schema: Mapping[str, Any]) -> list[Any] | None:
    for keyword in ("oneOf", "anyOf"):
        variants = schema.get(keyword)
        if isinstance(variants, list):
            return variants
    return None


def _with_null(schema: Mapping[str, Any], rendered: str) -> str:
    if schema.get("nullable") is True and "null" not in rendered:
        return f"{rendered} | null"
    return rendered


def typescript_type(schema: Mapping[str, Any], indent: str = "") -> str:
    """The TypeScript type of a JSON schema, as the model saw tool parameters in training."""
    variants = _variants(schema)
    if variants is not None:
        return _typescript_union(variants, indent)
    kind = schema.get("type")
    if isinstance(kind, list):
        names = ["number" if name == "integer" else name for name in kind if isinstance(name, str)]
        return " | ".join(names) or "any"
    if kind == "object":
        return _typescript_object(schema, indent)
    if kind == "string":
        values = [f'"{value}"' for value in schema.get("enum") or () if isinstance(value, str)]
        return " | ".join(values) or "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = schema.get("items")
        return f"{typescript_type(items, indent)}[]" if isinstance(items, Mapping) else "Array<any>"
    return "any"


def _variant_line(variant: Mapping[str, Any], indent: str, skip_description: str | None) -> str:
    line = _with_null(variant, typescript_type(variant, f"{indent}   "))
    comments = []
    description = variant.get("description")
    if isinstance(description, str) and description and description != skip_description:
        comments.append(" ".join(description.splitlines()))
    default = _default_comment(variant)
    if default:
        comments.append(default)
    return f"{line} // {' '.join(comments)}" if comments else line


def _typescript_union(variants: Sequence[Any], indent: str) -> str:
    lines = [_variant_line(v if isinstance(v, Mapping) else {}, indent, None) for v in variants]
    return "".join(f"\n{indent} | {line}" for line in lines)


def _typescript_object(schema: Mapping[str, Any], indent: str) -> str:
    head = "".join(f"{line}\n" for line in _comment_lines(str(schema.get("description") or ""), indent))
    properties = schema.get("properties")
    required = set(schema.get("required") or ())
    body: list[str] = []
    if isinstance(properties, Mapping):
        for name, prop in properties.items():
            prop = prop if isinstance(prop, Mapping) else {}
            optional = "" if name in required else "?"
            body += _property_comments(prop, indent)
            if _variants(prop) is not None:
                body += _union_property(f"{indent}{name}{optional}", prop, indent)
            else:
                body.append(_plain_property(f"{indent}{name}{optional}", prop, indent))
    return head + "{\n" + "".join(f"{line}\n" for line in body) + f"{indent}}}"


def _property_comments(prop: Mapping[str, Any], indent: str) -> list[str]:
    lines = []
    title = prop.get("title")
    if isinstance(title, str) and title:
        lines += [f"{indent}// {title}", f"{indent}//"]
    description = prop.get("description")
    if _variants(prop) is None and isinstance(description, str):
        lines += _comment_lines(description, indent)
    examples = [example for example in prop.get("examples") or () if isinstance(example, str)]
    if examples:
        lines.append(f"{indent}// Examples:")
        lines += [f'{indent}// - "{example}"' for example in examples]
    return lines


def _plain_property(label: str, prop: Mapping[str, Any], indent: str) -> str:
    line = f"{label}: {_with_null(prop, typescript_type(prop, f'{indent}    '))},"
    default = _default_comment(prop)
    return f"{line} // {default}" if default else line


def _union_property(label: str, prop: Mapping[str, Any], indent: str) -> list[str]:
    """A `oneOf`/`anyOf` property: its comments above, one `| variant` line each, then `,`."""
    variants = [v if isinstance(v, Mapping) else {} for v in _variants(prop) or ()]
    description = prop.get("description") if isinstance(prop.get("description"), str) else None
    first_description = variants[0].get("description") if variants else None
    lines = []
    if description and description != first_description:
        lines += _comment_lines(description, indent)
    default = _default_comment(prop)
    if default:
        lines.append(f"{indent}// {default}")
    lines.append(f"{label}:")
    for position, variant in enumerate(variants):
        # The first variant's description is not repeated when the property's own stands above it.
        described_above = position == 0 and bool(description) and description != first_description
        skip = variant.get("description") if described_above else description
        lines.append(f"{indent} | {_variant_line(variant, indent, skip)}")
    lines.append(f"{indent},")
    return lines


# --- the conversation ---


def render_prompt(
    messages: Sequence[ChatMessage],
    reasoning_effort: str,
    tokenizer: Tokenizer,
    *,
    knowledge_cutoff: str | None = DEFAULT_KNOWLEDGE_CUTOFF,
    current_date: str | None = None,
    model_identity: str = DEFAULT_MODEL_IDENTITY,
    tools: Sequence[ToolDefinition] = (),
) -> list[int]:
    """Token ids of the conversation, ending with `<|start|>assistant` so that the model answers."""
    if reasoning_effort not in REASONING_EFFORTS:
        raise HarmonyError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, got {reasoning_effort!r}")
    _validate_messages(messages)
    builder = _Builder(tokenizer)
    builder.message(
        "system",
        system_message_text(
            reasoning_effort,
            knowledge_cutoff=knowledge_cutoff,
            current_date=current_date,
            model_identity=model_identity,
            has_functions=bool(tools),
        ),
    )
    instructions = "\n\n".join(m.content for m in messages if m.role in ("system", "developer") and m.content)
    developer = developer_message_text(instructions, tools)
    if developer:
        builder.message("developer", developer)
    last_final = _last_final_answer(messages)
    for index, message in enumerate(messages):
        _render_conversation_message(builder, message, keep_reasoning=index > last_final)
    builder.special(START)
    builder.text("assistant")
    return builder.ids


def _is_final_answer(message: ChatMessage) -> bool:
    return message.role == "assistant" and not message.tool_calls and message.channel in (None, FINAL_CHANNEL)


def _last_final_answer(messages: Sequence[ChatMessage]) -> int:
    """Index of the last final answer (-1 if none). Upstream's rule (the gpt-oss chat template, harmony's
    `auto_drop_analysis`): reasoning before a final answer is dropped; reasoning after it belongs to the
    tool-calling turn in progress and is kept, as the model needs its chain of thought to continue."""
    return max((index for index, message in enumerate(messages) if _is_final_answer(message)), default=-1)


def _validate_messages(messages: Sequence[ChatMessage]) -> None:
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise HarmonyError(f"messages[{index}].role must be one of {', '.join(ROLES)}, got {message.role!r}")
        if message.role == "tool" and not message.name:
            raise HarmonyError(f"messages[{index}].name: a tool message needs the name of the function it answers")
        if message.channel is not None and message.channel not in CHANNELS:
            raise HarmonyError(
                f"messages[{index}].channel must be one of {', '.join(CHANNELS)}, got {message.channel!r}"
            )
        for call_index, call in enumerate(message.tool_calls):
            if not call.name or any(char.isspace() or char in "<>" for char in call.name):
                raise HarmonyError(
                    f"messages[{index}].tool_calls[{call_index}].name must be a function name without spaces, "
                    f"got {call.name!r}"
                )


def _author(message: ChatMessage) -> str:
    return f"{message.role}:{message.name}" if message.name else message.role


def _render_conversation_message(builder: _Builder, message: ChatMessage, *, keep_reasoning: bool) -> None:
    if message.role == "user":
        builder.message(_author(message), message.content)
    elif message.role == "assistant":
        _render_assistant(builder, message, keep_reasoning=keep_reasoning)
    elif message.role == "tool":
        builder.message(f"functions.{message.name} to=assistant", message.content, channel=COMMENTARY_CHANNEL)


def _render_assistant(builder: _Builder, message: ChatMessage, *, keep_reasoning: bool) -> None:
    author = _author(message)
    if message.channel == ANALYSIS_CHANNEL and not keep_reasoning:
        return
    if message.reasoning and keep_reasoning:
        builder.message(author, message.reasoning, channel=ANALYSIS_CHANNEL)
    if message.content or not message.tool_calls:
        channel = message.channel or (COMMENTARY_CHANNEL if message.tool_calls else FINAL_CHANNEL)
        builder.message(author, message.content, channel=channel)
    for call in message.tool_calls:
        builder.message(
            author,
            call.arguments,
            channel=COMMENTARY_CHANNEL,
            recipient=f"functions.{call.name}",
            constrain="json",
            end=CALL,
        )


def stop_token_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """Generation ends at `<|return|>` (answer done) or `<|call|>` (a tool call to run)."""
    return (tokenizer.token_id(RETURN), tokenizer.token_id(CALL))


# --------------------------------------------------------------------------------------------------
# parsing the model's output as it streams
# --------------------------------------------------------------------------------------------------

_HEADER_CHANNEL = re.compile(r"<\|channel\|>\s*([^\s<]+)")
_HEADER_RECIPIENT = re.compile(r"to=([^\s<]+)")
# After the channel and recipient: `<|constrain|>json` as the model writes it, or a bare `json`.
_HEADER_CONTENT_TYPE = re.compile(r"(?:<\|constrain\|>|\s)\s*([A-Za-z][\w.+/-]*)\s*$")


class HarmonyStreamParser:
    """Turns generated token ids into text per channel, incrementally and without ever raising.

    Starts inside the header of the assistant message that the prompt opened. Multi-byte characters
    split across tokens are held back until complete. Output that does not follow harmony (a header that
    never ends within `max_header_tokens`, text outside any message) is treated as `final` text.
    """

    def __init__(self, tokenizer: Tokenizer, *, max_header_tokens: int = DEFAULT_MAX_HEADER_TOKENS) -> None:
        self._tokenizer = tokenizer
        self._max_header_tokens = max_header_tokens
        ids = {name: tokenizer.token_id(name) for name in STRUCTURE_TOKENS}
        self._start, self._end, self._message = ids[START], ids[END], ids[MESSAGE]
        self._channel_token, self._constrain = ids[CHANNEL], ids[CONSTRAIN]
        self._return, self._call = ids[RETURN], ids[CALL]
        self._state: Literal["header", "content", "between", "done"] = "header"
        self._header: list[int] = []
        self._channel = FINAL_CHANNEL
        self._recipient: str | None = None
        self._content_type: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text: list[str] = []
        self._out: list[ChannelDelta] = []
        self._out_message = -1  # which message the last pending delta belongs to
        self.messages: list[ParsedMessage] = []
        self.stop_token: str | None = None  # RETURN or CALL once seen
        # (channel, recipient) of the last token fed when it was message text, else None: lets a caller
        # that feeds one token at a time tell which tokens carry text (for per-token logprobs).
        self.last_text_channel: tuple[str, str | None] | None = None

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, token_ids: Sequence[int]) -> list[ChannelDelta]:
        for token in token_ids:
            self._feed_one(int(token))
        return self._drain()

    def finish(self) -> list[ChannelDelta]:
        """End of generation: flush what is pending (a header that never completed and holds plain text
        becomes final text)."""
        if self._state != "done":
            self._end_message()
        self._state = "done"
        return self._drain()

    # ---- states ----

    def _feed_one(self, token: int) -> None:
        self.last_text_channel = None
        if self._state == "done":
            return
        if token in (self._return, self._call):
            self._end_message()
            self.stop_token = RETURN if token == self._return else CALL
            self._state = "done"
        elif self._state == "header":
            self._feed_header(token)
        elif self._state == "content":
            self._feed_content(token)
        else:
            self._feed_between(token)

    def _feed_header(self, token: int) -> None:
        if token == self._message:
            self._open_message()
        elif token == self._start:
            self._header = []
        elif token == self._end:
            self._end_message()
            self._state = "between"
        else:
            self._header.append(token)
            if len(self._header) > self._max_header_tokens:
                self._fallback_to_final()

    def _feed_content(self, token: int) -> None:
        if token == self._end:
            self._close_message()
            self._state = "between"
        elif token == self._start:
            self._close_message()
            self._header = []
            self._state = "header"
        elif not self._is_special(token):
            self.last_text_channel = (self._channel, self._recipient)
            self._emit(self._decoder.decode(self._bytes(token)))
        # Other special tokens inside content (a stray <|channel|>, reserved ids) carry no text.

    def _feed_between(self, token: int) -> None:
        if token == self._start:
            self._header = []
            self._state = "header"
        elif token == self._channel_token or not self._is_special(token):
            # The model skipped <|start|>assistant: read a header from here (bounded, then final text).
            self._header = [token]
            self._state = "header"

    # ---- helpers ----

    def _end_message(self) -> None:
        """The current message ends (or generation stops) here."""
        if self._state == "header" and self._header_is_plain_text():
            self._fallback_to_final()
        if self._state == "content":
            self._close_message()
        self._header = []

    def _open_message(self) -> None:
        header_text = self._header_text(include_special=True)
        channel_match = _HEADER_CHANNEL.search(header_text)
        recipient_match = _HEADER_RECIPIENT.search(header_text)
        content_type_match = _HEADER_CONTENT_TYPE.search(_after_channel_and_recipient(header_text))
        self._recipient = recipient_match.group(1) if recipient_match else None
        self._content_type = content_type_match.group(1) if content_type_match else None
        channel = channel_match.group(1) if channel_match else None
        if channel not in CHANNELS:
            channel = COMMENTARY_CHANNEL if self._recipient and channel is None else FINAL_CHANNEL
        self._channel = channel
        self._header = []
        self._state = "content"

    def _fallback_to_final(self) -> None:
        """A header that is not one: its plain text is the start of a final message."""
        text = self._header_text(include_special=False)
        self._header = []
        self._channel, self._recipient, self._content_type = FINAL_CHANNEL, None, None
        self._state = "content"
        self._emit(text)

    def _header_is_plain_text(self) -> bool:
        if any(self._is_special(token) for token in self._header):
            return False
        text = self._header_text(include_special=False).strip()
        return bool(text) and text not in ROLES

    def _header_text(self, *, include_special: bool) -> str:
        pieces = bytearray()
        for token in self._header:
            if self._is_special(token):
                if include_special:
                    pieces += self._special_text(token).encode("utf-8")
            else:
                pieces += self._bytes(token)
        return pieces.decode("utf-8", errors="replace")

    def _close_message(self) -> None:
        self._emit(self._decoder.decode(b"", final=True))
        self._decoder.reset()
        self.messages.append(ParsedMessage(self._channel, "".join(self._text), self._recipient, self._content_type))
        self._text = []

    def _emit(self, text: str) -> None:
        if not text:
            return
        self._text.append(text)
        last = self._out[-1] if self._out else None
        if last is not None and self._out_message == len(self.messages):  # same message: one delta
            self._out[-1] = ChannelDelta(self._channel, last.text + text, self._recipient, self._content_type)
        else:
            self._out.append(ChannelDelta(self._channel, text, self._recipient, self._content_type))
            self._out_message = len(self.messages)

    def _drain(self) -> list[ChannelDelta]:
        out, self._out = self._out, []
        return out

    def _is_special(self, token: int) -> bool:
        return self._tokenizer.is_special(token) or not 0 <= token < self._tokenizer.vocab_size

    def _special_text(self, token: int) -> str:
        try:
            return self._tokenizer.decode([token])
        except Exception:  # an id the tokenizer does not know: no text
            return ""

    def _bytes(self, token: int) -> bytes:
        try:
            return self._tokenizer.token_bytes(token)
        except (TokenizerError, OverflowError, ValueError):
            return b""


def _after_channel_and_recipient(header: str) -> str:
    """The part of a header after `<|channel|>name` and `to=recipient`, where a content type stands."""
    for pattern in (_HEADER_CHANNEL, _HEADER_RECIPIENT):
        match = pattern.search(header)
        if match:
            header = header[: match.start()] + " " + header[match.end() :]
    return header.replace(START, " ").replace(MESSAGE, " ").replace("assistant", " ")


def parse_completion(token_ids: Sequence[int], tokenizer: Tokenizer) -> list[ParsedMessage]:
    """All messages of a finished completion (the tokens generated after `<|start|>assistant`)."""
    parser = HarmonyStreamParser(tokenizer)
    parser.feed(token_ids)
    parser.finish()
    return parser.messages


class RawTextParser:
    """For raw completions (`/v1/completions`): every generated token is `final` text, special tokens
    carry none, and generation still ends at a stop token. The same interface as `HarmonyStreamParser`."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._stops = set(stop_token_ids(tokenizer))
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._done = False
        self.stop_token: str | None = None
        self.last_text_channel: tuple[str, str | None] | None = None  # as HarmonyStreamParser's

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, token_ids: Sequence[int]) -> list[ChannelDelta]:
        pieces = []
        for token in token_ids:
            self.last_text_channel = None
            if self._done:
                break
            if int(token) in self._stops:
                self._done = True
                self.stop_token = RETURN if int(token) == self._tokenizer.token_id(RETURN) else CALL
            elif not self._tokenizer.is_special(int(token)) and 0 <= int(token) < self._tokenizer.vocab_size:
                self.last_text_channel = (FINAL_CHANNEL, None)
                pieces.append(self._decoder.decode(self._tokenizer.token_bytes(int(token))))
        text = "".join(pieces)
        return [ChannelDelta(FINAL_CHANNEL, text)] if text else []

    def finish(self) -> list[ChannelDelta]:
        self._done = True
        text = self._decoder.decode(b"", final=True)
        return [ChannelDelta(FINAL_CHANNEL, text)] if text else []
