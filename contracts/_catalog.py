"""The catalogue: products and their list prices (authority: CPQ / master data).

A price is a list price per unit in one currency within one price book, with terms that say
how it is charged: ``recurring`` (per interval), ``usage`` (per block of metered units) or
``one_time``. The terms are a nested tagged union on ``model``; the enclosing message carries
the version, so the terms are not versioned themselves. Discounts are never part of a list
price: an approved discount travels on the deal approval and on each order line.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, Interval, RateBp, Text
from ._invariants import require_known_currency, require_non_negative, require_ordered
from ._money import Currency

__all__ = [
    "OneTimeTerms",
    "PriceTerms",
    "PriceUpserted",
    "ProductUpserted",
    "RecurringTerms",
    "UsageTerms",
]


class ProductUpserted(msgspec.Struct, frozen=True, kw_only=True,
                      tag="product.upserted.v1", tag_field="type"):
    """A product was created or changed in the catalogue (the whole record)."""

    product_id: Id
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    description: Text = ""
    revenue_treatment: Annotated[
        Literal["ratable", "point_in_time", "usage"],
        msgspec.Meta(description="how the revenue platform recognises what this product earns"),
    ] = "ratable"
    active: bool = True


class RecurringTerms(msgspec.Struct, frozen=True, kw_only=True, tag="recurring",
                     tag_field="model"):
    """Charged every ``interval_count`` ``interval``s, in advance."""

    interval: Interval
    interval_count: Annotated[int, msgspec.Meta(ge=1, le=36)] = 1


class UsageTerms(msgspec.Struct, frozen=True, kw_only=True, tag="usage", tag_field="model"):
    """Charged in arrears per started block of ``block_size`` metered ``unit``s."""

    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=50,
                                      description='what is metered, e.g. "api_call", "gb_hour"')]
    block_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 1


class OneTimeTerms(msgspec.Struct, frozen=True, kw_only=True, tag="one_time",
                   tag_field="model"):
    """Charged once (set-up fees, services, hardware)."""


PriceTerms = RecurringTerms | UsageTerms | OneTimeTerms


class PriceUpserted(msgspec.Struct, frozen=True, kw_only=True,
                    tag="price.upserted.v1", tag_field="type"):
    """A list price in a price book was created or changed.

    ``unit_amount`` is the list price per unit (per interval, per usage block, or once) in
    minor units of ``currency``; ``max_discount_bp`` is the largest discount a sales rep or
    partner may give without a deal approval.
    """

    price_id: Id
    product_id: Id
    price_book_id: Id
    currency: Currency
    unit_amount: Amount
    terms: PriceTerms
    effective_from: date
    effective_to: date | None = None
    max_discount_bp: RateBp = 0

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "unit_amount")
        require_ordered(self.effective_from, self.effective_to, "effective_from",
                        "effective_to")
