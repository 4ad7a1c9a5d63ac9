"""A stand-in for an inference pod's metrics port: the gpt_oss model's series and Triton's own.

Serves the Prometheus text format on 127.0.0.1 with the exact names (and label sets) that Triton 2.51
and the `gpt_oss` model export, including the GPU series that a CPU-only Triton cannot produce. Each
scrape advances the simulation by one step of a steady load (about 4 requests per step), so counters
grow and histograms fill like on a busy pod.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gptoss_runtime import contract

MODEL = "gpt-oss-20b"
TRITON_MODEL = contract.TRITON_MODEL_NAME
GPUS = ("GPU-3f1c2a9e-0000-0000-0000-000000000001",)
GPU_MEMORY_BYTES = 85_520_809_984  # an H100 80GB HBM3, as Triton reports it

Family = Callable[[str, str, str, list[tuple[str, float]]], None]


class RuntimeSimulation:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.step = 0
        self.requests = {"success": 0, "error": 0, "cancelled": 0}
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.ttft_counts = [0] * (len(contract.TIME_TO_FIRST_TOKEN_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.queue_us = 0
        self.request_us = 0
        self.compute_us = 0

    def advance(self) -> None:
        self.step += 1
        for i in range(4):
            outcome = "error" if (self.step + i) % 23 == 0 else "success"
            self.requests[outcome] += 1
            self.prompt_tokens += 900 + 37 * i
            self.generated_tokens += 250 + 11 * i
            ttft = 0.08 + 0.06 * i + 0.02 * (self.step % 5)
            self._observe_ttft(ttft)
            self.queue_us += int(2_000 + 500 * i)
            self.request_us += int(1_800_000 + 50_000 * i)
            self.compute_us += int(1_700_000 + 50_000 * i)

    def _observe_ttft(self, seconds: float) -> None:
        index = next(
            (i for i, bound in enumerate(contract.TIME_TO_FIRST_TOKEN_BUCKETS) if seconds <= bound),
            len(contract.TIME_TO_FIRST_TOKEN_BUCKETS),
        )
        self.ttft_counts[index] += 1
        self.ttft_sum += seconds

    def exposition(self) -> str:
        lines: list[str] = []
        m = f'model="{MODEL}"'
        t = f'model="{TRITON_MODEL}",version="1"'
        wave = 0.5 + 0.4 * math.sin(self.step / 7)

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{{{labels}}} {value}" for labels, value in samples)

        family(contract.METRIC_REQUESTS_RUNNING, "gauge", "Sequences being generated now.", [(m, 3 + self.step % 4)])
        family(contract.METRIC_REQUESTS_WAITING, "gauge", "Requests admitted, not scheduled.", [(m, self.step % 3)])
        family(contract.METRIC_KV_CACHE_UTILIZATION, "gauge", "KV cache in use (0..1).", [(m, round(wave, 4))])
        family(contract.METRIC_GENERATED_TOKENS, "counter", "Output tokens.", [(m, self.generated_tokens)])
        family(contract.METRIC_PROMPT_TOKENS, "counter", "Input tokens.", [(m, self.prompt_tokens)])
        family(
            contract.METRIC_REQUESTS,
            "counter",
            "Finished requests by outcome.",
            [(f'{m},outcome="{outcome}"', count) for outcome, count in self.requests.items()],
        )
        lines.append(f"# HELP {contract.METRIC_TIME_TO_FIRST_TOKEN} Time to first token.")
        lines.append(f"# TYPE {contract.METRIC_TIME_TO_FIRST_TOKEN} histogram")
        cumulative = 0
        bounds = [str(b) for b in contract.TIME_TO_FIRST_TOKEN_BUCKETS] + ["+Inf"]
        for bound, count in zip(bounds, self.ttft_counts, strict=True):
            cumulative += count
            lines.append(f'{contract.METRIC_TIME_TO_FIRST_TOKEN}_bucket{{{m},le="{bound}"}} {cumulative}')
        lines.append(f"{contract.METRIC_TIME_TO_FIRST_TOKEN}_sum{{{m}}} {self.ttft_sum}")
        lines.append(f"{contract.METRIC_TIME_TO_FIRST_TOKEN}_count{{{m}}} {cumulative}")

        successes = self.requests["success"] + self.requests["cancelled"]
        family("nv_inference_request_success", "counter", "Successful requests.", [(t, successes)])
        family(
            "nv_inference_request_failure",
            "counter",
            "Failed requests.",
            [(f'{t},reason="{r}"', self.requests["error"] if r == "BACKEND" else 0) for r in ("REJECTED", "BACKEND")],
        )
        family("nv_inference_count", "counter", "Inferences.", [(t, successes)])
        family("nv_inference_exec_count", "counter", "Model executions.", [(t, successes)])
        family("nv_inference_pending_request_count", "gauge", "Pending requests.", [(t, self.step % 3)])
        family("nv_inference_request_duration_us", "counter", "Request time (us).", [(t, self.request_us)])
        family("nv_inference_queue_duration_us", "counter", "Queue time (us).", [(t, self.queue_us)])
        family("nv_inference_compute_infer_duration_us", "counter", "Compute time (us).", [(t, self.compute_us)])
        self._gpu_families(family, wave)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _gpu_families(family: Family, wave: float) -> None:
        gpu_labels = [f'gpu_uuid="{uuid}"' for uuid in GPUS]
        family("nv_gpu_utilization", "gauge", "GPU utilization (0..1).", [(g, round(wave, 3)) for g in gpu_labels])
        family("nv_gpu_memory_total_bytes", "gauge", "GPU memory.", [(g, GPU_MEMORY_BYTES) for g in gpu_labels])
        family(
            "nv_gpu_memory_used_bytes", "gauge", "GPU memory used.", [(g, GPU_MEMORY_BYTES * 0.9) for g in gpu_labels]
        )


# The GPU series of a real Triton on an H100 (captured on the project's GPU machine).
CAPTURED_GPU_METRICS = Path(__file__).parent / "data" / "triton-2.51-h100-gpu.prom"


class FakeRuntimeTarget:
    """Serves a `RuntimeSimulation` on 127.0.0.1:<free port>/metrics until `close()`.

    With `gpu_only`, only the GPU series (what a GPU pod's Triton adds and a CPU-only Triton lacks),
    exactly as a real Triton printed them on an H100 (CAPTURED_GPU_METRICS).
    """

    def __init__(self, gpu_only: bool = False) -> None:
        self.simulation = RuntimeSimulation()
        simulation = self.simulation

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                if gpu_only:
                    body = CAPTURED_GPU_METRICS.read_bytes()
                else:
                    with simulation.lock:
                        simulation.advance()
                        body = simulation.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-runtime-target", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
