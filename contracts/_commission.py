"""Partner commissions and settlements (authority: the partner portal).

A commission accrues when a partner-sourced invoice is issued: ``basis_amount`` (what the
partner earns on, usually the invoice subtotal) at the partner's tier rate, rounded half away
from zero (``contracts.apply_rate_bp``), so every platform computes the same cents. A
settlement pays a partner the commissions of a period in its payout currency; each settled
commission restates its currency and must match.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from ._fields import Amount, Id, RateBp, Timestamp
from ._invariants import (
    require_known_currency,
    require_lines_sum,
    require_non_negative,
    require_ordered,
    require_same_currency,
    violation,
)
from ._money import Currency, apply_rate_bp

__all__ = ["CommissionAccrued", "PartnerSettlementIssued", "SettlementLine"]


class CommissionAccrued(msgspec.Struct, frozen=True, kw_only=True,
                        tag="partner.commission.accrued.v1", tag_field="type"):
    """A partner earned ``amount`` == ``basis_amount`` x ``rate_bp`` / 10,000 on an invoice."""

    commission_id: Id
    partner_id: Id
    invoice_id: Id
    customer_id: Id
    deal_id: Id | None = None
    currency: Currency
    basis_amount: Amount
    rate_bp: RateBp
    amount: Amount
    accrued_at: Timestamp

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "basis_amount", "amount")
        expected = apply_rate_bp(self.basis_amount, self.rate_bp)
        if self.amount != expected:
            raise violation(
                "commission.amount_mismatch",
                f"basis_amount {self.basis_amount} at {self.rate_bp} bp is {expected}, "
                f"amount is {self.amount}", "amount")


class SettlementLine(msgspec.Struct, frozen=True, kw_only=True):
    """One accrued commission paid in this settlement."""

    commission_id: Id
    amount: Amount
    currency: Currency

    def __post_init__(self) -> None:
        require_non_negative(self, "amount")


class PartnerSettlementIssued(msgspec.Struct, frozen=True, kw_only=True,
                              tag="partner.settlement.issued.v1", tag_field="type"):
    """The partner portal issued a settlement statement: ``total`` is owed to the partner for
    the commissions in ``lines`` (their sum), accrued between the period dates."""

    settlement_id: Id
    partner_id: Id
    currency: Currency
    period_start: date
    period_end: date
    issued_at: Timestamp
    lines: Annotated[tuple[SettlementLine, ...], msgspec.Meta(min_length=1, max_length=10_000)]
    total: Amount

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "total")
        require_ordered(self.period_start, self.period_end, "period_start", "period_end")
        require_same_currency(self.currency, self.lines, "lines")
        require_lines_sum((line.amount for line in self.lines), self.total, "total")
