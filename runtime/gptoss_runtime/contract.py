"""Names shared by the operator and the inference pod, defined once.

The operator imports this module (the runtime never imports the operator). Ports, mount paths, the
Triton model name and the runtime's metric names live here so that the builders, the launcher, the
autoscaler, the alerts and the dashboards cannot drift apart.
"""

from __future__ import annotations

from typing import Final

# Ports inside the inference pod.
HTTP_PORT: Final = 8000  # Triton HTTP/REST (KServe v2)
GRPC_PORT: Final = 8001  # Triton gRPC
METRICS_PORT: Final = 8002  # Triton metrics (Prometheus text), includes the gpt_oss model's own metrics
OPENAI_PORT: Final = 9000  # the OpenAI-compatible gateway

PORT_NAMES: Final = {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT, "openai": OPENAI_PORT}

# The weights download pod (`gptoss-runtime fetch`) serves its progress as Prometheus text on this port;
# the operator reads it for status.weights (bytes done and total, rate, ETA).
FETCH_PROGRESS_PORT: Final = 8003
FETCH_PROGRESS_PORT_NAME: Final = "progress"
FETCH_BYTES_DONE_METRIC: Final = "gptoss_fetch_bytes_done"
FETCH_BYTES_TOTAL_METRIC: Final = "gptoss_fetch_bytes_total"
FETCH_BYTES_PER_SECOND_METRIC: Final = "gptoss_fetch_bytes_per_second"

# The Triton model that serves gpt-oss (Python backend, decoupled).
TRITON_MODEL_NAME: Final = "gpt_oss"

# Files the operator mounts into the pod.
PLAN_DIR: Final = "/etc/gptoss"
PLAN_FILE_NAME: Final = "plan.json"  # key in the plan ConfigMap
PLAN_PATH: Final = f"{PLAN_DIR}/{PLAN_FILE_NAME}"
WEIGHTS_DIR: Final = "/models"  # the weight cache volume's mount point
WEIGHTS_COMPLETE_MARKER: Final = ".gptoss-complete"  # written last by `gptoss-runtime fetch`
# Key of the marker's JSON saying the fetcher verified every file's checksum (servers then check sizes only).
MARKER_CHECKSUMS_KEY: Final = "checksums"
HF_TOKEN_DIR: Final = "/var/run/secrets/gptoss"  # noqa: S105 - a mount path, not a secret
HF_TOKEN_FILE_NAME: Final = "hf-token"  # noqa: S105 - a file name, not a secret
HF_TOKEN_PATH: Final = f"{HF_TOKEN_DIR}/{HF_TOKEN_FILE_NAME}"
# The gateway reads its API keys from the Secret named in spec.serving.apiKeysSecret, mounted here.
API_KEYS_DIR: Final = "/var/run/secrets/gptoss-api-keys"
MODEL_REPOSITORY_DIR: Final = "/tmp/gptoss/model-repository"  # noqa: S108 - an emptyDir the launcher owns
# The operator's setting that makes the CPU reference engine stand in for TensorRT-LLM; the operator also
# sets it on the server container, so that the pod's log names the cluster setting.
ENGINE_STAND_IN_ENV: Final = "GPTOSS_ENGINE_STAND_IN"

# Paths the fetcher skips: OpenAI's reference layout and the Metal build are not needed for serving.
SKIPPED_CHECKPOINT_FOLDERS: Final = ("original/", "metal/")

# Metrics exported by the `gpt_oss` Triton model on Triton's metrics port. Every series carries the
# label `model` (gpt-oss-20b / gpt-oss-120b). Documented in docs/metrics.md.
METRIC_REQUESTS_RUNNING: Final = "gptoss_requests_running"  # gauge: sequences being generated now
METRIC_REQUESTS_WAITING: Final = "gptoss_requests_waiting"  # gauge: admitted, not yet scheduled
METRIC_KV_CACHE_UTILIZATION: Final = "gptoss_kv_cache_utilization_ratio"  # gauge 0..1
METRIC_TIME_TO_FIRST_TOKEN: Final = "gptoss_time_to_first_token_seconds"  # noqa: S105 - histogram
METRIC_GENERATED_TOKENS: Final = "gptoss_generated_tokens_total"  # counter: output tokens
METRIC_PROMPT_TOKENS: Final = "gptoss_prompt_tokens_total"  # counter: input tokens
METRIC_REQUESTS: Final = "gptoss_requests_total"  # counter, label outcome=success|error|cancelled

TIME_TO_FIRST_TOKEN_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)

MODEL_NAMES: Final = ("gpt-oss-20b", "gpt-oss-120b")
