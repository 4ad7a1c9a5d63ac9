"""The gateway's front door against a fake Triton: API keys (401, rotation), admission (429 with
Retry-After beyond the plan's capacity, 503 while draining or while Triton is unreachable), and the
context-length error code. No tritonserver needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_serving_gateway_shapes import ANSWER, MODEL

from gptoss_runtime.gateway.admission import Admission, AdmissionLimits, OverloadedError
from gptoss_runtime.gateway.app import GatewayConfig, make_app
from gptoss_runtime.gateway.auth import ApiKeys, read_keys
from gptoss_runtime.gateway.guard import GUARD_KEY, GuardSettings, guard_settings
from gptoss_runtime.gateway.triton import GenerationInputs, Step, TritonRequestError
from gptoss_runtime.plan import EngineSettings, KvBudget, ServingPlan

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


class GatedTriton:
    """A fake Triton client whose generations wait for `release` after their first step."""

    def __init__(self, error: TritonRequestError | None = None) -> None:
        self.release = asyncio.Event()
        self.started = 0
        self.error = error
        self._progress = asyncio.Condition()

    async def wait_started(self, count: int) -> None:
        async with asyncio.timeout(10), self._progress:
            await self._progress.wait_for(lambda: self.started >= count)

    async def is_ready(self) -> bool:
        return True

    def release_idle_calls(self) -> None:
        return

    async def close(self) -> None:
        return

    async def generate(self, request_id: str, inputs: GenerationInputs) -> AsyncGenerator[Step, None]:
        if self.error is not None:
            raise self.error
        async with self._progress:
            self.started += 1
            self._progress.notify_all()
        yield ANSWER[0]
        await self.release.wait()
        for step in ANSWER[1:]:
            yield step


def gateway(fake: GatedTriton, guard: GuardSettings) -> TestClient[Any, Any]:
    config = GatewayConfig(triton_grpc="unused:0", model_name=MODEL, max_tokens_limit=1000)
    return TestClient(TestServer(make_app(config, client=fake, guard=guard)))  # type: ignore[arg-type]


# --- API keys --------------------------------------------------------------------------------------


async def test_without_a_valid_key_the_gateway_answers_401_in_openai_shape(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team-a").write_text("sk-alpha-0123456789\n")
    fake = GatedTriton()
    fake.release.set()
    async with gateway(fake, GuardSettings(api_keys_path=tmp_path / "keys")) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT)
        wrong = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-wrong-999999"}
        )
        good = await client.post(
            "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-alpha-0123456789"}
        )
        probe = await client.get("/readyz")

        assert missing.status == 401 and wrong.status == 401
        assert (await missing.json())["error"]["type"] == "invalid_request_error"
        wrong_error = (await wrong.json())["error"]
        assert wrong_error["code"] == "invalid_api_key" and "sk-wrong" not in wrong_error["message"]
        assert good.status == 200
        assert probe.status == 200  # probes need no key


async def test_keys_are_reread_so_rotation_needs_no_restart(tmp_path: Path) -> None:
    keys_dir = tmp_path / "secret"
    keys_dir.mkdir()
    (keys_dir / "old").write_text("key-old-0001")
    now = [0.0]
    keys = ApiKeys(keys_dir, reload_s=1.0, clock=lambda: now[0])
    keys.check("Bearer key-old-0001")

    (keys_dir / "new").write_text("key-new-0001\nkey-new-0002\n")
    (keys_dir / "old").unlink()
    now[0] = 1.5

    keys.check("Bearer key-new-0002")
    with pytest.raises(Exception, match="Incorrect API key"):
        keys.check("Bearer key-old-0001")


def test_an_empty_secret_opens_nothing(tmp_path: Path) -> None:
    (tmp_path / "..data").mkdir()  # a Secret mount's bookkeeping is not a key
    assert read_keys(tmp_path) == frozenset()
    with pytest.raises(Exception, match="Incorrect API key"):
        ApiKeys(tmp_path).check("Bearer anything")


# --- admission -------------------------------------------------------------------------------------


async def test_beyond_capacity_requests_get_429_with_retry_after_and_admitted_ones_finish() -> None:
    fake = GatedTriton()
    limits = AdmissionLimits(max_running=2, max_queued=1)
    async with gateway(fake, GuardSettings(admission=limits)) as client:
        admitted = [asyncio.create_task(client.post("/v1/chat/completions", json=CHAT)) for _ in range(3)]
        await fake.wait_started(3)

        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"]["code"] == "rate_limit_exceeded"

        fake.release.set()
        statuses = [(await task).status for task in admitted]
        assert statuses == [200, 200, 200]
        again = await client.post("/v1/chat/completions", json=CHAT)
        assert again.status == 200


def test_admission_bounds_the_bytes_of_bodies_held_at_once() -> None:
    admission = Admission(AdmissionLimits(max_running=10, max_queued=0, body_bytes_in_flight=1000))
    with admission.slot(600), pytest.raises(OverloadedError, match="bytes of request bodies"), admission.slot(600):
        pass
    with admission.slot(600):
        assert admission.body_bytes == 600


def test_limits_come_from_the_plan(tmp_path: Path) -> None:
    plan = ServingPlan(
        model="gpt-oss-20b",
        gpu_product="NVIDIA-H100-80GB-HBM3",
        gpus_per_replica=1,
        engine=EngineSettings(
            tensor_parallel_size=1,
            moe_expert_parallel_size=1,
            moe_backend="TRITON",
            attention_data_parallel=False,
            max_seq_len=32768,
            max_batch_size=48,
            max_num_tokens=16384,
            kv_cache_free_memory_fraction=0.9,
            kv_cache_dtype="auto",
            cuda_graph_batch_sizes=(1, 2),
        ),
        kv_budget=KvBudget(
            gpu_memory_gib=80,
            weights_gib=13,
            activation_headroom_gib=5,
            kv_cache_gib=60,
            kv_bytes_per_token=49152,
            kv_cache_tokens=1_300_000,
            max_concurrent_sequences=40,
        ),
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json())
    settings = guard_settings(api_keys=None, plan_file=plan_file, max_running=None, max_queued=4, drain_timeout_s=None)
    assert (settings.admission.max_running, settings.admission.max_queued) == (48, 4)
    with pytest.raises(ValueError, match="--api-keys"):
        guard_settings(api_keys=tmp_path / "nope", plan_file=None, max_running=None, max_queued=None, drain_timeout_s=1)
    with pytest.raises(ValueError, match="--max-running"):
        guard_settings(api_keys=None, plan_file=None, max_running=0, max_queued=None, drain_timeout_s=1)


async def test_while_draining_readiness_fails_new_work_gets_503_and_streams_finish() -> None:
    fake = GatedTriton()
    async with gateway(fake, GuardSettings()) as client:
        in_flight = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT | {"stream": True}))
        await fake.wait_started(1)
        admission = client.server.app[GUARD_KEY].admission
        admission.start_draining()

        assert (await client.get("/readyz")).status == 503
        refused = await client.post("/v1/chat/completions", json=CHAT)
        assert refused.status == 503 and refused.headers["Retry-After"] == "1"

        fake.release.set()
        response = await in_flight
        body = await response.text()
        assert response.status == 200 and body.rstrip().endswith("data: [DONE]")
        assert await admission.wait_until_idle(10)


async def test_an_unreachable_triton_is_503_not_502() -> None:
    fake = GatedTriton(error=TritonRequestError("Triton is unreachable or failed: connection refused"))
    async with gateway(fake, GuardSettings()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status == 503 and response.headers["Retry-After"] == "1"


async def test_a_prompt_too_long_is_400_context_length_exceeded() -> None:
    message = (
        "messages: the prompt has 40000 tokens; this deployment takes at most 32767 [code: context_length_exceeded]"
    )
    fake = GatedTriton(error=TritonRequestError(message, field="messages"))
    async with gateway(fake, GuardSettings()) as client:
        response = await client.post("/v1/chat/completions", json=CHAT)
        error = (await response.json())["error"]
        assert response.status == 400
        assert (error["code"], error["param"], error["type"]) == (
            "context_length_exceeded",
            "messages",
            "invalid_request_error",
        )
        assert json.dumps(error)  # plain JSON
