"""The admin listener: probes, metrics, the status tree and the synchronous lane's HTTP face.

It is a listener of its own (``admin.host:admin.port``, loopback by default), apart from the
webhook port, which serves webhooks and the usage intake only: what tells an operator how the
gateway is doing, and the synchronous lane's internal callers, never share a port with the
internet-facing platforms' webhooks.

Routes:

- ``GET /livez``: 200 ``{"ok": true}`` while the process's event loop answers;
- ``GET /readyz``: 200 when every readiness check passes (broker connected, ledger open,
  consumers bound, not draining), else 503 ``{"code": "admin.not_ready", "message",
  "not_ready": [names], "checks": {name: bool}}``;
- ``GET /status``: the status tree (readiness checks and every actor's statistics);
- ``GET /metrics``: Prometheus text (``actors.monitor``);
- ``GET /openapi/<listener>.json``: the OpenAPI documents of the gateway's HTTP faces (given
  by the process, ``gateway/openapi.py``);
- ``POST /sync/v1/...``: the synchronous lane (``actors.sync``).

It starts before the broker connection and stops after everything else, so ``/readyz``
answers 503 (naming what is missing) while the gateway starts or drains, instead of refusing
the connection. With a bearer token configured (required off loopback, ``gateway/app.py``),
every route needs ``Authorization: Bearer <token>``; a missing or wrong one gets 401
``{"code": "admin.unauthorized", "message"}``. The token is compared in constant time and
never logged. An unexpected exception in a route is a 500 whose body holds only a code, a
generic message and a correlation id (the log line with that id has the traceback).
``admin.tls`` serves it over HTTPS only (``actors.ingress.tls``).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import anyio
import msgspec
from aiohttp import web

from contracts import GatewayError

from .server import ExtraRoute, PostRoute, encoding_refused, internal_error
from .tls import TlsFiles

__all__ = ["AdminListener", "AdminSettings"]

log = logging.getLogger("erpgw.admin")
_json = msgspec.json.Encoder()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[admin]``: where the admin listener listens and what it asks of its callers."""

    host: str = "127.0.0.1"
    port: int = 8601
    # The bearer token every admin request must carry: required when `host` is not loopback.
    # Exactly one of the value, an environment variable's name or a file (mode 0600).
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    tls: TlsFiles = msgspec.field(default_factory=TlsFiles)

    def __repr__(self) -> str:
        return (f"AdminSettings(host={self.host!r}, port={self.port}, "
                f"token={'***' if self.token is not None else None}, "
                f"token_env={self.token_env!r}, token_file={self.token_file!r}, "
                f"tls={self.tls!r})")


def _answer(status: int, body: Mapping[str, object],
            headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), headers=headers,
                        content_type="application/json")


class AdminListener:
    """The admin HTTP listener (see the module docstring). The process fills in what it
    serves as it starts: ``check()`` adds a readiness check, ``metrics`` and ``status`` are
    set once the monitor and the supervision tree exist (503 until then)."""

    def __init__(self, settings: AdminSettings, *, token: str | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 post_routes: Mapping[str, PostRoute] | None = None,
                 documents: Mapping[str, bytes] | None = None,
                 max_body_bytes: int = 256 * 1024) -> None:
        self.settings = settings
        # Kept as bytes, in no repr or log.
        self._token = token.encode() if token is not None else None
        self._ssl = ssl_context
        self._post_routes = dict(post_routes or {})
        # {path: JSON document} served as they are (the OpenAPI documents).
        self._documents = dict(documents or {})
        self._max_body = max_body_bytes
        self._checks: dict[str, Callable[[], bool]] = {}
        self.metrics: ExtraRoute | None = None
        self.status: Callable[[], dict[str, object]] | None = None
        self.unauthorized = 0

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.settings.host}:{self.settings.port}"

    def check(self, name: str, ok: Callable[[], bool]) -> None:
        """Add (or replace) the readiness check ``name``: ready only while ``ok()``."""
        self._checks[name] = ok

    def readiness(self) -> dict[str, bool]:
        out = {}
        for name, ok in self._checks.items():
            try:
                out[name] = bool(ok())
            except Exception:  # a check that cannot tell counts as not ready
                log.debug("readiness check %s failed", name, exc_info=True)
                out[name] = False
        return out

    # -- routes ------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None and not self._authorized(request):
            self.unauthorized += 1
            return _answer(401, {"code": "admin.unauthorized",
                                 "message": "the admin listener needs Authorization: Bearer "
                                            "<admin token>"},
                           headers={"WWW-Authenticate": 'Bearer realm="erpgw-admin"'})
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _answer(404, {"code": "admin.not_found",
                                 "message": f"no admin route {request.path}"})
        except web.HTTPMethodNotAllowed as exc:
            # RFC 9110: a 405 names the methods the route serves.
            return _answer(405, {"code": "admin.method_not_allowed",
                                 "message": f"{request.method} is not served at "
                                            f"{request.path}"},
                           headers={"Allow": ", ".join(sorted(exc.allowed_methods))})
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug: a generic 500, its text only in the log (S24)
            return internal_error(f"{request.method} {request.path}", exc)

    def _authorized(self, request: web.Request) -> bool:
        token = self._token
        if token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Whatever bytes arrived (aiohttp keeps undecodable ones as surrogates).
        raw = given.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(raw, token)

    async def livez(self, request: web.Request) -> web.Response:
        return _answer(200, {"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = self.readiness()
        missing = [name for name, ok in checks.items() if not ok]
        if not missing:
            return _answer(200, {"ready": True, "checks": checks})
        return _answer(503, {"code": "admin.not_ready",
                             "message": f"not ready: {', '.join(missing)}",
                             "not_ready": missing, "checks": checks},
                       headers={"Retry-After": "1"})

    async def status_tree(self, request: web.Request) -> web.Response:
        checks = self.readiness()
        body: dict[str, object] = {"ready": all(checks.values()), "checks": checks}
        if self.status is not None:
            body.update(self.status())
        return _answer(200, body)

    async def prometheus(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return _answer(503, {"code": "admin.not_ready",
                                 "message": "metrics are served once the gateway has started"},
                           headers={"Retry-After": "1"})
        status, ctype, body = self.metrics()
        return web.Response(status=status, body=body, headers={"Content-Type": ctype})

    def _serve_document(self, body: bytes) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=200, body=body, content_type="application/json")
        return handler

    def _serve_post(self, route: PostRoute) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            if (refused := encoding_refused(request)) is not None:
                return _answer(415, refused.to_dict())
            if request.content_length is not None and request.content_length > self._max_body:
                return self._too_large()
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self._max_body:
                    return self._too_large()
                chunks.append(chunk)
            status, ctype, data = await route(b"".join(chunks), request.headers)
            return web.Response(status=status, body=data, headers={"Content-Type": ctype})
        return handler

    def _too_large(self) -> web.Response:
        return _answer(413, {"code": "body.too_large",
                             "message": f"body exceeds the limit of {self._max_body} bytes"})

    # -- serving -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body, middlewares=[self._guard])
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/status", self.status_tree)
        app.router.add_get("/metrics", self.prometheus)
        for path, route in self._post_routes.items():
            app.router.add_post(path, self._serve_post(route))
        for path, body in self._documents.items():
            app.router.add_get(path, self._serve_document(body))
        return app

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[AdminListener]:
        """Listen for the duration of the block. Raises ``GatewayError`` (``http.port_busy``)
        when the port cannot be bound."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=2.0, auto_decompress=False)  # S10
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port,
                               ssl_context=self._ssl)
            try:
                await site.start()
            except OSError as exc:
                raise GatewayError(
                    f"cannot listen for admin requests on {self.settings.host}:"
                    f"{self.settings.port}: {exc.strerror}; choose another with "
                    "--admin-port", code="http.port_busy") from exc
            log.info("admin listener on %s (livez, readyz, status, metrics, openapi, sync)%s",
                     self.url, "; bearer token required" if self._token else "")
            yield self
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
