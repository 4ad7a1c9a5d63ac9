"""Throughput of the numpy reference engine on a tiny checkpoint: prefill, decode, concurrent decode.

    .venv/bin/python bench/reference_engine.py [--imitates gpt-oss-20b] [--prompt 64] [--new 128]
                                               [--concurrency 1,4,8] [--prefill 1024] [--json]

Prints output tokens per second for each concurrency (all requests start together, greedy, no stop
token), the time to first token of the first request, and the prefill rate of one long prompt. The
figures describe the CPU test engine that CI and the local demo serve, not gpt-oss on GPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gptoss_runtime.checkpoint import make_tiny_checkpoint
from gptoss_runtime.engine.base import GenerationRequest, SamplingParams
from gptoss_runtime.engine.reference import ReferenceEngine


async def _run_batch(engine: ReferenceEngine, prompts: list[list[int]], new_tokens: int) -> dict[str, float]:
    first_token_at: list[float] = []
    started = time.perf_counter()

    async def one(index: int, prompt: list[int]) -> int:
        count = 0
        sampling = SamplingParams(max_tokens=new_tokens, temperature=0.0)
        async for chunk in engine.generate(GenerationRequest(f"bench-{index}", prompt, sampling)):
            if count == 0 and chunk.token_ids:
                first_token_at.append(time.perf_counter() - started)
            count += len(chunk.token_ids)
        return count

    counts = await asyncio.gather(*(one(i, prompt) for i, prompt in enumerate(prompts)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(prompts),
        "output_tokens": sum(counts),
        "seconds": round(elapsed, 3),
        "output_tokens_per_second": round(sum(counts) / elapsed, 1),
        "first_token_seconds": round(min(first_token_at), 4),
    }


@dataclass(frozen=True)
class BenchResult:
    checkpoint: str
    decode: list[dict[str, float]]
    prefill: dict[str, float]


async def _bench(args: argparse.Namespace, weights: Path) -> BenchResult:
    rng = np.random.default_rng(0)
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    engine = ReferenceEngine.from_checkpoint(weights, max_batch_size=max(concurrencies), max_seq_len=4096)
    vocab = engine.sampled_vocab_size
    try:
        await _run_batch(engine, [rng.integers(0, vocab, 8).tolist()], 4)  # warm-up
        decode = []
        for concurrency in concurrencies:
            prompts = [rng.integers(0, vocab, args.prompt).tolist() for _ in range(concurrency)]
            decode.append(await _run_batch(engine, prompts, args.new))
        long_prompt = rng.integers(0, vocab, args.prefill).tolist()
        started = time.perf_counter()
        await _run_batch(engine, [long_prompt], 1)
        prefill_seconds = time.perf_counter() - started
    finally:
        await engine.close()
    return BenchResult(
        checkpoint=args.imitates + " (tiny)",
        decode=decode,
        prefill={
            "prompt_tokens": args.prefill,
            "seconds": round(prefill_seconds, 3),
            "prompt_tokens_per_second": round(args.prefill / prefill_seconds, 1),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imitates", default="gpt-oss-20b", choices=["gpt-oss-20b", "gpt-oss-120b"])
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per request")
    parser.add_argument("--new", type=int, default=128, help="output tokens per request")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated request counts")
    parser.add_argument("--prefill", type=int, default=1024, help="tokens of the long prompt")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        weights = make_tiny_checkpoint(Path(directory), args.imitates)
        result = asyncio.run(_bench(args, weights))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return
    print(f"reference engine on the tiny {args.imitates} checkpoint (numpy, CPU)")
    print(f"{'requests':>8} {'out tokens':>10} {'seconds':>8} {'out tok/s':>10} {'TTFT s':>8}")
    for row in result.decode:
        print(
            f"{row['requests']:>8} {row['output_tokens']:>10} {row['seconds']:>8} "
            f"{row['output_tokens_per_second']:>10} {row['first_token_seconds']:>8}"
        )
    prefill = result.prefill
    print(
        f"prefill of {prefill['prompt_tokens']:.0f} tokens: {prefill['seconds']} s "
        f"({prefill['prompt_tokens_per_second']} tok/s)"
    )


if __name__ == "__main__":
    main()
