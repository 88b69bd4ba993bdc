"""The round-robin proxy of the scale-out demo: requests go to the backends in turn, unchanged,
and past a backend that does not answer; none answering is a 503 with a JSON error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.broker import free_port
from gateway.rrproxy import RoundRobinProxy

from .._http import catch_all


async def _backend(name: str, seen: list[tuple[str, str, bytes, str]]
                   ) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        seen.append((name, request.path_qs, await request.read(),
                     request.headers.get("X-Sig", "")))
        return web.json_response({"by": name}, status=202, headers={"X-From": name})

    return await catch_all(handle)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_requests_go_round_robin_and_skip_a_dead_backend(
        http: aiohttp.ClientSession) -> None:
    seen: list[tuple[str, str, bytes, str]] = []
    a, url_a = await _backend("a", seen)
    b, url_b = await _backend("b", seen)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proxy = RoundRobinProxy([url_a, dead, url_b], port=free_port())
    await proxy.start()
    try:
        bys = []
        for i in range(6):
            async with http.post(f"{proxy.url}/webhooks/billing?x={i}", data=f"body{i}",
                                 headers={"X-Sig": f"s{i}"}) as resp:
                assert resp.status == 202 and resp.headers["X-From"] in ("a", "b")
                bys.append((await resp.json())["by"])
    finally:
        await proxy.stop()
        await a.cleanup()
        await b.cleanup()
    # a, (dead ->) b, b, a, (dead ->) b, b: every request answered once, unchanged.
    assert bys == ["a", "b", "b", "a", "b", "b"]
    assert [(p, body, sig) for _, p, body, sig in seen] == [
        (f"/webhooks/billing?x={i}", f"body{i}".encode(), f"s{i}") for i in range(6)]
    assert proxy.forwarded == {url_a: 2, dead: 0, url_b: 4} and proxy.skipped[dead] == 2


async def test_no_backend_answering_is_a_503_with_a_code(http: aiohttp.ClientSession) -> None:
    proxy = RoundRobinProxy([f"http://127.0.0.1:{free_port()}"], port=free_port())
    await proxy.start()
    try:
        async with http.post(f"{proxy.url}/webhooks/billing", data=b"{}") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            assert await resp.json() == {"code": "proxy.no_backend", "path": "/webhooks/billing",
                                         "message": "no gateway process answered; retry later"}
    finally:
        await proxy.stop()
