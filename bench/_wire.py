"""Message shapes of the framework-free baselines, and the pure steps between them.

The baselines carry the same business content as the gateway (an issued invoice in, one
balanced journal entry out, posted in bulk to the simulated ERP; and, on the revenue lane, one
billing line per invoice line, uploaded in batches to the simulated revenue platform) without
the gateway's envelope, contracts layer or actors: the point is to measure what the broker,
nats-py and the HTTP hop cost on their own. Internal messages are msgpack (as in the gateway);
the ERP and revenue requests are the platforms' public JSON wire formats
(``contracts.platforms.erp`` and ``contracts.platforms.revenue``, which the simulator serves).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from contracts.platforms import erp as erp_wire
from contracts.platforms.billing import BillingInvoice
from contracts.platforms.revenue import RevenueBatch, RevenueBatchResult, RevenueLineIn

__all__ = [
    "BulkResponseDecoder",
    "Invoice",
    "Journal",
    "RevenueResultDecoder",
    "bulk_body",
    "invoice_from_billing",
    "journal_for",
    "revenue_body",
    "revenue_lines",
]


class Invoice(msgspec.Struct, frozen=True):
    """An issued invoice as the raw ingress publishes it."""

    id: str
    number: str
    customer: str
    currency: str  # upper-case ISO-4217
    subtotal: int
    tax: int
    total: int
    issued_at: int
    lines: list[tuple[str, str, int]]  # (line id, product, amount)
    period_start: int  # the service period, Unix seconds (as billing sends it)
    period_end: int


class Line(msgspec.Struct, frozen=True):
    account: str
    debit: int = 0
    credit: int = 0
    memo: str = ""


class Journal(msgspec.Struct, frozen=True):
    """The journal entry command the raw router publishes for the raw adapter."""

    idempotency_key: str
    external_id: str
    tran_date: str
    currency: str
    memo: str
    lines: list[Line]


def invoice_from_billing(inv: BillingInvoice) -> Invoice:
    return Invoice(id=inv.id, number=inv.number, customer=inv.customer,
                   currency=inv.currency.upper(), subtotal=inv.subtotal, tax=inv.tax,
                   total=inv.total, issued_at=inv.created,
                   lines=[(ln.id, ln.product, ln.amount) for ln in inv.lines.data],
                   period_start=inv.period_start, period_end=inv.period_end)


def _day(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def journal_for(inv: Invoice, run_id: str) -> Journal:
    """The same accounting as the gateway's router: AR debit, deferred revenue + tax credits."""
    memo = f"Invoice {inv.number} ({inv.id}) customer {inv.customer}"
    lines = [Line(account="1200", debit=inv.total, memo=memo)]
    if inv.subtotal:
        lines.append(Line(account="2400", credit=inv.subtotal, memo="deferred revenue"))
    if inv.tax:
        lines.append(Line(account="2200", credit=inv.tax, memo="tax"))
    return Journal(idempotency_key=f"{run_id}:{inv.id}:v1", external_id=inv.id,
                   tran_date=_day(inv.issued_at),
                   currency=inv.currency, memo=memo, lines=lines)


_bulk_enc = msgspec.json.Encoder()


def bulk_body(entries: list[Journal]) -> bytes:
    """The JSON body of one ``POST /erp/v1/journal-entries/bulk``."""
    return _bulk_enc.encode(erp_wire.BulkRequest(items=[
        erp_wire.JournalEntryIn(
            idempotency_key=e.idempotency_key, external_id=e.external_id,
            tran_date=e.tran_date, currency=e.currency, memo=e.memo,
            lines=[erp_wire.JournalLineIn(account=ln.account, debit=ln.debit,
                                          credit=ln.credit, memo=ln.memo) for ln in e.lines])
        for e in entries]))


BulkResponseDecoder = msgspec.json.Decoder(erp_wire.BulkResponse)


def revenue_lines(inv: Invoice, run_id: str) -> list[RevenueLineIn]:
    """The invoice's billing lines for the revenue platform, as the gateway's revenue poster
    makes them (``actors.revenue.plan.revenue_lines``): one per invoice line, its amount,
    currency upper-case, recognised over the invoice's service period (UTC dates, inclusive).
    The line id ``<run id>:<invoice id>:<line id>`` is unique per run."""
    start, end = _day(inv.period_start), _day(inv.period_end)
    currency = inv.currency.upper()
    return [RevenueLineIn(line_id=f"{run_id}:{inv.id}:{line_id}", invoice_id=inv.id,
                          product=product, currency=currency, amount=amount,
                          period_start=start, period_end=end)
            for line_id, product, amount in inv.lines]


_revenue_enc = msgspec.json.Encoder()


def revenue_body(lines: list[RevenueLineIn]) -> bytes:
    """The JSON body of one ``POST /revenue/v1/batches``."""
    return _revenue_enc.encode(RevenueBatch(lines=lines))


RevenueResultDecoder = msgspec.json.Decoder(RevenueBatchResult)
