"""Fetch one pod's metrics text (the autoscaling package's only I/O).

The autoscaler reads the pods directly rather than through Prometheus: it needs no Prometheus to work, and
a decision every few seconds wants fresher data than a 30-second scrape interval gives.
"""

from __future__ import annotations

import ipaddress

import aiohttp

from gptoss_runtime.contract import METRICS_PORT

from .signals import MetricsParseError, MetricsSample, parse_metrics

DEFAULT_SCRAPE_TIMEOUT_SECONDS = 2.0
MAX_METRICS_BYTES = 4 * 1024 * 1024  # a Triton metrics page is tens of kB; refuse anything absurd


class ScrapeError(RuntimeError):
    """A pod's metrics could not be read; the message names the pod's address and the cause."""


def url_host(pod_ip: str) -> str:
    """The pod IP as a URL host: IPv6 addresses in brackets; ScrapeError if it is not an IP address."""
    try:
        address = ipaddress.ip_address(pod_ip)
    except ValueError as error:
        raise ScrapeError(f"pod IP {pod_ip!r} is not an IP address") from error
    return f"[{address}]" if address.version == 6 else str(address)


def metrics_url(pod_ip: str, port: int = METRICS_PORT) -> str:
    """`http://<podIP>:<port>/metrics`, with IPv6 addresses in brackets."""
    return f"http://{url_host(pod_ip)}:{port}/metrics"


async def fetch_metrics_text(
    session: aiohttp.ClientSession,
    pod_ip: str,
    *,
    port: int = METRICS_PORT,
    timeout_seconds: float = DEFAULT_SCRAPE_TIMEOUT_SECONDS,
) -> str:
    """GET the pod's metrics page; raises `ScrapeError` on timeout, refused connection or a non-200."""
    return await fetch_url_text(session, metrics_url(pod_ip, port), timeout_seconds=timeout_seconds)


async def fetch_url_text(
    session: aiohttp.ClientSession, url: str, *, timeout_seconds: float = DEFAULT_SCRAPE_TIMEOUT_SECONDS
) -> str:
    """GET a metrics page by URL; raises `ScrapeError` on timeout, refused connection or a non-200."""
    timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        async with session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ScrapeError(f"GET {url} answered HTTP {response.status}")
            # read(n) returns as soon as some bytes arrived; a page spans several chunks, so read to the end.
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_METRICS_BYTES:
                    raise ScrapeError(f"GET {url} returned more than {MAX_METRICS_BYTES} bytes; refusing to parse it")
                chunks.append(chunk)
    except TimeoutError as error:
        raise ScrapeError(f"GET {url} timed out after {timeout_seconds:g} s") from error
    except aiohttp.ClientError as error:
        raise ScrapeError(f"GET {url} failed: {error}") from error
    return b"".join(chunks).decode("utf-8", errors="replace")


async def scrape_sample(
    session: aiohttp.ClientSession,
    pod_ip: str,
    *,
    port: int = METRICS_PORT,
    timeout_seconds: float = DEFAULT_SCRAPE_TIMEOUT_SECONDS,
) -> MetricsSample:
    """Fetch and parse one pod's metrics; raises `ScrapeError` for both failures."""
    text = await fetch_metrics_text(session, pod_ip, port=port, timeout_seconds=timeout_seconds)
    try:
        return parse_metrics(text)
    except MetricsParseError as error:
        raise ScrapeError(f"{metrics_url(pod_ip, port)}: {error}") from error


async def scrape_url(
    session: aiohttp.ClientSession, url: str, *, timeout_seconds: float = DEFAULT_SCRAPE_TIMEOUT_SECONDS
) -> MetricsSample:
    """Fetch and parse a metrics page by URL (the operator's address template); raises `ScrapeError`."""
    text = await fetch_url_text(session, url, timeout_seconds=timeout_seconds)
    try:
        return parse_metrics(text)
    except MetricsParseError as error:
        raise ScrapeError(f"{url}: {error}") from error
