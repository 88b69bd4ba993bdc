"""The usage aggregator over fakes (scripted billing and revenue platforms, a real ledger in a
temporary file): the answers the simulator cannot be made to give on demand — a timeout after
sending, a claim left behind, a refused item — and what each leaves in the ledger and on the
deliveries. The delivery, sink and bus fakes are the revenue poster tests'."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from actors.infra import ConsumerSettings
from actors.infra.http import Ambiguous, HttpResponse, PlatformUnavailable
from actors.infra.ledger import Ledger, UploadRow
from actors.infra.state import SharedUploads
from actors.platforms import PlatformGuard
from actors.usage import BILLING, REVENUE, UsageAggregator
from actors.usage.plan import aggregate
from contracts import (
    BusinessKey,
    Envelope,
    MsgpackCodec,
    Subjects,
    UsageRecorded,
    make_envelope,
)
from contracts.platforms.revenue import RevenueBatch, RevenueLineIn
from contracts.platforms.usage import (
    UsageBulkRequest,
    UsageBulkResponse,
    UsageError,
    UsageItemIn,
    UsageItemResult,
)

from ..actors.memory_kv import MemoryBucket
from ..revenue.test_poster import FakeBus, FakeDelivery, FakeSink, accept, fail

_codec = MsgpackCodec(object)
_bulk = msgspec.json.Decoder(UsageBulkRequest)
_batch = msgspec.json.Decoder(RevenueBatch)
T0 = datetime(2026, 10, 5, 8, tzinfo=UTC)


def usage(n: int, *, qty: int = 3, meter: str = "api_calls") -> FakeDelivery:
    rec = UsageRecorded(usage_id=f"u{n}", subscription_id="sub_1", customer_id="cus_1",
                        product_id="prod_api", meter=meter, quantity=qty, window_start=T0,
                        window_end=T0 + timedelta(hours=1), recorded_at=T0)
    env = make_envelope(rec, source="billing", key=BusinessKey(source="billing",
                                                               object_id=f"u{n}"))
    d = FakeDelivery(_codec.encode(env))
    d.subject = "erpgw.usage.evt.usage.recorded.v1"
    return d


def redelivered(d: FakeDelivery) -> FakeDelivery:
    again = FakeDelivery(d.data, num_delivered=d.num_delivered + 1)
    again.subject = d.subject
    return again


Rate = Callable[[list[UsageItemIn]], HttpResponse]


def rate(items: list[UsageItemIn]) -> HttpResponse:
    """Unit price 2, except meter ``bad``: rejected."""
    return HttpResponse(200, msgspec.json.encode(UsageBulkResponse(results=[
        UsageItemResult(id=i.id, status="rejected",
                        error=UsageError(code="UNKNOWN_METER", message="no price"))
        if i.meter == "bad" else
        UsageItemResult(id=i.id, status="created", currency="USD", unit_amount=2,
                        amount=2 * i.quantity) for i in items])))


class Billing:
    """A scripted billing platform (the last answer repeats); records what it rated."""

    def __init__(self, *script: Callable[[list[UsageItemIn]], HttpResponse]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, list[str]]] = []  # (idempotency key, usage ids)

    async def request(self, method: str, path: str, body: bytes, *,
                      headers: dict[str, str] | None = None, **_: Any) -> HttpResponse:
        items = _bulk.decode(body).items
        self.requests.append(((headers or {}).get("Idempotency-Key", ""),
                              [u for i in items for u in i.usage_ids]))
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return answer(items)


class Revenue:
    def __init__(self, *script: Callable[[list[RevenueLineIn]], HttpResponse]) -> None:
        self.script = list(script)
        self.lines: list[RevenueLineIn] = []

    async def request(self, method: str, path: str, body: bytes, **_: Any) -> HttpResponse:
        lines = _batch.decode(body).lines
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        resp = answer(lines)
        self.lines += lines
        return resp


# The cluster's shared uploads of each test's process (its ledger): an aggregator made again on
# the same ledger (a restart) sees what the earlier one left there.
_SHARED: weakref.WeakKeyDictionary[Ledger, MemoryBucket] = weakref.WeakKeyDictionary()


def aggregator(billing: Billing, revenue: Revenue, ledger: Ledger, *,
               bucket: MemoryBucket | None = None, owner: str = "gw-1") -> UsageAggregator:
    """The aggregator of the process that owns ``ledger``; ``bucket``: the shared uploads of
    the cluster (one per ledger unless given)."""
    shared = bucket or _SHARED.setdefault(ledger, MemoryBucket())
    return UsageAggregator("usage-aggregator",
                           billing=PlatformGuard("billing.usage", billing,  # type: ignore[arg-type]
                                                 open_code="usage.breaker_open"),
                           revenue=PlatformGuard("revenue", revenue,  # type: ignore[arg-type]
                                                 open_code="revenue.breaker_open"),
                           ledger=ledger, dlq=FakeSink(),
                           uploads=SharedUploads(shared, owner),  # type: ignore[arg-type]
                           subjects=Subjects(), bus=FakeBus(), stream="ERPGW_USAGE",
                           durable="usage-aggregator", consumer=ConsumerSettings(), seed=1)


async def states(ledger: Ledger, platform: str) -> dict[str, str]:
    return {r.line_id: r.status for r in await ledger.find_uploads(platform)}


async def test_records_are_rated_in_aggregates_and_recorded_once(ledger: Ledger) -> None:
    billing, revenue = Billing(rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    batch = [usage(1, qty=3), usage(2, qty=4), usage(1, qty=3), usage(3, meter="sms_sent")]
    await a.handle(batch)
    assert [d.verdict for d in batch] == ["ack"] * 4  # the record twice: once, both acked
    (key, ids), = billing.requests
    assert sorted(ids) == ["u1", "u2", "u3"] and key
    by_meter = {ln.usage_ids[0]: ln for ln in revenue.lines}
    assert (by_meter["u1"].usage_ids, by_meter["u1"].amount, by_meter["u1"].quantity) == (
        ["u1", "u2"], 14, 7)
    assert await states(ledger, BILLING) == await states(ledger, REVENUE) == {
        "u1": "uploaded", "u2": "uploaded", "u3": "uploaded"}


async def test_a_refused_item_dead_letters_its_records_only(ledger: Ledger) -> None:
    billing, revenue = Billing(rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    batch = [usage(1), usage(2, meter="bad")]
    await a.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "term"]
    assert a.dlq.letters == [("usage.unknown_meter", "billing:u2:v0")]
    assert [ln.usage_ids for ln in revenue.lines] == [["u1"]]


async def test_revenue_down_then_up_records_with_the_amount_billing_rated(
        ledger: Ledger) -> None:
    billing = Billing(rate)
    revenue = Revenue(fail(PlatformUnavailable("503", code="http.server_error")), accept)
    a = aggregator(billing, revenue, ledger)
    first = [usage(1, qty=5)]
    await a.handle(first)
    assert first[0].verdict == "nak"
    assert await states(ledger, REVENUE) == {"u1": "released"}
    again = [redelivered(first[0])]
    await a.handle(again)
    assert again[0].verdict == "ack"
    assert len(billing.requests) == 1  # rated once: the ledger knew
    assert [(ln.usage_ids, ln.amount) for ln in revenue.lines] == [(["u1"], 10)]
    assert await states(ledger, REVENUE) == {"u1": "uploaded"}


async def test_no_answer_from_billing_sends_the_very_same_request_once_more(
        ledger: Ledger) -> None:
    billing, revenue = Billing(fail(Ambiguous("no answer within 10 s")), rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    batch = [usage(1)]
    await a.handle(batch)
    assert batch[0].verdict == "ack"
    (key1, ids1), (key2, ids2) = billing.requests
    assert (key1, ids1) == (key2, ids2)  # same Idempotency-Key, same items: billing dedupes
    assert await states(ledger, BILLING) == {"u1": "uploaded"}


async def test_no_answer_from_billing_twice_is_in_doubt_and_never_sent_again(
        ledger: Ledger) -> None:
    silent = fail(Ambiguous("no answer within 10 s"))
    billing, revenue = Billing(silent, silent, rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    first = [usage(1)]
    await a.handle(first)
    assert first[0].verdict == "ack"  # unknown, not failed: flagged, not dead-lettered
    assert await states(ledger, BILLING) == {"u1": "in_doubt"}
    assert revenue.lines == []  # its rated amount is unknown
    (subject, event), = a.bus.emitted
    assert subject == "erpgw.mon.events.usage" and event["records"] == ["u1"]
    again = [redelivered(first[0]), usage(2)]
    await a.handle(again)
    assert [d.verdict for d in again] == ["ack", "ack"]
    assert [ids for _, ids in billing.requests] == [["u1"], ["u1"], ["u2"]]
    assert [ln.usage_ids for ln in revenue.lines] == [["u2"]]


async def test_a_claim_left_behind_is_held_in_doubt(ledger: Ledger) -> None:
    """What a restart finds after dying between the revenue claim and its answer."""
    await ledger.record_uploads([
        UploadRow(BILLING, "u1", "ua_x", "pending", "a0", None, 3, "", None, time.time())])
    await ledger.record_uploads([
        UploadRow(BILLING, "u1", "ua_x", "uploaded", "a0", None, 6, "USD", None, time.time()),
        UploadRow(REVENUE, "u1", "ua_x", "pending", "a1", None, 6, "USD", None, time.time())])
    billing, revenue = Billing(rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    batch = [usage(1), usage(2)]
    await a.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "ack"]
    assert [ids for _, ids in billing.requests] == [["u2"]]
    assert [ln.usage_ids for ln in revenue.lines] == [["u2"]]
    assert await states(ledger, REVENUE) == {"u1": "in_doubt", "u2": "uploaded"}


def _rec(d: FakeDelivery) -> UsageRecorded:
    env = MsgpackCodec(Envelope).decode(d.data)
    assert isinstance(env.payload, UsageRecorded)
    return env.payload


async def _claim(ledger: Ledger, agg_id: str, ids: list[str]) -> None:
    await ledger.record_uploads([UploadRow(BILLING, u, agg_id, "pending", "a0", None, 3, "",
                                           None, time.time()) for u in ids])


async def test_a_billing_claim_left_behind_is_sent_again_as_it_was(ledger: Ledger) -> None:
    """Billing keeps an idempotency key per item: the very same aggregate again is safe."""
    one, two = usage(1), usage(2)
    agg, = aggregate([_rec(one), _rec(two)])
    await _claim(ledger, agg.id, ["u1", "u2"])
    billing, revenue = Billing(rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    batch = [one, two, usage(3)]
    await a.handle(batch)
    assert [d.verdict for d in batch] == ["ack"] * 3
    assert [ids for _, ids in billing.requests] == [["u1", "u2"], ["u3"]]
    assert await states(ledger, BILLING) == {"u1": "uploaded", "u2": "uploaded",
                                             "u3": "uploaded"}
    assert sorted(u for ln in revenue.lines for u in ln.usage_ids) == ["u1", "u2", "u3"]


async def test_a_billing_claim_without_all_its_records_stays_in_doubt(ledger: Ledger) -> None:
    one, two = usage(1), usage(2)
    agg, = aggregate([_rec(one), _rec(two)])
    await _claim(ledger, agg.id, ["u1", "u2"])
    billing, revenue = Billing(rate), Revenue(accept)
    a = aggregator(billing, revenue, ledger)
    await a.handle([one])  # u2 is in another batch: the item cannot be rebuilt as it was
    assert one.verdict == "ack" and billing.requests == [] and revenue.lines == []
    assert (await states(ledger, BILLING))["u1"] == "in_doubt"


async def test_a_resend_answered_with_an_error_keeps_its_claim(ledger: Ledger) -> None:
    """A claimed aggregate may have been rated by the attempt that claimed it, so when its
    resend is answered 503 (nothing recorded by that request) its records stay claimed: the
    next delivery sends that very aggregate again beside a new one, never one of both."""
    one, two = usage(1), usage(2)
    agg, = aggregate([_rec(one), _rec(two)])
    await _claim(ledger, agg.id, ["u1", "u2"])
    billing = Billing(fail(PlatformUnavailable("503", code="http.server_error")), rate)
    a = aggregator(billing, Revenue(accept), ledger)
    first = [one, two]
    await a.handle(first)
    assert [d.verdict for d in first] == ["nak", "nak"]
    assert await states(ledger, BILLING) == {"u1": "pending", "u2": "pending"}
    again = [redelivered(one), redelivered(two), usage(3)]
    await a.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3
    assert [ids for _, ids in billing.requests] == [["u1", "u2"], ["u1", "u2"], ["u3"]]
