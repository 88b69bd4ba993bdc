"""Credit memos (authority: the billing platform).

A credit memo gives money back against a customer's account, usually against one invoice.
Positive amounts are credit to the customer. It is the one document whose lines may be
negative (a line can claw part of the credit back, e.g. a downgrade credited net of a new
charge), so its quantities and amounts are signed; the memo as a whole must still credit
something (``credit_memo.non_positive_total``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._fields import Id, SignedAmount, SignedQuantity, Text, Timestamp
from ._invariants import require_known_currency, require_lines_sum, violation
from ._money import Currency

__all__ = ["CreditMemoIssued", "CreditMemoLine"]


class CreditMemoLine(msgspec.Struct, frozen=True, kw_only=True):
    """One credited (or, when negative, re-charged) item: ``quantity`` x ``unit_amount``."""

    line_id: Id
    product_id: Id
    description: Text = ""
    quantity: SignedQuantity
    unit_amount: SignedAmount
    amount: SignedAmount

    def __post_init__(self) -> None:
        if self.quantity * self.unit_amount != self.amount:
            raise violation(
                "line.amount_mismatch",
                f"quantity {self.quantity} x unit_amount {self.unit_amount} != amount "
                f"{self.amount}", "amount")


class CreditMemoIssued(msgspec.Struct, frozen=True, kw_only=True,
                       tag="credit_memo.issued.v1", tag_field="type"):
    """The billing platform issued a credit memo; ``invoice_id`` names the invoice it
    corrects, if any. ``subtotal`` + ``tax`` == ``total`` > 0."""

    credit_memo_id: Id
    number: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    customer_id: Id
    invoice_id: Id | None = None
    currency: Currency
    issued_at: Timestamp
    reason: Literal["refund", "service_credit", "pricing_correction", "cancellation",
                    "other"] = "other"
    lines: Annotated[tuple[CreditMemoLine, ...], msgspec.Meta(min_length=1, max_length=1000)]
    subtotal: SignedAmount
    tax: SignedAmount
    total: SignedAmount

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_lines_sum((line.amount for line in self.lines), self.subtotal, "subtotal")
        if self.subtotal + self.tax != self.total:
            raise violation("document.total_mismatch",
                            f"subtotal {self.subtotal} + tax {self.tax} != total {self.total}",
                            "total")
        if self.total <= 0:
            raise violation("credit_memo.non_positive_total",
                            f"total is {self.total}; a credit memo credits a positive amount",
                            "total")
