"""The billing platform's webhook API (shaped like Stripe's events).

``POST`` to the subscriber's URL with header ``Billing-Signature: t=…,v1=…`` and body::

    {"id": "evt_…", "type": "invoice.finalized", "created": 1764230400, "livemode": false,
     "data": {"object": {"id": "in_…", "object": "invoice", "currency": "usd", ...}}}

Amounts are integer minor units, currencies lower-case, times unix seconds, as Stripe sends them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "BillingEvent",
    "BillingEventList",
    "BillingInvoice",
    "BillingInvoiceLine",
    "EventData",
    "LineList",
]

Amount = Annotated[int, msgspec.Meta(ge=0)]


class BillingInvoiceLine(msgspec.Struct, frozen=True):
    id: str
    product: str
    description: str
    quantity: Annotated[int, msgspec.Meta(ge=0)]
    unit_amount: Amount
    amount: Amount


class LineList(msgspec.Struct, frozen=True):
    data: list[BillingInvoiceLine]
    object: str = "list"


class BillingInvoice(msgspec.Struct, frozen=True):
    id: str
    number: str
    customer: str
    currency: Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
    created: int
    period_start: int
    period_end: int
    lines: LineList
    subtotal: Amount
    tax: Amount
    total: Amount
    status: str = "open"
    object: str = "invoice"
    # Incremented by the platform on every change to the invoice; the business-key version.
    version: int = 1


class EventData(msgspec.Struct, frozen=True):
    object: BillingInvoice


class BillingEvent(msgspec.Struct, frozen=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: str
    created: int
    data: EventData
    livemode: bool = False
    object: str = "event"


class BillingEventList(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/events?after=CURSOR&limit=N``: events in issue order.

    Pass ``next_cursor`` as ``after`` to read on; it is unchanged when nothing new was issued.
    ``has_more`` says whether another page is ready now. The events are the ones the webhooks
    carry, byte for byte, so a poller and a webhook receiver see the same payloads.
    """

    data: list[BillingEvent]
    has_more: bool
    next_cursor: str
    object: str = "list"
