"""The scraper against a local aiohttp server on 127.0.0.1 (no cluster, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from gptoss_operator.autoscaling.scrape import ScrapeError, metrics_url, scrape_sample
from gptoss_runtime.contract import METRIC_REQUESTS_WAITING

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> int:
        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        host_and_port = runner.addresses[0]
        return int(host_and_port[1])

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_scrape_parses_the_page(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=f'{METRIC_REQUESTS_WAITING}{{model="gpt-oss-20b"}} 7\n')

    port = await serve(metrics)
    async with aiohttp.ClientSession() as session:
        sample = await scrape_sample(session, "127.0.0.1", port=port)
    assert sample.requests_waiting == 7
    assert sample.requests_running is None


async def test_scrape_reports_http_errors(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="loading")

    port = await serve(broken)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError, match="HTTP 503"):
            await scrape_sample(session, "127.0.0.1", port=port)


async def test_scrape_times_out(serve: Callable[[Handler], Awaitable[int]]) -> None:
    release = asyncio.Event()

    async def stuck(_: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="")

    port = await serve(stuck)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ScrapeError, match=r"timed out after 0\.2 s"):
                await scrape_sample(session, "127.0.0.1", port=port, timeout_seconds=0.2)
    finally:
        release.set()


async def test_scrape_reports_unparseable_text(serve: Callable[[Handler], Awaitable[int]]) -> None:
    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="{{{ nonsense\n")

    port = await serve(garbage)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ScrapeError, match="not Prometheus text"):
            await scrape_sample(session, "127.0.0.1", port=port)


def test_metrics_url_brackets_ipv6_and_rejects_names() -> None:
    assert metrics_url("10.1.2.3") == "http://10.1.2.3:8002/metrics"
    assert metrics_url("fd00::1", 9) == "http://[fd00::1]:9/metrics"
    with pytest.raises(ScrapeError, match="not an IP address"):
        metrics_url("pod.example")
