"""`gptoss-runtime`: what runs in the inference pod.

gptoss-runtime serve --weights DIR --engine reference|trtllm [--plan FILE] [--http-port P]
                     [--grpc-port P] [--metrics-port P] [--model-repository DIR] [--require-marker]
gptoss-runtime gateway --triton-grpc HOST:PORT [--port P] [--model-name NAME | --weights DIR]
gptoss-runtime fetch --repo R --revision REV --dest DIR [--token-file F]
gptoss-runtime make-tiny-checkpoint DIR [--imitates gpt-oss-20b|gpt-oss-120b] [--seed N]
gptoss-runtime mirror --root DIR [--host H] [--port P]   (serves DIR/<org>/<repo> like the Hugging Face Hub)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptoss_runtime import contract

TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
_SERVE_ENGINES = ("reference", "trtllm", "scripted")  # scripted: tests only, not listed in --help


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss-runtime", description="Serve gpt-oss with Triton.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands.add_parser("serve", help="verify the weights and run tritonserver"))
    _add_gateway(commands.add_parser("gateway", help="OpenAI-compatible HTTP gateway in front of Triton"))
    _add_fetch(commands.add_parser("fetch", help="download a pinned checkpoint revision (resumable)"))
    tiny = commands.add_parser("make-tiny-checkpoint", help="write a tiny random gpt-oss checkpoint")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--imitates", choices=contract.MODEL_NAMES, default="gpt-oss-20b")
    tiny.add_argument("--seed", type=int, default=0)
    _add_mirror(commands.add_parser("mirror", help="serve DIR/<org>/<repo> folders like the Hugging Face Hub"))
    return parser


def _add_mirror(mirror: argparse.ArgumentParser) -> None:
    mirror.add_argument("--root", type=Path, required=True, help="folder holding <org>/<repo> checkpoint folders")
    mirror.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    mirror.add_argument("--port", type=int, default=8080)


def _add_serve(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--weights", type=Path, default=Path(contract.WEIGHTS_DIR), help="checkpoint folder")
    serve.add_argument(
        "--engine", choices=_SERVE_ENGINES, default="trtllm", metavar="reference|trtllm", help="engine to run"
    )
    serve.add_argument("--plan", type=Path, default=None, help="serving plan JSON (required for trtllm)")
    serve.add_argument("--http-port", type=int, default=contract.HTTP_PORT)
    serve.add_argument("--grpc-port", type=int, default=contract.GRPC_PORT)
    serve.add_argument("--metrics-port", type=int, default=contract.METRICS_PORT)
    serve.add_argument("--model-repository", type=Path, default=Path(contract.MODEL_REPOSITORY_DIR))
    serve.add_argument("--model-name", default=None, help="override the model name read from the weights")
    serve.add_argument(
        "--require-marker", action="store_true", help=f"refuse weights without {contract.WEIGHTS_COMPLETE_MARKER}"
    )
    serve.add_argument(
        "--skip-checksums", action="store_true", help="check manifest sizes only, not sha256 (faster start)"
    )
    serve.add_argument("--exit-timeout", type=int, default=25, help="seconds tritonserver may take to drain on SIGTERM")
    serve.add_argument("--log-verbose", type=int, default=0, help="tritonserver's --log-verbose level")
    serve.add_argument(
        "--triton-address",
        default="0.0.0.0",  # noqa: S104
        help="address of Triton's HTTP and gRPC ports (127.0.0.1: only the pod's gateway reaches them)",
    )
    # Test-only: options for the scripted engine, KEY=JSON-VALUE (written into engine.json).
    serve.add_argument("--engine-option", action="append", default=[], help=argparse.SUPPRESS)


def _add_gateway(gateway: argparse.ArgumentParser) -> None:
    gateway.add_argument("--triton-grpc", default=f"127.0.0.1:{contract.GRPC_PORT}", help="Triton gRPC HOST:PORT")
    gateway.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    gateway.add_argument("--port", type=int, default=contract.OPENAI_PORT)
    names = gateway.add_mutually_exclusive_group()
    names.add_argument("--model-name", choices=contract.MODEL_NAMES, help="the deployment's model name")
    names.add_argument("--weights", type=Path, help="read the model name from this checkpoint's config")
    gateway.add_argument("--max-tokens-limit", type=int, default=None, help="upper bound for max_tokens")
    gateway.add_argument("--api-keys", type=Path, default=None, help="file or folder (a Secret) of API keys")
    gateway.add_argument("--plan", type=Path, default=None, help="serving plan JSON: admission limits from it")
    gateway.add_argument("--max-running", type=int, default=None, help="generations admitted to run at once")
    gateway.add_argument("--max-queued", type=int, default=None, help="generations admitted to wait; more get 429")
    gateway.add_argument("--drain-timeout", type=float, default=None, help="seconds in-flight streams get on SIGTERM")


def _add_fetch(fetch: argparse.ArgumentParser) -> None:
    fetch.add_argument("--repo", required=True, help="Hugging Face repository, e.g. openai/gpt-oss-20b")
    fetch.add_argument("--revision", required=True, help="pinned commit sha (or tag) to download")
    fetch.add_argument("--dest", type=Path, required=True, help="folder to download into")
    fetch.add_argument("--token-file", type=Path, default=None, help="file holding a Hugging Face token")
    fetch.add_argument("--retries", type=int, default=5, help="attempts before giving up")
    fetch.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    fetch.add_argument("--retry-backoff", type=float, default=2.0, help="first wait between attempts, doubling")
    fetch.add_argument(
        "--progress-port",
        type=int,
        default=contract.FETCH_PROGRESS_PORT,
        help="serve download progress as Prometheus text on this port (0: off)",
    )


def _engine_options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--engine-option: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _serve(args: argparse.Namespace) -> int:
    from gptoss_runtime.launcher import LaunchError, ServeOptions, serve

    options = ServeOptions(
        weights=args.weights,
        engine=args.engine,
        plan_file=args.plan,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_repository=args.model_repository,
        require_marker=args.require_marker,
        verify_checksums=not args.skip_checksums,
        model_name=args.model_name,
        log_verbose=args.log_verbose,
        exit_timeout_s=args.exit_timeout,
        triton_address=args.triton_address,
        extra_engine_options=_engine_options(args.engine_option),
    )
    try:
        serve(options)  # replaces this process with tritonserver
    except LaunchError as error:
        print(f"gptoss-runtime serve: {error}", file=sys.stderr)
        return 2
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from gptoss_runtime.gateway.app import GatewayConfig, GatewayError, run_gateway
    from gptoss_runtime.gateway.guard import guard_settings

    try:
        config = GatewayConfig.from_cli(
            triton_grpc=args.triton_grpc,
            model_name=args.model_name,
            weights=args.weights,
            max_tokens_limit=args.max_tokens_limit,
        )
        guard = guard_settings(
            api_keys=args.api_keys,
            plan_file=args.plan,
            max_running=args.max_running,
            max_queued=args.max_queued,
            drain_timeout_s=args.drain_timeout,
        )
    except (GatewayError, ValueError) as error:
        print(f"gptoss-runtime gateway: {error}", file=sys.stderr)
        return 2
    run_gateway(config, host=args.host, port=args.port, guard=guard)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from gptoss_runtime.fetch import FetchError, FetchOptions, fetch

    options = FetchOptions(
        repo=args.repo,
        revision=args.revision,
        dest=args.dest,
        token_file=args.token_file,
        retries=args.retries,
        timeout_s=args.timeout,
        backoff_s=args.retry_backoff,
        progress_port=args.progress_port or None,
    )
    try:
        fetch(options)
    except FetchError as error:
        print(f"gptoss-runtime fetch: {error}", file=sys.stderr)
        _write_termination_message(f"gptoss-runtime fetch: {error}")
        return 1
    return 0


def _write_termination_message(message: str) -> None:
    """Leave the error where Kubernetes shows it (the container's termination message; status quotes it)."""
    path = Path(TERMINATION_LOG)
    if path.exists():
        with contextlib.suppress(OSError):  # not in a container, or not writable: stderr said it already
            path.write_text(message[:4096], encoding="utf-8")


def _make_tiny_checkpoint(args: argparse.Namespace) -> int:
    from gptoss_runtime.checkpoint import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.directory, imitates=args.imitates, seed=args.seed)
    print(path)
    return 0


def _mirror(args: argparse.Namespace) -> int:
    from gptoss_runtime.mirror import run_mirror

    if not args.root.is_dir():
        print(f"gptoss-runtime mirror: --root {args.root} is not a folder", file=sys.stderr)
        return 2
    run_mirror(args.root, args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    handlers = {
        "serve": _serve,
        "gateway": _gateway,
        "fetch": _fetch,
        "make-tiny-checkpoint": _make_tiny_checkpoint,
        "mirror": _mirror,
    }
    raise SystemExit(handlers[args.command](args))
