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

import asyncio
import itertools
from collections.abc import Sequence

import aiohttp
from aiohttp import web

__all__ = ["BlackholeProxy", "RoundRobinProxy"]

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


class BlackholeProxy:
    """A TCP proxy on loopback between a client and one server that can turn into a silent
    partition (fault matrix F10): while ``held``, it keeps reading both sides of every open
    connection and forwards nothing, never closing one, and it stops listening (a client's
    attempt at a new connection is refused); ``release`` listens again on the same port,
    forwards what it held, in order, and resumes. ``link_dropped`` is set when a client closes
    a connection while the link is held: it counted the link dead. A test harness part, as the
    round-robin proxy is.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.connections = 0
        self.link_dropped = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await self._listen()

    def hold(self) -> None:
        self._open.clear()
        self.link_dropped.clear()
        if self._server is not None:
            self._server.close()  # open connections stay (and are held)
            self._server = None

    async def release(self) -> None:
        await self._listen()
        self._open.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._open.set()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        pumps = [asyncio.ensure_future(self._pump(reader, up_writer, client=True)),
                 asyncio.ensure_future(self._pump(up_reader, writer, client=False))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    client: bool) -> None:
        held: list[bytes] = []
        while data := await src.read(65536):
            held.append(data)
            if self.held:
                continue  # read, so the sender never blocks, but forward nothing
            dst.write(b"".join(held))
            held.clear()
            await dst.drain()
        if client and self.held:
            self.link_dropped.set()
        # EOF: what was held goes first (a close is not silent any more once it is passed on).
        await self._open.wait()
        if held:
            dst.write(b"".join(held))
            await dst.drain()
