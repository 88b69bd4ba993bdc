"""The CPQ platform's catalog and pricing API (shaped like a CPQ/price-book service).

``GET /cpq/v1/products`` lists the catalog with list prices per currency (minor units);
``GET /cpq/v1/price-books`` the same prices as one price book per currency
(``?currency=EUR`` for one).
``POST /cpq/v1/price`` prices a quote: ``{"currency": "USD", "items": [{"product": …,
"quantity": …}], "discountBp": 0}`` → ``PriceQuote``. Real CPQ pricing is slow; the simulator's
latency is configurable.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["CatalogProduct", "PriceBook", "PriceBookEntry", "PriceBookList", "PriceItem",
           "PriceQuote", "PriceRequest", "PricedLine", "ProductList"]


class CatalogProduct(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    name: str
    list_prices: dict[str, int]


class ProductList(msgspec.Struct, frozen=True):
    items: list[CatalogProduct]


class PriceItem(msgspec.Struct, frozen=True):
    product: str
    quantity: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class PriceRequest(msgspec.Struct, frozen=True, rename="camel"):
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    items: Annotated[list[PriceItem], msgspec.Meta(min_length=1, max_length=500)]
    discount_bp: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0


class PricedLine(msgspec.Struct, frozen=True, rename="camel"):
    product: str
    quantity: int
    unit_price: int
    amount: int


class PriceQuote(msgspec.Struct, frozen=True, rename="camel"):
    """``subtotal`` = Σ line amounts; ``discount`` rounded half up; ``total`` = subtotal -
    discount."""

    currency: str
    lines: list[PricedLine]
    subtotal: int
    discount: int
    total: int


class PriceBookEntry(msgspec.Struct, frozen=True, rename="camel"):
    product: str
    unit_price: int  # minor units of the book's currency


class PriceBook(msgspec.Struct, frozen=True):
    """The list prices of every product sold in ``currency``."""

    id: str
    currency: str
    entries: list[PriceBookEntry]


class PriceBookList(msgspec.Struct, frozen=True):
    items: list[PriceBook]
