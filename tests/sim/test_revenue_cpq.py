"""The revenue platform (batch upload: all-or-nothing, no duplicate detection) and CPQ
(catalog and pricing with configurable latency)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from contracts.platforms.cpq import PriceItem, PriceRequest
from contracts.platforms.revenue import RevenueLineIn
from sim import SimConfig, parse_scenario
from sim._cpq import CATALOG, price
from sim._http import SimHTTPError
from sim._revenue import RevenueBook, validate_line

from .conftest import HOST, Http, free_port, running_sim

BATCHES = "/revenue/v1/batches"


def line(n: int, **kw: Any) -> dict[str, Any]:
    doc = {"lineId": f"il_{n:06d}_1", "invoiceId": f"in_{n:06d}", "product": "prod_seats",
           "currency": "USD", "amount": 1000 + n, "periodStart": "2025-11-01",
           "periodEnd": "2025-11-30"}
    return doc | kw


def struct(n: int, **kw: Any) -> RevenueLineIn:
    d = line(n, **kw)
    return RevenueLineIn(line_id=d["lineId"], invoice_id=d["invoiceId"], product=d["product"],
                         currency=d["currency"], amount=d["amount"],
                         period_start=d["periodStart"], period_end=d["periodEnd"])


# -- revenue -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [({"lineId": ""}, "INVALID"), ({"currency": "usd"}, "INVALID"), ({"amount": -1}, "INVALID"),
     ({"periodEnd": "2025-11-31"}, "INVALID"), ({"periodStart": "2025-12-01"}, "PERIOD_REVERSED")],
)
def test_invalid_lines_name_their_problem(change: dict[str, Any], code: str) -> None:
    error = validate_line(3, struct(1, **change))
    assert error is not None
    assert (error.index, error.code) == (3, code)
    assert validate_line(0, struct(1)) is None


def test_a_batch_is_all_or_nothing_and_duplicates_are_recorded() -> None:
    book = RevenueBook()
    bad = book.upload([struct(1), struct(2, amount=-5), struct(3, currency="X")])
    assert (bad.status, bad.batch_id, [e.index for e in bad.errors]) == ("rejected", None, [1, 2])
    assert book.lines == []
    ok = book.upload([struct(1), struct(2)])
    again = book.upload([struct(1)])
    assert (ok.batch_id, again.batch_id) == ("RB-1", "RB-2")
    assert len(book.lines) == 3


async def test_revenue_uploads_over_http_and_the_audit_counts_duplicates(sim: Http) -> None:
    first = await sim.post(BATCHES, json={"lines": [line(1), line(2), line(3)]})
    assert first.status == 201
    assert first.body == {"batchId": "RB-1", "status": "accepted", "lines": 3, "errors": []}
    second = await sim.post(BATCHES, json={"lines": [line(2), line(3)]})  # a re-upload
    assert (second.status, second.body["batchId"]) == (201, "RB-2")
    rejected = await sim.post(BATCHES, json={"lines": [line(4), line(5, amount=-1)]})
    assert rejected.status == 422
    assert rejected.body["status"] == "rejected"
    assert [(e["index"], e["code"]) for e in rejected.body["errors"]] == [(1, "INVALID")]
    assert (await sim.get("/revenue/v1/batches/RB-2")).body["lines"] == 2
    assert (await sim.get("/revenue/v1/batches/RB-3")).status == 404
    revenue = (await sim.get("/sim/v1/audit")).body["revenue"]
    assert revenue == {"batches": 2, "lines": 5, "duplicate_lines": 2,
                       "unexpected_lines": 5,  # nothing was issued in this test
                       "amount": {"USD": 1001 + 1002 + 1003 + 1002 + 1003},
                       "rejected_lines": 0}
    await sim.post("/sim/v1/reset")
    assert (await sim.get("/sim/v1/audit")).body["revenue"]["lines"] == 0
    again = await sim.post(BATCHES, json={"lines": [line(1)]})
    assert again.body["batchId"] == "RB-3"  # batch ids are never reused


async def test_revenue_batch_limit_answers_413() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x", revenue_max_batch=2)
    async with running_sim(config) as http:
        reply = await http.post(BATCHES, json={"lines": [line(1), line(2), line(3)]})
        assert reply.status == 413
        assert reply.body["path"] == "$.lines"
        assert (await http.get("/sim/v1/audit")).body["revenue"]["lines"] == 0


# -- CPQ -----------------------------------------------------------------------------------------


def test_price_multiplies_list_prices_and_rounds_the_discount_half_up() -> None:
    quote = price(PriceRequest(currency="USD", discount_bp=1250, items=[
        PriceItem(product="prod_seats", quantity=3), PriceItem(product="prod_api", quantity=7)]))
    assert [(x.unit_price, x.amount) for x in quote.lines] == [(2500, 7500), (150, 1050)]
    assert quote.subtotal == 8550
    assert quote.discount == 1069  # 8550 x 12.5 % = 1068.75
    assert quote.total == 8550 - 1069
    with pytest.raises(SimHTTPError) as info:
        price(PriceRequest(currency="USD", items=[PriceItem(product="nope", quantity=1)]))
    assert (info.value.status, info.value.path) == (422, "$.items[0].product")


# (currency, [(product, quantity)], discount bp) -> (subtotal, discount, total), worked out by
# hand from the catalog's list prices in minor units: half a minor unit rounds up.
CPQ_TABLE = [
    ("USD", [("prod_storage", 1)], 200, (25, 1, 24)),  # 0.5 ¢ off: the half cent rounds up
    ("USD", [("prod_storage", 1)], 199, (25, 0, 25)),  # 0.4975 ¢ off: nothing
    ("USD", [("prod_sms", 3)], 5_000, (3, 2, 1)),  # 1.5 ¢ off
    ("JPY", [("prod_storage", 1)], 5_000, (37, 19, 18)),  # ¥18.5 off (no minor unit)
    ("JPY", [("prod_storage", 1)], 2_000, (37, 7, 30)),  # ¥7.4 off
    ("GBP", [("prod_api", 1)], 1_250, (118, 15, 103)),  # 14.75 p off
    ("USD", [("prod_platform", 2), ("prod_seats", 10)], 300, (124_800, 3_744, 121_056)),
]


@pytest.mark.parametrize(("currency", "items", "bp", "expected"), CPQ_TABLE)
def test_price_discounts_as_the_table_says(currency: str, items: list[tuple[str, int]],
                                           bp: int, expected: tuple[int, int, int]) -> None:
    quote = price(PriceRequest(currency=currency, discount_bp=bp, items=[
        PriceItem(product=p, quantity=q) for p, q in items]))
    assert (quote.subtotal, quote.discount, quote.total) == expected


def test_a_currency_without_a_price_book_is_refused_naming_it() -> None:
    """BHD (three decimals) has no price book: a 422 naming the currency, never a guess."""
    with pytest.raises(SimHTTPError) as info:
        price(PriceRequest(currency="BHD", items=[PriceItem(product="prod_api", quantity=1)]))
    assert (info.value.status, info.value.code, info.value.path) == (
        422, "cpq.no_price", "$.currency")


async def test_cpq_over_http(sim: Http) -> None:
    products = (await sim.get("/cpq/v1/products")).body["items"]
    assert [p["id"] for p in products] == [p.id for p in CATALOG]
    assert products[0]["listPrices"]["USD"] == CATALOG[0].list_prices["USD"]
    quote = await sim.post("/cpq/v1/price", json={
        "currency": "EUR", "items": [{"product": "prod_platform", "quantity": 2}]})
    assert quote.status == 200
    assert quote.body["total"] == 2 * CATALOG[0].list_prices["EUR"]
    no_book = await sim.post("/cpq/v1/price", json={
        "currency": "CHF", "items": [{"product": "prod_platform", "quantity": 1}]})
    assert (no_book.status, no_book.body["code"], no_book.body["path"]) == (
        422, "cpq.no_price", "$.currency")
    bad = await sim.post("/cpq/v1/price", json={"currency": "USD", "items": []})
    assert (bad.status, bad.body["path"]) == (400, "$.items")


async def test_cpq_pricing_latency_is_configurable_and_scheduled() -> None:
    scenario = parse_scenario("""
        [[http]]
        service = "cpq"
        endpoint = "price"
        at_s = 0
        for_s = 60
        latency = { dist = "fixed", ms = 100 }
    """)
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x", cpq_latency_ms=150,
                       scenario=scenario)
    body = {"currency": "USD", "items": [{"product": "prod_seats", "quantity": 1}]}
    async with running_sim(config) as http:
        t0 = anyio.current_time()
        assert (await http.post("/cpq/v1/price", json=body)).status == 200
        assert anyio.current_time() - t0 >= 0.25  # 150 ms base + 100 ms from the window
        await http.get("/cpq/v1/products")  # not in the window: no latency injected (below)
        injected = (await http.get("/sim/v1/audit")).body["faults"]["http"]
        assert injected == {"cpq/price": {"latency": 1}}


async def test_price_books_hold_the_catalog_prices_per_currency(sim: Http) -> None:
    books = (await sim.get("/cpq/v1/price-books")).body["items"]
    assert [b["currency"] for b in books] == ["EUR", "GBP", "JPY", "USD"]
    eur = next(b for b in books if b["currency"] == "EUR")
    assert {e["product"]: e["unitPrice"] for e in eur["entries"]} == {
        p.id: p.list_prices["EUR"] for p in CATALOG}
    one = await sim.get("/cpq/v1/price-books?currency=USD")
    assert [b["id"] for b in one.body["items"]] == ["pb_usd"]
    none = await sim.get("/cpq/v1/price-books?currency=CHF")
    assert (none.status, none.body["code"]) == (404, "cpq.no_price_book")
