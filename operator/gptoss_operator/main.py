"""`gptoss-operator run`: start the operator process (Kopf) with the given settings.

SIGTERM and SIGINT stop it cleanly (Kopf handles them: watches close, running handlers finish).
"""

from __future__ import annotations

import logging

import kopf

from gptoss_operator import handlers, metrics
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


def run(settings: OperatorSettings) -> None:
    """Run until SIGTERM/SIGINT: watch GptOssDeployments in `settings.namespaces` (all when empty)."""
    operator_logging.configure(settings.log_format, settings.log_level)
    kube = Kube.from_environment()
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
        server.shutdown()
        server.server_close()
        log.info("gpt-oss-operator stopped")
