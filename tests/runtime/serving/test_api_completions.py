"""`/v1/completions` through the whole stack with the `openai` client: the raw prompt is not rendered as
harmony, the tokens come back as plain text (special tokens carry none), streaming, max_tokens, stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from serving_support import ServerProcess, running_gateway

from gptoss_runtime.tokenizer import Tokenizer
from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL

pytestmark = pytest.mark.triton
MODEL = "gpt-oss-20b"
# The scripted engine's tokens, without their special tokens.
RAW_TEXT = f"analysis{DEFAULT_ANALYSIS}assistantfinal{DEFAULT_FINAL}"


@pytest.fixture(scope="module")
def client(
    scripted_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[openai.OpenAI]:
    with running_gateway(scripted_server, tiny_weights, tmp_path_factory.mktemp("gateway") / "gateway.log") as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_completion_returns_the_raw_text(client: openai.OpenAI, tiny_weights: Path) -> None:
    completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=500)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == RAW_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # the prompt alone, as is: no harmony system message around it
    assert completion.usage.prompt_tokens == len(Tokenizer.from_dir(tiny_weights).encode("Once upon a time"))


def test_max_tokens_defaults_to_sixteen_and_says_length(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="Once upon a time")
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 16


def test_streamed_completion_and_stop_strings(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL,
        prompt="x",
        max_tokens=500,
        stop=["greet back"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == RAW_TEXT[: RAW_TEXT.index("greet back")]
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_unsupported_parameters_are_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="x", echo=True)
    assert "echo" in str(caught.value)
