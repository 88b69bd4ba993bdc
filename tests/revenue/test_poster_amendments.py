"""The revenue poster's amendment and credit memo paths over fakes (a scripted platform, a
real ledger in a temporary file): what it sends, what it waits for, what the deliveries get."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest

from actors.infra.bus import Delivery
from actors.infra.http import Ambiguous, HttpResponse, PlatformUnavailable
from actors.infra.ledger import Ledger
from actors.resilience import Decision
from actors.revenue import PLATFORM, RevenuePoster
from contracts import (
    BusinessKey,
    CreditMemoIssued,
    CreditMemoLine,
    InvoiceIssued,
    InvoiceLine,
    MsgpackCodec,
    make_envelope,
)

from ..actors.memory_kv import MemoryBucket
from .test_poster import (
    FakeDelivery,
    Platform,
    _batch,
    accept,
    fail,
    freeze_after_the_shared_claim,
    poster,
    states,
)

_codec = MsgpackCodec(object)


def version(n: int, amounts: dict[str, int], invoice_id: str = "in_1") -> FakeDelivery:
    lines = [InvoiceLine(line_id=k, product_id=f"p_{k}", description="", quantity=1,
                         unit_amount=v, amount=v) for k, v in amounts.items()]
    total = sum(amounts.values())
    inv = InvoiceIssued(invoice_id=invoice_id, number="INV-1", customer_id="cus_1",
                        currency="USD", issued_at=datetime(2025, 3, 1, tzinfo=UTC),
                        period_start=date(2025, 3, 1), period_end=date(2025, 3, 31),
                        lines=lines, subtotal=total, tax=0, total=total)
    return FakeDelivery(_codec.encode(make_envelope(inv, source="billing", key=BusinessKey(
        source="billing", object_id=invoice_id, version=n))))


def credit(cn: str, amount: int, invoice_id: str | None = "in_1") -> FakeDelivery:
    cm = CreditMemoIssued(credit_memo_id=cn, number=cn.upper(), customer_id="cus_1",
                          invoice_id=invoice_id, currency="USD",
                          issued_at=datetime(2025, 3, 20, tzinfo=UTC),
                          lines=(CreditMemoLine(line_id="cl_1", product_id="p_a", quantity=1,
                                                unit_amount=amount, amount=amount),),
                          subtotal=amount, tax=0, total=amount)
    d = FakeDelivery(_codec.encode(make_envelope(cm, source="billing", key=BusinessKey(
        source="billing", object_id=cn, version=1))))
    d.subject = "erpgw.billing.evt.credit_memo.issued.v1"
    return d


class Ledgered(Platform):
    """The scripted platform, keeping every recorded line's amount."""

    def __init__(self, *script: Any) -> None:
        super().__init__(*script)
        self.amounts: dict[str, int] = {}

    async def request(self, method: str, path: str, body: bytes, **kw: Any) -> HttpResponse:
        before = len(self.recorded)
        resp = await super().request(method, path, body, **kw)
        for ln in _batch.decode(body).lines[: len(self.recorded) - before]:
            self.amounts[ln.line_id] = self.amounts.get(ln.line_id, 0) + ln.amount
        return resp


async def test_an_amendment_uploads_its_differences_and_a_credit_memo_its_negatives(
        ledger: Ledger) -> None:
    platform = Ledgered(accept)
    p = poster(platform, ledger)
    first = [version(1, {"a": 100, "b": 50})]
    await p.handle(first)
    amended = [version(2, {"a": 130, "b": 50}), credit("cn_1", 40, invoice_id="in_2")]
    await p.handle(amended)
    memo = [credit("cn_2", 25)]
    await p.handle(memo)
    assert [d.verdict for d in first + amended + memo] == ["ack"] * 4
    assert platform.amounts == {"in_1:a": 100, "in_1:b": 50, "in_1:a:v2": 30, "in_1:b:v2": 0,
                                "cn_1:cl_1": -40, "cn_2:cl_1": -25}
    # the platform's billings of in_1: the latest subtotal (180) less the credit memo (25)
    assert sum(a for k, a in platform.amounts.items() if k.startswith(("in_1:", "cn_2:"))) == 155
    assert set((await states(ledger)).values()) == {"uploaded"}
    # every document again (a replay), one batch each: nothing is sent
    uploads = len(platform.uploads)
    again = [version(1, {"a": 100, "b": 50}), version(2, {"a": 130, "b": 50}),
             credit("cn_2", 25)]
    for d in again:
        await p.handle([d])
    assert [d.verdict for d in again] == ["ack"] * 3 and len(platform.uploads) == uploads


async def test_a_version_before_its_predecessor_waits_for_it(ledger: Ledger) -> None:
    platform = Ledgered(accept)
    p = poster(platform, ledger)
    early = [version(2, {"a": 130})]
    await p.handle(early)
    assert early[0].verdict == "nak" and platform.uploads == [] and p.waiting_versions == 1
    await p.handle([version(1, {"a": 100})])
    later = [version(2, {"a": 130})]
    await p.handle(later)
    assert later[0].verdict == "ack"
    assert platform.amounts == {"in_1:a": 100, "in_1:a:v2": 30}


async def test_two_versions_in_one_batch_go_one_after_the_other(ledger: Ledger) -> None:
    platform = Ledgered(accept)
    p = poster(platform, ledger)
    batch = [version(1, {"a": 100}), version(2, {"a": 130}), credit("cn_1", 10)]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "nak", "nak"]
    assert platform.amounts == {"in_1:a": 100}
    rest = [version(2, {"a": 130})]
    await p.handle(rest)
    memo = [credit("cn_1", 10)]
    await p.handle(memo)
    assert platform.amounts == {"in_1:a": 100, "in_1:a:v2": 30, "cn_1:cl_1": -10}


async def test_an_amendment_of_lines_in_doubt_presumes_them_recorded(ledger: Ledger) -> None:
    platform = Ledgered(fail(Ambiguous("no answer")), accept)
    p = poster(platform, ledger)
    first = [version(1, {"a": 100})]
    await p.handle(first)
    assert first[0].verdict == "ack" and await states(ledger) == {"in_1:a": "in_doubt"}
    amended = [version(2, {"a": 70, "b": 5})]
    await p.handle(amended)
    assert amended[0].verdict == "ack"
    # the difference from what the platform is presumed to hold: never v2 in full on top
    assert {k: a for k, a in platform.amounts.items() if k.endswith(":v2")} == {
        "in_1:a:v2": -30, "in_1:b:v2": 5}


def waits(p: RevenuePoster) -> list[str]:
    """The code of every wait ``p`` decides from now on (one per delivery nak'ed)."""
    codes: list[str] = []
    decide = p.decide

    def spy(d: Delivery, err: Exception) -> Decision:
        codes.append(getattr(err, "code", type(err).__name__))
        return decide(d, err)
    p.decide = spy  # type: ignore[method-assign]
    return codes


async def test_an_amendment_of_lines_another_process_uploaded_is_planned_from_the_shared_rows(
        ledger: Ledger, other_ledger: Ledger) -> None:
    shared = MemoryBucket()
    platform = Ledgered(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    await a.handle([version(1, {"a": 100, "b": 50})])
    at_b = [version(2, {"a": 130, "b": 40})]
    await b.handle(at_b)
    assert at_b[0].verdict == "ack" and b.waiting_versions == 0
    # v3 back at a, whose ledger holds v1 only: v2's rows come from the shared uploads
    at_a = [version(3, {"a": 90})]
    await a.handle(at_a)
    assert at_a[0].verdict == "ack"
    assert platform.amounts == {"in_1:a": 100, "in_1:b": 50, "in_1:a:v2": 30, "in_1:b:v2": -10,
                                "in_1:a:v3": -40, "in_1:b:v3": -40}
    assert sum(platform.amounts.values()) == 90
    replay = [version(2, {"a": 130, "b": 40}), version(3, {"a": 90})]
    for d, p in zip(replay, (a, b), strict=True):  # each where it was not applied
        await p.handle([d])
    assert [d.verdict for d in replay] == ["ack", "ack"] and sum(platform.amounts.values()) == 90
    assert len(platform.recorded) == 6


async def test_a_version_split_between_processes_is_amended_from_both_halves(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """Version 1 is larger than one upload: a records line a, its upload of line b is
    answered 503 (not recorded), and the redelivery reaches b, which records line b. Planned
    from b's ledger alone, v2 would upload line a in full again (doubled); from a's alone, it
    would wait for ever on its released b."""
    shared = MemoryBucket()
    platform = Ledgered(accept, fail(PlatformUnavailable("503", code="http.server_error")),
                        accept)
    a = poster(platform, ledger, 1, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, 1, bucket=shared, owner="gw-b")
    first = [version(1, {"a": 100, "b": 50})]
    await a.handle(first)
    await b.handle([version(1, {"a": 100, "b": 50})])
    assert first[0].verdict == "nak" and await states(ledger) == {
        "in_1:a": "uploaded", "in_1:b": "released"}
    assert await states(other_ledger) == {"in_1:b": "uploaded"}
    for p, amended in ((b, {"a": 100, "b": 70}), (a, {"a": 90, "b": 70})):
        d = [version(2 if p is b else 3, amended)]
        await p.handle(d)
        assert d[0].verdict == "ack"
    assert {k: v for k, v in platform.amounts.items() if ":v" in k} == {
        "in_1:a:v2": 0, "in_1:b:v2": 20, "in_1:a:v3": -10, "in_1:b:v3": 0}
    assert sum(platform.amounts.values()) == 160


async def test_a_shared_row_without_an_amount_waits_for_the_process_that_holds_it(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """Rows written before the shared uploads carried amounts: b cannot know what v1
    recorded, so it waits (``revenue.amended_elsewhere``); a, whose ledger holds v1, plans
    v2."""
    shared = MemoryBucket()
    platform = Ledgered(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    await a.handle([version(1, {"a": 100})])
    for key, (value, rev) in list(shared.data.items()):  # as an older gateway wrote them
        assert value is not None
        old = {k: v for k, v in msgspec.msgpack.decode(value).items()
               if k not in ("amount", "lines")}
        shared.data[key] = (msgspec.msgpack.encode(old), rev)
    codes = waits(b)
    at_b = [version(2, {"a": 130})]
    await b.handle(at_b)
    assert at_b[0].verdict == "nak" and b.requests == 0 and b.waiting_versions == 1
    assert codes == ["revenue.amended_elsewhere"]
    at_a = [version(2, {"a": 130})]
    await a.handle(at_a)
    assert at_a[0].verdict == "ack" and platform.amounts == {"in_1:a": 100, "in_1:a:v2": 30}
    again = [version(2, {"a": 130})]  # a replay reaching b: v2 is applied, by a
    await b.handle(again)
    assert again[0].verdict == "ack" and b.requests == 0
    assert {r.line_id for r in await other_ledger.find_uploads(PLATFORM)} == set()


async def test_a_version_with_a_line_no_known_id_names_waits(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """v2 dropped line b (a negative ``in_1:b:v2``); v3 names only line a, and b's ledger
    never held b: v2 wrote two lines, b finds one, so it waits rather than leave b's 50 at the
    platform; a, whose ledger names b, plans v3."""
    shared = MemoryBucket()
    platform = Ledgered(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    await a.handle([version(1, {"a": 100, "b": 50})])
    await a.handle([version(2, {"a": 100})])
    assert platform.amounts["in_1:b:v2"] == -50
    codes = waits(b)
    at_b = [version(3, {"a": 120})]
    await b.handle(at_b)
    assert at_b[0].verdict == "nak" and b.requests == 0 and codes == [
        "revenue.amended_elsewhere"]
    at_a = [version(3, {"a": 120})]
    await a.handle(at_a)
    assert at_a[0].verdict == "ack"
    assert {k: v for k, v in platform.amounts.items() if k.endswith(":v3")} == {"in_1:a:v3": 20}
    assert sum(platform.amounts.values()) == 120


async def test_an_earlier_version_another_process_is_still_sending_is_waited_for(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = MemoryBucket()
    platform = Ledgered(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    codes = waits(b)
    at_b = [version(2, {"a": 130})]

    async def meanwhile() -> None:  # a is frozen between its shared claim and its request
        await b.handle(at_b)
    freeze_after_the_shared_claim(monkeypatch, meanwhile)
    await a.handle([version(1, {"a": 100})])
    assert at_b[0].verdict == "nak" and codes == ["revenue.claimed_elsewhere"]
    again = [version(2, {"a": 130})]
    await b.handle(again)
    assert again[0].verdict == "ack" and platform.amounts == {"in_1:a": 100, "in_1:a:v2": 30}


async def test_a_credit_memo_of_no_invoice_sends_nothing(ledger: Ledger) -> None:
    platform = Ledgered(accept)
    p = poster(platform, ledger)
    d = [credit("cn_9", 10, invoice_id=None)]
    await p.handle(d)
    assert d[0].verdict == "ack" and platform.uploads == []


async def test_an_earlier_version_after_a_later_one_is_applied_sends_nothing(
        ledger: Ledger) -> None:
    """v1 was split over two uploads and the process stopped between them: line b of v1 was
    never claimed. v2 is planned from what is recorded (b in full); v1 coming back must not
    send b now, or b would be counted twice."""
    platform = Ledgered(accept)
    p = poster(platform, ledger)
    await p.handle([version(1, {"a": 100})])  # what the first upload of v1 {a, b} recorded
    await p.handle([version(2, {"a": 130, "b": 50})])
    back = [version(1, {"a": 100, "b": 50})]
    await p.handle(back)
    assert back[0].verdict == "ack"
    assert platform.amounts == {"in_1:a": 100, "in_1:a:v2": 30, "in_1:b:v2": 50}
    assert "in_1:b" not in await states(ledger)
