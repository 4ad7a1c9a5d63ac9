"""`TritonPythonModel` for `gpt_oss`: Triton's Python backend glue around `GenerationService`.

Decoupled transaction policy: `execute` hands the requests to the engine's own event loop (a thread of
the model) and returns at once, so many requests stream at once; the model can still use that loop in
`finalize` to close the engine. Each request gets a response per streamed step (the engine streams
every `stream_interval` steps); the last response carries the last text, `finish_reason` and the final
flag. Responses go out from sender threads (`delivery.Outbox`), never from the engine's loop. A client
that cancels its gRPC stream (or drops its HTTP `generate_stream` connection) is seen by one sweep
over all requests in flight (`delivery.CancellationSweep`), which cancels that request's task: the
engine request is then cancelled and the request counted with outcome `cancelled`.

The engine comes from `engine.json` next to `config.pbtxt` (written by `gptoss_runtime.triton_repo`):
`reference` (numpy, CPU), `trtllm` (TensorRT-LLM LLM API, GPUs) or `scripted` (tests only).
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from gptoss_runtime.engine.base import Engine
from gptoss_runtime.metrics import OUTCOME_ERROR, TritonModelMetrics
from gptoss_runtime.plan import ServingPlan
from gptoss_runtime.tokenizer import Tokenizer
from gptoss_runtime.triton_model import schema
from gptoss_runtime.triton_model.delivery import CancellationSweep, Outbox
from gptoss_runtime.triton_model.service import (
    ClientCancelledError,
    GenerationService,
    InputError,
    StepOutput,
    gathered,
    joined,
    parse_request,
)

ENGINE_OPTIONS_FILE: Final = "engine.json"
METRICS_REFRESH_SECONDS: Final = 0.5
ENGINE_CLOSE_TIMEOUT_SECONDS: Final = 10.0


def _joined_steps(earlier: Any, later: Any) -> Any:
    """Responses queued together for one request go out as one where they can (see `Outbox`)."""
    if isinstance(earlier, StepOutput) and isinstance(later, StepOutput):
        return joined(earlier, later)
    return None


def build_engine(options: dict[str, Any], tokenizer: Tokenizer) -> Engine:
    """The engine named in engine.json (imports only the one it needs: TensorRT-LLM is GPU-only)."""
    kind = options["engine"]
    weights_dir = Path(options["weights_dir"])
    if kind == "scripted":
        from gptoss_runtime.triton_model.scripted import ScriptedEngine

        plan = options.get("plan")
        stream_interval = plan["engine"].get("streamInterval", 1) if plan else 1
        return ScriptedEngine.from_options(
            tokenizer,
            {
                "stream_interval": stream_interval,
                **options.get("options", {}),
                "max_batch_size": options["max_batch_size"],
            },
        )
    if kind == "reference":
        from gptoss_runtime.engine.reference import ReferenceEngine

        return ReferenceEngine.from_checkpoint(
            weights_dir, max_batch_size=options["max_batch_size"], max_seq_len=options["max_seq_len"]
        )
    if kind == "trtllm":
        from gptoss_runtime.engine.trtllm import TrtllmEngine

        return TrtllmEngine.create(ServingPlan.model_validate(options["plan"]), weights_dir)
    raise ValueError(f"{ENGINE_OPTIONS_FILE}: unknown engine {kind!r}")


class TritonPythonModel:
    """Loaded by the Python-backend stub (see `triton_model/model.py`)."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("gpt_oss streams: its config must set decoupled: true")
        options = json.loads((Path(args["model_repository"]) / ENGINE_OPTIONS_FILE).read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_dir(Path(options["weights_dir"]))
        self._max_tokens_limit = int(options["max_tokens_limit"])
        self._default_effort = str(options["default_reasoning_effort"])
        self._metrics = TritonModelMetrics(pb_utils, options["model_name"])
        self._service = GenerationService(
            build_engine(options, tokenizer), tokenizer, self._metrics, max_seq_len=int(options["max_seq_len"])
        )
        # The engine runs on an event loop of the model's own, not on the stub's: the stub's loop stops
        # running callbacks before `finalize` (measured: a coroutine handed to it from finalize never
        # ran), and the engine must still be closed there (TensorRT-LLM's MPI workers, for one).
        self._loop = asyncio.new_event_loop()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="gpt_oss-engine", daemon=True)
        self._loop_thread.start()
        self._refresher = asyncio.run_coroutine_threadsafe(self._refresh_forever(), self._loop)
        # Pushing metrics to Triton is a round trip per update: done from a thread of its own.
        self._metrics_stop = threading.Event()
        self._metrics_thread = threading.Thread(target=self._flush_metrics_forever, name="gpt_oss-metrics", daemon=True)
        self._metrics_thread.start()
        self._outbox: Outbox[StepOutput | Any] = Outbox(
            self._response_or_error,
            pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            pb_utils.Logger.log_warn,
            merge=_joined_steps,
        )
        self._sweep = CancellationSweep()
        pb_utils.Logger.log_info(
            f"gpt_oss: {options['engine']} engine for {options['model_name']} from {options['weights_dir']}"
        )
        # What was loaded lives as long as the model (tokenizer, engine): keep it out of the collector's
        # full scans, each of which stalls every stream of this process at once.
        gc.freeze()

    def execute(self, requests: list[Any]) -> None:
        """Runs on the stub's main thread: hands the requests to the engine's loop in one wake-up and
        returns (decoupled: every response, the final one included, goes out from the outbox; the
        response sender and `is_cancelled` may be used from any thread). Nothing waits for a request
        to end: a future per request, chained back to the stub's own loop, cost two cross-thread
        wake-ups per request, which stalled every stream when many requests ended together."""
        self._loop.call_soon_threadsafe(self._start, list(requests))

    def _start(self, requests: list[Any]) -> None:
        for request in requests:
            task = self._loop.create_task(self._serve(request))
            self._in_flight.add(task)  # the loop keeps weak references to its tasks only
            task.add_done_callback(self._in_flight.discard)

    def finalize(self) -> None:
        self._sweep.close(timeout=ENGINE_CLOSE_TIMEOUT_SECONDS)
        self._refresher.cancel()
        closing = asyncio.run_coroutine_threadsafe(self._service.engine.close(), self._loop)
        try:
            closing.result(timeout=ENGINE_CLOSE_TIMEOUT_SECONDS)
        except Exception as error:  # shutting down: report, never raise
            self._pb.Logger.log_warn(f"gpt_oss: closing the engine failed: {error!r}")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=ENGINE_CLOSE_TIMEOUT_SECONDS)
        self._outbox.close(timeout=ENGINE_CLOSE_TIMEOUT_SECONDS)
        self._metrics_stop.set()
        self._metrics_thread.join(timeout=ENGINE_CLOSE_TIMEOUT_SECONDS)
        self._metrics.flush()
        self._metrics.close()

    # --- one request -------------------------------------------------------------------------------

    async def _serve(self, request: Any) -> None:
        pb = self._pb
        sender = request.get_response_sender()
        outbox = self._outbox
        task = asyncio.current_task()
        assert task is not None
        # Registered from inside the task, so a cancellation always finds it running and answers it.
        watch = self._sweep.watch(request.is_cancelled, lambda: self._cancel_soon(task))

        def forget() -> None:  # on the sender thread, before the final response (see CancellationSweep.forget)
            self._sweep.forget(watch)

        try:
            parsed = parse_request(
                self._input_getter(request),
                max_tokens_limit=self._max_tokens_limit,
                default_reasoning_effort=self._default_effort,
            )
            request_id = request.request_id() or uuid.uuid4().hex
            steps = self._service.stream(request_id, parsed)
            async for step in steps if parsed.stream else gathered(steps):
                final = bool(step.finish_reason)
                outbox.put(sender, step, final=final, before_send=forget if final else None)
        except InputError as error:
            self._metrics.request_finished(OUTCOME_ERROR)
            self._send_error(sender, pb.TritonError(str(error), pb.TritonError.INVALID_ARG), forget)
        except (ClientCancelledError, asyncio.CancelledError):
            self._send_error(
                sender, pb.TritonError("the client cancelled the request", pb.TritonError.CANCELLED), forget
            )
        except Exception as error:  # the stream must end with a final response whatever failed
            pb.Logger.log_error(f"gpt_oss: request failed: {error!r}")
            self._send_error(sender, pb.TritonError(f"generation failed: {error}", pb.TritonError.INTERNAL), forget)
        finally:
            self._sweep.forget(watch)  # again (idempotent): a request that ended without a final response

    def _cancel_soon(self, task: asyncio.Task[None]) -> None:
        """From the sweep's thread: cancel the task on its own loop."""
        self._loop.call_soon_threadsafe(task.cancel)

    def _input_getter(self, request: Any) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            tensor = self._pb.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        return get

    def _response(self, step: StepOutput) -> Any:
        tensor = self._pb.Tensor
        outputs = [
            tensor(schema.TEXT_OUTPUT, np.array([step.text.encode("utf-8")], dtype=np.object_)),
            tensor(schema.CHANNEL, np.array([step.channel.encode("utf-8")], dtype=np.object_)),
            tensor(schema.PROMPT_TOKENS, np.array([step.prompt_tokens], dtype=np.int32)),
            tensor(schema.COMPLETION_TOKENS, np.array([step.completion_tokens], dtype=np.int32)),
            tensor(schema.FINISH_REASON, np.array([step.finish_reason.encode("utf-8")], dtype=np.object_)),
        ]
        if step.logprobs:  # only requests that asked for logprobs have any
            encoded = schema.logprob_json(step.logprobs).encode("utf-8")
            outputs.append(tensor(schema.LOGPROBS, np.array([encoded], dtype=np.object_)))
        return self._pb.InferenceResponse(output_tensors=outputs)

    def _send_error(self, sender: Any, error: Any, forget: Callable[[], None]) -> None:
        self._outbox.put(sender, error, final=True, before_send=forget)

    def _response_or_error(self, payload: Any) -> Any:
        """Runs on the sender thread: a step becomes a response, a TritonError an error response."""
        if isinstance(payload, StepOutput):
            return self._response(payload)
        return self._pb.InferenceResponse(error=payload)

    # --- gauges ------------------------------------------------------------------------------------

    async def _refresh_forever(self) -> None:
        """Read the engine's gauges on its own loop (in memory: the metrics thread pushes them)."""
        while True:
            await asyncio.sleep(METRICS_REFRESH_SECONDS)
            try:
                self._metrics.refresh(self._service.engine.stats())
            except Exception as error:  # metrics must never take the model down
                self._pb.Logger.log_warn(f"gpt_oss: metrics refresh failed: {error!r}")

    def _flush_metrics_forever(self) -> None:
        while not self._metrics_stop.wait(METRICS_REFRESH_SECONDS):
            try:
                self._metrics.flush()
            except Exception as error:  # metrics must never take the model down
                self._pb.Logger.log_warn(f"gpt_oss: pushing metrics failed: {error!r}")
