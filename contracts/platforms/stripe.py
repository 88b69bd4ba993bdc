"""Stripe's webhook events and API objects, as Stripe sends them (a tolerant reader).

Only the fields the gateway uses are declared; every other field Stripe sends is ignored, so a
new Stripe field never breaks decoding. A declared field with the wrong type does (the decoder
names its JSON path). Most of Stripe's fields are nullable, so most declared fields are
optional here too. Amounts are integer minor units of the object's ``currency`` (lower case):
cents for USD, yen for JPY (zero-decimal), fils for BHD and KWD (three decimals). Times are unix
seconds.

Shapes (API version ``2025-03-31.basil`` and later, when invoice lines gained ``pricing`` and
``parent``):

* event: ``id`` (``evt_…``), ``object`` ``"event"``, ``api_version``, ``created``,
  ``livemode``, ``type``, ``data.object`` (the object the event is about),
  ``data.previous_attributes`` (for ``*.updated``: the changed fields' old values),
  ``request`` (``id``, ``idempotency_key``; null for automatic events);
* invoice: ``lines.data[]`` of invoice line items, ``discounts``, ``total_discount_amounts``,
  ``total_taxes``, ``subtotal`` (the lines' amounts before discounts, without exclusive tax),
  ``total_excluding_tax``, ``total``, ``amount_due``/``amount_paid``/``amount_remaining``,
  ``status`` (``draft``, ``open``, ``paid``, ``uncollectible``, ``void``), ``period_start``,
  ``period_end``, ``status_transitions`` (``finalized_at``, ``paid_at``, ``voided_at``, …);
* invoice line item: ``amount`` (before discounts, without exclusive tax; negative for a
  proration credit), ``quantity``, ``pricing.price_details`` (``price``, ``product``),
  ``pricing.unit_amount_decimal``, ``parent`` (``subscription_item_details`` or
  ``invoice_item_details``, each with ``proration``), ``discount_amounts[]``
  (``amount``, ``discount``), ``taxes[]`` (``amount``, ``taxable_amount``,
  ``tax_behavior`` ``exclusive``/``inclusive``, ``tax_rate_details.tax_rate``), ``period``;
* credit note, charge (with ``refunds``) and subscription: see their structs.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ._ids import PathId

__all__ = [
    "STRIPE_API_VERSION",
    "StripeCharge",
    "StripeChargeEvent",
    "StripeCreditNote",
    "StripeCreditNoteEvent",
    "StripeCreditNoteLine",
    "StripeDiscountAmount",
    "StripeEventData",
    "StripeEventHead",
    "StripeEventList",
    "StripeInvoice",
    "StripeInvoiceData",
    "StripeInvoiceEvent",
    "StripeInvoiceLine",
    "StripeInvoiceList",
    "StripeLineParent",
    "StripeLinePricing",
    "StripeList",
    "StripePeriod",
    "StripePriceDetails",
    "StripeRefund",
    "StripeRequest",
    "StripeStatusTransitions",
    "StripeSubscription",
    "StripeSubscriptionEvent",
    "StripeSubscriptionItem",
    "StripeTax",
    "StripeTaxRateDetails",
]

# The API version the gateway's reads pin (``Stripe-Version``) and the simulator stamps on its
# events: the first one whose invoice lines carry ``pricing`` and ``parent``.
STRIPE_API_VERSION = "2025-03-31.basil"

Lower3 = Annotated[str, msgspec.Meta(pattern="^[a-z]{3}$")]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class _Base(msgspec.Struct, frozen=True, kw_only=True):
    """Every Stripe struct: frozen, keyword-only, unknown fields ignored (msgspec's default)."""


class StripeRequest(_Base, frozen=True, kw_only=True):
    """What caused an event: the API request's id and idempotency key (null: automatic)."""

    id: str | None = None
    idempotency_key: str | None = None


class StripePeriod(_Base, frozen=True, kw_only=True):
    start: int
    end: int


class StripePriceDetails(_Base, frozen=True, kw_only=True):
    price: str | None = None
    product: str | None = None


class StripeLinePricing(_Base, frozen=True, kw_only=True):
    """How a line was priced: ``type`` ``price_details`` names the price and its product;
    ``unit_amount_decimal`` is a decimal string (null for tiered prices)."""

    type: str = "price_details"
    price_details: StripePriceDetails | None = None
    unit_amount_decimal: str | None = None


class StripeProrationDetails(_Base, frozen=True, kw_only=True):
    credited_items: dict[str, Any] | None = None


class StripeSubscriptionItemDetails(_Base, frozen=True, kw_only=True):
    subscription: str | None = None
    subscription_item: str | None = None
    invoice_item: str | None = None
    proration: bool = False


class StripeInvoiceItemDetails(_Base, frozen=True, kw_only=True):
    invoice_item: str | None = None
    subscription: str | None = None
    proration: bool = False


class StripeLineParent(_Base, frozen=True, kw_only=True):
    """Where a line came from: ``type`` ``subscription_item_details`` or
    ``invoice_item_details`` (the matching member is set)."""

    type: str
    subscription_item_details: StripeSubscriptionItemDetails | None = None
    invoice_item_details: StripeInvoiceItemDetails | None = None

    @property
    def proration(self) -> bool:
        sub, item = self.subscription_item_details, self.invoice_item_details
        return bool((sub is not None and sub.proration) or (item is not None and item.proration))

    @property
    def subscription(self) -> str | None:
        sub, item = self.subscription_item_details, self.invoice_item_details
        if sub is not None and sub.subscription:
            return sub.subscription
        return item.subscription if item is not None else None


class StripeDiscountAmount(_Base, frozen=True, kw_only=True):
    amount: int
    discount: str | None = None


class StripeTaxRateDetails(_Base, frozen=True, kw_only=True):
    tax_rate: str | None = None


class StripeTax(_Base, frozen=True, kw_only=True):
    """One tax on a line (or, in ``total_taxes``, on the invoice). ``tax_behavior`` says
    whether ``amount`` is added to the line (``exclusive``) or already in it (``inclusive``).
    ``jurisdiction``/``percentage`` are not on Stripe's tax object (they live on the tax rate);
    the gateway reads them when present (the simulator expands them) and otherwise keys the
    tax by its tax rate id."""

    amount: int
    tax_behavior: str = "exclusive"
    taxable_amount: int | None = None
    taxability_reason: str | None = None
    type: str = "tax_rate_details"
    tax_rate_details: StripeTaxRateDetails | None = None
    jurisdiction: str | None = None
    percentage: float | None = None


class StripeInvoiceLine(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "line_item"
    amount: int
    currency: Lower3
    description: str | None = None
    quantity: int | None = None
    period: StripePeriod | None = None
    pricing: StripeLinePricing | None = None
    parent: StripeLineParent | None = None
    discount_amounts: list[StripeDiscountAmount] | None = None
    discountable: bool = True
    taxes: list[StripeTax] | None = None
    subtotal: int | None = None


class StripeList(_Base, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool = False
    url: str | None = None


class StripeLineList(StripeList, frozen=True, kw_only=True):
    data: list[StripeInvoiceLine]


class StripeStatusTransitions(_Base, frozen=True, kw_only=True):
    finalized_at: int | None = None
    paid_at: int | None = None
    voided_at: int | None = None
    marked_uncollectible_at: int | None = None


class StripeInvoice(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "invoice"
    number: str | None = None
    customer: PathId | None = None  # a payment's customer goes into the attribution's path
    currency: Lower3
    status: str | None = None
    created: int
    period_start: int | None = None
    period_end: int | None = None
    effective_at: int | None = None
    lines: StripeLineList
    discounts: list[Any] | None = None
    subtotal: int
    subtotal_excluding_tax: int | None = None
    total_discount_amounts: list[StripeDiscountAmount] | None = None
    total_taxes: list[StripeTax] | None = None
    total_excluding_tax: int | None = None
    total: int
    amount_due: int = 0
    amount_paid: int = 0
    amount_remaining: int = 0
    status_transitions: StripeStatusTransitions | None = None
    livemode: bool = False
    metadata: dict[str, str] | None = None


class StripeCreditNoteLine(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "credit_note_line_item"
    type: str = "invoice_line_item"
    amount: int
    description: str | None = None
    quantity: int | None = None
    invoice_line_item: str | None = None
    discount_amount: int = 0
    taxes: list[StripeTax] | None = None


class StripeCreditNoteLineList(StripeList, frozen=True, kw_only=True):
    data: list[StripeCreditNoteLine]


class StripeCreditNote(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "credit_note"
    number: str | None = None
    customer: str | None = None
    invoice: str | None = None
    currency: Lower3
    created: int
    status: str = "issued"
    reason: str | None = None
    lines: StripeCreditNoteLineList
    subtotal: int
    total: int
    total_excluding_tax: int | None = None
    discount_amount: int = 0
    amount: int = 0
    voided_at: int | None = None


class StripeRefund(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "refund"
    amount: int
    currency: Lower3
    charge: str | None = None
    created: int = 0
    status: str | None = None


class StripeRefundList(StripeList, frozen=True, kw_only=True):
    data: list[StripeRefund] = []


class StripeCharge(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "charge"
    amount: int
    amount_refunded: int = 0
    currency: Lower3
    customer: str | None = None
    created: int = 0
    refunded: bool = False
    refunds: StripeRefundList | None = None


class StripePrice(_Base, frozen=True, kw_only=True):
    id: str
    product: str | None = None
    unit_amount: int | None = None
    currency: Lower3 | None = None


class StripeSubscriptionItem(_Base, frozen=True, kw_only=True):
    id: str
    quantity: int | None = None
    price: StripePrice | None = None
    current_period_start: int | None = None
    current_period_end: int | None = None


class StripeSubscriptionItemList(StripeList, frozen=True, kw_only=True):
    data: list[StripeSubscriptionItem] = []


class StripeSubscription(_Base, frozen=True, kw_only=True):
    id: str
    object: str = "subscription"
    customer: str | None = None
    currency: Lower3 | None = None
    status: str | None = None
    created: int = 0
    items: StripeSubscriptionItemList | None = None
    cancel_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    metadata: dict[str, str] | None = None


class StripeEventData(_Base, frozen=True, kw_only=True):
    """``data`` of an event whose object is not decoded yet."""

    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class _EventBase(_Base, frozen=True, kw_only=True):
    id: EventId
    object: str = "event"
    api_version: str | None = None
    created: int
    livemode: bool = False
    type: str
    pending_webhooks: int = 0
    request: StripeRequest | None = None


class StripeEventHead(_EventBase, frozen=True, kw_only=True):
    """Any event, its object left undecoded (the list API's items, the route lookup)."""

    data: StripeEventData


class StripeInvoiceData(_Base, frozen=True, kw_only=True):
    object: StripeInvoice
    previous_attributes: dict[str, Any] | None = None


class StripeInvoiceEvent(_EventBase, frozen=True, kw_only=True):
    """``invoice.*`` events: ``data.object`` is the invoice."""

    data: StripeInvoiceData


class _CreditNoteData(_Base, frozen=True, kw_only=True):
    object: StripeCreditNote
    previous_attributes: dict[str, Any] | None = None


class StripeCreditNoteEvent(_EventBase, frozen=True, kw_only=True):
    """``credit_note.*`` events."""

    data: _CreditNoteData


class _ChargeData(_Base, frozen=True, kw_only=True):
    object: StripeCharge
    previous_attributes: dict[str, Any] | None = None


class StripeChargeEvent(_EventBase, frozen=True, kw_only=True):
    """``charge.*`` events (``charge.refunded``)."""

    data: _ChargeData


class _SubscriptionData(_Base, frozen=True, kw_only=True):
    object: StripeSubscription
    previous_attributes: dict[str, Any] | None = None


class StripeSubscriptionEvent(_EventBase, frozen=True, kw_only=True):
    """``customer.subscription.*`` events."""

    data: _SubscriptionData


class StripeEventList(StripeList, frozen=True, kw_only=True):
    """Body of ``GET /v1/events``: newest first; page on with ``starting_after`` = the last
    item's id while ``has_more``."""

    data: list[StripeEventHead]


class StripeInvoiceList(StripeList, frozen=True, kw_only=True):
    """Body of ``GET /v1/invoices``: newest first, paged like ``StripeEventList``."""

    data: list[StripeInvoice]
