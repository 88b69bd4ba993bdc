"""``read_billing``: billing's event lists, read page by page, reduced to what the legs use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import anyio
import msgspec
import pytest

from actors.infra.http import HttpResponse
from actors.reconcile import runner
from actors.reconcile.books import GlDoc
from actors.reconcile.fx import PaymentRef
from actors.reconcile.matching import BillingDoc
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
FEB = datetime(2026, 2, 10, tzinfo=UTC).timestamp()
_enc = msgspec.json.Encoder()


class PagedBilling:
    """Billing's ``GET /billing/v1/events`` over fixed event lists, ``limit`` per page; counts
    the pages served."""

    def __init__(self, by_type: Mapping[str, Sequence[object]]) -> None:
        self.by_type = by_type
        self.pages = 0

    async def get(self, path: str) -> HttpResponse:
        q = parse_qs(urlparse(path).query)
        items = self.by_type[q.get("type", [""])[0]]
        after, limit = int(q["after"][0]), int(q["limit"][0])
        page = items[after:after + limit]
        self.pages += 1
        return HttpResponse(200, _enc.encode({
            "data": page, "has_more": after + limit < len(items),
            "next_cursor": str(after + len(page)), "object": "list"}))


JANUARY = generate_invoices(5, seed=3, start_index=1, now=JAN)
FEBRUARY = generate_invoices(1, seed=3, start_index=6, now=FEB)[0]
# in_000002 amended: version 2 with one line only and another total
AMENDED = msgspec.structs.replace(
    JANUARY[1], version=2, total=JANUARY[1].total + 7, subtotal=JANUARY[1].subtotal + 7,
    lines=msgspec.structs.replace(JANUARY[1].lines, data=JANUARY[1].lines.data[:1]))


def _book() -> PagedBilling:
    jan = JANUARY
    invoices = [*jan, AMENDED, FEBRUARY]
    events = [BillingEvent(id=f"evt_{i}", type="invoice.updated" if o.version > 1
                           else "invoice.finalized", created=o.created, data=EventData(o))
              for i, o in enumerate(invoices)]
    events.insert(2, BillingEvent(id="evt_x", type="customer.updated", created=int(JAN),
                                  data=EventData(jan[0])))  # not an invoice event: skipped
    note = BillingCreditNote(
        id="cn_1", invoice=jan[0].id, currency=jan[0].currency, amount=50,
        lines=CreditNoteLineList([CreditNoteLine("cnl_1", "l1", "x", 30),
                                  CreditNoteLine("cnl_2", "l2", "y", 20)]),
        created=int(JAN) + 60)
    paid = BillingPayment(id="py_1", invoice=jan[2].id, amount=jan[2].total,
                          currency=jan[2].currency, paid_at=int(JAN) + 120, customer="cus_9")
    return PagedBilling({
        "": events,
        "credit_note.created": [CreditNoteEvent("evt_cn", "credit_note.created", int(JAN) + 61,
                                                CreditNoteEventData(note))],
        "invoice.paid": [PaymentEvent("evt_py", "invoice.paid", int(JAN) + 121,
                                      PaymentEventData(paid))],
    })


def test_reads_every_page_and_keeps_what_the_legs_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PAGE", 2)
    billing = _book()
    read = anyio.run(runner.read_billing, billing, "2026-01")
    assert billing.pages == 4 + 1 + 1  # 8 events at 2 a page, then one page of each other list
    inv = {o.id: o for o in JANUARY}
    amended = AMENDED
    by_key = {d.key: d for d in read.docs}
    assert set(by_key) == {*inv, "cn_1", "py_1"}  # February's invoice is another period's
    assert by_key["in_000002"] == BillingDoc("in_000002", amended.currency.upper(),
                                             amended.total, float(amended.created), 2)
    assert by_key["cn_1"] == BillingDoc("cn_1", inv["in_000001"].currency.upper(), 50,
                                        JAN + 60)
    assert by_key["py_1"].issued_at == int(JAN) + 121  # the payment event's time
    assert read.invoice_ids == {*inv, FEBRUARY.id}  # every period's invoices
    revenue = {r.key: r for r in read.revenue}
    assert set(revenue) == set(inv)
    first = inv["in_000002"]
    assert revenue["in_000002"].versions == ((first.subtotal, len(first.lines.data)),
                                             (amended.subtotal, 1))
    assert (revenue["in_000002"].subtotal, revenue["in_000002"].lines) == (amended.subtotal, 1)
    assert (revenue["in_000001"].credited, revenue["in_000001"].credit_lines) == (50, 2)
    gl = {g.key: g for g in read.gl}
    assert gl["in_000002"] == GlDoc("in_000002", "invoice", "2026-01",
                                    amended.currency.upper(), amended.total, amended.subtotal,
                                    amended.tax)
    assert gl["cn_1"].kind == "credit_note" and gl["py_1"].kind == "payment"
    assert read.payments == [PaymentRef("py_1", "in_000003", "cus_9",
                                        inv["in_000003"].currency.upper(),
                                        inv["in_000003"].total,
                                        datetime.fromtimestamp(int(JAN) + 120, UTC).date())]


def test_every_period_when_none_is_given() -> None:
    read = anyio.run(runner.read_billing, _book(), None)
    assert {d.key for d in read.docs} == {f"in_00000{i}" for i in range(1, 7)} | {"cn_1",
                                                                                   "py_1"}
    assert {g.period for g in read.gl} == {"2026-01", "2026-02"}
