"""The reconciler's read of a Stripe account: what billing issued, from Stripe's events.

Used when ``billing.dialect = "stripe"``: Stripe's ``GET /v1/events`` (through
``actors.platforms.billing.stripe.StripeReader``) instead of the simulator's own event list,
mapped with the same functions the webhook ingress uses, so the reconciler compares the ERP
with exactly what the gateway would have posted.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec

from contracts import ContractError, CreditMemoIssued
from contracts.platforms.stripe import (
    StripeCreditNote,
    StripeInvoice,
    StripeInvoiceData,
    StripeInvoiceEvent,
)

from ..platforms.billing.stripe import (
    StripeReader,
    credit_memo_from_note,
    inbound_voided,
    invoice_from_stripe,
)
from .books import GlDoc
from .matching import BillingDoc
from .revenue import RevenueDoc
from .runner import BillingRead

__all__ = ["READ_TYPES", "read_billing_stripe"]

log = logging.getLogger("erpgw.reconcile.stripe")


def _month(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


READ_TYPES = ("invoice.finalized", "invoice.voided", "invoice.paid", "credit_note.created")


async def read_billing_stripe(reader: StripeReader, period: str | None) -> BillingRead:
    """What the reconciler compares with the ERP, read from Stripe's ``GET /v1/events``
    (``READ_TYPES``; Stripe keeps 30 days of events): each finalized invoice at its total
    (revenue: its net revenue and line count; GL: net revenue and tax), each void and credit
    note as the credit memo the gateway posts (on the GL as the invoice entry reversed), each
    payment at ``amount_paid``; only documents of ``period`` (``YYYY-MM`` of their creation)
    when given. A document the gateway would refuse (its mapping raises) is skipped and logged.
    Raises what ``StripeReader.events`` raises."""
    docs: dict[str, BillingDoc] = {}
    revenue: list[RevenueDoc] = []
    gl: list[GlDoc] = []
    invoice_ids: set[str] = set()
    for head in await reader.events(types=READ_TYPES):
        try:
            doc, rev, parts = _read_one(head.type, head.data.object, head.created)
        except (ContractError, msgspec.ValidationError) as exc:
            log.warning("reconciliation skips Stripe event %s (%s): %s", head.id, head.type, exc)
            continue
        if rev is not None:
            invoice_ids.add(rev.key)
        if period and _month(doc.issued_at) != period:
            continue
        docs[doc.key] = doc
        if rev is not None:
            revenue.append(rev)
        gl.append(parts)
    return BillingRead(list(docs.values()), revenue, gl, invoice_ids)


def _read_one(event_type: str, obj: dict[str, Any], created: int
              ) -> tuple[BillingDoc, RevenueDoc | None, GlDoc]:
    if event_type == "credit_note.created":
        memo = credit_memo_from_note(msgspec.convert(obj, StripeCreditNote))
        return _memo_docs(memo)
    inv = msgspec.convert(obj, StripeInvoice)
    if event_type == "invoice.paid":
        at = float((inv.status_transitions.paid_at if inv.status_transitions else None)
                   or created)
        key = "py_" + inv.id.removeprefix("in_")
        return (BillingDoc(key, inv.currency.upper(), inv.amount_paid, at),
                None, GlDoc(key, "payment", _month(at), inv.currency.upper(), inv.amount_paid))
    if event_type == "invoice.voided":
        evt = StripeInvoiceEvent(id="evt_read", created=created, type=event_type,
                                 data=StripeInvoiceData(object=inv))
        memo = inbound_voided(evt).payload
        return _memo_docs(memo)
    canonical = invoice_from_stripe(inv)
    at = canonical.issued_at.timestamp()
    return (BillingDoc(canonical.invoice_id, canonical.currency, canonical.total, at),
            RevenueDoc(canonical.invoice_id, canonical.currency, canonical.net_revenue,
                       len(canonical.lines), at,
                       ((canonical.net_revenue, len(canonical.lines)),)),
            GlDoc(canonical.invoice_id, "invoice", _month(at), canonical.currency,
                  canonical.total, canonical.net_revenue, canonical.tax))


def _memo_docs(memo: CreditMemoIssued) -> tuple[BillingDoc, None, GlDoc]:
    at = memo.issued_at.timestamp()
    # On the GL a credit memo with tax is an invoice entry reversed (receivable, deferred
    # revenue and tax, each the other way round).
    return (BillingDoc(memo.credit_memo_id, memo.currency, memo.total, at), None,
            GlDoc(memo.credit_memo_id, "invoice", _month(at), memo.currency, -memo.total,
                  -memo.subtotal, -memo.tax))
