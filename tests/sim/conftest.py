"""Helpers for the simulator tests: free loopback ports, a running sim, a JSON HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from gateway.broker import free_port as broker_free_port
from sim import SimConfig, serve

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on right now (``gateway.broker.free_port``: its own
    range under a parallel test worker)."""
    return broker_free_port(HOST)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


class Http:
    """A tiny JSON client bound to one base URL."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        client_timeout: float | None = None,
    ) -> Reply:
        body = msgspec.json.encode(json) if json is not None else data
        headers = {"Content-Type": "application/json"} if body is not None else {}
        kwargs: dict[str, Any] = {}
        if client_timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=client_timeout)
        async with self.session.request(
            method, self.base + path, data=body, headers=headers, **kwargs
        ) as resp:
            raw = await resp.read()
            decoded = msgspec.json.decode(raw) if raw else None
            return Reply(resp.status, decoded, dict(resp.headers))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.call("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> Reply:
        return await self.call("PUT", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)


@asynccontextmanager
async def running_sim(config: SimConfig) -> AsyncIterator[Http]:
    """Serve the sim with ``config`` (via ``serve``) and yield a client for it.

    Uses a plain task (not a task group) so it also works in pytest-asyncio fixtures, whose
    setup and teardown may run in different tasks.
    """
    import anyio

    ready = anyio.Event()
    task = asyncio.create_task(serve(config, ready=ready))
    try:
        while not ready.is_set():
            if task.done():
                task.result()  # raises what serve raised
            await asyncio.sleep(0.005)
        async with aiohttp.ClientSession() as session:
            yield Http(session, f"http://{config.host}:{config.port}")
    finally:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@asynccontextmanager
async def running_app(app: web.Application, port: int) -> AsyncIterator[str]:
    """Serve a plain aiohttp ``app`` (a test receiver) on ``port``; yield its base URL."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        yield f"http://{HOST}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def sim() -> AsyncIterator[Http]:
    """A sim whose webhooks go nowhere (for ERP, fault and API tests)."""
    config = SimConfig(
        port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/nowhere", seed=11
    )
    async with running_sim(config) as http:
        yield http
