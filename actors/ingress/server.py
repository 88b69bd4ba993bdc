"""Webhook ingress: the gateway's front door for platform events (billing, partner portal).

Each platform is a ``WebhookSource``: its path, signing secrets, signature header and the table
of event types it routes (``mapping.EventRoute``). Theory of operation, per request (each
request runs in aiohttp's own handler task):

1. refuse a body over ``max_body_bytes`` with 413 — from ``Content-Length`` before reading, and
   while streaming for chunked bodies, so memory stays bounded;
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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import msgspec
from aiohttp import web
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
from .group_commit import GroupCommit
from .routes import EventHead, WebhookSource
from .tls import TlsFiles, server_tls

__all__ = ["ExtraRoute", "IngressSettings", "PostRoute", "WebhookIngress"]

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


def _error(status: int, err: GatewayError, **extra: str) -> web.Response:
    body = err.to_dict() | extra
    headers = {}
    if isinstance(err, Retryable):
        headers["Retry-After"] = str(max(1, int(err.retry_after or 1)))
    return web.Response(status=status, body=_json.encode(body), headers=headers,
                        content_type="application/json")


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

    def _reject(self, status: int, err: GatewayError) -> web.Response:
        self.rejected[err.code] = self.rejected.get(err.code, 0) + 1
        log.info("webhook rejected %d %s: %s", status, err.code, err.message)
        return _error(status, err)

    async def _read_body(self, request: web.Request) -> bytes | None:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

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
        if request.headers.get("Content-Encoding", "identity") not in ("identity", ""):
            return self._reject(415, ContractError("compressed webhook bodies are not accepted",
                                                   code="body.encoding"))
        body = await self._read_body(request)
        if body is None:
            return self._reject(413, ContractError(
                f"body exceeds the limit of {self.settings.max_body_bytes} bytes",
                code="body.too_large"))
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
        return web.json_response({"status": status, "id": inbound.msg_id})

    def _serve_post(self, route: PostRoute) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body = await self._read_body(request)
            if body is None:
                return _error(413, ContractError(
                    f"body exceeds the limit of {self.settings.max_body_bytes} bytes",
                    code="body.too_large"))
            status, ctype, data = await route(body, request.headers)
            return web.Response(status=status, body=data, headers={"Content-Type": ctype})
        return handler

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        for source in self.sources:
            app.router.add_post(source.path, self._handler(source))
        for path, post in self._extra_post_routes.items():
            app.router.add_post(path, self._serve_post(post))
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=5.0)
        await runner.setup()
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
                "in_flight": self.in_flight, "commits": self._group.commits}
