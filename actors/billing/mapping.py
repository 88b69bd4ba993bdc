"""Platform webhook events → canonical messages (pure).

Each event type the gateway subscribes to has an ``EventRoute``: a typed decoder for its body
and a mapping to an ``Inbound`` (the canonical payload, its business key, the deterministic
``Nats-Msg-Id`` and when it happened). The ingress looks the route up by the event's ``type``,
so adding a webhook type is one function here and one row in the source's route table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from contracts import (
    BusinessKey,
    ContractError,
    InvoiceIssued,
    InvoiceLine,
    JsonCodec,
    contract_error,
    derive_id,
)
from contracts.platforms.billing import BillingEvent

__all__ = [
    "BILLING_ROUTES",
    "EventHead",
    "EventRoute",
    "Inbound",
    "inbound_invoice",
    "invoice_from_event",
    "timestamp",
]

T = TypeVar("T")


class EventHead(msgspec.Struct, frozen=True):
    """What every platform event has: enough to pick its route (the rest is ignored here)."""

    id: str
    type: str


class Inbound(NamedTuple):
    """What one webhook event becomes: a canonical payload to publish on its type's subject."""

    payload: Any  # a canonical payload struct (a member of ``contracts.Payload``)
    key: BusinessKey
    msg_id: str  # the Nats-Msg-Id: derived from the business key, so resends dedupe
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventRoute(Generic[T]):
    """How one event type is decoded (400 when it fails) and mapped (422 when the decoded
    object breaks a canonical invariant; ``map`` raises ``ContractError``)."""

    decoder: JsonCodec[T]
    map: Callable[[T], Inbound]

    def decode(self, body: bytes) -> T:
        return self.decoder.decode(body)


def timestamp(value: int) -> datetime:
    """A platform's unix-seconds timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def invoice_from_event(evt: BillingEvent) -> InvoiceIssued:
    """The canonical ``invoice.issued.v1`` for a finalized-invoice event.

    Raises ``ContractError`` (code and path under ``$.data.object``) when the invoice breaks an
    invariant: lines not summing to the subtotal, unknown currency, reversed period, …
    """
    inv = evt.data.object
    try:
        return InvoiceIssued(
            invoice_id=inv.id,
            number=inv.number,
            customer_id=inv.customer,
            currency=inv.currency.upper(),
            issued_at=timestamp(inv.created),
            period_start=timestamp(inv.period_start).date(),
            period_end=timestamp(inv.period_end).date(),
            lines=[
                InvoiceLine(line_id=ln.id, product_id=ln.product, description=ln.description,
                            quantity=ln.quantity, unit_amount=ln.unit_amount, amount=ln.amount)
                for ln in inv.lines.data
            ],
            subtotal=inv.subtotal,
            tax=inv.tax,
            total=inv.total,
        )
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        raise ContractError(err.message, code=err.code, path="$.data.object") from exc


def inbound_invoice(evt: BillingEvent) -> Inbound:
    """``invoice.finalized`` → ``invoice.issued.v1`` keyed by (invoice id, version)."""
    invoice = invoice_from_event(evt)
    inv = evt.data.object
    key = BusinessKey(source="billing", object_id=inv.id, version=inv.version)
    return Inbound(invoice, key, derive_id("billing", inv.id, str(inv.version)),
                   invoice.issued_at)


# The billing platform's event types the gateway subscribes to.
BILLING_ROUTES: Mapping[str, EventRoute[Any]] = MappingProxyType({
    "invoice.finalized": EventRoute(JsonCodec(BillingEvent), inbound_invoice),
})
