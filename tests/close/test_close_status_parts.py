"""``close_status`` (the close-watch pass) spills what it reads to a scratch SQLite file and
matches one partition of the document ids at a time, keeping only the revenue rows and ledger
tallies of the period's invoices (and possible orphans), yet finds exactly what one
whole-period matching of everything held in memory finds (``whole_period``: the pass as it
was before the spill), with billing's own read or a dialect's, with or without entities."""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import msgspec
import pytest

from actors.close import status
from actors.close.readiness import close_blockers
from actors.infra.http import HttpResponse
from actors.infra.spill import Spill
from actors.lifecycle.fx import EntityMap
from actors.reconcile import reconcile, reconcile_revenue, runner
from actors.reconcile.matching import split_external_id
from actors.reconcile.revenue import RevenueRecord
from actors.router.invoices import AccountMap
from contracts import Subjects
from contracts.platforms.billing import (
    BillingCreditNote,
    BillingEvent,
    BillingPayment,
    CreditNoteEvent,
    CreditNoteEventData,
    CreditNoteLine,
    CreditNoteLineList,
    EventData,
    PaymentEvent,
    PaymentEventData,
)
from sim import generate_invoices

JAN = datetime(2026, 1, 15, tzinfo=UTC).timestamp()
DEC = datetime(2025, 12, 10, tzinfo=UTC).timestamp()
_enc = msgspec.json.Encoder()
INVOICES = generate_invoices(60, seed=5, start_index=1, now=JAN)
OTHER = generate_invoices(4, seed=5, start_index=61, now=DEC)  # another period's
_rng = random.Random(7)
# Credit notes of January's invoices, most in another partition than their invoice's; the
# ERP never got cn_3 (missing) and holds cn_5 at a wrong amount.
NOTES = [BillingCreditNote(
    id=f"cn_{i}", invoice=o.id, currency=o.currency, amount=_rng.randint(1, 40),
    lines=CreditNoteLineList([CreditNoteLine(f"cnl_{i}", "l1", "x", 1)]),
    created=int(JAN) + i) for i, o in enumerate(_rng.sample(INVOICES[6:], 8))]
# Payments: py_0..py_2 in EUR by customers of the USD entity (foreign: restated with
# ``ENTITIES``), the rest in their invoice's currency; py_4 is of a December invoice.
ENTITIES = EntityMap(default="us", functional_currency={"us": "USD"})
PAYMENTS = [BillingPayment(id=f"py_{i}", invoice=o.id, amount=o.total,
                           currency="eur" if i < 3 else o.currency, paid_at=int(JAN) + 100 + i,
                           customer=f"cus_{i}")
            for i, o in enumerate([*_rng.sample(INVOICES[6:], 4), OTHER[0]])]


def _entries() -> list[dict[str, Any]]:
    out = []
    for o in [*INVOICES[3:], *OTHER]:  # in_000001..3: never posted (missing)
        amount = o.total + (1 if o.id == "in_000010" else 0)  # an amount break
        out.append({"externalId": o.id, "currency": o.currency.upper(), "amount": amount})
    out.append({"externalId": "in_000020", "currency": "USD", "amount": 5})  # a duplicate
    out.append({"externalId": "in_999999", "currency": "USD", "amount": 7})  # an orphan
    out.append({"externalId": "in_000030:v4:reversal", "currency": "USD", "amount": 9})
    for n in NOTES:
        if n.id != "cn_3":
            out.append({"externalId": n.id, "currency": n.currency.upper(),
                        "amount": n.amount + (2 if n.id == "cn_5" else 0)})
    for i, py in enumerate(PAYMENTS):  # py_0 restated, the others as paid
        out.append({"externalId": py.id, "currency": "USD" if i == 0 else py.currency.upper(),
                    "amount": (py.amount * 11 + 5) // 10 if i == 0 else py.amount})
    for py in PAYMENTS[:2]:  # the invoice's posting carries its booked rate
        out.append({"externalId": f"{py.invoice}:v9", "currency": "EUR", "amount": 1,
                    "subsidiary": "us", "functionalCurrency": "USD", "exchangeRate": "1.1"})
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
        self.typed: dict[str, list[Any]] = {
            "credit_note.created": [CreditNoteEvent(f"evt_{n.id}", "credit_note.created",
                                                    n.created, CreditNoteEventData(n))
                                    for n in NOTES],
            "invoice.paid": [PaymentEvent(f"evt_{p.id}", "invoice.paid", p.paid_at,
                                          PaymentEventData(p)) for p in PAYMENTS]}
        self.entries, self.rows = _entries(), _rows()

    async def get(self, path: str) -> HttpResponse:
        q = {k: v[0] for k, v in parse_qs(urlparse(path).query, keep_blank_values=True).items()}
        if path.startswith("/billing/v1/events"):
            items = self.typed[q["type"]] if q.get("type") else self.events
            a = int(q["after"])
            return HttpResponse(200, _enc.encode({
                "data": items[a:a + 7], "has_more": a + 7 < len(items),
                "next_cursor": str(min(a + 7, len(items))), "object": "list"}))
        if path.startswith("/erp/v1/journal-entries"):
            return HttpResponse(200, _enc.encode({"items": [
                e for e in self.entries if e["seq"] > int(q["after"])][:7]}))
        if path.startswith("/erp/v1/exchange-rates"):
            return HttpResponse(200, _enc.encode({"date": q["date"], "base": q["base"],
                                                  "rates": {"EUR": "1.1", "USD": "1"}}))
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
    monkeypatch.setattr(status, "CLOSE_PAGE", 7)


async def close_status(*, dialect: bool = False, entities: EntityMap | None = None,
                       scratch: Path | None = None) -> status.CloseStatus:
    """The pass; with ``dialect``, billing and the ERP read as a vendor's dialect hands them
    over (whole reads), with the same figures."""
    p = Platforms()

    async def billing_read(period: str | None) -> runner.BillingRead:
        return await runner.read_billing(p, period, gl=False)

    async def postings() -> list[runner.ErpPosting]:
        return await runner.erp_postings(p)

    return await status.close_status(
        Bus(), Subjects(), billing=p, erp=p, revenue=p, versions=None,  # type: ignore[arg-type]
        entity="default", period="2026-01", accounts=AccountMap(),
        ledger=Ledger(), entities=entities,  # type: ignore[arg-type]
        billing_read=billing_read if dialect else None, postings=postings if dialect else None,
        scratch=scratch)


async def whole_period(*, dialect: bool = False, entities: EntityMap | None = None
                       ) -> status.CloseStatus:
    """The pass before the spill: everything read into memory, one whole-period matching."""
    p = Platforms()
    period = "2026-01"
    read = await runner.read_billing(p, None, gl=False)
    keys = {d.key for d in read.docs if status.period_of(d.issued_at) == period}
    elsewhere = {d.key for d in read.docs} - keys
    found = await runner.erp_postings(p)
    if not dialect:
        read = await runner.fx_read(read, found, p, entities,
                                    msgspec.structs.asdict(AccountMap()))
    docs = [d for d in read.docs if d.key in keys]
    mine = [e for e in found if not e.key.startswith(status._CLOSE_ENTRIES)
            and split_external_id(e.key)[0] not in elsewhere]
    now = time.time()
    breaks = reconcile(docs, mine, now=now, grace_s=300.0, dead_lettered=set()).breaks
    known = read.invoice_ids
    views = await runner.ledger_views(Ledger(), keys)  # type: ignore[arg-type]
    records = await runner.revenue_records(p, lambda k: k in keys or k not in known)
    breaks += reconcile_revenue([r for r in read.revenue if r.key in keys], records,
                                ledger=views, now=now, grace_s=300.0, dead_lettered=set(),
                                known=known).breaks
    return close_blockers("default", period, breaks=breaks, letters=[], documents=keys,
                          revenue=[])


@pytest.mark.parametrize("dialect", [False, True])
@pytest.mark.parametrize("entities", [None, ENTITIES], ids=["no-entities", "entities"])
async def test_the_spilled_pass_finds_what_the_whole_period_in_memory_finds(
        dialect: bool, entities: EntityMap | None, tmp_path: Path) -> None:
    spilled = await close_status(dialect=dialect, entities=entities, scratch=tmp_path)
    assert spilled == await whole_period(dialect=dialect, entities=entities)
    keys = {b.key for b in spilled.blockers}
    assert {"in_000001", "cn_3", "erp:cn_5"} <= keys, keys
    # py_0 is posted restated, py_1 as paid: the entities (read with the erpgw ERP only)
    # say both are foreign, so then py_0 matches and py_1 is a break
    restated = entities is not None and not dialect
    assert ("erp:py_0" in keys, "erp:py_1" in keys) == (not restated, restated), keys
    assert not os.listdir(tmp_path)  # the spill is deleted after the pass


async def test_each_partition_reads_back_only_its_own_records(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written: list[int] = []
    reduced: list[set[str]] = []
    add, reduce_billing = Spill.add, status.reduce_billing

    async def counted(self: Spill, kind: str, rows: Any) -> None:
        rows = list(rows)
        written.extend(part for part, _ in rows)
        await add(self, kind, rows)

    def reduce(records: Sequence[Any], *args: Any, **kw: Any) -> Any:
        reduced.append({r.id for r in records})
        return reduce_billing(records, *args, **kw)

    monkeypatch.setattr(Spill, "add", counted)
    monkeypatch.setattr(status, "reduce_billing", reduce)
    await close_status(scratch=tmp_path)
    assert set(written) == set(range(status.PARTS))  # every record went through the spill
    assert len(reduced) == status.PARTS
    everything = set().union(*reduced)
    assert len(everything) == len(INVOICES) + len(OTHER) + len(NOTES) + len(PAYMENTS)
    assert max(len(ids) for ids in reduced) < len(everything) // 4
    # a credit note is read back with its invoice's partition too (the revenue leg's credit)
    for n in NOTES:
        assert sum(n.id in ids for ids in reduced) == (
            1 if status.part_of(n.id) == status.part_of(n.invoice) else 2)


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
    period = len(INVOICES) + len(NOTES) + len(PAYMENTS)  # py_4 paid in January too
    assert sum(erp_calls) == period and max(erp_calls) < period // 2
    rows = set().union(*revenue_calls)
    assert "in_888888" in rows and not rows & {o.id for o in OTHER}


async def test_the_pass_reads_the_platforms_in_its_own_small_pages(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of wire events is what the pass holds at its peak: it asks for ``CLOSE_PAGE``
    items a page, not the reconciler's ``PAGE``."""
    monkeypatch.setattr(status, "CLOSE_PAGE", 5)
    asked: list[str] = []
    get = Platforms.get

    async def spy(self: Platforms, path: str) -> HttpResponse:
        asked.append(path)
        return await get(self, path)

    monkeypatch.setattr(Platforms, "get", spy)
    await close_status()
    limits = {parse_qs(urlparse(p).query)["limit"][0] for p in asked if "limit=" in p}
    assert limits == {"5"}
