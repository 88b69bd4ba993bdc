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
    CreditMemoIssued,
    CreditMemoLine,
    InvoiceIssued,
    InvoiceLine,
    JsonCodec,
    PaymentApplication,
    PaymentReceived,
    contract_error,
    derive_id,
)
from contracts.platforms.billing import (
    BillingEvent,
    CreditNoteEvent,
    PaymentEvent,
    SubscriptionEvent,
)

from .subscriptions import subscription_change

__all__ = [
    "BILLING_ROUTES",
    "EventHead",
    "EventRoute",
    "Inbound",
    "inbound_credit_note",
    "inbound_invoice",
    "inbound_invoice_update",
    "inbound_payment",
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
    map: Callable[[T], Inbound | None]  # None: nothing to publish (answered ``ignored``)

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


def _mapped(build: Callable[[], T]) -> T:
    """``build()`` with an invariant's ``ValueError`` as a ``ContractError`` under
    ``$.data.object``."""
    try:
        return build()
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        raise ContractError(err.message, code=err.code, path="$.data.object") from exc


def inbound_credit_note(evt: CreditNoteEvent) -> Inbound:
    """``credit_note.created`` → ``credit_memo.issued.v1`` keyed by the credit note id.

    The note credits parts of invoice lines without tax: each line becomes one credit memo
    line (quantity 1, the credited amount; ``product_id`` names the credited invoice line, the
    note does not carry the product), ``tax`` 0. Raises ``ContractError`` for a note without a
    customer (``credit_memo.customer_missing``) or one breaking an invariant (a zero total).
    """
    note = evt.data.object
    if not note.customer:
        raise ContractError(f"credit note {note.id} names no customer",
                            code="credit_memo.customer_missing", path="$.data.object.customer")
    memo = _mapped(lambda: CreditMemoIssued(
        credit_memo_id=note.id, number=note.id, customer_id=note.customer,
        invoice_id=note.invoice, currency=note.currency.upper(),
        issued_at=timestamp(note.created),
        reason="pricing_correction" if note.reason == "order_change" else "other",
        lines=tuple(CreditMemoLine(line_id=ln.id, product_id=ln.invoice_line,
                                   description=ln.description[:2000], quantity=1,
                                   unit_amount=ln.amount, amount=ln.amount)
                    for ln in note.lines.data),
        subtotal=note.amount, tax=0, total=note.amount))
    key = BusinessKey(source="billing", object_id=note.id, version=1)
    return Inbound(memo, key, derive_id("billing", note.id, "1"), memo.issued_at)


def inbound_payment(evt: PaymentEvent) -> Inbound:
    """``invoice.paid`` → ``payment.received.v1`` (one application: the paid invoice) keyed by
    the payment id. Raises ``ContractError`` for a payment without a customer
    (``payment.customer_missing``) or one breaking an invariant."""
    pay = evt.data.object
    if not pay.customer:
        raise ContractError(f"payment {pay.id} names no customer",
                            code="payment.customer_missing", path="$.data.object.customer")
    currency = pay.currency.upper()
    payment = _mapped(lambda: PaymentReceived(
        payment_id=pay.id, customer_id=pay.customer, currency=currency, amount=pay.amount,
        received_at=timestamp(pay.paid_at),
        applications=(PaymentApplication(invoice_id=pay.invoice, amount=pay.amount,
                                         currency=currency),)))
    key = BusinessKey(source="billing", object_id=pay.id, version=1)
    return Inbound(payment, key, derive_id("billing", pay.id, "1"), payment.received_at)


def inbound_invoice_update(evt: BillingEvent) -> Inbound:
    """``invoice.updated`` (an amendment: the whole invoice again, ``version`` >= 2) → the same
    ``invoice.issued.v1`` as a finalized invoice, keyed by (invoice id, version): the version is
    the *invoice's* (the aggregate's ``BusinessKey.version``), not a schema version, so the
    payload stays ``invoice.issued.v1`` and every consumer of issued invoices sees it in place.
    The ERP poster orders the versions (``actors.erp.ordering``).

    Raises ``ContractError`` as ``invoice_from_event`` does, and ``invoice.update_version`` for
    a version below 2: version 1 is the finalized invoice, and the stream would silently drop a
    different body under its message id.
    """
    version = evt.data.object.version
    if version < 2:
        raise ContractError(f"invoice.updated carries version {version}; amendments start at 2",
                            code="invoice.update_version", path="$.data.object.version")
    return inbound_invoice(evt)


# The billing platform's event types the gateway subscribes to.
BILLING_ROUTES: Mapping[str, EventRoute[Any]] = MappingProxyType({
    "invoice.finalized": EventRoute(JsonCodec(BillingEvent), inbound_invoice),
    "invoice.updated": EventRoute(JsonCodec(BillingEvent), inbound_invoice_update),
    # Flow 2 credit memos and flow 3 (docs/flows.md): subject credit_memo.issued.v1 /
    # payment.received.v1 on the billing lane.
    "credit_note.created": EventRoute(JsonCodec(CreditNoteEvent), inbound_credit_note),
    "invoice.paid": EventRoute(JsonCodec(PaymentEvent), inbound_payment),
    # Flow 5 (docs/flows.md): subscription changes, on the commercial lane.
    "customer.subscription.updated": EventRoute(
        JsonCodec(SubscriptionEvent), lambda e: Inbound(*subscription_change(e))),
    "customer.subscription.deleted": EventRoute(
        JsonCodec(SubscriptionEvent), lambda e: Inbound(*subscription_change(e))),
})
