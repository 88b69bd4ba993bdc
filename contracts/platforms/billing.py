"""The billing platform's webhook API (shaped like Stripe's events).

``POST`` to the subscriber's URL with header ``Billing-Signature: t=…,v1=…`` and body::

    {"id": "evt_…", "type": "invoice.finalized", "created": 1764230400, "livemode": false,
     "data": {"object": {"id": "in_…", "object": "invoice", "currency": "usd", ...}}}

Amounts are integer minor units, currencies lower-case, times unix seconds, as Stripe sends them.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._ids import OptionalPathId, PathId

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
    customer: str = ""  # the invoice's customer (Stripe sends it; older sims did not)


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
    # the invoice's customer (older sims did not send it); goes into the attribution's path
    customer: OptionalPathId = ""


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


class CreditNoteEventList(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/events?type=credit_note.created``: the credit note events
    delivered (2xx), in delivery order; paged like ``BillingEventList``."""

    data: list[CreditNoteEvent]
    has_more: bool
    next_cursor: str
    object: str = "list"


class PaymentEventList(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/events?type=invoice.paid``: the payment events delivered
    (2xx), in delivery order; paged like ``BillingEventList``."""

    data: list[PaymentEvent]
    has_more: bool
    next_cursor: str
    object: str = "list"


__all__ += ["CreditNoteEventList", "PaymentEventList"]


# -- Subscriptions (created by the gateway's deal saga; flow 1) -------------------------------
#
# ``POST /billing/v1/subscriptions`` (header ``Idempotency-Key``) with ``SubscriptionIn`` →
# ``BillingSubscription`` (201 created; 200 with ``Idempotent-Replayed: true`` for the same key
# and body; 422 ``idempotency.key_reused`` for the same key with another body).
# ``GET /billing/v1/subscriptions/{id}``; ``POST /billing/v1/subscriptions/{id}/cancel``
# (idempotent: cancelling a cancelled subscription answers it unchanged). Webhooks
# ``customer.subscription.created|updated|deleted`` carry the subscription and its ``version``.

__all__ += ["BillingSubscription", "SubscriptionEvent", "SubscriptionEventData", "SubscriptionIn",
            "SubscriptionItemIn", "SubscriptionItemRecord", "SubscriptionPhase"]


class SubscriptionItemIn(msgspec.Struct, frozen=True):
    """``quantity`` units of ``product`` at the net ``unit_amount`` per billing interval."""

    product: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    unit_amount: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


class SubscriptionIn(msgspec.Struct, frozen=True):
    """Body of ``POST /billing/v1/subscriptions``: ``start_date`` is ``YYYY-MM-DD``; the
    subscription runs ``term_months`` from it. ``metadata`` is free text the platform keeps
    (the gateway puts the deal id in ``deal_id``)."""

    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
    items: Annotated[list[SubscriptionItemIn], msgspec.Meta(min_length=1, max_length=200)]
    start_date: date
    term_months: Annotated[int, msgspec.Meta(ge=1, le=120)]
    interval: Literal["month", "year"] = "month"
    metadata: dict[str, str] = {}


class SubscriptionItemRecord(msgspec.Struct, frozen=True):
    id: str
    product: str
    quantity: int
    unit_amount: Amount
    amount: Amount


class SubscriptionPhase(msgspec.Struct, frozen=True):
    """A stretch of the subscription with one item set, ``start_date``..``end_date``
    (inclusive; whole calendar months). Like Stripe's subscription schedule phases."""

    start_date: date
    end_date: date
    items: list[SubscriptionItemRecord]


class BillingSubscription(msgspec.Struct, frozen=True):
    """A subscription as billing keeps it. ``version`` goes up on every change (1 at
    creation); ``status`` ``canceled`` after a cancellation (``canceled_at`` unix seconds).
    ``amount`` is the sum of the current items' amounts per interval. ``phases`` restate the
    whole subscription, every version (flow 5): an amendment splits the last phase at its
    ``effective_date``, a renewal appends a phase, a cancellation cuts the phases at its
    ``effective_date``; ``change`` names the change that made this version (``create``,
    ``amend``, ``renew``, ``cancel``) and ``proration`` what it adds to (or takes off) the
    remaining term, in minor units."""

    id: PathId  # goes into /billing/v1/subscriptions/{id}/cancel
    customer: str
    currency: str
    items: list[SubscriptionItemRecord]
    amount: Amount
    start_date: date
    end_date: date
    term_months: int
    interval: str
    created: int
    status: Literal["active", "canceled"] = "active"
    version: int = 1
    canceled_at: int | None = None
    metadata: dict[str, str] = {}
    object: str = "subscription"
    phases: list[SubscriptionPhase] = []
    change: str = "create"
    effective_date: date | None = None
    proration: int = 0


class SubscriptionEventData(msgspec.Struct, frozen=True):
    object: BillingSubscription


class SubscriptionEvent(msgspec.Struct, frozen=True):
    """``customer.subscription.created|updated|deleted`` (same envelope and signature as
    invoices)."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    type: str
    created: int
    data: SubscriptionEventData
    livemode: bool = False
    object: str = "event"


# -- customers (GET /billing/v1/customers, /billing/v1/customers/{id}) -------------------------


class BillingCustomer(msgspec.Struct, frozen=True):
    """A customer of the billing platform (Stripe's shape, trimmed). ``currency`` is the
    customer's preferred currency, lower-case; ``country`` ISO 3166-1 alpha-2; ``created``
    unix seconds. An invoice's ``customer`` names one of these."""

    id: str
    name: str
    email: str
    country: str
    currency: str
    created: int
    object: str = "customer"


class BillingCustomerList(msgspec.Struct, frozen=True):
    """Body of ``GET /billing/v1/customers?starting_after=&limit=``: customers by id."""

    data: list[BillingCustomer]
    has_more: bool
    object: str = "list"


__all__ += ["BillingCustomer", "BillingCustomerList"]
