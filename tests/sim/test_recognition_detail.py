"""The revenue platform's recognition per contract and product (what `erpgw close run` posts):
it sums to the per-currency totals exactly, follows the latest version, and refuses a bad
period naming it."""

from __future__ import annotations

from datetime import date

import msgspec

from contracts.platforms.revenue import ContractLineIn, RevenueContractIn
from sim._revenue_contracts import ContractBook

from .conftest import Http


def contract(version: int, seat: int, currency: str = "USD") -> RevenueContractIn:
    return RevenueContractIn(version=version, customer="cus_1", currency=currency, lines=[
        ContractLineIn(line_id="l1", product="prod_seat", amount=seat,
                       period_start=date(2026, 1, 15), months=3),
        ContractLineIn(line_id="l2", product="prod_support", amount=1_001,
                       period_start=date(2026, 2, 1), months=1),
        ContractLineIn(line_id="l3", product="prod_seat", amount=500,
                       period_start=date(2026, 2, 1), months=2)])


def test_detail_sums_to_the_totals_per_currency_and_follows_the_latest_version() -> None:
    book = ContractBook()
    book.put("c1", contract(1, 9_000), 1.0)
    book.put("c2", contract(1, 3_333, "EUR"), 1.0)
    for period in ("2026-01", "2026-02", "2026-03", "2026-04", "2026-05"):
        detail = book.recognition_detail(period)
        sums: dict[str, int] = {}
        for it in detail.items:
            sums[it.currency] = sums.get(it.currency, 0) + it.amount
        assert sums == book.recognition(period).amount, period
    feb = book.recognition_detail("2026-02").items
    assert [(i.contract, i.product) for i in feb] == [
        ("c1", "prod_seat"), ("c1", "prod_support"), ("c2", "prod_seat"), ("c2", "prod_support")]
    assert feb[1].amount == 1_001  # a one-month line falls in its month whole
    book.put("c1", contract(2, 12_000), 2.0)
    assert {(i.contract, i.version) for i in book.recognition_detail("2026-02").items} == {
        ("c1", 2), ("c2", 1)}
    assert book.recognition_detail("2025-12").items == []


async def test_detail_over_http(sim: Http) -> None:
    put = await sim.put("/revenue/v1/contracts/c1", json=msgspec.to_builtins(contract(1, 900)))
    assert put.status == 201
    got = await sim.get("/revenue/v1/recognition/contracts?period=2026-02")
    assert got.status == 200 and got.body["period"] == "2026-02"
    assert sum(i["amount"] for i in got.body["items"]) == (
        await sim.get("/revenue/v1/recognition?period=2026-02")).body["amount"]["USD"]
    bad = await sim.get("/revenue/v1/recognition/contracts?period=2026-13")
    assert bad.status == 400 and bad.body["path"] == "period"
    missing = await sim.get("/revenue/v1/recognition/contracts")
    assert missing.status == 400 and missing.body["path"] == "period"
