"""Harmony conformance: structure tokens by id, the tool-schema renderer's exact text (golden texts
written from the harmony format documentation and the behaviour of OpenAI's renderer), the date line,
author names, reasoning kept or dropped by upstream's rule, and the parser's recipient and content type."""

from __future__ import annotations

import re

from gptoss_runtime import harmony
from gptoss_runtime.harmony import ChatMessage, HarmonyStreamParser, ToolCall, ToolDefinition
from gptoss_runtime.tokenizer import HARMONY_SPECIAL_TOKENS, Tokenizer

SPECIAL = re.compile(r"(<\|[a-z_0-9]+\|>)")
FIRST_SPECIAL_ID = 199998  # `<|startoftext|>` in o200k_harmony


def ids_of(tokenizer: Tokenizer, text: str) -> list[int]:
    ids: list[int] = []
    for piece in SPECIAL.split(text):
        if piece:
            ids += [tokenizer.token_id(piece)] if SPECIAL.fullmatch(piece) else tokenizer.encode(piece)
    return ids


WEATHER_TOOLS = [
    ToolDefinition("get_location", "Gets the location of the user."),
    ToolDefinition(
        "get_current_weather",
        "Gets the current weather in the provided location.",
        {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
            },
            "required": ["location"],
        },
    ),
]


# ---- structure tokens are tokens ----


def test_the_special_tokens_keep_the_ids_of_o200k_harmony() -> None:
    ids = {token: FIRST_SPECIAL_ID + offset for offset, token in enumerate(HARMONY_SPECIAL_TOKENS)}
    assert ids["<|constrain|>"] == 200003
    assert (ids["<|return|>"], ids["<|channel|>"], ids["<|start|>"], ids["<|end|>"]) == (200002, 200005, 200006, 200007)
    assert (ids["<|message|>"], ids["<|call|>"]) == (200008, 200012)


def test_a_tool_call_in_history_has_constrain_as_one_special_token(tiny_tokenizer: Tokenizer) -> None:
    messages = [
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", tool_calls=(ToolCall("get_current_weather", '{"location":"Paris"}'),)),
        ChatMessage("tool", "sunny", name="get_current_weather"),
    ]
    ids = harmony.render_prompt(messages, "low", tiny_tokenizer, tools=WEATHER_TOOLS)
    constrain = tiny_tokenizer.token_id("<|constrain|>")
    assert ids.count(constrain) == 1
    at = ids.index(constrain)
    # ` to=functions.get_current_weather ` <|constrain|> `json` <|message|>, all by id
    assert tiny_tokenizer.decode(ids[at + 1 : ids.index(tiny_tokenizer.token_id("<|message|>"), at)]) == "json"
    expected_tail = ids_of(tiny_tokenizer, ' <|constrain|>json<|message|>{"location":"Paris"}<|call|>')
    assert ids[at - 1 : at - 1 + len(expected_tail)][1:] == expected_tail[1:]
    every_special = {tiny_tokenizer.token_id(token) for token in harmony.STRUCTURE_TOKENS}
    text_ids = [token for token in ids if token not in every_special]
    assert "<|" not in tiny_tokenizer.decode(text_ids)  # no structure token was spelled out as text


# ---- the system and developer messages ----


def test_system_message_has_the_current_date_after_the_knowledge_cutoff(tiny_tokenizer: Tokenizer) -> None:
    text = tiny_tokenizer.decode(
        harmony.render_prompt([ChatMessage("user", "hi")], "low", tiny_tokenizer, current_date="2026-12-04")
    )
    assert text.startswith(
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2026-12-04\n\nReasoning: low\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    )


def test_documented_weather_tools_render_exactly(tiny_tokenizer: Tokenizer) -> None:
    messages = [ChatMessage("developer", "Always respond in riddles"), ChatMessage("user", "Weather?")]
    text = tiny_tokenizer.decode(
        harmony.render_prompt(messages, "high", tiny_tokenizer, current_date="2025-06-28", tools=WEATHER_TOOLS)
    )
    assert text == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: high\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
        "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nAlways respond in riddles\n\n"
        "# Tools\n\n## functions\n\nnamespace functions {\n\n"
        "// Gets the location of the user.\n"
        "type get_location = () => any;\n\n"
        "// Gets the current weather in the provided location.\n"
        "type get_current_weather = (_: {\n"
        "// The city and state, e.g. San Francisco, CA\n"
        "location: string,\n"
        'format?: "celsius" | "fahrenheit", // default: celsius\n'
        "}) => any;\n\n"
        "} // namespace functions<|end|>"
        "<|start|>user<|message|>Weather?<|end|><|start|>assistant"
    )


RICH_SCHEMA = {
    "type": "object",
    "description": "Search options.",
    "properties": {
        "query": {
            "type": "string",
            "title": "Query",
            "description": "What to look for.\nPlain words work best.",
            "examples": ["gpt-oss", "harmony"],
        },
        "limit": {"type": "integer", "default": 10},
        "exact": {"type": "boolean", "default": False},
        "lang": {"type": "string", "default": "en"},
        "tags": {"type": "array"},
        "ids": {"type": "array", "items": {"type": "integer"}},
        "id": {"type": ["integer", "string"]},
        "cursor": {"type": "string", "nullable": True},
        "filter": {
            "type": "object",
            "properties": {"after": {"type": "string", "description": "ISO date"}, "before": {"type": "string"}},
            "required": ["after"],
        },
        "mode": {
            "description": "How to match.",
            "oneOf": [
                {"type": "string", "enum": ["fuzzy", "exact"], "description": "a named mode"},
                {"type": "number", "description": "a threshold", "nullable": True},
            ],
        },
        "sort": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["query"],
}

RICH_TYPESCRIPT = """\
// Search options.
{
// Query
//
// What to look for.
// Plain words work best.
// Examples:
// - "gpt-oss"
// - "harmony"
query: string,
limit?: number, // default: 10
exact?: boolean, // default: false
lang?: string, // default: "en"
tags?: Array<any>,
ids?: number[],
id?: number | string,
cursor?: string | null,
filter?: {
    // ISO date
    after: string,
    before?: string,
    },
// How to match.
mode?:
 | "fuzzy" | "exact"
 | number | null // a threshold
,
// default: null
sort?:
 | string
 | any
,
}"""


def test_schema_renders_as_openais_typescript() -> None:
    assert harmony.typescript_type(RICH_SCHEMA) == RICH_TYPESCRIPT


def test_top_level_unions_and_variant_comments() -> None:
    schema = {"oneOf": [{"type": "string", "description": "a name", "default": "x"}, {"type": "boolean"}]}
    assert harmony.typescript_type(schema) == '\n | string // a name default: "x"\n | boolean'


def test_multi_line_tool_descriptions_are_commented_line_by_line(tiny_tokenizer: Tokenizer) -> None:
    tool = ToolDefinition("ping", "Checks a host.\nReturns the round trip.", {"type": "object", "properties": {}})
    text = harmony.developer_message_text("", [tool])
    assert "// Checks a host.\n// Returns the round trip.\ntype ping = (_: {\n}) => any;" in text


# ---- the conversation ----


def test_author_names_follow_the_role(tiny_tokenizer: Tokenizer) -> None:
    messages = [ChatMessage("user", "hi", name="alice"), ChatMessage("assistant", "hello"), ChatMessage("user", "?")]
    text = tiny_tokenizer.decode(harmony.render_prompt(messages, "low", tiny_tokenizer))
    assert "<|start|>user:alice<|message|>hi<|end|><|start|>assistant<|channel|>final<|message|>hello<|end|>" in text


def test_tool_turn_keeps_reasoning_preamble_and_calls_in_order(tiny_tokenizer: Tokenizer) -> None:
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage(
            "assistant",
            "Let me check.",
            reasoning="Need the weather tool.",
            tool_calls=(ToolCall("get_current_weather", '{"location":"Paris"}'),),
        ),
        ChatMessage("tool", '{"sunny": true}', name="get_current_weather"),
    ]
    text = tiny_tokenizer.decode(harmony.render_prompt(messages, "low", tiny_tokenizer, tools=WEATHER_TOOLS))
    assert text.endswith(
        "<|start|>user<|message|>Weather in Paris?<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Need the weather tool.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Let me check.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>"
        '{"location":"Paris"}<|call|>'
        '<|start|>functions.get_current_weather to=assistant<|channel|>commentary<|message|>{"sunny": true}<|end|>'
        "<|start|>assistant"
    )


def test_reasoning_before_a_final_answer_is_dropped(tiny_tokenizer: Tokenizer) -> None:
    messages = [
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", reasoning="old thought", tool_calls=(ToolCall("get_location", "{}"),)),
        ChatMessage("tool", "Paris", name="get_location"),
        ChatMessage("assistant", "It is sunny in Paris.", reasoning="final thought"),
        ChatMessage("user", "And tomorrow?"),
        ChatMessage("assistant", "analysis text", channel="analysis"),
    ]
    text = tiny_tokenizer.decode(harmony.render_prompt(messages, "low", tiny_tokenizer, tools=WEATHER_TOOLS))
    assert "old thought" not in text
    assert "final thought" not in text
    assert "<|start|>assistant<|channel|>analysis<|message|>analysis text<|end|><|start|>assistant" in text


# ---- parsing ----


def test_parser_carries_recipient_and_content_type_per_message(tiny_tokenizer: Tokenizer) -> None:
    output = (
        "<|channel|>analysis<|message|>Need weather.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.get_current_weather <|constrain|>json<|message|>{"a":1}'
        "<|call|>"
    )
    parser = HarmonyStreamParser(tiny_tokenizer)
    deltas = parser.feed(ids_of(tiny_tokenizer, output)) + parser.finish()
    assert [(d.channel, d.recipient, d.content_type, d.text) for d in deltas] == [
        ("analysis", None, None, "Need weather."),
        ("commentary", None, None, "Checking."),
        ("commentary", "functions.get_current_weather", "json", '{"a":1}'),
    ]
    assert parser.stop_token == "<|call|>"


def test_recipient_before_the_channel_and_a_bare_content_type(tiny_tokenizer: Tokenizer) -> None:
    output = " to=functions.get_location<|channel|>commentary json<|message|>{}<|call|>"
    messages = harmony.parse_completion(ids_of(tiny_tokenizer, output), tiny_tokenizer)
    assert messages == [harmony.ParsedMessage("commentary", "{}", "functions.get_location", "json")]


def test_two_messages_on_one_channel_stay_two_deltas(tiny_tokenizer: Tokenizer) -> None:
    output = "<|channel|>analysis<|message|>one<|end|><|start|>assistant<|channel|>analysis<|message|>two<|end|>"
    parser = HarmonyStreamParser(tiny_tokenizer)
    deltas = parser.feed(ids_of(tiny_tokenizer, output))
    assert [d.text for d in deltas] == ["one", "two"]
