"""A small round-robin HTTP proxy: one address in front of N gateway processes (demo, drills).

Theory of operation: each request goes to the next backend in turn, method, path, query,
headers (less the hop-by-hop ones) and body unchanged. A backend that refuses the connection,
resets it or does not answer within ``timeout_s`` is skipped and the same request goes to the
next one (at most one try per backend), which is safe here because every request the gateway
accepts is idempotent by its event id (the ingress publishes it with a deterministic
``Nats-Msg-Id``). When no backend answers the proxy replies 503 with a JSON error
(``proxy.no_backend``), so the sender retries later, as it would for one gateway that is down.
It counts the requests each backend answered (``forwarded``): the demo reports them as each
process's share of the webhooks. It is a test harness part, not a production load balancer:
no health checks, no TLS, loopback only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import aiohttp
from aiohttp import web

__all__ = ["RoundRobinProxy"]

_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                  "te", "trailers", "transfer-encoding", "upgrade", "host", "content-length"})


class RoundRobinProxy:
    def __init__(self, backends: Sequence[str], *, host: str = "127.0.0.1", port: int = 0,
                 timeout_s: float = 15.0) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = [b.rstrip("/") for b in backends]
        self.host = host
        self.port = port
        self.forwarded = dict.fromkeys(self.backends, 0)
        self.skipped = dict.fromkeys(self.backends, 0)
        self._next = itertools.cycle(range(len(self.backends)))
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        first = next(self._next)
        for k in range(len(self.backends)):
            backend = self.backends[(first + k) % len(self.backends)]
            try:
                async with self._session.request(request.method, backend + request.path_qs,
                                                 data=body, headers=headers) as resp:
                    data = await resp.read()
                    out = {k2: v for k2, v in resp.headers.items() if k2.lower() not in _HOP}
                    self.forwarded[backend] += 1
                    return web.Response(status=resp.status, body=data, headers=out)
            except (aiohttp.ClientError, TimeoutError, OSError):
                self.skipped[backend] += 1
        return web.json_response({"code": "proxy.no_backend",
                                  "message": "no gateway process answered; retry later",
                                  "path": request.path}, status=503,
                                 headers={"Retry-After": "1"})
