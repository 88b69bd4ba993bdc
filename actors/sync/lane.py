"""The synchronous lane: pricing validation and order acceptance as NATS services and HTTP.

Theory of operation
-------------------
``SyncLane`` is one actor with its own CPQ HTTP client and no JetStream consumer, so nothing
batch-shaped ever sits in front of it. At start it registers the NATS service ``erpgw-sync``
(``NatsBus.add_service``: discoverable on ``$SRV.PING|INFO|STATS``) with two endpoints,
``<prefix>.sync.pricing.validate`` and ``<prefix>.sync.order.accept``, and attaches itself to
the ``SyncDoor`` that serves the same operations over HTTP on the gateway port.

A NATS request is stamped with its arrival time in the endpoint's callback and handed to a
bounded stream (full: ``sync.overloaded`` at once); ``max_in_flight`` worker tasks take
requests from it. An HTTP request runs in aiohttp's own task under the same bound. Either way
``decide``:

1. decodes and checks the request and its deadline (``rules``), answering a ``SyncError``
   with code and path for bad input, never a traceback;
2. refuses what CPQ cannot fix (an expired deal, a discount above the approved one) without
   calling CPQ;
3. starts the CPQ call as a task of the actor's task group and waits for it until the
   deadline (minus a small margin for the reply), counted from the request's arrival;
4. answers the final decision if CPQ was in time; otherwise answers
   ``accepted_pending_validation`` at once and leaves the call running *detached*: when it
   ends (retrying a failed call a few times), its final decision is published as a
   ``SyncDecided`` on ``<prefix>.commercial.sync.<area>.decided.v1`` with a ``Nats-Msg-Id``
   derived from the request id, so a retried request is stored once.

Invariants: every task belongs to the actor's task group (workers, CPQ calls); a detached
call publishes exactly one follow-up and a call answered in time publishes none (the flag is
read and written without an ``await`` in between). Stop: unregister the service and detach
from the door (new requests get ``sync.unavailable``), let the workers answer what is queued,
then wait for the detached calls to publish their follow-ups (bounded by ``cpq.timeout_s``;
the supervisor's shutdown timeout for this child is set above it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from contracts import (
    DEADLINE_HEADER,
    ContractError,
    GatewayError,
    JsonCodec,
    OrderDecision,
    OrderRequest,
    Permanent,
    Pricing,
    PricingDecision,
    PricingRequest,
    Retryable,
    Subjects,
    SyncDecided,
    SyncError,
    SyncOperation,
    SyncReply,
    ambient_traceparent,
    derive_id,
    new_id,
)
from contracts.platforms.cpq import PriceQuote

from .. import otel
from ..infra.bus import NatsBus, OutMsg, ServiceEndpoint, ServiceHandle, ServiceRequest
from ..platforms import PlatformGuard, PlatformRejected
from ..platforms.auth import AuthSettings
from ..runtime import Actor
from .rules import (
    Refusal,
    approved_discount_bp,
    check_items,
    check_order,
    check_terms,
    cpq_refusal,
    pricing_from_quote,
    resolve_deadline_ms,
    to_price_request,
)

__all__ = ["HTTP_ROUTES", "SERVICE_NAME", "CpqSettings", "SyncDoor", "SyncLane"]

log = logging.getLogger("erpgw.sync")

SERVICE_NAME = "erpgw-sync"
SERVICE_VERSION = "1.0.0"
# HTTP path on the gateway port → operation.
HTTP_ROUTES: Mapping[str, SyncOperation] = {
    "/sync/v1/pricing/validate": "pricing.validate",
    "/sync/v1/orders/accept": "order.accept",
}
_ENDPOINT_NAMES: Mapping[SyncOperation, str] = {
    "pricing.validate": "pricing-validate",
    "order.accept": "order-accept",
}
# NATS micro error headers: generic clients see an error reply without parsing the body.
_ERROR_HEADER = "Nats-Service-Error"
_ERROR_CODE_HEADER = "Nats-Service-Error-Code"
# A detached call retries a failed CPQ call after these pauses, then gives up.
_RETRY_PAUSES_S = (0.25, 1.0)
# Pauses between attempts to publish a follow-up while the broker is unavailable.
_PUBLISH_PAUSES_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

_json = msgspec.json.Encoder()
_quotes: JsonCodec[PriceQuote] = JsonCodec(PriceQuote)
_price_requests = msgspec.json.Encoder()


class CpqSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[cpq]`` section: where CPQ is and how the synchronous lane uses it."""

    base_url: str = "http://127.0.0.1:8700"
    timeout_s: float = 10.0  # one CPQ call, including one that finishes after a pending reply
    default_deadline_ms: int = 300  # a request's budget when the caller gives none
    max_discount_bp: int = 1000  # the largest discount allowed without a deal
    max_connections: int = 16
    max_in_flight: int = 64  # requests being decided at once (and queued NATS requests)
    max_pending: int = 1000  # CPQ calls at once, detached ones included
    # Credentials of every CPQ request (actors/platforms/auth.py).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)


@dataclass(slots=True)
class _Job:
    op: SyncOperation
    request: ServiceRequest
    received: float  # anyio.current_time() at arrival


@dataclass(slots=True)
class _Answer:
    reply: SyncReply
    http_status: int


@dataclass(slots=True, eq=False)
class _Call:
    """One CPQ pricing call and its outcome; ``detached`` once the caller got a pending
    reply (the call then publishes the follow-up itself)."""

    op: SyncOperation
    req: PricingRequest | OrderRequest
    request_id: str
    approved_bp: int
    received_at: datetime
    traceparent: str | None
    done: anyio.Event = field(default_factory=anyio.Event)
    detached: bool = False
    pricing: Pricing | None = None
    refusal: Refusal | None = None
    error: GatewayError | None = None


def _codec(op: SyncOperation) -> JsonCodec[Any]:
    return _PRICING if op == "pricing.validate" else _ORDERS


_PRICING: JsonCodec[PricingRequest] = JsonCodec(PricingRequest)
_ORDERS: JsonCodec[OrderRequest] = JsonCodec(OrderRequest)


class SyncLane(Actor):
    """The synchronous lane's actor; see the module docstring."""

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, settings: CpqSettings,
                 cpq: PlatformGuard, door: SyncDoor | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(name)
        self.bus = bus
        self.cpq = cpq  # CPQ's pricing endpoint (actors.platforms): its pool and breaker
        self.subjects = subjects
        self.settings = settings
        self._door = door
        self._clock = clock
        self._tg: anyio.abc.TaskGroup | None = None
        self._send: MemoryObjectSendStream[_Job] | None = None
        self._service: ServiceHandle | None = None
        self._in_flight = 0
        self._calls = 0
        self.counts: dict[SyncOperation, dict[str, int]] = {
            op: {"accepted": 0, "rejected": 0, "pending": 0, "errors": 0}
            for op in _ENDPOINT_NAMES}
        self.errors: dict[str, int] = {}
        self.follow_ups = {"published": 0, "failed": 0}

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        s = self.settings
        async with anyio.create_task_group() as tg:
            send, receive = anyio.create_memory_object_stream[_Job](s.max_in_flight)
            self._tg, self._send = tg, send
            with receive:
                for _ in range(s.max_in_flight):
                    tg.start_soon(self._worker, receive.clone())
            try:
                self._service = await self.bus.add_service(
                    SERVICE_NAME, SERVICE_VERSION, [
                        ServiceEndpoint(_ENDPOINT_NAMES["pricing.validate"],
                                        self.subjects.sync_pricing_validate,
                                        self._on_pricing, {"request": "PricingRequest"}),
                        ServiceEndpoint(_ENDPOINT_NAMES["order.accept"],
                                        self.subjects.sync_order_accept,
                                        self._on_order, {"request": "OrderRequest"}),
                    ],
                    description="erpgw synchronous lane: pricing validation, order acceptance",
                    metadata={"prefix": self.subjects.prefix, "deadline_header": DEADLINE_HEADER},
                    stats=self._endpoint_stats)
                if self._door is not None:
                    self._door.attach(self)
                log.info("sync lane ready: %s, %s (CPQ %s)", self.subjects.sync_pricing_validate,
                         self.subjects.sync_order_accept, s.base_url)
                task_status.started()
                await self.wait_stop_requested()
            finally:
                # Stop taking requests; answer what is queued; detached calls finish and
                # publish (the task group waits for them).
                if self._door is not None:
                    self._door.detach(self)
                with anyio.CancelScope(shield=True):
                    if self._service is not None:
                        await self._service.stop()
                send.close()

    def statistics(self) -> dict[str, object]:
        return {**super().statistics(), "in_flight": self._in_flight, "cpq_calls": self._calls,
                "counts": {op: dict(c) for op, c in self.counts.items()},
                "errors": dict(self.errors), "follow_ups": dict(self.follow_ups)}

    def _endpoint_stats(self, endpoint: str) -> dict[str, object]:
        for op, name in _ENDPOINT_NAMES.items():
            if name == endpoint:
                return {**self.counts[op], "cpq_calls": self._calls}
        return {}

    # -- NATS ----------------------------------------------------------------------------------

    async def _on_pricing(self, request: ServiceRequest) -> None:
        await self._enqueue(_Job("pricing.validate", request, anyio.current_time()))

    async def _on_order(self, request: ServiceRequest) -> None:
        await self._enqueue(_Job("order.accept", request, anyio.current_time()))

    async def _enqueue(self, job: _Job) -> None:
        """Runs in the endpoint's subscription task: hand over, never wait."""
        try:
            if self._send is None:
                raise anyio.ClosedResourceError
            self._send.send_nowait(job)
        except anyio.WouldBlock:
            await self._respond(job.request, self._error(job.op, Retryable(
                f"{self.settings.max_in_flight} requests are already being decided",
                code="sync.overloaded"), 503))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._respond(job.request, self._error(job.op, Retryable(
                "the sync lane is stopping", code="sync.unavailable"), 503))

    async def _worker(self, jobs: MemoryObjectReceiveStream[_Job]) -> None:
        async with jobs:
            async for job in jobs:
                self._in_flight += 1
                try:
                    answer = await self._decide_safely(job.op, job.request.data,
                                                       job.request.headers, job.received)
                finally:
                    self._in_flight -= 1
                await self._respond(job.request, answer)

    async def _respond(self, request: ServiceRequest, answer: _Answer) -> None:
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if isinstance(answer.reply, SyncError):
            headers[_ERROR_CODE_HEADER] = str(answer.http_status)
            headers[_ERROR_HEADER] = f"{answer.reply.code}: {answer.reply.message}"[:500]
        await request.respond(_json.encode(answer.reply), headers=headers)

    # -- HTTP ----------------------------------------------------------------------------------

    async def serve_http(self, op: SyncOperation, body: bytes,
                         headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        """Decide one HTTP request (in aiohttp's request task): ``(status, type, body)``."""
        received = anyio.current_time()
        if self._in_flight >= self.settings.max_in_flight:
            answer = self._error(op, Retryable(
                f"{self.settings.max_in_flight} requests are already being decided",
                code="sync.overloaded"), 503)
        else:
            self._in_flight += 1
            try:
                answer = await self._decide_safely(op, body, headers, received)
            finally:
                self._in_flight -= 1
        return answer.http_status, "application/json", _json.encode(answer.reply)

    async def _decide_safely(self, op: SyncOperation, body: bytes, headers: Mapping[str, str],
                             received: float) -> _Answer:
        """``decide``, with a bug answered ``sync.internal`` instead of crashing the lane (one
        bad request must not take every caller's lane through restarts)."""
        try:
            # Traced (actors.otel): a ``sync <operation>`` span continuing the request's
            # ``traceparent``; the CPQ call and the follow-up carry the span's context.
            with otel.hop(f"sync {op}", _traceparent(headers), kind="server") as span:
                answer = await self.decide(op, body, headers, received)
                span.set("http.response.status_code", answer.http_status)
                return answer
        except Exception:
            log.exception("sync lane: deciding a %s request failed", op)
            return self._error(op, GatewayError("internal error (logged)",
                                                code="sync.internal"), 500)

    # -- deciding ------------------------------------------------------------------------------

    async def decide(self, op: SyncOperation, body: bytes, headers: Mapping[str, str],
                     received: float) -> _Answer:
        """Decide one request that arrived at ``received`` (``anyio.current_time()``).

        Runs in a worker task (NATS) or the HTTP request's task; never raises a
        ``GatewayError`` (every outcome is an answer). See the module docstring.
        """
        s = self.settings
        try:
            req = _codec(op).decode(body)
            check_items(req)
            deadline_ms = resolve_deadline_ms(_header(headers, DEADLINE_HEADER),
                                              req.deadline_ms, s.default_deadline_ms)
        except ContractError as err:
            return self._error(op, err, 400)
        request_id = req.request_id or new_id()
        now = self._clock()
        approved = approved_discount_bp(req.deal, s.max_discount_bp)
        refusal = check_terms(req, s.max_discount_bp, now.date())
        if refusal is not None:
            return self._decision(op, req, request_id, "rejected", approved, refusal=refusal)
        if self._calls >= s.max_pending or self._tg is None:
            return self._error(op, Retryable(f"{self._calls} CPQ calls are already running",
                                             code="sync.overloaded"), 503, request_id)
        call = _Call(op, req, request_id, approved, now,
                     ambient_traceparent.get() or _traceparent(headers))
        self._tg.start_soon(self._run_call, call)
        deadline_s = deadline_ms / 1000.0
        margin = min(0.02, deadline_s / 5)  # left for encoding and sending the reply
        with anyio.move_on_after(max(0.0, deadline_s - margin
                                     - (anyio.current_time() - received))):
            await call.done.wait()
        if call.done.is_set():
            return self._final(call)
        call.detached = True  # no await since the check: the call publishes the follow-up
        self.counts[op]["pending"] += 1
        return self._decision(
            op, req, request_id, "accepted_pending_validation", approved,
            message=f"CPQ did not answer within {deadline_ms} ms; the final decision follows "
                    f"on {self.subjects.sync_decided(op)}",
            follow_up=self.subjects.sync_decided(op), count=False)

    def _final(self, call: _Call) -> _Answer:
        if call.error is not None:
            if call.error.code == "sync.internal":
                return self._error(call.op, call.error, 500, call.request_id)
            if call.error.code == "sync.cpq_bad_response":  # CPQ's API drifted: not for retry
                return self._error(call.op, Permanent(
                    f"CPQ: {call.error.message}", code="sync.cpq_bad_response"), 502,
                    call.request_id)
            return self._error(call.op, Retryable(
                f"CPQ: [{call.error.code}] {call.error.message}", code="sync.cpq_unavailable"),
                503, call.request_id)
        refusal = call.refusal
        if refusal is None and isinstance(call.req, OrderRequest) and call.pricing is not None:
            refusal = check_order(call.req, call.pricing)
        return self._decision(call.op, call.req, call.request_id,
                              "rejected" if refusal is not None else "accepted",
                              call.approved_bp, refusal=refusal, pricing=call.pricing)

    def _decision(self, op: SyncOperation, req: PricingRequest | OrderRequest, request_id: str,
                  status: str, approved: int, *, refusal: Refusal | None = None,
                  pricing: Pricing | None = None, message: str = "",
                  follow_up: str | None = None, count: bool = True) -> _Answer:
        fields: dict[str, Any] = dict(
            request_id=request_id, status=status,
            code=refusal.code if refusal else "",
            message=refusal.message if refusal else message,
            path=refusal.path if refusal else None,
            requested_discount_bp=req.discount_bp, approved_discount_bp=approved,
            pricing=pricing, decided_at=self._clock(), follow_up_subject=follow_up)
        if count:
            self.counts[op][status] += 1
        if isinstance(req, OrderRequest):
            return _Answer(OrderDecision(order_id=req.order_id, **fields),
                           202 if follow_up else 200)
        return _Answer(PricingDecision(**fields), 202 if follow_up else 200)

    def _error(self, op: SyncOperation, err: GatewayError, status: int,
               request_id: str | None = None) -> _Answer:
        self.counts[op]["errors"] += 1
        self.errors[err.code] = self.errors.get(err.code, 0) + 1
        return _Answer(SyncError(code=err.code, message=err.message[:2000],
                                 path=getattr(err, "path", "$"),
                                 retryable=isinstance(err, Retryable), request_id=request_id),
                       status)

    # -- CPQ and follow-ups --------------------------------------------------------------------

    async def _price(self, call: _Call) -> None:
        """One CPQ call; records its outcome on ``call``. Never raises a ``GatewayError``."""
        call.pricing = call.refusal = call.error = None
        headers = {"traceparent": call.traceparent} if call.traceparent else None
        try:
            resp = await self.cpq.post(
                "/cpq/v1/price", _price_requests.encode(to_price_request(call.req)),
                headers=headers)
            call.pricing = pricing_from_quote(_quotes.decode(resp.body), call.req)
        except PlatformRejected as err:
            call.refusal = cpq_refusal(err.status, err.body)
        except ContractError as err:
            call.error = GatewayError(f"unreadable answer: {err.message}",
                                      code="sync.cpq_bad_response")
        except GatewayError as err:
            call.error = err

    async def _run_call(self, call: _Call) -> None:
        """A CPQ call, as a task of the actor's group; if its caller stopped waiting
        (``detached``), finish it and publish the follow-up."""
        self._calls += 1
        try:
            try:
                await self._price(call)
            except Exception as exc:  # a bug: decide anyway (validation_failed), keep the lane
                log.exception("sync lane: CPQ call for %s failed", call.request_id)
                call.error = GatewayError(f"internal error: {exc!r}"[:300], code="sync.internal")
            call.done.set()
            if not call.detached:
                return
            for pause in _RETRY_PAUSES_S:
                if not isinstance(call.error, Retryable) or self.stop_requested:
                    break
                await anyio.sleep(pause)
                await self._price(call)
            await self._follow_up(call)
        finally:
            self._calls -= 1

    async def _follow_up(self, call: _Call) -> None:
        if call.error is not None:
            call.refusal = Refusal("sync.validation_failed",
                                   f"could not validate with CPQ: [{call.error.code}] "
                                   f"{call.error.message}", "$")
            call.error = None
        answer = self._final(call)
        assert isinstance(answer.reply, (PricingDecision, OrderDecision))
        event_id = derive_id("sync", call.op, call.request_id, "decided")
        event = SyncDecided(event_id=event_id, request_id=call.request_id, operation=call.op,
                            received_at=call.received_at, decision=answer.reply,
                            traceparent=call.traceparent)
        headers = {"Content-Type": "application/json"}
        if call.traceparent:
            headers["traceparent"] = call.traceparent
        out = OutMsg(subject=self.subjects.sync_decided(call.op), data=_json.encode(event),
                     msg_id=event_id, headers=headers)
        last: GatewayError | None = None
        for pause in (*_PUBLISH_PAUSES_S, None):
            try:
                await self.bus.publish(out)
                self.follow_ups["published"] += 1
                return
            except GatewayError as err:
                last = err
                if pause is None or not isinstance(err, Retryable):
                    break
                await anyio.sleep(pause)
        assert last is not None
        self.follow_ups["failed"] += 1
        log.error("follow-up of %s %s lost after retries: [%s] %s (the caller may resend the "
                  "request with the same request_id)", call.op, call.request_id, last.code,
                  last.message)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name; NATS headers keep the sender's spelling, so also case-insensitively."""
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _traceparent(headers: Mapping[str, str]) -> str | None:
    value = _header(headers, "traceparent")
    return value if value and len(value) <= 128 and value.isascii() else None


PostRoute = Callable[[bytes, Mapping[str, str]], Awaitable[tuple[int, str, bytes]]]


class SyncDoor:
    """The HTTP entrance to the lane, outliving the lane's restarts: the webhook listener
    holds the door's routes, and whichever ``SyncLane`` is running is attached to it. While
    none is (starting, restarting, stopping), requests get 503 ``sync.unavailable``."""

    def __init__(self) -> None:
        self._lane: SyncLane | None = None

    def attach(self, lane: SyncLane) -> None:
        self._lane = lane

    def detach(self, lane: SyncLane) -> None:
        if self._lane is lane:
            self._lane = None

    def routes(self) -> dict[str, PostRoute]:
        """``{path: route}`` for ``WebhookIngress(extra_post_routes=...)``."""
        return {path: self._route(op) for path, op in HTTP_ROUTES.items()}

    def _route(self, op: SyncOperation) -> PostRoute:
        async def route(body: bytes, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
            lane = self._lane
            if lane is None:
                err = SyncError(code="sync.unavailable", retryable=True,
                                message="the sync lane is not running (starting or stopping)")
                return 503, "application/json", _json.encode(err)
            return await lane.serve_http(op, body, headers)
        return route
