"""``close_status`` (the close-watch pass) matches one partition of the document ids at a time
and keeps only the revenue rows and ledger tallies of the period's invoices (and possible
orphans), yet finds exactly what one whole-period matching finds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgspec
import pytest

from actors.close import status
from actors.infra.http import HttpResponse
from actors.reconcile import runner
from actors.reconcile.revenue import RevenueRecord
from actors.router.invoices import AccountMap
from contracts import Subjects
from contracts.platforms.billing import BillingEvent, EventData
from sim import generate_invoices

JAN = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
DEC = datetime(2025, 12, 10, tzinfo=UTC).timestamp()
_enc = msgspec.json.Encoder()
INVOICES = generate_invoices(60, seed=5, start_index=1, now=JAN)
OTHER = generate_invoices(4, seed=5, start_index=61, now=DEC)  # another period's


def _entries() -> list[dict[str, Any]]:
    out = []
    for o in [*INVOICES[3:], *OTHER]:  # in_000001..3: never posted (missing)
        amount = o.total + (1 if o.id == "in_000010" else 0)  # an amount break
        out.append({"externalId": o.id, "currency": o.currency.upper(), "amount": amount})
    out.append({"externalId": "in_000020", "currency": "USD", "amount": 5})  # a duplicate
    out.append({"externalId": "in_999999", "currency": "USD", "amount": 7})  # an orphan
    out.append({"externalId": "in_000030:v4:reversal", "currency": "USD", "amount": 9})
    return [{"seq": i + 1, "id": f"JE-{i + 1}", "idempotencyKey": f"k{i}",
             "acceptedAt": JAN, **e} for i, e in enumerate(out)]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for o in [*INVOICES[5:], *OTHER]:  # in_000001..5: nothing at the revenue platform
        n = len(o.lines.data)
        amount = o.subtotal - (3 if o.id == "in_000040" else 0)  # a revenue amount break
        rows.append({"invoiceId": o.id, "currency": o.currency.upper(), "amount": amount,
                     "lines": n, "distinctLines": n})
    rows.append({"invoiceId": "in_888888", "currency": "EUR", "amount": 4, "lines": 1,
                 "distinctLines": 1})  # an orphan
    return sorted(rows, key=lambda r: r["invoiceId"])


class Platforms:
    """Billing's events, the ERP's journal entries and the revenue report, in pages of 7."""

    def __init__(self) -> None:
        self.events = [BillingEvent(f"evt_{i}", "invoice.finalized", o.created, EventData(o))
                       for i, o in enumerate([*INVOICES, *OTHER])]
        self.entries, self.rows = _entries(), _rows()

    async def get(self, path: str) -> HttpResponse:
        q = {k: v[0] for k, v in parse_qs(urlparse(path).query, keep_blank_values=True).items()}
        if path.startswith("/billing/v1/events"):
            items = [] if q.get("type") else self.events
            a = int(q["after"])
            return HttpResponse(200, _enc.encode({
                "data": items[a:a + 7], "has_more": a + 7 < len(items),
                "next_cursor": str(min(a + 7, len(items))), "object": "list"}))
        if path.startswith("/erp/v1/journal-entries"):
            return HttpResponse(200, _enc.encode({"items": [
                e for e in self.entries if e["seq"] > int(q["after"])][:7]}))
        assert path.startswith("/revenue/v1/reports/billings")
        page = [r for r in self.rows if r["invoiceId"] > q["after"]][:7]
        return HttpResponse(200, _enc.encode({
            "items": page, "hasMore": bool(page) and page[-1] != self.rows[-1],
            "nextAfter": page[-1]["invoiceId"] if page else q["after"]}))


class Ledger:
    async def upload_tallies(self, platform: str) -> AsyncIterator[tuple[str, str, int, int]]:
        for o in sorted([*INVOICES[5:], *OTHER], key=lambda o: o.id):
            yield o.id, "uploaded", len(o.lines.data), o.subtotal


class Bus:
    async def scan(self, stream: str, subject: str | None = None) -> list[object]:
        return []


@pytest.fixture(autouse=True)
def no_close_run(monkeypatch: pytest.MonkeyPatch) -> None:
    async def plan(*args: object, **kw: object) -> list[object]:
        return []

    monkeypatch.setattr(status, "plan_run", plan)
    monkeypatch.setattr(runner, "PAGE", 7)


async def close_status() -> status.CloseStatus:
    p = Platforms()
    return await status.close_status(
        Bus(), Subjects(), billing=p, erp=p, revenue=p, versions=None,  # type: ignore[arg-type]
        entity="default", period="2026-01", accounts=AccountMap(),
        ledger=Ledger())  # type: ignore[arg-type]


async def test_the_partitions_find_what_one_whole_matching_finds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parted = await close_status()
    monkeypatch.setattr(status, "PARTS", 1)
    whole = await close_status()
    assert parted == whole
    keys = {b.key for b in parted.blockers}
    assert {"in_000001", "in_000004", "erp:in_000010", "erp:in_000020", "erp:in_999999",
            "erp:in_000030:v4:reversal", "revenue:in_000040",
            "revenue:in_888888"} <= keys, keys
    assert not any("in_00006" in k for k in keys)  # December's invoices block nothing here


async def test_each_matching_sees_one_partition_and_only_the_period_s_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    erp_calls: list[int] = []
    revenue_calls: list[set[str]] = []
    reconcile, reconcile_revenue = status.reconcile, status.reconcile_revenue

    def erp(docs: Sequence[Any], *args: Any, **kw: Any) -> Any:
        erp_calls.append(len(docs))
        return reconcile(docs, *args, **kw)

    def revenue(docs: Sequence[Any], records: Sequence[RevenueRecord], **kw: Any) -> Any:
        revenue_calls.append({r.key for r in records})
        return reconcile_revenue(docs, records, **kw)

    monkeypatch.setattr(status, "reconcile", erp)
    monkeypatch.setattr(status, "reconcile_revenue", revenue)
    await close_status()
    assert len(erp_calls) == len(revenue_calls) == status.PARTS
    assert sum(erp_calls) == len(INVOICES) and max(erp_calls) < len(INVOICES) // 2
    rows = set().union(*revenue_calls)
    assert "in_888888" in rows and not rows & {o.id for o in OTHER}
