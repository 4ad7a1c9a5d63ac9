"""Logprobs through the whole stack (the `openai` client, the gateway, real Triton, the scripted engine,
whose tokens all have logprob -0.5 with ids 0, 1, ... as runners-up), and the gateway's one log line per
finished request."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from serving_support import ServerProcess, running_gateway, wait_until

from gptoss_runtime.triton_model.scripted import DEFAULT_ANALYSIS, DEFAULT_FINAL, SCRIPTED_LOGPROB

pytestmark = pytest.mark.triton
MODEL = "gpt-oss-20b"
RAW_TEXT = f"analysis{DEFAULT_ANALYSIS}assistantfinal{DEFAULT_FINAL}"
SECRET = "sk-never-logged-4242"


@pytest.fixture(scope="module")
def gateway(
    scripted_server: ServerProcess, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with running_gateway(scripted_server, tiny_weights, log) as url:
        yield url, log


@pytest.fixture(scope="module")
def client(gateway: tuple[str, Path]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key=SECRET, max_retries=0)


def test_chat_logprobs_cover_the_answer_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=2
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert bytes(b for entry in entries for b in entry.bytes or []).decode() == DEFAULT_FINAL  # no reasoning
    assert "".join(entry.token for entry in entries) == choice.message.content
    assert {entry.logprob for entry in entries} == {SCRIPTED_LOGPROB}
    assert all(len(entry.top_logprobs) == 2 and entry.top_logprobs[0].token == entry.token for entry in entries)


def test_chat_without_logprobs_has_none(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].logprobs is None


def test_streamed_chat_logprobs_arrive_with_their_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], logprobs=True, stream=True
    )
    text, tokens = [], []
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text.append(choice.delta.content or "")
        if choice.logprobs is not None and choice.logprobs.content:
            tokens.extend(entry.token for entry in choice.logprobs.content)
            assert all(entry.top_logprobs == [] for entry in choice.logprobs.content)
    assert "".join(text) == "".join(tokens) == DEFAULT_FINAL


def test_completions_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="Once", max_tokens=500, logprobs=1)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.text_offset and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text == RAW_TEXT
    assert logprobs.token_logprobs == [SCRIPTED_LOGPROB] * len(logprobs.tokens)
    offsets = [sum(len(token) for token in logprobs.tokens[:index]) for index in range(len(logprobs.tokens))]
    assert logprobs.text_offset == offsets
    assert all(logprobs.tokens[index] in top for index, top in enumerate(logprobs.top_logprobs))


def test_streamed_completions_offsets_run_across_chunks(client: openai.OpenAI) -> None:
    stream = client.completions.create(model=MODEL, prompt="Once", max_tokens=500, logprobs=0, stream=True)
    tokens: list[str] = []
    offsets: list[int] = []
    for chunk in stream:
        logprobs = chunk.choices[0].logprobs if chunk.choices else None
        if logprobs is not None:
            tokens += logprobs.tokens or []
            offsets += logprobs.text_offset or []
    assert "".join(tokens) == RAW_TEXT
    assert offsets == [sum(len(token) for token in tokens[:index]) for index in range(len(tokens))]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
    ],
)
def test_bad_chat_logprobs_are_refused_by_name(gateway: tuple[str, Path], body: dict[str, object], param: str) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}
    post = urllib.request.Request(
        f"{gateway[0]}/v1/chat/completions",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=30)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["param"] == param


def test_one_log_line_per_finished_request_without_secrets(client: openai.OpenAI, gateway: tuple[str, Path]) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "nobody", "content": "x"}])  # type: ignore[misc,list-item]
    log = gateway[1]

    def line_of(response_id: str) -> str | None:
        lines = [line for line in log.read_text().splitlines() if f" id={response_id} " in line]
        return lines[0] if lines else None

    wait_until(lambda: line_of(completion.id) is not None, 10, "the request's log line")
    line = line_of(completion.id) or ""
    fields = dict(re.findall(r"(\w+)=(\S+)", line.split(" request ", 1)[1]))
    assert fields["endpoint"] == "/v1/chat/completions"
    assert (fields["model"], fields["status"], fields["finish"], fields["stream"]) == (MODEL, "200", "stop", "false")
    assert completion.usage is not None
    assert int(fields["prompt_tokens"]) == completion.usage.prompt_tokens
    assert int(fields["completion_tokens"]) == completion.usage.completion_tokens
    assert float(fields["ttft_ms"]) <= float(fields["total_ms"])
    assert fields["pod"]
    text = log.read_text()
    assert len([row for row in text.splitlines() if f"id={completion.id}" in row]) == 1
    assert re.search(r"endpoint=/v1/chat/completions id=- model=\S+ status=400", text)  # refused: logged too
    assert SECRET not in text and "Authorization" not in text
