"""The send path's parts without Triton: the sender thread, the cancellation sweep, and TensorRT-LLM's
cumulative outputs read without copying the whole output on every step."""

from __future__ import annotations

import threading
from typing import Any

from gptoss_runtime.engine.base import GenerationRequest, SamplingParams, TokenChunk
from gptoss_runtime.engine.trtllm import TrtllmEngine
from gptoss_runtime.triton_model.delivery import CancellationSweep, Outbox

FINAL = 1


class RecordingSender:
    """Like a Triton response sender: `send` blocks (here: until allowed) and is recorded."""

    def __init__(self, log: list[tuple[str, Any, int]], name: str, gate: threading.Event | None = None) -> None:
        self.log = log
        self.name = name
        self.gate = gate

    def send(self, response: Any, flags: int = 0) -> None:
        if self.gate is not None:
            assert self.gate.wait(10)
        self.log.append((self.name, response, flags))


def test_outbox_sends_from_its_own_thread_in_order_per_request() -> None:
    log: list[tuple[str, Any, int]] = []
    threads: set[str] = set()

    def make(payload: int) -> str:
        threads.add(threading.current_thread().name)
        return f"response {payload}"

    gate = threading.Event()
    outbox: Outbox[int] = Outbox(make, FINAL, lambda message: None, name="test-sender")
    first, second = RecordingSender(log, "a", gate), RecordingSender(log, "b")
    for step in range(3):
        outbox.put(first, step, final=step == 2)  # never blocks, although the sender does
        outbox.put(second, step, final=step == 2)
    gate.set()
    outbox.close(timeout=10)

    assert [entry for entry in log if entry[0] == "a"] == [
        ("a", "response 0", 0),
        ("a", "response 1", 0),
        ("a", "response 2", FINAL),
    ]
    assert [entry[2] for entry in log if entry[0] == "b"] == [0, 0, FINAL]
    assert threads and all(name.startswith("test-sender-") for name in threads)


def test_a_blocked_send_holds_up_its_own_request_only() -> None:
    """One stuck send does not stall the other streams: idle threads take every other request."""
    log: list[tuple[str, Any, int]] = []
    gate = threading.Event()
    outbox: Outbox[int] = Outbox(str, FINAL, lambda message: None, threads=4)
    senders = [RecordingSender(log, f"r{index}", gate if index == 0 else None) for index in range(16)]
    for step in range(3):
        for sender in senders:
            outbox.put(sender, step, final=step == 2)
    others_done = threading.Event()

    def watch() -> None:  # every request but r0 gets its three responses while r0's first send is stuck
        while sum(1 for name, _, _ in log if name != "r0") < 3 * (len(senders) - 1):
            threading.Event().wait(0.005)
        others_done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert others_done.wait(10)
    assert not [entry for entry in log if entry[0] == "r0"]  # still stuck
    gate.set()
    outbox.close(timeout=10)
    for sender in senders:
        assert [entry[1:] for entry in log if entry[0] == sender.name] == [("0", 0), ("1", 0), ("2", FINAL)]


def test_the_threads_send_for_several_requests_at_once() -> None:
    """Sends overlap across requests (a send waits on the server): two requests' sends are in flight
    together. Each request used to be bound to a thread by its sender's address, and every sender of a
    real run landed on the same thread."""
    both_in_flight = threading.Barrier(2, timeout=10)
    log: list[tuple[str, Any, int]] = []

    class MeetingSender(RecordingSender):
        def send(self, response: Any, flags: int = 0) -> None:
            both_in_flight.wait()  # raises BrokenBarrierError unless the other send is in flight too
            super().send(response, flags)

    reports: list[str] = []
    outbox: Outbox[int] = Outbox(str, FINAL, reports.append, threads=2)
    outbox.put(MeetingSender(log, "a"), 1, final=True)
    outbox.put(MeetingSender(log, "b"), 1, final=True)
    outbox.close(timeout=10)

    assert reports == []
    assert sorted(name for name, _, _ in log) == ["a", "b"]


def test_responses_queued_together_for_one_request_go_out_as_one_where_merge_allows() -> None:
    """Under a backlog a stream's queued steps go out joined (fewer round trips), in order, the final
    flag and `before_send` kept; what `merge` refuses goes out separately."""
    log: list[tuple[str, Any, int]] = []
    gate = threading.Event()
    forgotten: list[str] = []

    def merge(earlier: str, later: str) -> str | None:
        return None if later.startswith("|") else earlier + later

    outbox: Outbox[str] = Outbox(lambda payload: payload, FINAL, lambda message: None, threads=1, merge=merge)
    stuck, backlogged = RecordingSender(log, "stuck", gate), RecordingSender(log, "backlogged")
    outbox.put(stuck, "x", final=True)  # holds the only thread until the gate opens
    for piece in ("a", "b", "|c", "d"):
        outbox.put(backlogged, piece, final=False)
    outbox.put(backlogged, "e", final=True, before_send=lambda: forgotten.append("forget"))
    outbox.put(backlogged, "apart from the final", final=False)
    gate.set()
    outbox.close(timeout=10)

    assert [entry[1:] for entry in log if entry[0] == "backlogged"] == [
        ("ab", 0),
        ("|cde", FINAL),
        ("apart from the final", 0),
    ]
    assert forgotten == ["forget"]


def test_a_failed_send_is_reported_and_the_others_still_go_out() -> None:
    log: list[tuple[str, Any, int]] = []
    reports: list[str] = []

    class GoneClient:
        def send(self, response: Any, flags: int = 0) -> None:
            raise RuntimeError("the client is gone")

    outbox: Outbox[int] = Outbox(str, FINAL, reports.append)
    outbox.put(GoneClient(), 1, final=True)
    outbox.put(RecordingSender(log, "ok"), 2, final=True)
    outbox.close(timeout=10)

    assert log == [("ok", "2", FINAL)]
    assert len(reports) == 1 and "the client is gone" in reports[0]


def test_one_sweep_asks_every_request_once_and_cancels_the_gone_ones_once() -> None:
    sweep = CancellationSweep(period_s=3600)  # driven by hand below
    asked: list[str] = []
    cancelled: list[str] = []

    def watch(name: str, gone: bool) -> int:
        return sweep.watch(lambda: asked.append(name) or gone, lambda: cancelled.append(name))

    watch("stays", gone=False)
    watch("left", gone=True)
    finished = watch("finished", gone=True)
    sweep.forget(finished)

    assert sweep.sweep() == 1
    assert sweep.sweep() == 0
    assert sorted(asked) == ["left", "stays", "stays"]
    assert cancelled == ["left"]
    assert sweep.watched == 1
    sweep.close(timeout=10)


def test_a_sweep_asks_at_most_its_budget_round_robin() -> None:
    sweep = CancellationSweep(period_s=3600, checks_per_period=3)
    asked: list[int] = []
    for index in range(7):
        sweep.watch(lambda index=index: asked.append(index) or False, lambda: None)  # type: ignore[misc]

    for _ in range(3):
        sweep.sweep()

    assert asked == [0, 1, 2, 3, 4, 5, 6, 0, 1]  # each in turn, none twice before all were asked
    sweep.close(timeout=10)


class NoFullCopy(list[int]):
    """A cumulative output that fails if read whole (what `list(token_ids)` on every step did)."""

    def __iter__(self) -> Any:
        raise AssertionError("the whole output was copied")


class Completion:
    def __init__(self, token_ids: list[int], finish_reason: str | None) -> None:
        self.token_ids = NoFullCopy(token_ids)
        self.finish_reason = finish_reason
        self.stop_reason = None


class Output:
    def __init__(self, token_ids: list[int], finish_reason: str | None = None) -> None:
        self.outputs = [Completion(token_ids, finish_reason)]
        self.finished = finish_reason is not None


class CumulativeLLM:
    def generate_async(self, prompt_token_ids: list[int], sampling_params: Any, streaming: bool) -> Any:
        async def outputs() -> Any:
            tokens: list[int] = []
            for step in range(5):
                tokens = [*tokens, *range(step * 20, step * 20 + 20)]
                yield Output(tokens, "length" if step == 4 else None)

        return outputs()


async def test_cumulative_outputs_are_read_as_their_new_tail_only() -> None:
    engine = TrtllmEngine(CumulativeLLM(), lambda **kwargs: kwargs, max_batch_size=8)
    request = GenerationRequest("r", [1], SamplingParams(max_tokens=100))

    chunks = [chunk async for chunk in engine.generate(request)]

    assert [len(chunk.token_ids) for chunk in chunks] == [20] * 5
    assert chunks[-1] == TokenChunk(list(range(80, 100)), "length")


def test_forget_waits_for_a_question_in_flight_so_none_follows_the_final_send() -> None:
    """Asking a released request crashed tritonserver: once `forget` returns, the sweep never asks it."""
    sweep = CancellationSweep(period_s=3600)
    asking, answer = threading.Event(), threading.Event()
    asked_after_forget: list[bool] = []
    forgotten = threading.Event()

    def is_cancelled() -> bool:
        asked_after_forget.append(forgotten.is_set())
        asking.set()
        assert answer.wait(10)  # a slow round trip to the server
        return False

    key = sweep.watch(is_cancelled, lambda: None)
    sweeping = threading.Thread(target=sweep.sweep)
    sweeping.start()
    assert asking.wait(10)
    forgetting = threading.Thread(target=lambda: (sweep.forget(key), forgotten.set()))
    forgetting.start()
    assert not forgotten.wait(0.05)  # forget waits while the question is in flight
    answer.set()
    forgetting.join(10)
    sweeping.join(10)
    assert forgotten.is_set()
    sweep.sweep()
    assert asked_after_forget == [False]
    sweep.close(timeout=10)


def test_before_send_runs_on_the_sender_thread_before_the_final_response() -> None:
    order: list[str] = []

    class Sender:
        def send(self, response: Any, flags: int = 0) -> None:
            order.append(f"send {response}")

    outbox: Outbox[int] = Outbox(str, FINAL, lambda message: None, threads=1)
    outbox.put(Sender(), 1, final=False)
    outbox.put(Sender(), 2, final=True, before_send=lambda: order.append("forget"))
    outbox.close(timeout=10)

    assert order == ["send 1", "forget", "send 2"]
