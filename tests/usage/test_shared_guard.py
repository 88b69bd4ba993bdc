"""The usage aggregator of two gateway processes sharing the cluster's ``uploads`` bucket (the
in-memory bucket, each process with its own ledger): whatever the interleaving — both claiming
the same records, one frozen mid-request while the other gets the redelivery, one dying between
its two claims or before mirroring an outcome, then restarting — billing rates each record once
and the revenue platform records each once, or the record is flagged in doubt; never twice."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.infra.http import HttpResponse
from actors.infra.ledger import Ledger
from actors.usage import BILLING, REVENUE, UsageAggregator
from contracts.platforms.usage import UsageBulkRequest, UsageBulkResponse, UsageItemResult

from ..actors.memory_kv import MemoryBucket
from ..revenue.test_poster import (
    Crash,
    FakeDelivery,
    accept,
    arm_crashpoints,
    die_before_mirroring_uploaded,
)
from ..revenue.test_poster import crash_at as poster_crash_at
from .test_aggregator import Revenue, aggregator, states, usage

_bulk = msgspec.json.Decoder(UsageBulkRequest)


class Book:
    """A billing platform with billing's idempotency: an item id rated before is answered
    ``replayed`` and rated nothing new (``rated`` counts what each usage id was billed).
    ``during`` runs inside the first request, before it is answered (a process frozen
    mid-request while another works)."""

    def __init__(self) -> None:
        self.items: dict[str, UsageItemResult] = {}
        self.rated: Counter[str] = Counter()
        self.requests = 0
        self.during: Callable[[], Awaitable[None]] | None = None

    async def request(self, method: str, path: str, body: bytes, **_: Any) -> HttpResponse:
        self.requests += 1
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        results = []
        for item in _bulk.decode(body).items:
            seen = self.items.get(item.id)
            if seen is not None:
                results.append(msgspec.structs.replace(seen, status="replayed"))
                continue
            self.items[item.id] = res = UsageItemResult(
                id=item.id, status="created", currency="USD", unit_amount=2,
                amount=2 * item.quantity)
            self.rated.update(item.usage_ids)
            results.append(res)
        return HttpResponse(200, msgspec.json.encode(UsageBulkResponse(results=results)))


def recorded(revenue: Revenue) -> Counter[str]:
    """How often the revenue platform recorded each usage id."""
    return Counter(u for ln in revenue.lines for u in ln.usage_ids)


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Crash point ``name`` of the aggregator raises ``Crash`` the first time it is passed."""
    from actors.usage import aggregator as module

    poster_crash_at(monkeypatch, name, module)


async def restart(book: Book, revenue: Revenue, ledger: Ledger,
                  shared: MemoryBucket) -> UsageAggregator:
    """Process ``gw-a`` started again on ``ledger``: what its run() does first."""
    a = aggregator(book, revenue, ledger, bucket=shared, owner="gw-a")  # type: ignore[arg-type]
    await a._left_behind()
    return a


def batch(*ns: int, delivery: int = 1) -> list[FakeDelivery]:
    out = []
    for n in ns:
        d = usage(n, qty=n)
        out.append(FakeDelivery(d.data, num_delivered=delivery))
        out[-1].subject = d.subject
    return out


IDS = ["u1", "u2", "u3"]


async def test_two_processes_claiming_the_same_records_rate_and_record_them_once(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """Both read the records free; B claims them (and finishes) inside A's claim, after A's
    read. A's claim loses every record: A sends nothing and waits; its redelivery finds them
    done and is acknowledged."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    a = aggregator(book, revenue, ledger, bucket=shared, owner="gw-a")  # type: ignore[arg-type]
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    b_batch = batch(1, 2, 3, delivery=2)

    async def b_first(_key: str) -> None:
        await b.handle(b_batch)
    shared.before_write = b_first
    first = batch(1, 2, 3)
    await a.handle(first)
    assert [d.verdict for d in b_batch] == ["ack"] * 3
    assert [d.verdict for d in first] == ["nak"] * 3 and book.requests == 1  # B's only
    again = batch(1, 2, 3, delivery=2)
    await a.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3 and book.requests == 1
    assert book.rated == recorded(revenue) == Counter(IDS)
    assert [ln.amount for ln in revenue.lines] == [2 * (1 + 2 + 3)]
    assert await states(ledger, BILLING) == {}  # A's ledger: nothing of its own
    assert await states(other_ledger, REVENUE) == dict.fromkeys(IDS, "uploaded")


async def test_records_a_frozen_process_is_rating_are_sent_again_as_the_same_aggregate(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """A is frozen inside its billing request past ``ack_wait``; B gets the redelivery, finds
    A's claim naming the aggregate and every record of it in its batch: it sends that very
    aggregate (billing rates it once, whoever asks first) and records the revenue line. A's
    answer comes back ``replayed``; its revenue claim loses to B's upload, and its
    redelivery is acknowledged: billed once, recorded once."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    a = aggregator(book, revenue, ledger, bucket=shared, owner="gw-a")  # type: ignore[arg-type]
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    b_batch = batch(1, 2, 3, delivery=2)

    async def b_meanwhile() -> None:
        await b.handle(b_batch)
    book.during = b_meanwhile
    first = batch(1, 2, 3)
    await a.handle(first)
    assert [d.verdict for d in b_batch] == ["ack"] * 3 and b.resent_aggregates == 1
    assert [d.verdict for d in first] == ["nak"] * 3  # its revenue claim lost to B's
    again = batch(1, 2, 3, delivery=2)
    await a.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3
    assert book.requests == 2 and len(book.items) == 1  # the same item twice
    assert book.rated == recorded(revenue) == Counter(IDS)
    assert await states(ledger, BILLING) == dict.fromkeys(IDS, "uploaded")
    assert await states(ledger, REVENUE) == {}  # its claim lost before its ledger's


async def test_a_process_dying_between_its_billing_claims_leaves_the_aggregate_to_others(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dies after its shared billing claim, before its ledger claim. B, holding every record
    of the claimed aggregate, sends that aggregate again (safe whether or not A had sent it);
    A's restart finds its claim taken over and gives nothing back."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    crash_at(monkeypatch, "usage.between_billing_claims")
    with pytest.raises(Crash):
        await aggregator(book, revenue, ledger, bucket=shared,  # type: ignore[arg-type]
                         owner="gw-a").handle(batch(1, 2, 3))
    assert book.requests == 0 and await states(ledger, BILLING) == {}
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    again = batch(1, 2, 3, delivery=2)
    await b.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3 and b.resent_aggregates == 1
    restarted = await restart(book, revenue, ledger, shared)
    assert restarted.released_claims == 0
    assert book.rated == recorded(revenue) == Counter(IDS)


async def test_a_restart_gives_back_its_orphaned_claims_and_another_process_sends_them(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rates the records, then dies between its two revenue claims. Nothing of that upload
    left, so its restart gives the shared claims back; B, whose ledger knows nothing of them,
    records their revenue line with the amounts billing rated (kept in the shared value)."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    crash_at(monkeypatch, "usage.between_revenue_claims")
    with pytest.raises(Crash):
        await aggregator(book, revenue, ledger, bucket=shared,  # type: ignore[arg-type]
                         owner="gw-a").handle(batch(1, 2, 3))
    assert await states(ledger, REVENUE) == {} and revenue.lines == []
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    waiting = batch(1, 2, 3, delivery=2)
    await b.handle(waiting)
    assert [d.verdict for d in waiting] == ["nak"] * 3 and b.waiting_records == 3
    assert revenue.lines == []  # A's claim holds them meanwhile
    restarted = await restart(book, revenue, ledger, shared)
    assert restarted.released_claims == 3
    again = batch(1, 2, 3, delivery=3)
    await b.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3
    assert book.requests == 1 and book.rated == recorded(revenue) == Counter(IDS)
    assert [ln.amount for ln in revenue.lines] == [12]
    assert await states(other_ledger, BILLING) == {}  # rated by A: B only read the amount


async def test_a_restart_flags_its_unfinished_revenue_claims_so_others_stop_waiting(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dies after both revenue claims, before the request: presumed recorded, as with one
    process. Its restart flags them in doubt in the shared state too; B then acknowledges
    the records without sending them."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    crash_at(monkeypatch, "usage.before_revenue")
    with pytest.raises(Crash):
        await aggregator(book, revenue, ledger, bucket=shared,  # type: ignore[arg-type]
                         owner="gw-a").handle(batch(1, 2, 3))
    restarted = await restart(book, revenue, ledger, shared)
    assert restarted.in_doubt == 3 and restarted.released_claims == 0
    assert await states(ledger, REVENUE) == dict.fromkeys(IDS, "in_doubt")
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    again = batch(1, 2, 3, delivery=2)
    await b.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3
    assert revenue.lines == [] and book.requests == 1


async def test_an_outcome_the_shared_state_missed_is_mirrored_with_its_amount_at_start(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dies between its ledger's billing outcome and its mirror in the shared state. Its
    restart mirrors the outcome with the rated amounts from its ledger; B then records the
    revenue line without rating anything."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    a = aggregator(book, revenue, ledger, bucket=shared, owner="gw-a")  # type: ignore[arg-type]
    die_before_mirroring_uploaded(monkeypatch, a.uploads)
    with pytest.raises(Crash):
        await a.handle(batch(1, 2, 3))
    assert await states(ledger, BILLING) == dict.fromkeys(IDS, "uploaded")
    restarted = await restart(book, revenue, ledger, shared)
    assert restarted.released_claims == 0
    b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                   owner="gw-b")
    again = batch(1, 2, 3, delivery=2)
    await b.handle(again)
    assert [d.verdict for d in again] == ["ack"] * 3
    assert book.requests == 1 and book.rated == recorded(revenue) == Counter(IDS)
    assert [ln.amount for ln in revenue.lines] == [12]


async def test_a_claim_to_send_again_is_never_given_back(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A is frozen mid-request (so its aggregate may be rated); B takes the claim over to send
    it again and dies between its claims. B's restart must not give that claim back: records
    given back would be aggregated afresh, in another item billing would rate again. The
    aggregate is sent again as it was by whoever holds it whole."""
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    a = aggregator(book, revenue, ledger, bucket=shared, owner="gw-a")  # type: ignore[arg-type]

    async def b_dies_resending() -> None:
        crash_at(monkeypatch, "usage.between_billing_claims")
        with pytest.raises(Crash):
            await aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                             owner="gw-b").handle(batch(1, 2, 3, delivery=2))
        b = aggregator(book, revenue, other_ledger, bucket=shared,  # type: ignore[arg-type]
                       owner="gw-b")
        await b._left_behind()
        assert b.released_claims == 0
        # A process with some of the records only must wait, not aggregate them afresh.
        some = batch(1, 2, delivery=3)
        await b.handle(some)
        assert [d.verdict for d in some] == ["nak"] * 2 and b.waiting_records == 2
    book.during = b_dies_resending
    first = batch(1, 2, 3)
    await a.handle(first)
    assert [d.verdict for d in first] == ["ack"] * 3
    assert book.rated == recorded(revenue) == Counter(IDS)
    assert len(book.items) == 1


# -- property: two processes, batches of any records, crashes anywhere, restarts ---------------

_POINTS = (None, "usage.between_billing_claims", "usage.before_billing", "usage.after_billing",
           "usage.after_billing_commit", "usage.between_revenue_claims",
           "usage.before_revenue", "usage.after_revenue")
_RECORDS = (1, 2, 3, 4)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1),
                          st.lists(st.sampled_from(_RECORDS), min_size=1, max_size=4,
                                   unique=True),
                          st.sampled_from(_POINTS)), min_size=1, max_size=8),
       st.integers(0, 1))
def test_no_record_is_ever_counted_twice_whatever_batches_crashes_and_restarts(
        steps: list[tuple[int, list[int], str | None]], last: int) -> None:
    """Batches of any of four records (so a record's aggregate differs from one batch to the
    next) delivered to two processes, each handling possibly dying at a crash point; a dead
    process restarts (same ledger, same owner) before its next delivery, and at the end all
    four go round together (first to process ``last``) until settled. Billing rates each
    record at most once and the revenue platform records each at most once; a record missing
    at either is in doubt."""
    asyncio.run(_batches_crashes_restarts(steps, last))


async def _batches_crashes_restarts(steps: list[tuple[int, list[int], str | None]],
                                    last: int) -> None:
    from actors.usage import aggregator as module

    armed, restore = arm_crashpoints(module)
    shared, book, revenue = MemoryBucket(), Book(), Revenue(accept)
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = [await Ledger.open(Path(tmp) / f"gw{i}" / "ledger.db") for i in (0, 1)]
        try:
            procs: list[UsageAggregator | None] = [None, None]

            async def deliver(i: int, ns: list[int], crash: str | None) -> list[str | None]:
                if procs[i] is None:  # (re)start: what run() does first
                    procs[i] = aggregator(book, revenue, ledgers[i],  # type: ignore[arg-type]
                                          bucket=shared, owner=f"gw-{i}")
                    await procs[i]._left_behind()  # type: ignore[union-attr]
                armed[:] = [crash] if crash else []
                ds = batch(*ns)
                try:
                    await procs[i].handle(ds)  # type: ignore[union-attr]
                except Crash:
                    procs[i] = None
                    return []
                armed.clear()
                return [d.verdict for d in ds]

            for i, ns, crash in steps:
                await deliver(i, ns, crash)
            for attempt in range(6):
                if await deliver((last + attempt) % 2, list(_RECORDS), None) == ["ack"] * 4:
                    break
            else:
                raise AssertionError("the records never settled")
            ids = {f"u{n}" for n in _RECORDS}
            assert max(book.rated.values(), default=0) <= 1, book.rated
            assert max(recorded(revenue).values(), default=0) <= 1, recorded(revenue)
            doubt = {p: {k for led in ledgers for k, v in (await states(led, p)).items()
                         if v == "in_doubt"} for p in (BILLING, REVENUE)}
            assert set(book.rated) | doubt[BILLING] == ids
            assert set(recorded(revenue)) | doubt[REVENUE] | doubt[BILLING] == ids
        finally:
            restore()
            for led in ledgers:
                await led.close()
