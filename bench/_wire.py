"""Message shapes of the framework-free baselines, and the pure steps between them.

The baselines carry the same business content as the gateway (an issued invoice in, one
balanced journal entry out, posted in bulk to the simulated ERP) without the gateway's
envelope, contracts layer or actors: the point is to measure what the broker, nats-py and the
HTTP hop cost on their own. Internal messages are msgpack (as in the gateway); the ERP request
is the ERP's public JSON wire format (``contracts.platforms.erp``, which the simulator serves).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from contracts.platforms import erp as erp_wire
from contracts.platforms.billing import BillingInvoice

__all__ = [
    "BulkResponseDecoder",
    "Invoice",
    "Journal",
    "bulk_body",
    "invoice_from_billing",
    "journal_for",
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
    lines: list[tuple[str, int]]


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
                   lines=[(ln.product, ln.amount) for ln in inv.lines.data])


def journal_for(inv: Invoice, run_id: str) -> Journal:
    """The same accounting as the gateway's router: AR debit, deferred revenue + tax credits."""
    memo = f"Invoice {inv.number} ({inv.id}) customer {inv.customer}"
    lines = [Line(account="1200", debit=inv.total, memo=memo)]
    if inv.subtotal:
        lines.append(Line(account="2400", credit=inv.subtotal, memo="deferred revenue"))
    if inv.tax:
        lines.append(Line(account="2200", credit=inv.tax, memo="tax"))
    day = datetime.fromtimestamp(inv.issued_at, UTC).date().isoformat()
    return Journal(idempotency_key=f"{run_id}:{inv.id}:v1", external_id=inv.id, tran_date=day,
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
