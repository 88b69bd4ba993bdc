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
    "BillingCreditNote",
    "BillingEvent",
    "BillingEventList",
    "BillingInvoice",
    "BillingInvoiceLine",
    "BillingPayment",
    "CreditNoteEvent",
    "CreditNoteEventData",
    "CreditNoteLine",
    "CreditNoteLineList",
    "EventData",
    "LineList",
    "PaymentEvent",
    "PaymentEventData",
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


# -- Credit notes and payments (added with the simulator's billing growth) -------------------


class CreditNoteLine(msgspec.Struct, frozen=True):
    """One credited line: which invoice line it credits and how much (minor units)."""

    id: str
    invoice_line: str
    description: str
    amount: Amount


class CreditNoteLineList(msgspec.Struct, frozen=True):
    data: list[CreditNoteLine]
    object: str = "list"


class BillingCreditNote(msgspec.Struct, frozen=True):
    """A credit note against an invoice (Stripe-shaped: ``cn_…``), in the invoice's currency;
    ``amount`` is the sum of its lines."""

    id: str
    invoice: str
    currency: Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
    lines: CreditNoteLineList
    amount: Amount
    created: int
    reason: str = "order_change"
    object: str = "credit_note"


class CreditNoteEventData(msgspec.Struct, frozen=True):
    object: BillingCreditNote


class CreditNoteEvent(msgspec.Struct, frozen=True):
    """The ``credit_note.created`` webhook (same envelope and signature as invoices)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: str
    created: int
    data: CreditNoteEventData
    livemode: bool = False
    object: str = "event"


class BillingPayment(msgspec.Struct, frozen=True):
    """A payment of an invoice: ``amount`` in the invoice's currency, ``paid_at`` unix
    seconds."""

    id: str
    invoice: str
    amount: Amount
    currency: Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
    paid_at: int
    object: str = "payment"


class PaymentEventData(msgspec.Struct, frozen=True):
    object: BillingPayment


class PaymentEvent(msgspec.Struct, frozen=True):
    """The ``invoice.paid`` webhook: the payment that settled the invoice."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: str
    created: int
    data: PaymentEventData
    livemode: bool = False
    object: str = "event"
