"""The canonical message: an envelope around one tagged payload, and its codecs.

Internal messages travel as msgpack; anything a person or another language reads travels as
JSON. Encoders and typed decoders are built once here. Readers are tolerant of unknown fields
(a newer gateway may add fields within a version; ``unknown_fields()`` names them so drift can
be counted) and strict on types, required fields and money: a float where an amount belongs is
a ``ContractError``.

``Payload`` is the tagged union of every canonical message (the rows of
``contracts._registry.MESSAGES``); the tag (``type``) is the message type, version included.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec

from ._billing import InvoiceIssued, InvoiceIssuedV2, InvoiceIssuedV3
from ._catalog import PriceUpserted, ProductUpserted
from ._commission import CommissionAccrued, PartnerSettlementIssued
from ._credit import CreditMemoIssued
from ._deal import DealApproved, DealRegistered, DealRejected
from ._drift import unknown_fields
from ._envelope import BusinessKey, Platform
from ._errors import ContractError
from ._ids import derive_id, new_id
from ._ledger import JournalEntryPosted, PostJournalEntry
from ._order import OrderBooked
from ._partner import CustomerUpserted, PartnerTierChanged, PartnerUpserted
from ._payment import PaymentReceived
from ._revenue import RevenueScheduleUpdated
from ._subscription import (
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionRenewed,
)
from ._usage import UsageRecorded

__all__ = [
    "Envelope",
    "JsonCodec",
    "MsgpackCodec",
    "Payload",
    "ambient_traceparent",
    "contract_error",
    "make_envelope",
]

Payload = (
    InvoiceIssued
    | PostJournalEntry
    | InvoiceIssuedV2
    | InvoiceIssuedV3
    | CreditMemoIssued
    | PaymentReceived
    | JournalEntryPosted
    | CustomerUpserted
    | PartnerUpserted
    | PartnerTierChanged
    | ProductUpserted
    | PriceUpserted
    | DealRegistered
    | DealApproved
    | DealRejected
    | OrderBooked
    | SubscriptionActivated
    | SubscriptionAmended
    | SubscriptionRenewed
    | SubscriptionCancelled
    | UsageRecorded
    | RevenueScheduleUpdated
    | CommissionAccrued
    | PartnerSettlementIssued
)


class Envelope(msgspec.Struct, frozen=True):
    """Every canonical message: who says it (``source``), about what (``key``), in which
    business transaction (``correlation_id``), caused by which message (``causation_id``)."""

    id: str
    source: Platform
    tenant: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None
    key: BusinessKey
    payload: Payload
    traceparent: str | None = None

    @property
    def type(self) -> str:
        return self.payload.__struct_config__.tag  # type: ignore[return-value]


# The ``traceparent`` of the tracing span the caller is in, set by the optional OpenTelemetry
# tracing while a hop's span is current: a message made there carries that span's context.
ambient_traceparent: ContextVar[str | None] = ContextVar("erpgw_traceparent", default=None)


def make_envelope(
    payload: Payload,
    *,
    source: str,
    key: BusinessKey,
    tenant: str = "default",
    caused_by: Envelope | None = None,
    occurred_at: datetime | None = None,
    msg_id: str | None = None,
) -> Envelope:
    """Wrap ``payload``; a caused message inherits the correlation id of its cause.

    W3C trace context: a first message starts a trace whose id is its correlation id (so any
    tracing tool and ``erpgw trace`` name the transaction alike); a caused message continues
    its cause's trace with a span of its own, derived from its id (deterministic, so a
    republished message carries the same span). Made inside a traced hop
    (``ambient_traceparent`` set), it carries that hop's span instead.
    """
    mid = msg_id or new_id()
    return Envelope(
        id=mid,
        source=source,
        tenant=caused_by.tenant if caused_by else tenant,
        occurred_at=occurred_at or datetime.now(UTC),
        correlation_id=caused_by.correlation_id if caused_by else mid,
        causation_id=caused_by.id if caused_by else None,
        key=key,
        payload=payload,
        traceparent=ambient_traceparent.get() or _traceparent(
            caused_by.traceparent if caused_by else None,
            caused_by.correlation_id if caused_by else mid, mid),
    )


def _traceparent(parent: str | None, correlation_id: str, mid: str) -> str:
    trace_id = parent.split("-")[1] if parent and parent.count("-") == 3 else None
    if trace_id is None:
        trace_id = derive_id("trace", correlation_id)  # 32 hex digits, never all zero
    return f"00-{trace_id}-{derive_id('span', mid)[:16]}-01"


_CODED = re.compile(
    r"^(?P<code>[a-z_]+\.[a-z_.]+): (?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"^(?P<msg>.*) \(field `(?P<field>[^`]+)`\)$", re.S)
_WRONG_TYPE = re.compile(r"^Expected `[^`]*`, got `")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)


def contract_error(exc: Exception) -> ContractError:
    """Translate a msgspec decode/validation error, or an invariant ``ValueError`` raised while
    constructing a message, into a ``ContractError`` with code and path."""
    text = str(exc)
    m = _CODED.match(text)
    if m:
        msg, path = m["msg"], m["path"] or "$"
        f = _FIELD.match(msg)
        if f:  # an invariant names the offending field relative to the struct it checks
            msg, field = f["msg"], f["field"]
            path = path + field if field.startswith("[") else f"{path}.{field}"
        return ContractError(msg, code=m["code"], path=path)
    m = _AT.match(text)
    assert m is not None
    msg, path = m["msg"], m["path"] or "$"
    if isinstance(exc, msgspec.ValidationError):
        if msg.startswith("Object missing required field"):
            code = "contract.missing_field"
        elif _WRONG_TYPE.match(msg):
            code = "contract.invalid_type"
        elif msg.startswith(("Invalid value", "Invalid enum value")):
            code = "contract.invalid_value"
        else:
            code = "contract.constraint"
    elif isinstance(exc, msgspec.DecodeError):
        code = "contract.malformed"
    else:
        code = "contract.invalid_value"
    return ContractError(msg, code=code, path=path)


T = TypeVar("T")


class MsgpackCodec(Generic[T]):
    """Encoder plus typed decoder for the bus, built once per type."""

    def __init__(self, type_: type[T]) -> None:
        self._type = type_
        self._enc = msgspec.msgpack.Encoder()
        self._dec: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type_)

    def encode(self, obj: Any) -> bytes:
        return self._enc.encode(obj)

    def decode(self, data: bytes) -> T:
        """Raises ``ContractError`` (code and field path) when ``data`` breaks the contract."""
        try:
            return self._dec.decode(data)
        except msgspec.MsgspecError as exc:
            raise contract_error(exc) from exc

    def unknown_fields(self, data: bytes) -> list[str]:
        """JSON paths of the fields in ``data`` this reader's type does not define (drift).

        An untyped decode plus a walk: call it on a sample, not on every message. Raises
        ``ContractError`` (``contract.malformed``) when ``data`` is not msgpack at all.
        """
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.MsgspecError as exc:
            raise contract_error(exc) from exc
        return unknown_fields(raw, self._type)


class JsonCodec(Generic[T]):
    """Encoder plus typed decoder for the edges and monitoring subjects, built once per type."""

    def __init__(self, type_: type[T]) -> None:
        self._type = type_
        self._enc = msgspec.json.Encoder()
        self._dec: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)

    def encode(self, obj: Any) -> bytes:
        return self._enc.encode(obj)

    def decode(self, data: bytes | str) -> T:
        """Raises ``ContractError`` (code and field path) when ``data`` breaks the contract."""
        try:
            return self._dec.decode(data)
        except msgspec.MsgspecError as exc:
            raise contract_error(exc) from exc

    def unknown_fields(self, data: bytes | str) -> list[str]:
        """JSON paths of the fields in ``data`` this reader's type does not define (drift).

        An untyped decode plus a walk: call it on a sample, not on every message. Raises
        ``ContractError`` (``contract.malformed``) when ``data`` is not JSON at all.
        """
        try:
            raw = msgspec.json.decode(data)
        except msgspec.MsgspecError as exc:
            raise contract_error(exc) from exc
        return unknown_fields(raw, self._type)
