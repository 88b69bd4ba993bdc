"""Quotes turned orders (authority: CPQ).

An order is an accepted quote. Each line carries the list price it was quoted from, the
approved discount per unit and the resulting net unit price, so billing, revenue and
commissions all start from the same numbers:
``unit_amount == list_unit_amount - discount_unit_amount`` and
``amount == quantity x unit_amount``; the lines sum to ``total``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

import msgspec

from ._fields import Amount, Id, Quantity, Text, Timestamp
from ._invariants import (
    require_known_currency,
    require_lines_sum,
    require_non_negative,
    require_ordered,
    violation,
)
from ._money import Currency

__all__ = ["OrderBooked", "OrderLine", "check_priced_line"]


def check_priced_line(line: OrderLine) -> None:
    """``price.discount_exceeds_list``, ``price.net_mismatch``, ``line.amount_mismatch``."""
    if line.discount_unit_amount > line.list_unit_amount:
        raise violation(
            "price.discount_exceeds_list",
            f"discount_unit_amount {line.discount_unit_amount} exceeds list_unit_amount "
            f"{line.list_unit_amount}", "discount_unit_amount")
    if line.list_unit_amount - line.discount_unit_amount != line.unit_amount:
        raise violation(
            "price.net_mismatch",
            f"list_unit_amount {line.list_unit_amount} - discount_unit_amount "
            f"{line.discount_unit_amount} != unit_amount {line.unit_amount}", "unit_amount")
    if line.quantity * line.unit_amount != line.amount:
        raise violation(
            "line.amount_mismatch",
            f"quantity {line.quantity} x unit_amount {line.unit_amount} != amount "
            f"{line.amount}", "amount")


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    """One ordered product at one price, for an optional service period."""

    line_id: Id
    product_id: Id
    price_id: Id
    description: Text = ""
    quantity: Quantity
    list_unit_amount: Amount
    discount_unit_amount: Amount = 0
    unit_amount: Amount
    amount: Amount
    service_start: date | None = None
    service_end: date | None = None

    def __post_init__(self) -> None:
        require_non_negative(self, "quantity", "list_unit_amount", "discount_unit_amount",
                             "unit_amount", "amount")
        require_ordered(self.service_start, self.service_end, "service_start", "service_end")
        check_priced_line(self)


class OrderBooked(msgspec.Struct, frozen=True, kw_only=True,
                  tag="order.booked.v1", tag_field="type"):
    """A customer accepted a quote; the order is booked. Sold through a partner when
    ``partner_id`` is set, under a registered deal when ``deal_id`` is set."""

    order_id: Id
    quote_id: Id
    customer_id: Id
    partner_id: Id | None = None
    deal_id: Id | None = None
    currency: Currency
    booked_at: Timestamp
    lines: Annotated[tuple[OrderLine, ...], msgspec.Meta(min_length=1, max_length=1000)]
    total: Amount

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "total")
        require_lines_sum((line.amount for line in self.lines), self.total, "total")
