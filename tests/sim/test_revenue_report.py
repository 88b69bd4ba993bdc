"""The revenue platform's billings report (what the reconciler reads): per invoice, in pages."""

from __future__ import annotations

import time
from typing import Any

from contracts.platforms.revenue import BillingReportRow, RevenueLineIn
from sim._revenue import RevenueBook

from .conftest import Http

REPORT = "/revenue/v1/reports/billings"


def ln(invoice: str, n: int, amount: int = 100, kind: str = "billing") -> RevenueLineIn:
    extra: dict[str, Any] = {"quantity": 1, "usage_ids": ["u1"]} if kind == "usage" else {}
    return RevenueLineIn(line_id=f"{invoice}:il_{n}", invoice_id=invoice, product="prod_seats",
                         currency="USD", amount=amount, period_start="2026-11-01",
                         period_end="2026-11-30", kind=kind, **extra)  # type: ignore[arg-type]


def test_report_sums_per_invoice_shows_doubles_and_skips_usage() -> None:
    book = RevenueBook()
    book.upload([ln("in_2", 1, 100), ln("in_2", 2, 50), ln("in_1", 1, 10)])
    book.upload([ln("in_2", 1, 100), ln("ua_1", 1, 7, kind="usage")])  # a doubled line
    page = book.billings("", 10)
    assert page.items == [BillingReportRow("in_1", "USD", 10, 1, 1),
                          BillingReportRow("in_2", "USD", 250, 3, 2)]
    assert not page.has_more and page.next_after == "in_2"
    first = book.billings("", 1)
    assert [r.invoice_id for r in first.items] == ["in_1"] and first.has_more
    rest = book.billings(first.next_after, 1)
    assert [r.invoice_id for r in rest.items] == ["in_2"] and not rest.has_more
    assert book.billings("in_2", 5).items == []
    assert [r.lines for r in book.billings("", 10, batches={"RB-2"}).items] == [1]


async def test_report_over_http(sim: Http) -> None:
    lines = [{"lineId": f"in_{i}:il_1", "invoiceId": f"in_{i}", "product": "prod_seats",
              "currency": "EUR", "amount": 100 * i, "periodStart": "2026-11-01",
              "periodEnd": "2026-11-30"} for i in range(1, 4)]
    assert (await sim.post("/revenue/v1/batches", json={"lines": lines})).status == 201
    page = await sim.get(f"{REPORT}?limit=2")
    assert page.status == 200
    assert page.body == {"items": [
        {"invoiceId": "in_1", "currency": "EUR", "amount": 100, "lines": 1, "distinctLines": 1},
        {"invoiceId": "in_2", "currency": "EUR", "amount": 200, "lines": 1, "distinctLines": 1}],
        "hasMore": True, "nextAfter": "in_2"}
    rest = await sim.get(f"{REPORT}?after=in_2&limit=2")
    assert [r["invoiceId"] for r in rest.body["items"]] == ["in_3"]
    this_month = time.strftime("%Y-%m", time.gmtime())
    assert len((await sim.get(f"{REPORT}?period={this_month}")).body["items"]) == 3
    assert (await sim.get(f"{REPORT}?period=1999-01")).body["items"] == []
    for bad in ("period=2026-13", "limit=0", "limit=1001", "limit=x"):
        reply = await sim.get(f"{REPORT}?{bad}")
        assert reply.status == 400 and reply.body["path"] == bad.split("=")[0]
