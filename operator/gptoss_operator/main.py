"""`gptoss-operator run`: start the operator process (Kopf) with the given settings.

SIGTERM and SIGINT stop it cleanly (Kopf handles them: watches close, running handlers finish).
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import socket
import threading
import uuid
from typing import Any

import kopf

from gptoss_operator import capabilities, gc_pauses, handlers, leader, metrics
from gptoss_operator import logging as operator_logging
from gptoss_operator.autoscaling import runner as autoscaling_runner
from gptoss_operator.kube import Kube
from gptoss_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def build_registry(settings: OperatorSettings, kube: Kube) -> kopf.OperatorRegistry:
    """A Kopf registry with every handler of the operator, bound to `kube`."""
    registry = kopf.OperatorRegistry()
    runtime = handlers.OperatorRuntime(kube, settings)
    handlers.register(registry, runtime)
    # The autoscaler reads the same caches (one capacity snapshot, no LIST per round) once they exist.
    autoscaling_runner.register(registry, kube, settings, cache_of=lambda: runtime.cache)
    return registry


def liveness_endpoint(settings: OperatorSettings) -> str:
    return f"http://0.0.0.0:{settings.health_port}/healthz"


class _Healthy(http.server.BaseHTTPRequestHandler):
    """A standby is healthy while it waits (so its liveness probe does not restart it)."""

    def do_GET(self) -> None:  # the http.server API names it
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"standby")

    def log_message(self, *_: Any) -> None:  # no access log
        return


def _identity(settings: OperatorSettings) -> str:
    return settings.pod_name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _stop_on_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def wait_to_lead(settings: OperatorSettings, kube: Kube) -> leader.LeaderElector | None:
    """Stand by (serving /healthz) until this replica holds the Lease; None when stopped first."""
    api = leader.KubeLeaseApi(kube, settings.leader_election_namespace, settings.leader_election_lease_name)
    elector = leader.LeaderElector(
        api,
        _identity(settings),
        lease_seconds=settings.leader_election_lease_seconds,
        renew_seconds=settings.leader_election_renew_seconds,
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    health = http.server.ThreadingHTTPServer(("0.0.0.0", settings.health_port), _Healthy)  # noqa: S104 - probes
    threading.Thread(target=health.serve_forever, name="standby-health", daemon=True).start()
    log.info("standing by for the leader Lease %s/%s", api.namespace, api.name)
    try:
        leads = elector.wait_for_leadership(stop)
    finally:
        health.shutdown()
        health.server_close()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # Kopf installs its own
    return elector if leads else None


def _exit_now() -> None:
    # A leader that lost its Lease must stop at once, whatever it is doing: a standby is about to start.
    logging.shutdown()
    os._exit(1)


def run(settings: OperatorSettings) -> None:
    """Run until SIGTERM/SIGINT: watch GptOssDeployments in `settings.namespaces` (all when empty)."""
    operator_logging.configure(settings.log_format, settings.log_level)
    kube = Kube.from_environment()
    elector = wait_to_lead(settings, kube) if settings.leader_election else None
    if settings.leader_election and elector is None:
        return  # stopped while standing by
    # Once, as the leader: what this API server serves becomes part of the settings (capabilities.py).
    settings = capabilities.with_detected_capabilities(settings, kube)
    renewing = threading.Event()
    if elector is not None:
        threading.Thread(
            target=elector.keep_renewing, args=(renewing, _exit_now), name="lease-renewal", daemon=True
        ).start()
    gc_pauses.RECORDER.install(metrics.REGISTRY)
    server = metrics.start_metrics_server(settings.metrics_port)
    scope = ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    log.info("gpt-oss-operator starting: watching %s; metrics on :%d", scope, settings.metrics_port)
    try:
        kopf.run(
            registry=build_registry(settings, kube),
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness_endpoint(settings),
        )
    finally:
        renewing.set()
        if elector is not None:
            elector.release()
        server.shutdown()
        server.server_close()
        log.info("gpt-oss-operator stopped")
