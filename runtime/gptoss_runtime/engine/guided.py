"""Structured output: what a completion must look like, and how an engine enforces it.

A `GuidedDecoding` travels from the gateway (`response_format`, `text.format`, `tool_choice`) through the
Triton model's `guided` input (JSON) to the engine in `SamplingParams.guided`. In harmony the constrained
JSON is the content of one message, so the completion is: a fixed harmony header (forced token by
token), the JSON (masked by an llguidance matcher compiled from the schema), then the stop token:

- `json_schema` / `json_object`: `<|channel|>final<|message|>{JSON}<|return|>`
- `tool` (tool_choice required or named): `<|channel|>commentary to=functions.NAME <|constrain|>json
  <|message|>{arguments}<|call|>`; with several tools allowed (`required`) the name is chosen by mask.

The reference engine applies the masks to numpy logits (`GuidedState`); TensorRT-LLM pods map the JSON
part to its guided decoding (`trtllm_guided_params`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

GuidedKind = Literal["json_schema", "json_object", "tool"]
ANY_JSON_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}


class GuidedDecodingError(ValueError):
    """A structured-output request that cannot be enforced; the message names the field and the fix."""


@dataclass(frozen=True)
class GuidedDecoding:
    kind: GuidedKind
    schema: Mapping[str, Any] = field(default_factory=lambda: dict(ANY_JSON_OBJECT))
    # For `tool`: the functions the model may call, name -> JSON schema of its arguments.
    tools: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "schema": self.schema, "tools": self.tools}, separators=(",", ":"))


def parse_guided_json(text: str) -> GuidedDecoding:
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise GuidedDecodingError(f"is not valid JSON ({error})") from error
    if not isinstance(raw, dict) or raw.get("kind") not in ("json_schema", "json_object", "tool"):
        raise GuidedDecodingError('must be {"kind": "json_schema" | "json_object" | "tool", "schema": {...}}')
    schema = raw.get("schema") or dict(ANY_JSON_OBJECT)
    tools = raw.get("tools") or {}
    if not isinstance(schema, dict) or not isinstance(tools, dict):
        raise GuidedDecodingError("schema and tools must be JSON objects")
    if raw["kind"] == "tool" and not tools:
        raise GuidedDecodingError("a tool constraint needs at least one function in tools")
    return GuidedDecoding(raw["kind"], schema, tools)


def for_tools(names_and_schemas: Sequence[tuple[str, Mapping[str, Any] | None]]) -> GuidedDecoding:
    return GuidedDecoding("tool", tools={name: schema or dict(ANY_JSON_OBJECT) for name, schema in names_and_schemas})


# --- the grammar of a constrained completion --------------------------------------------------------


def _lark_string(text: str) -> str:
    return json.dumps(text)


# JSON is written in one fixed layout (`{"key": "value", "n": 1}`, as OpenAI's structured outputs read):
# with free whitespace a weak or small model can emit whitespace until max_tokens and never close the
# object. A schema's own `x-guidance` options win.
JSON_LAYOUT: Final[Mapping[str, Any]] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _json_rule(schema: Mapping[str, Any]) -> str:
    options = {**JSON_LAYOUT, **(schema.get("x-guidance") or {})}
    return f"%json {json.dumps({**schema, 'x-guidance': options})}"


def harmony_grammar(guided: GuidedDecoding) -> str:
    """A Lark grammar (llguidance's dialect: `<|name|>` is that special token, `%json` a JSON schema)
    for the whole completion after the prompt's `<|start|>assistant`."""
    if guided.kind != "tool":
        schema = guided.schema if guided.kind == "json_schema" else ANY_JSON_OBJECT
        return f'start: <|channel|> "final" <|message|> body <|return|>\nbody: {_json_rule(schema)}\n'
    rules = [f"call_{index}" for index in range(len(guided.tools))]
    lines = [f'start: <|channel|> "commentary to=functions." ({" | ".join(rules)})']
    for index, (name, schema) in enumerate(guided.tools.items()):
        lines.append(f'call_{index}: {_lark_string(name + " ")} <|constrain|> "json" <|message|> args_{index} <|call|>')
        lines.append(f"args_{index}: {_json_rule(schema)}")
    return "\n".join(lines) + "\n"


class GuidedState:
    """One request's llguidance matcher: masks each step's logits, then follows the sampled token."""

    def __init__(self, tokenizer: Any, guided: GuidedDecoding) -> None:
        import llguidance

        grammar = harmony_grammar(guided)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
        if is_error:
            raise GuidedDecodingError(f"the schema cannot be enforced: {'; '.join(messages)}")
        self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._vocab_size = int(tokenizer.vocab_size)

    def allowed(self) -> Any:
        """A boolean numpy mask over the tokenizer's ids: True where the next token keeps the output valid."""
        import numpy as np

        words = self._matcher.compute_bitmask()
        bits = np.unpackbits(np.frombuffer(words, dtype=np.uint8), bitorder="little")
        return bits[: self._vocab_size].astype(bool)

    def mask(self, logits: Any) -> Any:
        """`logits` (the tokenizer's ids first) with every forbidden token at -inf."""
        import numpy as np

        allowed = self.allowed()
        masked = np.full(logits.shape, -np.inf, dtype=np.float64)
        size = min(len(allowed), logits.shape[0])
        masked[:size] = np.where(allowed[:size], logits[:size], -np.inf)
        return masked

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GuidedDecodingError(f"token {token} breaks the constraint: {self._matcher.get_error()}")


def guidance_tokenizer(tokenizer_json: str, vocab_size: int, stop_token: int) -> Any:
    """llguidance's view of the checkpoint's tokenizer (about a second for the real vocabulary: cache it)."""
    import llguidance

    return llguidance.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=stop_token)


# TensorRT-LLM (GPU pods): its LLM API takes `guided_decoding_backend="llguidance"` at load time and a
# `GuidedDecodingParams(grammar=...)` per request; llguidance reads the same Lark grammar there.
TRTLLM_GUIDED_BACKEND: Final = "llguidance"


def trtllm_guided_params(guided: GuidedDecoding) -> dict[str, str]:
    """Keyword arguments of `tensorrt_llm.sampling_params.GuidedDecodingParams` for one request."""
    return {"grammar": harmony_grammar(guided)}
