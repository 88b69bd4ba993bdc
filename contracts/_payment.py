"""Payments (authority: the billing platform).

A payment received from a customer and how it was applied to open invoices. The applications
restate their currency (an invoice in another currency needs conversion first, which is not
this message's business), and may leave part of the payment unapplied (on account).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, Timestamp
from ._invariants import (
    require_known_currency,
    require_non_negative,
    require_same_currency,
    violation,
)
from ._money import Currency

__all__ = ["PaymentApplication", "PaymentReceived"]


class PaymentApplication(msgspec.Struct, frozen=True, kw_only=True):
    """Part of a payment settling one invoice."""

    invoice_id: Id
    amount: Amount
    currency: Currency

    def __post_init__(self) -> None:
        require_non_negative(self, "amount")


class PaymentReceived(msgspec.Struct, frozen=True, kw_only=True,
                      tag="payment.received.v1", tag_field="type"):
    """A customer paid ``amount``; ``applications`` say which invoices it settles (their sum
    never exceeds ``amount``; the rest is unapplied cash on account)."""

    payment_id: Id
    customer_id: Id
    currency: Currency
    amount: Amount
    received_at: Timestamp
    method: Literal["card", "bank_transfer", "direct_debit", "check", "other"] = "other"
    reference: Annotated[str, msgspec.Meta(max_length=200)] = ""
    applications: Annotated[tuple[PaymentApplication, ...], msgspec.Meta(max_length=1000)] = ()

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "amount")
        require_same_currency(self.currency, self.applications, "applications")
        applied = sum(a.amount for a in self.applications)
        if applied > self.amount:
            raise violation("payment.over_applied",
                            f"applications sum to {applied}, more than the payment's "
                            f"{self.amount}", "applications")
