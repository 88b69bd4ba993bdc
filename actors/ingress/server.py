"""Webhook ingress: the gateway's front door for platform events (billing, partner portal).

Each platform is a ``WebhookSource``: its path, signing secrets, signature header and the table
of event types it routes (``mapping.EventRoute``). Theory of operation, per request (each
request runs in aiohttp's own handler task):

0. before anything is read of the body: a source (peer address) over its token bucket
   (``source_limit``, ``actors.ingress.abuse``) is answered 429 ``rate.limited`` with
   ``Retry-After``; other sources are unaffected;
1. refuse a compressed body (any ``Content-Encoding`` but ``identity``) with 415
   ``body.encoding``: nothing is ever inflated, so a decompression bomb costs its own bytes;
   refuse a body over ``max_body_bytes`` with 413 — from ``Content-Length`` before reading, and
   while streaming for chunked bodies, so memory stays bounded; a body not received within
   ``body_timeout_s`` (a slow sender) is refused with 408 ``body.timeout``;
2. verify the source's signature header over the exact raw bytes, before parsing (401/400);
3. read the event's ``type``, decode the body with that type's route (400 naming the field) and
   map it to its canonical message (422 naming the broken invariant); a type the source does not
   route is answered ``ignored`` — unless it belongs to a family the source routes
   (``invoice.finalised``): that is schema drift, refused with 422 so it is seen;
4. publish to JetStream on the canonical type's subject with ``Nats-Msg-Id`` derived from the
   business key and wait for the PubAck; only then answer 2xx. A duplicate webhook is
   deduplicated by the stream and still answered 2xx; a broker outage answers 503 with
   ``Retry-After`` so the platform retries.

Group commit: the handlers of concurrent webhooks hand their message to one committer task,
which stores whatever arrived while its previous commit was in flight as one atomic batch (one
fsync instead of one per message) and wakes each handler with its own outcome. Under light load
a batch is a single message, so nothing waits for company.

Nothing is acknowledged to the platform before it is durable in JetStream, and nothing bad is
published. Error bodies are JSON ``{"code", "message"[, "path"]}`` and never echo the payload.

Abuse of the listener itself (S9, S24, S27): at most ``max_connections`` connections are open at
once (the next is answered 503 ``http.busy`` and closed before any of its bytes are read); a
connection that has not sent a whole request head within ``header_timeout_s`` of opening or of
its last answer is closed; a request head the HTTP parser refuses (a header over 8 KiB, a bad
request line) is answered 4xx with a JSON code, logged on one line without a traceback; a
route unknown or a method not allowed is a JSON 404/405; and an unexpected exception in a
handler is answered 500 with a generic body carrying only a correlation id, which the log line
(with the traceback) carries too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, cast

import anyio
import msgspec
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_request import BaseRequest
from anyio.abc import TaskStatus

from contracts import (
    ContractError,
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    Retryable,
    SignatureError,
    Subjects,
    make_envelope,
)
from contracts.platforms import signing

from .. import otel
from ..crash import crashpoint
from ..infra.bus import NatsBus, OutMsg
from ..runtime import Actor
from .abuse import SourceLimit, SourceLimits
from .group_commit import GroupCommit
from .routes import EventHead, WebhookSource
from .tls import TlsFiles, server_tls

__all__ = ["ExtraRoute", "IngressSettings", "PostRoute", "WebhookIngress", "encoding_refused",
           "internal_error"]

log = logging.getLogger("erpgw.ingress")
_heads: JsonCodec[EventHead] = JsonCodec(EventHead)
_bus_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_json = msgspec.json.Encoder()


# A GET endpoint of the admin listener (``/metrics``, ``actors.ingress.admin``): a synchronous
# function that answers ``(status, content type, body)``. It runs in the request's task and
# must not block.
ExtraRoute = Callable[[], tuple[int, str, bytes]]
# An extra POST endpoint (the usage intake's ``/usage/v1/records`` here, the synchronous lane's
# ``/sync/v1/...`` on the admin listener): an async function of the raw body (read within
# ``max_body_bytes``, else 413) and the request headers, answering ``(status, content type,
# body)``. It runs in the request's task.
PostRoute = Callable[[bytes, Mapping[str, str]], Awaitable[tuple[int, str, bytes]]]


class IngressSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8600
    path: str = "/webhooks/billing"
    max_body_bytes: int = 256 * 1024
    tolerance_s: float = signing.DEFAULT_TOLERANCE_S
    tenant: str = "default"
    # HTTPS only, with this certificate chain and key (PEM; the key mode 0600). Off when empty.
    tls: TlsFiles = msgspec.field(default_factory=TlsFiles)
    # A request body must arrive whole within this long once its head is in (else 408).
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # A connection must send a whole request head within this long of opening or of its last
    # answer, else it is closed (slow or idle clients do not hold connections).
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    # Connections open at once; the next is answered 503 http.busy and closed.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    # Requests per second and burst per source (peer address); 429 with Retry-After beyond.
    source_limit: SourceLimit = msgspec.field(default_factory=SourceLimit)


def _error(status: int, err: GatewayError, **extra: str) -> web.Response:
    body = err.to_dict() | extra
    headers = {}
    if isinstance(err, Retryable):
        headers["Retry-After"] = str(max(1, int(err.retry_after or 1)))
    return web.Response(status=status, body=_json.encode(body), headers=headers,
                        content_type="application/json")


def _json_error(status: int, code: str, message: str, **extra: str) -> web.Response:
    return web.Response(status=status, body=_json.encode({"code": code, "message": message,
                                                          **extra}),
                        content_type="application/json")


def internal_error(where: str, exc: BaseException | None) -> web.Response:
    """The generic 500: the body names only a correlation id, which the log line (with the
    traceback, for whoever runs the gateway) carries too."""
    cid = uuid.uuid4().hex
    log.error("internal error %s while answering %s", cid, where, exc_info=exc)
    return _json_error(500, "internal.error",
                       "internal error; quote the correlation id to the operator",
                       correlation_id=cid)


class _JsonErrors(web.RequestHandler):
    """aiohttp's connection handler answering its own errors (a request head its parser
    refuses) as JSON with a code, logged on one line without a traceback."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: the answer has begun, cannot redo it
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            resp = internal_error("a request", exc)
        elif isinstance(exc, LineTooLong):
            log.info("request refused 431 header.too_large from %s", request.remote)
            resp = _json_error(431, "header.too_large",
                               "a request line or header exceeds 8190 bytes")
        else:
            log.info("request refused %d http.malformed from %s: %s", status, request.remote,
                     type(exc).__name__ if exc is not None else message)
            resp = _json_error(status, "http.malformed", "the request is not valid HTTP/1.1")
        resp.force_close()
        return resp


class _Busy(asyncio.Protocol):
    """A connection over ``max_connections``: one canned 503, then closed unread."""

    _ANSWER = _json.encode({"code": "http.busy",
                            "message": "too many connections; retry later"})
    _HEAD = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
             + str(len(_ANSWER)).encode() + b"\r\n\r\n")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self._HEAD + self._ANSWER)
        transport.close()


class _Gate:
    """The listener's protocol factory: at most ``cap`` connections, each answering its own
    errors as JSON (``_JsonErrors``)."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self._server = server
        self._cap = cap
        self.refused = 0

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self._cap:
            self.refused += 1
            return _Busy()
        proto = self._server()
        proto.__class__ = _JsonErrors  # same layout (no slots added): only handle_error differs
        return proto


class _GatedRunner(web.AppRunner):
    """An ``AppRunner`` whose sites make connections through a ``_Gate`` (the sites only call
    ``runner.server`` to make each connection's protocol)."""

    gate: _Gate | None = None

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        if self.gate is None:
            raise RuntimeError("_GatedRunner.gate not set")
        return cast(web.Server, self.gate)

    @property
    def inner_server(self) -> web.Server | None:
        return super().server


async def _expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect``: ``100-continue`` is answered as usual; anything else is a JSON 417 (aiohttp's
    own handler fails with a 500 on a value that is not UTF-8)."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not begun
        return None
    return _json_error(417, "http.expectation_failed", "only Expect: 100-continue is supported")


def encoding_refused(request: web.BaseRequest) -> ContractError | None:
    """Why a body with a ``Content-Encoding`` (gzip, deflate, br...) is refused, or None for
    a plain one. Bodies are never inflated: the listeners run with aiohttp's
    ``auto_decompress`` off, so a small compressed body cannot cost more than its own bytes
    (a decompression bomb), and the size limit holds for what is handled (S10)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return None
    return ContractError(f"compressed request bodies are not accepted (Content-Encoding: "
                         f"{encoding[:40]!r}); send it uncompressed",
                         code="body.encoding", path="Content-Encoding")


class _BodyRefused(Exception):
    def __init__(self, status: int, err: GatewayError) -> None:
        super().__init__(err.message)
        self.status = status
        self.err = err


def _too_large(limit: int) -> _BodyRefused:
    return _BodyRefused(413, ContractError(f"body exceeds the limit of {limit} bytes",
                                           code="body.too_large"))


class WebhookIngress(Actor):
    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, settings: IngressSettings,
                 sources: Sequence[WebhookSource], clock: Callable[[], float] = time.time,
                 extra_post_routes: Mapping[str, PostRoute] | None = None) -> None:
        super().__init__(name)
        self._extra_post_routes = dict(extra_post_routes or {})
        self.bus = bus
        self.subjects = subjects
        self.settings = settings
        # Every platform's webhooks, each at its own path (the dialect modules build them).
        self.sources = tuple(sources)
        self._clock = clock
        # Read now: a bad certificate or key stops the start with the setting's name.
        self._ssl = server_tls(settings.tls, "http.tls")
        self.counts: dict[str, int] = {"accepted": 0, "duplicate": 0, "ignored": 0}
        self.rejected: dict[str, int] = {}
        self.in_flight = 0
        self._group = GroupCommit(bus)
        self._limits = SourceLimits(settings.source_limit)
        self._gate: _Gate | None = None

    def _reject(self, status: int, err: GatewayError) -> web.Response:
        self.rejected[err.code] = self.rejected.get(err.code, 0) + 1
        log.info("webhook rejected %d %s: %s", status, err.code, err.message)
        return _error(status, err)

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body; raises ``_BodyRefused``: 415 compressed, 413 over
        ``max_body_bytes``, 408 not in within ``body_timeout_s``, 400 cut short or badly
        framed."""
        if (refused := encoding_refused(request)) is not None:
            raise _BodyRefused(415, refused)
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        content = request.content
        chunks: list[bytes] = []
        size = 0

        async def read_all() -> None:
            nonlocal size
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)

        try:
            if content.is_eof():  # arrived whole with its head (the usual webhook): no timer
                await read_all()
            else:
                async with asyncio.timeout(self.settings.body_timeout_s):
                    await read_all()
        except TimeoutError:
            raise _BodyRefused(408, ContractError(
                f"the body did not arrive within {self.settings.body_timeout_s:g} s",
                code="body.timeout")) from None
        except (HttpProcessingError, ConnectionError) as exc:
            raise _BodyRefused(400, ContractError(
                f"the body is cut short or badly framed ({type(exc).__name__})",
                code="body.incomplete")) from None
        return b"".join(chunks)

    def _body_refused(self, refused: _BodyRefused) -> web.Response:
        resp = self._reject(refused.status, refused.err)
        if refused.status == 408:
            resp.force_close()  # the rest of a slow body is not waited for
        return resp

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Every request: the source's limit first, then the handler; its unexpected
        exceptions are a generic 500, aiohttp's own 404/405 a JSON body."""
        wait = self._limits.check(request.remote, time.monotonic())
        if wait > 0:
            self.rejected["rate.limited"] = self.rejected.get("rate.limited", 0) + 1
            resp = _json_error(429, "rate.limited",
                               f"too many requests from this source; retry in {wait:.1f} s")
            resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return resp
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "http." + exc.reason.lower().replace(" ", "_")
            resp = _json_error(exc.status, code, exc.reason)
            if "Allow" in exc.headers:
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        except Exception as exc:  # anything else is a bug: answered without its text
            return internal_error(f"{request.method} {request.path}", exc)

    def _handler(self, source: WebhookSource
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await self.webhook(source, request)
        return handler

    async def webhook(self, source: WebhookSource, request: web.Request) -> web.Response:
        """One webhook request, traced as the hop ``webhook <source>`` (continuing the
        request's ``traceparent`` header) when tracing is on (``actors.otel``)."""
        with otel.hop(f"webhook {source.name}", request.headers.get("traceparent"),
                      kind="server", attributes={"http.request.method": "POST",
                                                 "http.route": source.path}) as span:
            resp = await self._webhook(source, request)
            span.set("http.response.status_code", resp.status)
            if resp.status >= 500:
                span.fail(f"answered {resp.status}")
            return resp

    async def _webhook(self, source: WebhookSource, request: web.Request) -> web.Response:
        try:
            body = await self._read_body(request)
        except _BodyRefused as refused:
            return self._body_refused(refused)
        try:
            signing.verify(request.headers.get(source.signature_header), body, source.secrets,
                           now=self._clock(), tolerance=self.settings.tolerance_s,
                           header_name=source.signature_header)
        except SignatureError as err:
            return self._reject(400 if err.code == "signature.malformed" else 401, err)
        try:
            head = _heads.decode(body)
        except ContractError as err:
            return self._reject(400, err)
        route = source.routes.get(head.type)
        if route is None:
            if head.type.startswith(source.drift_prefixes) and head.type not in source.acknowledged:
                # A type in a family we handle but do not know (``invoice.finalised``): schema
                # drift, refused so that it is seen; never silently treated as "not subscribed".
                return self._reject(422, ContractError(
                    f"unknown event type {head.type!r}; expected one of "
                    f"{sorted(source.routes)}", code="webhook.unknown_event_type",
                    path="$.type"))
            self.counts["ignored"] += 1
            log.info("%s webhook %s of type %s ignored (not subscribed)", source.name, head.id,
                     head.type)
            return web.json_response({"status": "ignored", "type": head.type})
        try:
            evt = route.decode(body)
        except ContractError as err:
            return self._reject(400, err)
        try:
            inbound = route.map(evt)
        except ContractError as err:
            return self._reject(422, err)
        if inbound is None:  # a known event with nothing to publish (a dialect's no-op)
            self.counts["ignored"] += 1
            return web.json_response({"status": "ignored", "type": head.type})
        self.in_flight += 1
        try:
            # The envelope made inside the publish span carries its context: every later hop
            # of this message is its descendant.
            with otel.hop(f"publish {inbound.payload.__struct_config__.tag}", kind="producer",
                          attributes={"erpgw.msg_id": inbound.msg_id}):
                env = make_envelope(inbound.payload, source=source.name, key=inbound.key,
                                    tenant=self.settings.tenant, occurred_at=inbound.occurred_at)
                out = OutMsg(subject=self.subjects.for_type(env.type),
                             data=_bus_codec.encode(env), msg_id=inbound.msg_id,
                             headers={"traceparent": env.traceparent or ""})
                duplicate = await self._group.publish(out)
        except Retryable as err:
            return self._reject(503, err)
        except GatewayError as err:
            return self._reject(500, err)
        finally:
            self.in_flight -= 1
        crashpoint("ingress.after_publish")
        status = "duplicate" if duplicate else "accepted"
        self.counts[status] += 1
        # msgspec, not aiohttp's json_response (the standard library's json): the answer to
        # every webhook, the same bytes.
        return web.Response(body=_json.encode({"status": status, "id": inbound.msg_id}),
                            content_type="application/json")

    def _serve_post(self, route: PostRoute) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                body = await self._read_body(request)
            except _BodyRefused as refused:
                return self._body_refused(refused)
            status, ctype, data = await route(body, request.headers)
            return web.Response(status=status, body=data, headers={"Content-Type": ctype})
        return handler

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        app = web.Application(client_max_size=self.settings.max_body_bytes,
                              middlewares=[self._guard])
        for source in self.sources:
            app.router.add_post(source.path, self._handler(source), expect_handler=_expect)
        for path, post in self._extra_post_routes.items():
            app.router.add_post(path, self._serve_post(post), expect_handler=_expect)
        known = {s.path for s in self.sources} | set(self._extra_post_routes)

        async def no_route(request: web.Request) -> web.Response:
            if request.path in known:
                resp = _json_error(405, "http.method_not_allowed", "only POST is served here")
                resp.headers["Allow"] = "POST"
                return resp
            return _json_error(404, "http.not_found", "no such route")
        # Every other request too, so that its Expect header is ours to answer.
        app.router.add_route("*", "/{tail:.*}", no_route, expect_handler=_expect)
        runner = _GatedRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0,
                              keepalive_timeout=self.settings.header_timeout_s,
                              auto_decompress=False)  # never inflate a body (S10)
        await runner.setup()
        inner = runner.inner_server
        if inner is None:
            raise RuntimeError("the runner has no server after setup")
        self._gate = runner.gate = _Gate(inner, self.settings.max_connections)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._group.run)
            try:
                site = web.TCPSite(runner, self.settings.host, self.settings.port,
                                   backlog=1024, ssl_context=self._ssl)
                try:
                    await site.start()
                except OSError as exc:
                    raise GatewayError(
                        f"cannot listen on {self.settings.host}:{self.settings.port}: "
                        f"{exc.strerror}", code="http.port_busy") from exc
                scheme = "https" if self._ssl is not None else "http"
                for source in self.sources:
                    log.info("%s webhooks on %s://%s:%d%s", source.name, scheme,
                             self.settings.host, self.settings.port, source.path)
                task_status.started()
                await self.wait_stop_requested()
            finally:
                # Stop accepting and let in-flight handlers finish (their commits need the
                # committer), then stop the committer.
                with anyio.CancelScope(shield=True):
                    await runner.cleanup()
                tg.cancel_scope.cancel()

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, **self.counts, "rejected": dict(self.rejected),
                "in_flight": self.in_flight, "commits": self._group.commits,
                "sources_tracked": len(self._limits),
                "connections_refused": self._gate.refused if self._gate else 0}
