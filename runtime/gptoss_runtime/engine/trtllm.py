"""The GPU engine: TensorRT-LLM's LLM API (PyTorch backend) configured from the `ServingPlan`.

`tensorrt_llm` is imported only inside `TrtllmEngine.create`, so this module loads on machines without
it (the operator, CPU pods, tests). `llm_kwargs` is the pure mapping from the plan to `LLM(...)`
arguments (TensorRT-LLM 1.1/1.2 names; nested configs as dicts, which the LLM API's pydantic arguments
accept as they accept YAML options).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from gptoss_runtime.engine.base import (
    CONTEXT_LENGTH_EXCEEDED,
    EngineRequestError,
    EngineStats,
    GenerationRequest,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)
from gptoss_runtime.engine.guided import TRTLLM_GUIDED_BACKEND, trtllm_guided_params
from gptoss_runtime.plan import ServingPlan

FINISH_STOP: Final = "stop"
FINISH_LENGTH: Final = "length"
FINISH_CANCELLED: Final = "cancelled"
_FINISH_REASONS: Final = {
    "stop": FINISH_STOP,
    "length": FINISH_LENGTH,
    "timeout": FINISH_LENGTH,
    "cancelled": FINISH_CANCELLED,
}
# The plan's KV cache dtype -> KvCacheConfig.dtype ("auto" follows the model, which is BF16).
_KV_CACHE_DTYPES: Final = {"auto": "auto", "bf16": "auto", "fp8": "fp8"}
STATS_POLL_SECONDS: Final = 1.0
# TensorRT-LLM's sampling seed is an unsigned 64-bit integer; OpenAI's API takes any (signed) integer.
_SEED_MASK: Final = 2**64 - 1
# Words in TensorRT-LLM's refusals of a request that is too long for the deployment.
_LENGTH_ERROR_WORDS: Final = ("max_num_tokens", "max_seq_len", "prompt length", "exceeds")


class TrtllmConfigError(ValueError):
    """The plan asks for something TensorRT-LLM cannot run; the message names the plan field."""


def llm_kwargs(plan: ServingPlan, weights_dir: Path) -> dict[str, Any]:
    """Keyword arguments of `tensorrt_llm.LLM(...)` for a plan (pure: no import of tensorrt_llm)."""
    engine = plan.engine
    if engine.tensor_parallel_size % engine.moe_expert_parallel_size != 0:
        raise TrtllmConfigError(
            f"engine.moeExpertParallelSize ({engine.moe_expert_parallel_size}) must divide "
            f"engine.tensorParallelSize ({engine.tensor_parallel_size})"
        )
    moe_tensor_parallel = engine.tensor_parallel_size // engine.moe_expert_parallel_size
    if engine.moe_backend == "TRITON" and moe_tensor_parallel != 1:
        raise TrtllmConfigError(
            "engine.moeBackend TRITON supports expert parallelism only: set engine.moeExpertParallelSize equal "
            f"to engine.tensorParallelSize ({engine.tensor_parallel_size}) or use the CUTLASS backend"
        )
    return {
        "model": str(weights_dir),
        "tokenizer": str(weights_dir),
        "backend": "pytorch",
        "trust_remote_code": False,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "moe_expert_parallel_size": engine.moe_expert_parallel_size,
        "enable_attention_dp": engine.attention_data_parallel,
        "max_seq_len": engine.max_seq_len,
        "max_batch_size": engine.max_batch_size,
        "max_num_tokens": engine.max_num_tokens,
        # Off by default in TorchLlmArgs: without it a prompt longer than max_num_tokens is refused.
        "enable_chunked_prefill": engine.enable_chunked_prefill,
        # One streamed output per request every N steps (NVIDIA's gpt-oss recipes: 20). Their
        # `num_postprocess_workers` is left out: it detokenizes in worker processes, and this model
        # asks for token ids only (detokenize=False) and parses harmony itself.
        "stream_interval": engine.stream_interval,
        "moe_config": {"backend": engine.moe_backend},
        "kv_cache_config": {
            "free_gpu_memory_fraction": engine.kv_cache_free_memory_fraction,
            "dtype": _KV_CACHE_DTYPES[engine.kv_cache_dtype],
        },
        "cuda_graph_config": {
            "enable_padding": engine.cuda_graph_padding,
            "batch_sizes": sorted(engine.cuda_graph_batch_sizes),
        },
        # Iteration stats feed `stats()` (queued requests, KV cache blocks).
        "enable_iter_perf_stats": True,
        # Structured output and enforced tool choice: per-request `GuidedDecodingParams(grammar=...)`
        # with the same Lark grammar the reference engine enforces (see `engine.guided`).
        "guided_decoding_backend": TRTLLM_GUIDED_BACKEND,
    }


# Nested LLM arguments and the `tensorrt_llm.llmapi` classes that hold them.
NESTED_CONFIG_TYPES: Final = {
    "moe_config": "MoeConfig",
    "kv_cache_config": "KvCacheConfig",
    "cuda_graph_config": "CudaGraphConfig",
}


def typed_llm_kwargs(kwargs: Mapping[str, Any], config_types: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the nested dicts of `llm_kwargs` into the LLM API's config objects where the class exists
    (trtllm-serve converts `moe_config` by hand too; a dict stays a dict if the class is missing)."""
    typed = dict(kwargs)
    for name, config_type in config_types.items():
        if config_type is not None and isinstance(typed.get(name), Mapping):
            typed[name] = config_type(**typed[name])
    return typed


def trtllm_sampling_kwargs(sampling: SamplingParams) -> dict[str, Any]:
    """Keyword arguments of `tensorrt_llm.SamplingParams` for our sampling settings."""
    kwargs: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "stop_token_ids": list(sampling.stop_token_ids) or None,
        "detokenize": False,  # the gpt_oss model parses harmony from token ids itself
        # OpenAI accepts negative seeds; TensorRT-LLM's is uint64. Two's complement keeps every distinct
        # seed distinct and a seed reproducible (refusing it would break clients that send e.g. -1).
        "seed": None if sampling.seed is None else sampling.seed & _SEED_MASK,
    }
    if sampling.temperature <= 0.0:
        kwargs["top_k"] = 1  # TensorRT-LLM decodes greedily with top_k 1 and no top_p
    else:
        kwargs["temperature"] = sampling.temperature
        kwargs["top_p"] = sampling.top_p
    if sampling.logprobs is not None:
        # TensorRT-LLM's `logprobs=N` returns, per token, the top N and the sampled token; N=0 would
        # return none, so the sampled token alone is asked for as N=1 (and the top cut to 0 here).
        kwargs["logprobs"] = max(1, sampling.logprobs)
    if sampling.guided is not None:
        # A dict here (pure); `TrtllmEngine` turns it into `GuidedDecodingParams`.
        kwargs["guided_decoding"] = trtllm_guided_params(sampling.guided)
    return kwargs


def token_logprobs(raw: Sequence[Any], token_ids: Sequence[int], top: int) -> tuple[TokenLogprob, ...]:
    """`CompletionOutput.logprobs` entries (a `{token_id: Logprob(logprob, rank)}` per token, or a bare
    float when only the sampled token's is known) as `TokenLogprob`s, one per token id. A token without
    an entry (a stop token put back by `_missing_stop_token`) gets 0.0: special tokens are never shown."""
    entries = []
    for index, token in enumerate(token_ids):
        entry = raw[index] if index < len(raw) else None
        if isinstance(entry, Mapping):
            ranked = sorted(((int(key), float(value.logprob)) for key, value in entry.items()), key=lambda kv: -kv[1])
            chosen = entry.get(token)
            logprob = float(chosen.logprob) if chosen is not None else (ranked[0][1] if ranked else 0.0)
            entries.append(TokenLogprob(logprob, tuple(ranked[:top])))
        else:
            entries.append(TokenLogprob(0.0 if entry is None else float(entry)))
    return tuple(entries)


class _Completion(Protocol):
    token_ids: Any
    finish_reason: Any


class TrtllmEngine:
    """Implements `gptoss_runtime.engine.base.Engine` over an `LLM` (or a stand-in with the same surface)."""

    def __init__(
        self,
        llm: Any,
        sampling_params_type: Callable[..., Any],
        *,
        guided_params_type: Callable[..., Any] | None = None,
        max_batch_size: int,
        max_seq_len: int | None = None,
        stats_poll_seconds: float = STATS_POLL_SECONDS,
    ) -> None:
        self._llm = llm
        self._max_seq_len = max_seq_len
        self._sampling_params_type = sampling_params_type
        self._guided_params_type = guided_params_type
        self._max_batch_size = max_batch_size
        self._stats_poll_seconds = stats_poll_seconds
        self._active = 0
        self._generated_total = 0
        self._prompt_total = 0
        self._queued: int | None = None
        self._kv_utilization = 0.0
        self._stats_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def create(cls, plan: ServingPlan, weights_dir: Path) -> TrtllmEngine:
        """Start TensorRT-LLM (loads the weights onto the GPUs: minutes for 120b)."""
        os.environ.update(plan.engine.environment)  # e.g. TRTLLM_ENABLE_PDL=1, read at import
        import tensorrt_llm
        from tensorrt_llm import llmapi

        config_types = {name: getattr(llmapi, type_name, None) for name, type_name in NESTED_CONFIG_TYPES.items()}
        llm = tensorrt_llm.LLM(**typed_llm_kwargs(llm_kwargs(plan, weights_dir), config_types))
        return cls(
            llm,
            tensorrt_llm.SamplingParams,
            guided_params_type=getattr(llmapi, "GuidedDecodingParams", None),
            max_batch_size=plan.engine.max_batch_size,
            max_seq_len=plan.engine.max_seq_len,
        )

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """Stream new tokens; the chunk that ends on a stop token carries that token."""
        if self._closed:
            raise RuntimeError("the TensorRT-LLM engine is closed")
        if not request.prompt_token_ids:
            raise ValueError("prompt_token_ids must not be empty")
        self._ensure_stats_task()
        params = self._sampling_params_type(**self._sampling_kwargs(request))
        try:
            result = self._llm.generate_async(list(request.prompt_token_ids), sampling_params=params, streaming=True)
        except ValueError as error:  # the LLM API checks a request's lengths before queueing it
            raise _request_error(error) from error
        self._active += 1
        self._prompt_total += len(request.prompt_token_ids)
        sent = 0
        finished = False
        try:
            async for output in result:
                completion: _Completion = output.outputs[0]
                token_ids = completion.token_ids  # cumulative: only the new tail is copied (no O(n) per step)
                new_tokens = list(token_ids[sent:])
                logprobs = self._new_logprobs(completion, sent, new_tokens, request.sampling.logprobs)
                sent = len(token_ids)
                finish_reason = _finish_reason(output, completion)
                if finish_reason == FINISH_STOP:
                    missing = _missing_stop_token(completion, token_ids, request.sampling.stop_token_ids)
                    new_tokens += missing
                    if logprobs is not None:
                        logprobs += token_logprobs((), missing, 0)
                self._generated_total += len(new_tokens)
                if new_tokens or finish_reason is not None:
                    yield TokenChunk(new_tokens, finish_reason, logprobs)
                if finish_reason is not None:
                    finished = True
                    return
            finished = True
            yield TokenChunk([], FINISH_STOP)  # the stream ended without a finished output
        except Exception as error:
            if _is_request_error(error):
                finished = True  # TensorRT-LLM has already dropped the request
                raise _request_error(error) from error
            raise
        finally:
            self._active -= 1
            if not finished:
                with contextlib.suppress(Exception):
                    result.abort()

    def _sampling_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs = trtllm_sampling_kwargs(self._bounded(request))
        guided = kwargs.get("guided_decoding")
        if guided is not None:
            if self._guided_params_type is None:
                raise EngineRequestError("structured output needs TensorRT-LLM's GuidedDecodingParams (1.1 or newer)")
            kwargs["guided_decoding"] = self._guided_params_type(**guided)
        return kwargs

    @staticmethod
    def _new_logprobs(
        completion: Any, sent: int, new_tokens: list[int], top: int | None
    ) -> tuple[TokenLogprob, ...] | None:
        """The logprobs of the tokens new in this output (`logprobs` is cumulative, like `token_ids`)."""
        if top is None:
            return None
        raw = getattr(completion, "logprobs", None) or ()
        return token_logprobs(raw[sent : sent + len(new_tokens)], new_tokens, top)

    def _bounded(self, request: GenerationRequest) -> SamplingParams:
        """max_tokens cut to what fits in max_seq_len after the prompt, so the request ends with
        finish reason `length` there instead of being refused."""
        sampling = request.sampling
        if self._max_seq_len is None:
            return sampling
        room = self._max_seq_len - len(request.prompt_token_ids)
        if room < 1:
            raise EngineRequestError(
                f"the prompt has {len(request.prompt_token_ids)} tokens; this deployment takes at most "
                f"{self._max_seq_len - 1} (max_seq_len {self._max_seq_len})",
                CONTEXT_LENGTH_EXCEEDED,
            )
        return dataclasses.replace(sampling, max_tokens=min(sampling.max_tokens, room))

    def stats(self) -> EngineStats:
        queued = self._queued if self._queued is not None else max(0, self._active - self._max_batch_size)
        return EngineStats(
            requests_running=max(0, self._active - queued),
            requests_waiting=queued,
            kv_cache_utilization=self._kv_utilization,
            generated_tokens_total=self._generated_total,
            prompt_tokens_total=self._prompt_total,
        )

    async def close(self) -> None:
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        shutdown = getattr(self._llm, "shutdown", None)
        if shutdown is not None:
            await asyncio.to_thread(shutdown)

    # ---- iteration stats ----

    def _ensure_stats_task(self) -> None:
        if self._stats_task is None and hasattr(self._llm, "get_stats_async"):
            self._stats_task = asyncio.get_running_loop().create_task(self._poll_stats(), name="trtllm-stats")

    async def _poll_stats(self) -> None:
        while not self._closed:
            try:
                async for raw in self._llm.get_stats_async(self._stats_poll_seconds):
                    self.apply_iteration_stats(raw)
            except asyncio.CancelledError:
                raise
            except Exception:  # stats are best effort; a failed poll keeps the last values
                await asyncio.sleep(self._stats_poll_seconds)
            await asyncio.sleep(self._stats_poll_seconds)

    def apply_iteration_stats(self, raw: Mapping[str, Any] | str) -> None:
        """Take queue length and KV cache use from one TensorRT-LLM iteration-stats record."""
        stats = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(stats, Mapping):
            return
        queued = stats.get("numQueuedRequests")
        if isinstance(queued, int):
            self._queued = queued
        kv = stats.get("kvCacheStats")
        if isinstance(kv, Mapping):
            used, total = kv.get("usedNumBlocks"), kv.get("maxNumBlocks")
            if isinstance(used, int) and isinstance(total, int) and total > 0:
                self._kv_utilization = min(1.0, max(0.0, used / total))


def _is_request_error(error: Exception) -> bool:
    """TensorRT-LLM reports a refused request with `tensorrt_llm.executor.utils.RequestError` (matched by
    name: the class cannot be imported where TensorRT-LLM is absent)."""
    return any(kind.__name__ == "RequestError" for kind in type(error).__mro__)


def _request_error(error: Exception) -> EngineRequestError:
    message = str(error)
    too_long = any(word in message.lower() for word in _LENGTH_ERROR_WORDS)
    return EngineRequestError(message, CONTEXT_LENGTH_EXCEEDED if too_long else None)


def _finish_reason(output: Any, completion: _Completion) -> str | None:
    reason = getattr(completion, "finish_reason", None)
    if reason is None and not getattr(output, "finished", False):
        return None
    if reason is None:
        return FINISH_STOP
    return _FINISH_REASONS.get(str(reason), FINISH_STOP)


def _missing_stop_token(completion: Any, token_ids: Sequence[int], stop_token_ids: tuple[int, ...]) -> list[int]:
    """TensorRT-LLM may leave the stop token out of `token_ids`; put it back (harmony needs to tell
    `<|return|>` from `<|call|>`)."""
    stop_reason = getattr(completion, "stop_reason", None)
    already_there = bool(token_ids) and token_ids[-1] == stop_reason
    if isinstance(stop_reason, int) and stop_reason in stop_token_ids and not already_there:
        return [stop_reason]
    return []
