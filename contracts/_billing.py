"""Billing-domain canonical messages (authority: the billing platform)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import msgspec

from ._money import Currency, check_currency

__all__ = ["InvoiceIssued", "InvoiceLine"]

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class InvoiceLine(msgspec.Struct, frozen=True):
    line_id: Id
    product_id: Id
    description: str
    quantity: NonNegative
    unit_amount: NonNegative
    amount: NonNegative

    def __post_init__(self) -> None:
        if self.quantity * self.unit_amount != self.amount:
            raise ValueError(
                f"invoice.line_amount_mismatch: quantity {self.quantity} x unit_amount "
                f"{self.unit_amount} != amount {self.amount}"
            )


class InvoiceIssued(msgspec.Struct, frozen=True, tag="invoice.issued.v1", tag_field="type"):
    """An invoice the billing platform finalised. Amounts are minor units of ``currency``."""

    invoice_id: Id
    number: str
    customer_id: Id
    currency: Currency
    issued_at: datetime
    period_start: date
    period_end: date
    lines: Annotated[list[InvoiceLine], msgspec.Meta(min_length=1, max_length=1000)]
    subtotal: NonNegative
    tax: NonNegative
    total: NonNegative

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if self.period_start > self.period_end:
            raise ValueError(
                f"invoice.period_reversed: period_start {self.period_start} "
                f"is after period_end {self.period_end}"
            )
        line_sum = sum(line.amount for line in self.lines)
        if line_sum != self.subtotal:
            raise ValueError(
                f"invoice.lines_total_mismatch: lines sum to {line_sum}, "
                f"subtotal is {self.subtotal}"
            )
        if self.subtotal + self.tax != self.total:
            raise ValueError(
                f"invoice.total_mismatch: subtotal {self.subtotal} + tax {self.tax} "
                f"!= total {self.total}"
            )
