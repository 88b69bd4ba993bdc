"""The billing platform in Stripe's dialect: webhooks in, list reads out.

Inbound (``stripe_source``): Stripe's webhooks exactly as Stripe sends them, verified with the
``Stripe-Signature`` header (``t=``, one or more ``v1=``, ``v0=`` ignored; HMAC-SHA256 over
``"{t}.{raw body}"`` with the endpoint's ``whsec_…`` secret, the scheme of
``contracts.platforms.signing``), decoded with the tolerant structs of
``contracts.platforms.stripe`` and mapped to canonical messages:

========================================  ===================================================
``invoice.finalized``                     ``invoice.issued.v3`` (version 1)
``invoice.updated``                       ``invoice.issued.v3`` as a new version when the
                                          amounts changed (``previous_attributes``); else
                                          acknowledged
``invoice.paid``                          ``payment.received.v1`` derived from the invoice
``invoice.voided``                        ``credit_memo.issued.v1`` reversing the invoice
``credit_note.created``                   ``credit_memo.issued.v1``
``credit_note.voided``                    ``invoice.issued.v3`` re-billing what it credited
``customer.subscription.created``         ``subscription.activated.v1`` (version 1)
``customer.subscription.updated``         ``subscription.amended.v1`` (items changed) or
                                          ``subscription.renewed.v1`` (``cancel_at`` moved
                                          later), versioned by ``metadata.erpgw_version``;
                                          else acknowledged
``customer.subscription.deleted``         ``subscription.cancelled.v1`` (same version rule)
``invoice.marked_uncollectible``,         acknowledged, not mapped (no canonical message)
``charge.refunded``
========================================  ===================================================

Any other ``invoice.*``, ``credit_note.*`` or ``customer.subscription.*`` type is drift (422).

Outbound (``StripeReader``): ``GET /v1/events`` and ``GET /v1/invoices`` paged with
``starting_after``/``has_more``, a bearer secret key, ``Stripe-Version``; 429 honours
``Retry-After`` (the HTTP client's retry policy).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, TypeVar

import anyio

from contracts import (
    BusinessKey,
    ContractError,
    CreditMemoIssued,
    CreditMemoLine,
    InvoiceIssuedV3,
    InvoiceLineV3,
    JsonCodec,
    LineTax,
    PaymentApplication,
    PaymentReceived,
    SubscriptionActivated,
    SubscriptionAmended,
    SubscriptionCancelled,
    SubscriptionItem,
    SubscriptionRenewed,
    contract_error,
    derive_id,
    revenue_by_line,
)
from contracts.platforms.stripe import (
    STRIPE_API_VERSION,
    StripeCreditNote,
    StripeCreditNoteEvent,
    StripeEventList,
    StripeInvoice,
    StripeInvoiceEvent,
    StripeInvoiceLine,
    StripeInvoiceList,
    StripeSubscription,
    StripeSubscriptionEvent,
    StripeTax,
)

from ...infra.http import HttpResponse, PlatformUnavailable
from ...ingress.routes import EventRoute, Inbound, WebhookSource
from ..guard import PlatformGuard

__all__ = [
    "ACKNOWLEDGED",
    "SIGNATURE_HEADER",
    "STRIPE_ROUTES",
    "VERSION_KEY",
    "StripeReader",
    "credit_memo_from_note",
    "invoice_from_stripe",
    "stripe_source",
    "subscription_version",
]

log = logging.getLogger("erpgw.platforms.billing.stripe")
SIGNATURE_HEADER = "Stripe-Signature"
# The subscription metadata key holding its version (Stripe keeps none; ``subscription_version``).
VERSION_KEY = "erpgw_version"
T = TypeVar("T")
_OBJ = "$.data.object"
# Invoice fields whose change makes an ``invoice.updated`` an amendment (a new version).
_AMOUNT_FIELDS = frozenset({"lines", "subtotal", "total", "total_excluding_tax", "total_taxes",
                            "total_discount_amounts", "discounts", "currency"})


def _at(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _mapped(build: Callable[[], T], path: str = _OBJ) -> T:
    """``build()`` with an invariant's ``ValueError`` as a ``ContractError`` under ``path``."""
    try:
        return build()
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        sub = err.path.removeprefix("$") if err.path and err.path != "$" else ""
        raise ContractError(err.message, code=err.code, path=path + sub) from exc


def _required(value: str | None, what: str, path: str) -> str:
    if not value:
        raise ContractError(f"{what} is missing", code="contract.missing_field", path=path)
    return value


def _rate_bp(tax: StripeTax) -> int | None:
    if tax.percentage is None:
        return None
    bp = round(tax.percentage * 100)
    return bp if 0 <= bp <= 10_000 else None


def _line_tax(tax: StripeTax) -> LineTax:
    jurisdiction = (tax.jurisdiction or (tax.tax_rate_details.tax_rate
                                         if tax.tax_rate_details else None) or "unknown")
    return LineTax(jurisdiction=jurisdiction[:100], kind="other", rate_bp=_rate_bp(tax),
                   inclusive=tax.tax_behavior == "inclusive",
                   taxable_amount=tax.taxable_amount or 0, amount=tax.amount)


def _unit_amount(line: StripeInvoiceLine) -> int | None:
    """The per-unit price when it is a whole number of minor units (null: tiered pricing)."""
    text = line.pricing.unit_amount_decimal if line.pricing else None
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return int(value) if value == value.to_integral_value() else None


def _product(line: StripeInvoiceLine) -> str:
    details = line.pricing.price_details if line.pricing else None
    if details is not None and (details.product or details.price):
        return str(details.product or details.price)
    return line.id


def _line(line: StripeInvoiceLine) -> InvoiceLineV3:
    parent = line.parent
    return InvoiceLineV3(
        line_id=line.id, product_id=_product(line), description=(line.description or "")[:2000],
        quantity=line.quantity if line.quantity is not None else 1,
        unit_amount=_unit_amount(line), amount=line.amount,
        discount_amount=sum(d.amount for d in line.discount_amounts or ()),
        taxes=tuple(_line_tax(t) for t in line.taxes or ()),
        proration=parent.proration if parent is not None else False,
        subscription_id=parent.subscription if parent is not None else None,
        period_start=_at(line.period.start).date() if line.period else None,
        period_end=_at(line.period.end).date() if line.period else None)


def _period(inv: StripeInvoice, issued: datetime) -> tuple[date, date]:
    """The service period: the lines' periods when they have them, else the invoice's."""
    spans = [ln.period for ln in inv.lines.data if ln.period is not None]
    if spans:
        return (_at(min(p.start for p in spans)).date(), _at(max(p.end for p in spans)).date())
    start = _at(inv.period_start).date() if inv.period_start is not None else issued.date()
    end = _at(inv.period_end).date() if inv.period_end is not None else start
    return start, max(start, end)


def invoice_from_stripe(inv: StripeInvoice, *, invoice_id: str | None = None,
                        path: str = _OBJ) -> InvoiceIssuedV3:
    """The canonical ``invoice.issued.v3`` of a Stripe invoice (pure).

    Raises ``ContractError``: ``stripe.lines_truncated`` when the object carries only the
    first page of its lines (``lines.has_more``; the rest would have to be read from the
    API, and a partial invoice is never posted), ``contract.missing_field`` for an invoice
    without a customer, ``invoice.discount_mismatch``/``invoice.tax_breakdown_mismatch``
    when the invoice's totals disagree with its lines, and any ``invoice.issued.v3``
    invariant (code and path under ``path``).
    """
    if inv.lines.has_more:
        raise ContractError(f"invoice {inv.id} carries only the first page of its lines",
                            code="stripe.lines_truncated", path=f"{path}.lines.has_more")
    customer = _required(inv.customer, f"invoice {inv.id} customer", f"{path}.customer")
    transitions = inv.status_transitions
    issued = _at((transitions.finalized_at if transitions else None) or inv.effective_at
                 or inv.created)
    lines = tuple(_mapped(lambda ln=ln: _line(ln), f"{path}.lines.data[{i}]")  # type: ignore[misc]
                  for i, ln in enumerate(inv.lines.data))
    discount = sum(ln.discount_amount for ln in lines)
    if inv.total_discount_amounts is not None:
        stated = sum(d.amount for d in inv.total_discount_amounts)
        if stated != discount:
            raise ContractError(f"total_discount_amounts sum to {stated}, the lines' discounts "
                                f"to {discount}", code="invoice.discount_mismatch",
                                path=f"{path}.total_discount_amounts")
    tax = sum(t.amount for ln in lines for t in ln.taxes)
    if inv.total_taxes is not None:
        stated = sum(t.amount for t in inv.total_taxes)
        if stated != tax:
            raise ContractError(f"total_taxes sum to {stated}, the lines' taxes to {tax}",
                                code="invoice.tax_breakdown_mismatch",
                                path=f"{path}.total_taxes")
    start, end = _period(inv, issued)
    return _mapped(lambda: InvoiceIssuedV3(
        invoice_id=invoice_id or inv.id, number=(inv.number or inv.id)[:200],
        customer_id=customer, currency=inv.currency.upper(), issued_at=issued,
        period_start=start, period_end=end, lines=lines, subtotal=inv.subtotal,
        discount=discount, tax=tax, total=inv.total, source_status=(inv.status or "")[:50]),
        path)


def _key(object_id: str, version: int) -> tuple[BusinessKey, str]:
    return (BusinessKey(source="billing", object_id=object_id, version=version),
            derive_id("billing", object_id, str(version)))


def inbound_finalized(evt: StripeInvoiceEvent) -> Inbound:
    """``invoice.finalized`` → ``invoice.issued.v3`` keyed (invoice id, 1)."""
    canonical = invoice_from_stripe(evt.data.object)
    key, msg_id = _key(canonical.invoice_id, 1)
    return Inbound(canonical, key, msg_id, canonical.issued_at)


def amends_amounts(evt: StripeInvoiceEvent) -> bool:
    """Whether an ``invoice.updated`` changed what the invoice bills (its
    ``previous_attributes`` name an amount field) of an invoice past draft."""
    prev = evt.data.previous_attributes or {}
    return evt.data.object.status not in (None, "draft") and bool(_AMOUNT_FIELDS & prev.keys())


def inbound_updated(evt: StripeInvoiceEvent) -> Inbound | None:
    """``invoice.updated``: an amendment of a finalized invoice's amounts → the whole invoice
    as a new version of ``invoice.issued.v3``, versioned by the event's ``created`` (Stripe
    keeps no version counter; later events have later times, and the ERP poster applies the
    highest version and reverses the one it replaces). Any other update (metadata, a draft):
    None (acknowledged, nothing to publish)."""
    if not amends_amounts(evt):
        return None
    canonical = invoice_from_stripe(evt.data.object)
    key, msg_id = _key(canonical.invoice_id, max(2, evt.created))
    return Inbound(canonical, key, msg_id, _at(evt.created))


def inbound_paid(evt: StripeInvoiceEvent) -> Inbound:
    """``invoice.paid`` (the invoice, now ``paid``) → ``payment.received.v1``: the amount paid,
    applied to the invoice, received at ``status_transitions.paid_at`` (else the event's time).
    The payment id is derived from the invoice (``py_`` + the invoice id without its ``in_``):
    an invoice is paid once, so resends deduplicate."""
    inv = evt.data.object
    customer = _required(inv.customer, f"invoice {inv.id} customer", f"{_OBJ}.customer")
    paid_at = (inv.status_transitions.paid_at if inv.status_transitions else None) or evt.created
    currency = inv.currency.upper()
    applied = max(0, min(inv.amount_paid, inv.total))
    payment_id = "py_" + inv.id.removeprefix("in_")
    payment = _mapped(lambda: PaymentReceived(
        payment_id=payment_id, customer_id=customer, currency=currency,
        amount=inv.amount_paid, received_at=_at(paid_at), reference=inv.number or inv.id,
        applications=(PaymentApplication(invoice_id=inv.id, amount=applied,
                                         currency=currency),) if applied else ()))
    key, msg_id = _key(payment_id, 1)
    return Inbound(payment, key, msg_id, payment.received_at)


def inbound_voided(evt: StripeInvoiceEvent) -> Inbound:
    """``invoice.voided`` → a ``credit_memo.issued.v1`` that reverses the invoice in full (id
    ``cn_void_`` + the invoice id without its ``in_``, reason ``cancellation``): one memo line
    per invoice line with the revenue that line posted, ``tax`` the invoice's tax, ``total``
    its total. Its ERP entry (debit deferred revenue and tax, credit receivable) cancels the
    invoice's entry exactly when taxes post to one account. Raises ``ContractError``
    (``credit_memo.nothing_to_reverse``) for a void of an invoice that billed nothing."""
    inv = invoice_from_stripe(evt.data.object)
    if inv.total <= 0:
        raise ContractError(f"voided invoice {inv.invoice_id} totals {inv.total}; nothing to "
                            "reverse", code="credit_memo.nothing_to_reverse",
                            path=f"{_OBJ}.total")
    memo_id = "cn_void_" + inv.invoice_id.removeprefix("in_")
    at = _at((evt.data.object.status_transitions.voided_at
              if evt.data.object.status_transitions else None) or evt.created)
    memo = _mapped(lambda: CreditMemoIssued(
        credit_memo_id=memo_id, number=f"VOID-{inv.number}"[:100], customer_id=inv.customer_id,
        invoice_id=inv.invoice_id, currency=inv.currency, issued_at=at, reason="cancellation",
        lines=tuple(CreditMemoLine(line_id=ln.line_id, product_id=ln.product_id,
                                   description=ln.description, quantity=1, unit_amount=amount,
                                   amount=amount)
                    for ln, amount in zip(inv.lines, revenue_by_line(inv), strict=True)),
        subtotal=inv.net_revenue, tax=inv.tax, total=inv.total))
    key, msg_id = _key(memo_id, 1)
    return Inbound(memo, key, msg_id, at)


_REASONS: Mapping[str | None, Any] = {
    "duplicate": "refund", "fraudulent": "refund", "order_change": "pricing_correction",
    "product_unsatisfactory": "service_credit"}


def _note_lines(note: StripeCreditNote) -> tuple[list[int], int]:
    """Each line's credited revenue (amount less discount and included tax), and the tax."""
    nets, tax = [], 0
    for ln in note.lines.data:
        taxes = ln.taxes or ()
        inclusive = sum(t.amount for t in taxes if t.tax_behavior == "inclusive")
        nets.append(ln.amount - ln.discount_amount - inclusive)
        tax += sum(t.amount for t in taxes)
    if not any(ln.taxes for ln in note.lines.data):
        tax = note.total - sum(nets)  # no breakdown: whatever the total holds beyond the lines
    return nets, tax


def credit_memo_from_note(note: StripeCreditNote) -> CreditMemoIssued:
    """The canonical ``credit_memo.issued.v1`` of a Stripe credit note (pure): one memo line
    per note line with its credited revenue (quantity 1), ``tax`` the note's taxes,
    ``total`` the note's total. Raises ``ContractError`` (path under ``$.data.object``)."""
    customer = _required(note.customer, f"credit note {note.id} customer", f"{_OBJ}.customer")
    nets, tax = _note_lines(note)
    return _mapped(lambda: CreditMemoIssued(
        credit_memo_id=note.id, number=(note.number or note.id)[:100], customer_id=customer,
        invoice_id=note.invoice, currency=note.currency.upper(), issued_at=_at(note.created),
        reason=_REASONS.get(note.reason, "other"),
        lines=tuple(CreditMemoLine(line_id=ln.id, product_id=ln.invoice_line_item or ln.id,
                                   description=(ln.description or "")[:2000], quantity=1,
                                   unit_amount=net, amount=net)
                    for ln, net in zip(note.lines.data, nets, strict=True)),
        subtotal=sum(nets), tax=tax, total=note.total))


def inbound_credit_note(evt: StripeCreditNoteEvent) -> Inbound:
    """``credit_note.created`` → ``credit_memo.issued.v1`` keyed by the note id."""
    memo = credit_memo_from_note(evt.data.object)
    key, msg_id = _key(memo.credit_memo_id, 1)
    return Inbound(memo, key, msg_id, memo.issued_at)


def inbound_credit_note_voided(evt: StripeCreditNoteEvent) -> Inbound:
    """``credit_note.voided`` → ``invoice.issued.v3`` ``<note id>-void`` that bills again what
    the note credited (its lines and tax), so the memo's ERP entry is cancelled by an entry of
    the same amounts the other way round."""
    note = evt.data.object
    memo = credit_memo_from_note(note)
    at = _at(note.voided_at or evt.created)
    invoice_id = f"{note.id}-void"
    lines = tuple(InvoiceLineV3(line_id=ln.line_id, product_id=ln.product_id,
                                description=ln.description, amount=ln.amount)
                  for ln in memo.lines)
    if memo.tax:
        last = lines[-1]
        lines = (*lines[:-1], InvoiceLineV3(
            line_id=last.line_id, product_id=last.product_id, description=last.description,
            amount=last.amount, taxes=(LineTax(jurisdiction="credit_note", taxable_amount=0,
                                               amount=memo.tax),)))
    canonical = _mapped(lambda: InvoiceIssuedV3(
        invoice_id=invoice_id, number=f"VOID-{memo.number}"[:200],
        customer_id=memo.customer_id, currency=memo.currency, issued_at=at,
        period_start=at.date(), period_end=at.date(), lines=lines, subtotal=memo.subtotal,
        tax=memo.tax, total=memo.total, source_status="void"))
    key, msg_id = _key(invoice_id, 1)
    return Inbound(canonical, key, msg_id, at)


def _sub_items(sub: StripeSubscription) -> tuple[SubscriptionItem, ...]:
    items = sub.items.data if sub.items else []
    return tuple(SubscriptionItem(
        item_id=it.id, product_id=(it.price.product if it.price and it.price.product
                                   else it.id),
        price_id=it.price.id if it.price else it.id, quantity=it.quantity or 0,
        unit_amount=(it.price.unit_amount or 0) if it.price else 0) for it in items)


def _sub_currency(sub: StripeSubscription) -> str:
    return _required(sub.currency, f"subscription {sub.id} currency",
                     f"{_OBJ}.currency").upper()


def _sub_period(sub: StripeSubscription, created: int) -> tuple[date, date]:
    items = sub.items.data if sub.items else []
    starts = [i.current_period_start for i in items if i.current_period_start]
    ends = [i.current_period_end for i in items if i.current_period_end]
    start = _at(min(starts) if starts else created).date()
    stop = sub.cancel_at or (max(ends) if ends else None)
    end = _exclusive_end(stop) if stop is not None else start  # both end at that instant
    return start, max(start, end)


def subscription_version(sub: StripeSubscription) -> int:
    """The subscription's version: ``metadata["erpgw_version"]``, a whole number from 2 (1 is
    the creation). Stripe keeps no version counter, and flow 5 applies a subscription's changes
    strictly one after the other (``actors.commercial.lifecycle.decide``): it must see that a
    predecessor is missing to wait for it. An event's ``created`` orders events but has gaps
    and one-second resolution, so it cannot say whether one is missing; whoever changes a
    subscription writes the next number into its metadata in the same update. Raises
    ``ContractError`` ``stripe.subscription_version`` (missing, not a number, below 2)."""
    path = f"{_OBJ}.metadata.{VERSION_KEY}"
    raw = (sub.metadata or {}).get(VERSION_KEY)
    if raw is None:
        raise ContractError(f"subscription {sub.id} carries no metadata {VERSION_KEY}: a change "
                            "cannot be ordered without it", code="stripe.subscription_version",
                            path=path)
    if not raw.isascii() or not raw.isdigit() or len(raw) > 15 or int(raw) < 2:
        raise ContractError(f"subscription {sub.id} metadata {VERSION_KEY} {raw[:40]!r} is not "
                            "a whole number from 2", code="stripe.subscription_version",
                            path=path)
    return int(raw)


def _day(value: int) -> date:
    """The UTC date of ``value``; a time after midnight counts from its day."""
    return _at(value).date()


def _exclusive_end(value: int) -> date:
    """The last day served before the moment ``value`` (Stripe's ``cancel_at``: the
    subscription ends at that instant, so a term ending 2027-01-31 has ``cancel_at``
    2027-02-01T00:00Z)."""
    return _at(value - 1).date()


def _amendment_start(sub: StripeSubscription, created: int) -> date:
    """When the new item set takes effect: its items' current period start (Stripe restarts an
    item's period when it is added), else the event's date."""
    items = sub.items.data if sub.items else []
    starts = [i.current_period_start for i in items if i.current_period_start]
    return _day(min(starts) if starts else created)


def inbound_subscription(evt: StripeSubscriptionEvent) -> Inbound | None:
    """``customer.subscription.created|updated|deleted`` → a canonical subscription message,
    keyed (subscription id, version): 1 for the creation, ``subscription_version`` (the
    subscription's ``metadata["erpgw_version"]``) for later changes.

    * ``created`` → ``subscription.activated.v1`` (items, the term from the items' current
      period to ``cancel_at``);
    * ``updated`` whose ``previous_attributes`` name ``items`` → ``subscription.amended.v1``:
      the item set from the items' ``current_period_start``;
    * ``updated`` whose ``previous_attributes`` move ``cancel_at`` later →
      ``subscription.renewed.v1``: a term from the previous ``cancel_at`` to the new one
      (exclusive), the same items;
    * any other ``updated`` (a period rolling over, a status, metadata): None, acknowledged;
    * ``deleted`` → ``subscription.cancelled.v1``: no service from ``ended_at``'s date.

    Raises ``ContractError`` (``stripe.subscription_version``, ``contract.missing_field``, a
    canonical invariant) with the JSON path."""
    sub, at = evt.data.object, _at(evt.created)
    prev = evt.data.previous_attributes or {}
    payload: Any
    if evt.type == "customer.subscription.created":
        customer = _required(sub.customer, f"subscription {sub.id} customer",
                             f"{_OBJ}.customer")
        start, end = _sub_period(sub, sub.created or evt.created)
        payload = _mapped(lambda: SubscriptionActivated(
            subscription_id=sub.id, customer_id=customer, currency=_sub_currency(sub),
            billing_interval="month", items=_sub_items(sub), term_start=start, term_end=end,
            activated_at=_at(sub.created or evt.created)))
        key, msg_id = _key(sub.id, 1)
        return Inbound(payload, key, msg_id, at)
    if evt.type == "customer.subscription.deleted":
        ended = sub.ended_at or sub.canceled_at or evt.created
        payload = _mapped(lambda: SubscriptionCancelled(
            subscription_id=sub.id, effective_date=_day(ended),
            cancelled_at=_at(sub.canceled_at or evt.created), reason="customer_request"))
    elif "items" in prev:
        payload = _mapped(lambda: SubscriptionAmended(
            subscription_id=sub.id, amendment_id=f"{sub.id}:{evt.id}"[:200],
            currency=_sub_currency(sub), items=_sub_items(sub),
            effective_date=_amendment_start(sub, evt.created), amended_at=at))
    elif (term := _renewed_term(prev.get("cancel_at"), sub.cancel_at)) is not None:
        payload = _mapped(lambda: SubscriptionRenewed(
            subscription_id=sub.id, currency=_sub_currency(sub), items=_sub_items(sub),
            term_start=term[0], term_end=term[1], renewed_at=at))
    else:
        return None
    key, msg_id = _key(sub.id, subscription_version(sub))
    return Inbound(payload, key, msg_id, at)


def _renewed_term(old: object, new: int | None) -> tuple[date, date] | None:
    """The new term when ``cancel_at`` moved from ``old`` (a time) to a later ``new``: from
    the day the old term ended to the last day before ``new``; else None."""
    if isinstance(old, int) and not isinstance(old, bool) and new is not None and new > old:
        return _day(old), _exclusive_end(new)
    return None


def _invoice_route(build: Callable[[StripeInvoiceEvent], Inbound]
                   ) -> EventRoute[StripeInvoiceEvent]:
    return EventRoute(JsonCodec(StripeInvoiceEvent), build)


_SUBSCRIPTION = EventRoute(JsonCodec(StripeSubscriptionEvent), inbound_subscription)

STRIPE_ROUTES: Mapping[str, EventRoute[Any]] = MappingProxyType({
    "invoice.finalized": _invoice_route(inbound_finalized),
    "invoice.updated": EventRoute(JsonCodec(StripeInvoiceEvent), inbound_updated),
    "invoice.paid": _invoice_route(inbound_paid),
    "invoice.voided": _invoice_route(inbound_voided),
    "credit_note.created": EventRoute(JsonCodec(StripeCreditNoteEvent), inbound_credit_note),
    "credit_note.voided": EventRoute(JsonCodec(StripeCreditNoteEvent),
                                     inbound_credit_note_voided),
    "customer.subscription.created": _SUBSCRIPTION,
    "customer.subscription.updated": _SUBSCRIPTION,
    "customer.subscription.deleted": _SUBSCRIPTION,
})
"""Stripe's event types the gateway maps (``invoice.updated`` may map to nothing)."""

# Known, subscribed to, deliberately not mapped: no canonical message carries them (a bad-debt
# write-off; a refund, whose accounting Stripe issues as a credit note).
ACKNOWLEDGED = frozenset({"invoice.marked_uncollectible", "charge.refunded"})

# Families whose unknown members are drift (422); ``charge.*`` and other ``customer.*``
# events are not ours (ignored).
_DRIFT = ("invoice.", "credit_note.", "customer.subscription.")


def stripe_source(path: str, secrets: Sequence[str]) -> WebhookSource:
    """The billing platform's webhooks in Stripe's dialect (``billing.dialect = "stripe"``)."""
    return WebhookSource("billing", path, tuple(secrets), STRIPE_ROUTES, _DRIFT,
                         signature_header=SIGNATURE_HEADER, acknowledged=ACKNOWLEDGED)


# -- outbound: the reconciler's and backfill's reads -----------------------------------------


@dataclass(frozen=True, slots=True)
class StripeReader:
    """Reads Stripe's list APIs through the billing platform's budgeted reader
    (``actors.platforms.Platform.reader``: its pool signs every request with ``billing.auth``,
    a bearer secret key ``sk_live_…``/``sk_test_…``, and each read takes a permit of the billing
    account's budget; a 429 slows the budget down). Every request pins ``Stripe-Version``.
    Lists are read newest first, page by page, with ``starting_after`` = the last id of the
    previous page while ``has_more``.
    """

    reader: PlatformGuard
    api_version: str = STRIPE_API_VERSION
    page_size: int = 100
    max_rate_limited: int = 8  # 429s in a row before giving up (then ``Retryable`` is raised)
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    async def _get(self, path: str) -> HttpResponse:
        """One GET; a 429 waits its ``Retry-After`` (1 s when absent) and asks again."""
        for attempt in range(self.max_rate_limited + 1):
            try:
                return await self.reader.get(path, headers={"Stripe-Version": self.api_version})
            except PlatformUnavailable as exc:
                if exc.code != "http.rate_limited" or attempt == self.max_rate_limited:
                    raise
                await self.sleep(exc.retry_after if exc.retry_after is not None else 1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pages(self, path: str, params: Mapping[str, str], parse: Callable[[bytes], Any],
                     max_pages: int) -> list[Any]:
        out: list[Any] = []
        after: str | None = None
        for _ in range(max_pages):
            query = {**params, "limit": str(self.page_size)}
            if after is not None:
                query["starting_after"] = after
            qs = "&".join(f"{k}={v}" for k, v in sorted(query.items()))
            page = parse((await self._get(f"{path}?{qs}")).body)
            out.extend(page.data)
            if not page.has_more or not page.data:
                break
            after = page.data[-1].id
        return out

    async def events(self, *, types: Sequence[str] = (), created_gte: int | None = None,
                     max_pages: int = 1000) -> list[Any]:
        """``GET /v1/events`` (``types[]`` filter, ``created[gte]``), every page, newest
        first. Raises what the reader raises (``Retryable`` for an outage,
        ``Permanent`` for a refusal)."""
        params: dict[str, str] = {}
        for i, t in enumerate(types):
            params[f"types[{i}]"] = t
        if created_gte is not None:
            params["created[gte]"] = str(created_gte)
        return await self._pages("/v1/events", params, _EVENTS.decode, max_pages)

    async def invoices(self, *, status: str | None = None, created_gte: int | None = None,
                       max_pages: int = 1000) -> list[Any]:
        """``GET /v1/invoices`` (``status``, ``created[gte]``), every page, newest first."""
        params: dict[str, str] = {}
        if status is not None:
            params["status"] = status
        if created_gte is not None:
            params["created[gte]"] = str(created_gte)
        return await self._pages("/v1/invoices", params, _INVOICES.decode, max_pages)


_EVENTS: JsonCodec[StripeEventList] = JsonCodec(StripeEventList)
_INVOICES: JsonCodec[StripeInvoiceList] = JsonCodec(StripeInvoiceList)


