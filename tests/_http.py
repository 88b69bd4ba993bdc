"""A throwaway HTTP server on loopback for tests: every method and path to one handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.broker import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def catch_all(handler: Handler) -> tuple[web.AppRunner, str]:
    """Serve ``handler`` for every request; returns the runner (``cleanup()`` stops it) and
    the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """``catch_all`` for the block; yields the base URL."""
    runner, url = await catch_all(handler)
    try:
        yield url
    finally:
        await runner.cleanup()
