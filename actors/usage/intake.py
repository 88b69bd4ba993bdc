"""Usage intake: ``POST /usage/v1/records`` on the gateway port → ``usage.recorded.v1``.

Theory of operation, per request (aiohttp's handler task; the webhook listener serves the
route through ``UsageDoor``, which outlives restarts of the intake actor):

1. the bearer token must be one of ``api_tokens`` (constant-time compare): 401
   ``usage.unauthorized`` otherwise, before the body is parsed;
2. the body (already bounded by the listener's ``max_body_bytes``, 413) is a JSON array of
   ``UsageRecordIn`` of at most ``max_records`` (413 ``usage.too_many_records``); a record that
   breaks the schema is refused with 400 naming it (``$[3].quantity``), one that breaks a
   canonical invariant (window end before its start) with 422; nothing of a refused request is
   published;
3. each record becomes an ``Envelope{UsageRecorded}`` published on the usage lane with
   ``Nats-Msg-Id = derive_id("usage", record id)`` through the intake's own group commit (one
   atomic batch per gathering, on the usage stream only), so a record sent twice — in one
   request, or again later within the stream's duplicate window — is stored once;
4. 200 ``{"records", "accepted", "duplicate"}`` only after every PubAck; a broker failure
   answers 503 (resending the whole request is safe: same ids).

Sharing the event loop: at most ``max_in_flight`` requests are decoded and published at once
(the others wait their turn: bounded admission), and building a request's messages yields to
the loop every ``_YIELD_EVERY`` records, so a usage flood never holds the loop long enough to
delay a pricing answer of the synchronous lane.

Publishing ``usage.recorded.v1`` envelopes straight onto ``<prefix>.usage.evt.usage.recorded.v1``
works too: the aggregator reads the stream, not this door.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import msgspec
from anyio.abc import TaskStatus

from contracts import (
    BusinessKey,
    ContractError,
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    Retryable,
    Subjects,
    UsageRecorded,
    contract_error,
    derive_id,
    make_envelope,
)
from contracts.platforms.usage import UsageRecordIn

from ..infra.bus import NatsBus, OutMsg
from ..ingress import GroupCommit, PostRoute
from ..runtime import Actor

__all__ = ["RECORDS_PATH", "UsageDoor", "UsageIntake", "usage_message"]

log = logging.getLogger("erpgw.usage.intake")
RECORDS_PATH = "/usage/v1/records"
_records: JsonCodec[list[UsageRecordIn]] = JsonCodec(list[UsageRecordIn])
_bus_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_json = msgspec.json.Encoder()
_JSON = "application/json"
# Canonical field → the wire's name for it, so a 422 names what the sender wrote.
_WIRE = {"window_start": "windowStart", "window_end": "windowEnd", "quantity": "quantity"}
_YIELD_EVERY = 16


def _answer(status: int, err: GatewayError) -> tuple[int, str, bytes]:
    return status, _JSON, _json.encode(err.to_dict())


def usage_message(rec: UsageRecordIn, index: int, *, subjects: Subjects, tenant: str,
                  now: datetime) -> OutMsg:
    """The bus message of one wire record. Raises ``ContractError`` (path ``$[index].field``)
    when it breaks a canonical invariant."""
    try:
        payload = UsageRecorded(
            usage_id=rec.id, subscription_id=rec.subscription, customer_id=rec.customer,
            product_id=rec.product, meter=rec.meter, quantity=rec.quantity,
            window_start=rec.window_start, window_end=rec.window_end, recorded_at=now)
    except ValueError as exc:
        err = contract_error(exc)
        field = err.path.rsplit(".", 1)[-1]
        raise ContractError(err.message, code=err.code,
                            path=f"$[{index}].{_WIRE.get(field, field)}") from exc
    env = make_envelope(payload, source="billing",
                        key=BusinessKey(source="billing", object_id=rec.id),
                        tenant=tenant, occurred_at=rec.window_end)
    return OutMsg(subject=subjects.for_type(env.type), data=_bus_codec.encode(env),
                  msg_id=derive_id("usage", rec.id),
                  headers={"traceparent": env.traceparent or ""})


class UsageIntake(Actor):
    """Serves ``RECORDS_PATH`` (through ``door``) and runs the usage lane's group commit."""

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, door: UsageDoor,
                 api_tokens: Sequence[str], max_records: int = 1000,
                 tenant: str = "default", max_in_flight: int = 1) -> None:
        super().__init__(name)
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self.bus = bus
        self.subjects = subjects
        self.door = door
        self._tokens = tuple(t.encode("utf-8", "surrogateescape") for t in api_tokens if t)
        self.max_records = max_records
        self.tenant = tenant
        self._group = GroupCommit(bus)
        self._admission = anyio.Semaphore(max_in_flight)
        self.requests = 0
        self.accepted = 0
        self.duplicate = 0
        self.rejected: dict[str, int] = {}

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        # Header values arrive as text with undecodable bytes escaped: encode them back as
        # they came, so any token (even one that is not UTF-8) is compared, never a 500.
        given = token.strip().encode("utf-8", "surrogateescape")
        # Compare with every token (no early exit), so timing says nothing about which.
        return sum(hmac.compare_digest(given, t) for t in self._tokens) > 0

    def _reject(self, status: int, err: GatewayError) -> tuple[int, str, bytes]:
        self.rejected[err.code] = self.rejected.get(err.code, 0) + 1
        log.info("usage records rejected %d %s: %s", status, err.code, err.message)
        return _answer(status, err)

    async def serve_http(self, body: bytes,
                         headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        """One ``POST /usage/v1/records`` (see the module docstring). Raises nothing."""
        self.requests += 1
        if not self._authorized(headers):
            return self._reject(401, ContractError(
                "a valid bearer token is required (Authorization: Bearer <token>)",
                code="usage.unauthorized", path="Authorization"))
        async with self._admission:
            return await self._admit(body)

    async def _admit(self, body: bytes) -> tuple[int, str, bytes]:
        try:
            records = _records.decode(body)
        except ContractError as err:
            return self._reject(400, err)
        if len(records) > self.max_records:
            return self._reject(413, ContractError(
                f"at most {self.max_records} records per request, got {len(records)}",
                code="usage.too_many_records", path="$"))
        now = datetime.now(UTC)
        msgs: dict[str, OutMsg] = {}
        try:
            for i, rec in enumerate(records):
                if rec.id not in msgs:  # the same record twice in one request: once
                    msgs[rec.id] = usage_message(rec, i, subjects=self.subjects,
                                                 tenant=self.tenant, now=now)
                if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await anyio.lowlevel.checkpoint()  # let a pricing request in
        except ContractError as err:
            return self._reject(422, err)
        outcomes = await self._group.publish_many(list(msgs.values()))
        failed = [o for o in outcomes if isinstance(o, Exception)]
        if failed:  # the sender resends the whole request: the stored ones dedupe
            first = failed[0]
            gerr = first if isinstance(first, GatewayError) else GatewayError(str(first))
            return self._reject(503 if isinstance(gerr, Retryable) else 500, gerr)
        dup = sum(1 for o in outcomes if o is True)
        self.accepted += len(outcomes) - dup
        self.duplicate += dup + len(records) - len(msgs)
        return 200, _JSON, _json.encode({"status": "accepted", "records": len(records),
                                         "accepted": len(outcomes) - dup,
                                         "duplicate": dup + len(records) - len(msgs)})

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._group.run)
            self.door.attach(self)
            try:
                task_status.started()
                await self.wait_stop_requested()
            finally:
                self.door.detach(self)
                tg.cancel_scope.cancel()

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "requests": self.requests, "accepted": self.accepted,
                "duplicate": self.duplicate, "rejected": dict(self.rejected),
                "commits": self._group.commits}


class UsageDoor:
    """The HTTP entrance of the usage intake, outliving its restarts (like ``SyncDoor``):
    while no intake is attached, requests get 503 ``usage.unavailable``."""

    def __init__(self) -> None:
        self._intake: UsageIntake | None = None

    def attach(self, intake: UsageIntake) -> None:
        self._intake = intake

    def detach(self, intake: UsageIntake) -> None:
        if self._intake is intake:
            self._intake = None

    def routes(self) -> dict[str, PostRoute]:
        """``{path: route}`` for ``WebhookIngress(extra_post_routes=...)``."""
        async def route(body: bytes, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
            intake = self._intake
            if intake is None:
                return _answer(503, Retryable("the usage intake is not running (starting or "
                                              "stopping)", code="usage.unavailable"))
            return await intake.serve_http(body, headers)
        return {RECORDS_PATH: route}
