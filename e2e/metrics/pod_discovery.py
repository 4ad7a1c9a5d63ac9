"""Kubernetes pod discovery for Debian's Prometheus, over Prometheus' HTTP service discovery.

Debian builds Prometheus without `kubernetes_sd_configs` (its Kubernetes client is not packaged), so the
pipeline serves the same targets through `http_sd_configs`: every pod with an IP, one target per
declared container port (one for the pod IP when a container declares none), labelled with the
`__meta_kubernetes_*` names of Prometheus' `role: pod` discovery. The relabeling of
monitoring/scrape-config.yaml then runs unchanged. A background thread LISTs pods every few seconds with
the kubeconfig given (a ServiceAccount token allowed to list pods); requests get the latest list at once.

    pod_discovery.py --kubeconfig FILE --listen 127.0.0.1:19091      # GET /targets -> HTTP SD JSON
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import re
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

import yaml

PATH: Final = "/targets"
PREFIX: Final = "__meta_kubernetes_"
LIST_TIMEOUT_S: Final = 10


class ApiClient:
    """GET against the API server with the first cluster and user of a token kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server: str = cluster["server"].rstrip("/")
        self.token: str = config["users"][0]["user"]["token"]
        self.context = ssl.create_default_context()
        with tempfile.NamedTemporaryFile("wb", suffix=".crt") as ca:
            ca.write(base64.b64decode(cluster["certificate-authority-data"]))
            ca.flush()
            self.context.load_verify_locations(ca.name)

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, context=self.context, timeout=LIST_TIMEOUT_S) as response:
            return json.load(response)


def _sanitize(name: str) -> str:
    """Prometheus' label-name sanitizing: every character other than [a-zA-Z0-9_] becomes `_`."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    metadata, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    labels = {
        f"{PREFIX}namespace": metadata["namespace"],
        f"{PREFIX}pod_name": metadata["name"],
        f"{PREFIX}pod_ip": status.get("podIP", ""),
        f"{PREFIX}pod_uid": metadata.get("uid", ""),
        f"{PREFIX}pod_node_name": spec.get("nodeName", ""),
        f"{PREFIX}pod_host_ip": status.get("hostIP", ""),
        f"{PREFIX}pod_phase": status.get("phase", ""),
        f"{PREFIX}pod_ready": _ready(status),
    }
    for kind, values in (("label", metadata.get("labels") or {}), ("annotation", metadata.get("annotations") or {})):
        for key, value in values.items():
            labels[f"{PREFIX}pod_{kind}_{_sanitize(key)}"] = value
            labels[f"{PREFIX}pod_{kind}present_{_sanitize(key)}"] = "true"
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("controller"):
            labels[f"{PREFIX}pod_controller_kind"] = owner["kind"]
            labels[f"{PREFIX}pod_controller_name"] = owner["name"]
    return labels


def _ready(status: dict[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition["type"] == "Ready":
            return str(condition["status"]).lower()
    return "unknown"


def targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HTTP SD target groups of `role: pod`: pods without an IP have no target yet."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            continue
        pod_labels = _pod_labels(pod)
        for container in pod["spec"]["containers"]:
            container_labels = {
                **pod_labels,
                f"{PREFIX}pod_container_name": container["name"],
                f"{PREFIX}pod_container_image": container.get("image", ""),
                f"{PREFIX}pod_container_init": "false",
            }
            ports = container.get("ports") or []
            if not ports:
                groups.append({"targets": [ip], "labels": container_labels})
            for port in ports:
                number = str(port["containerPort"])
                groups.append(
                    {
                        "targets": [f"{ip}:{number}"],
                        "labels": {
                            **container_labels,
                            f"{PREFIX}pod_container_port_name": port.get("name", ""),
                            f"{PREFIX}pod_container_port_number": number,
                            f"{PREFIX}pod_container_port_protocol": port.get("protocol", "TCP"),
                        },
                    }
                )
    return groups


class Snapshot:
    """The latest target groups, refreshed by a background thread: Prometheus' HTTP discovery gives up
    after its refresh interval, and a LIST on a busy API server can take longer than that."""

    def __init__(self, client: ApiClient, every_s: float) -> None:
        self.client = client
        self.every_s = every_s
        self.body: bytes | None = None
        self.error = "no pod list yet"
        self.lock = threading.Lock()

    def refresh_forever(self) -> None:
        while True:
            self.refresh()
            time.sleep(self.every_s)

    def refresh(self) -> None:
        try:
            # resourceVersion=0: served from the API server's watch cache, cheap even with many pods.
            body = json.dumps(targets(self.client.get("/api/v1/pods?resourceVersion=0")["items"])).encode()
        except OSError as error:  # an unreachable API server: keep serving the last targets
            print(f"listing pods failed: {error}", file=sys.stderr, flush=True)
            with self.lock:
                self.error = f"listing pods failed: {error}"
            return
        with self.lock:
            self.body, self.error = body, ""

    def current(self) -> tuple[bytes | None, str]:
        with self.lock:
            return self.body, self.error


def serve(snapshot: Snapshot, host: str, port: int) -> None:
    class Discovery(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != PATH:
                self.send_error(404, f"only {PATH}")
                return
            body, error = snapshot.current()
            if body is None:
                self.send_error(503, error)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http.server.ThreadingHTTPServer((host, port), Discovery).serve_forever()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="a token kubeconfig that may list pods")
    parser.add_argument("--listen", default="127.0.0.1:19091", help="HOST:PORT to serve GET /targets on")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between pod lists")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    snapshot = Snapshot(ApiClient(args.kubeconfig), args.every)
    threading.Thread(target=snapshot.refresh_forever, name="pod-lister", daemon=True).start()
    serve(snapshot, host, int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
