"""Billing platform wire shapes → canonical messages (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import ContractError, InvoiceIssued, InvoiceLine, contract_error
from contracts.platforms.billing import BillingEvent

__all__ = ["invoice_from_event"]


def _ts(value: int) -> datetime:
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
            issued_at=_ts(inv.created),
            period_start=_ts(inv.period_start).date(),
            period_end=_ts(inv.period_end).date(),
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
