"""The simulated CPQ platform: a product catalog with list prices, and a pricing endpoint whose
latency is configurable (real CPQ pricing is slow; the gateway's synchronous lane must cope).

``price`` is pure: list price x quantity per line, a discount in basis points rounded half up.
The catalog's prices are fixed per product and currency (minor units; JPY has none).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from contracts.platforms.cpq import (
    CatalogProduct,
    PriceBook,
    PriceBookEntry,
    PriceBookList,
    PricedLine,
    PriceQuote,
    PriceRequest,
    ProductList,
)

from ._config import SimConfig
from ._control import FaultControl
from ._http import SimHTTPError, decode_body, json_response

__all__ = ["CATALOG", "CpqService", "price", "price_books"]

_DECODER = msgspec.json.Decoder(PriceRequest)

CATALOG: tuple[CatalogProduct, ...] = tuple(
    CatalogProduct(id=pid, name=name, list_prices={"USD": usd, "EUR": usd * 92 // 100,
                                                   "GBP": usd * 79 // 100, "JPY": usd * 150 // 100})
    for pid, name, usd in (
        ("prod_platform", "Platform subscription", 49_900),
        ("prod_seats", "Additional seats", 2_500),
        ("prod_api", "API calls (per 1k)", 150),
        ("prod_storage", "Storage (per GB-month)", 25),
        ("prod_support", "Premium support", 19_900),
        ("prod_onboarding", "Onboarding services", 150_000),
        ("prod_sms", "SMS messages", 1),
        ("prod_analytics", "Analytics add-on", 9_900),
    )
)
_BY_ID = {p.id: p for p in CATALOG}


def price_books() -> list[PriceBook]:
    """One price book per currency the catalog prices in (``pb_usd``…), products in catalog
    order. Pure."""
    currencies = sorted({c for p in CATALOG for c in p.list_prices})
    return [PriceBook(id=f"pb_{cur.lower()}", currency=cur,
                      entries=[PriceBookEntry(product=p.id, unit_price=p.list_prices[cur])
                               for p in CATALOG if cur in p.list_prices])
            for cur in currencies]


def price(request: PriceRequest) -> PriceQuote:
    """The quote for ``request``. Raises ``SimHTTPError`` 422 naming the item for an unknown
    product, or the currency when the price book has none for it."""
    lines: list[PricedLine] = []
    for i, item in enumerate(request.items):
        product = _BY_ID.get(item.product)
        if product is None:
            raise SimHTTPError(422, "cpq.unknown_product", f"no product {item.product!r}",
                               path=f"$.items[{i}].product")
        unit = product.list_prices.get(request.currency)
        if unit is None:
            raise SimHTTPError(422, "cpq.no_price", f"no {request.currency} price book",
                               path="$.currency")
        lines.append(PricedLine(product=item.product, quantity=item.quantity, unit_price=unit,
                                amount=unit * item.quantity))
    subtotal = sum(line.amount for line in lines)
    discount = (subtotal * request.discount_bp + 5_000) // 10_000
    return PriceQuote(currency=request.currency, lines=lines, subtotal=subtotal,
                      discount=discount, total=subtotal - discount)


class CpqService:
    """``GET /cpq/v1/products``, ``GET /cpq/v1/price-books`` and ``POST /cpq/v1/price``
    (after ``cpq_latency_ms``)."""

    def __init__(self, config: SimConfig, control: FaultControl) -> None:
        if config.cpq_latency_ms < 0:
            raise ValueError(f"cpq_latency_ms must be >= 0, got {config.cpq_latency_ms}")
        self._latency_s = config.cpq_latency_ms / 1000.0
        self._control = control

    async def products(self, request: web.Request) -> web.Response:
        return json_response(ProductList(items=list(CATALOG)))

    async def price_books(self, request: web.Request) -> web.Response:
        """Every price book, or ``?currency=XXX``'s alone (404 ``cpq.no_price_book``)."""
        books = price_books()
        currency = request.query.get("currency")
        if currency is not None:
            books = [b for b in books if b.currency == currency]
            if not books:
                raise SimHTTPError(404, "cpq.no_price_book", f"no price book in {currency!r}",
                                   path="currency")
        return json_response(PriceBookList(items=books))

    async def quote(self, request: web.Request) -> web.Response:
        body = await decode_body(request, _DECODER)
        if self._latency_s > 0:
            await self._control.pause(self._latency_s)
        return json_response(price(body))
