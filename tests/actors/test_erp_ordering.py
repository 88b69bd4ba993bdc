"""Flow 6, per-aggregate ordering of ERP postings: the pure planner as a table, then the ERP
poster over the simulator's pure ERP books and a real ledger in a temporary file (what v1 then
v2, v2 then v1, a redelivery and a refused reversal leave at the ERP, in the ledger and on the
deliveries), and the audit's reading of reversals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import anyio
import msgspec
import pytest

from actors.erp import ErpPoster
from actors.erp.ordering import (
    REVERSAL_SUFFIX,
    Applied,
    Apply,
    Candidate,
    Claim,
    Skip,
    State,
    aggregate_of,
    plan_order,
    reversal_of,
    versioned_external_id,
)
from actors.erp.poster import tails_for
from actors.infra import ConsumerSettings
from actors.infra.http import HttpResponse
from actors.infra.ledger import Ledger, LedgerUnavailable, VersionMark
from actors.infra.state import SharedVersions
from actors.platforms import PlatformGuard
from actors.platforms.billing import BILLING_ROUTES
from actors.router.invoices import AccountMap, erp_idempotency_key, journal_for_invoice
from contracts import (
    BusinessKey,
    ContractError,
    Envelope,
    InvoiceIssued,
    InvoiceLine,
    MsgpackCodec,
    PostJournalEntry,
    derive_id,
    make_envelope,
)
from contracts.platforms.billing import (
    BillingEvent,
    BillingInvoice,
    BillingInvoiceLine,
    EventData,
    LineList,
)
from contracts.platforms.erp import BulkRequest, BulkResponse
from sim import IssuedInvoice, compute_audit
from sim._audit import REVERSAL_SUFFIX as SIM_REVERSAL_SUFFIX
from sim._erp import ErpLedger

from ..revenue.test_poster import FakeBus, FakeDelivery, FakeSink
from .memory_kv import MemoryBucket

_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
_bulk = msgspec.json.Decoder(BulkRequest)


def invoice(n: int, quantity: int = 1) -> InvoiceIssued:
    line = InvoiceLine(line_id="il_1", product_id="prod", description="", quantity=quantity,
                       unit_amount=1000, amount=1000 * quantity)
    return InvoiceIssued(invoice_id=f"in_{n}", number=f"INV-{n}", customer_id="cus_1",
                         currency="USD", issued_at=datetime(2025, 3, 1, tzinfo=UTC),
                         period_start=date(2025, 3, 1), period_end=date(2025, 3, 31),
                         lines=[line], subtotal=1000 * quantity, tax=100 * quantity,
                         total=1100 * quantity)


def entry(n: int, version: int, quantity: int = 1) -> PostJournalEntry:
    return journal_for_invoice(invoice(n, quantity), f"key-{n}-v{version}", AccountMap(),
                               version)


def key(n: int, version: int) -> BusinessKey:
    return BusinessKey(source="billing", object_id=f"in_{n}", version=version)


# -- the planner -------------------------------------------------------------------------------

AGG = ("billing", "in_1")


def cand(version: int, *, repair: bool = False, agg: tuple[str, str] | None = AGG) -> Candidate:
    return Candidate(agg, version, entry(1, version, version), repair)


@pytest.mark.parametrize(
    ("versions", "applied_version", "expected"),
    [
        # nothing applied yet: the version is applied as it is, whichever it is
        ([1], None, ["v1"]),
        ([2], None, ["v2"]),
        # the next version: reverse the applied one, then post the new one in full
        ([2], 1, ["rev(v1)+v2"]),
        ([5], 2, ["rev(v2)+v5"]),
        # a version already applied is a redelivery; an older one is stale
        ([2], 2, ["skip:applied"]),
        ([1], 2, ["skip:stale"]),
        # two versions in one batch: only the newest is applied, in either order
        ([1, 2], None, ["skip:superseded", "v2"]),
        ([2, 1], None, ["v2", "skip:superseded"]),
        ([1, 3, 2], 1, ["skip:superseded", "rev(v1)+v3", "skip:superseded"]),
        ([1, 2], 2, ["skip:superseded", "skip:applied"]),
    ],
)
def test_plan_order_table(versions: list[int], applied_version: int | None,
                          expected: list[str]) -> None:
    have = {} if applied_version is None else {AGG: State(applied(applied_version))}
    assert [show(v) for v in plan_order([cand(v) for v in versions], have)] == expected


def applied(version: int) -> Applied:
    return Applied(version, entry(1, version, version))


def show(v: Apply | Skip) -> str:
    if isinstance(v, Skip):
        return f"skip:{v.reason}"
    names = {entry(1, n, n).external_id: f"v{n}" for n in range(1, 6)}
    return "+".join(f"rev({names[e.external_id.removesuffix(REVERSAL_SUFFIX)]})"
                    if e.external_id.endswith(REVERSAL_SUFFIX) else names[e.external_id]
                    for e in v.entries)


def claim(version: int, *parts: str) -> Claim:
    """A claim of ``version`` whose request held ``parts`` ("v1", "rev(v1)", …)."""
    def one(part: str) -> PostJournalEntry:
        if part.startswith("rev("):
            return reversal_of(one(part[4:-1]))
        n = int(part[1:])
        return entry(1, n, n)
    return Claim(version, tuple(one(p) for p in parts))


@pytest.mark.parametrize(
    ("version", "state", "expected"),
    [
        # a claim (sent, outcome never recorded) may be at the ERP: an older version is stale
        (1, State(claimed=claim(2, "v2")), "skip:stale"),
        (2, State(applied(1), claim(3, "rev(v1)", "v3")), "skip:stale"),
        (1, State(applied(1), claim(2, "rev(v1)", "v2")), "skip:applied"),
        # the claimed version itself: exactly what the claim sent, again
        (2, State(claimed=claim(2, "v2")), "v2"),
        (3, State(applied(1), claim(3, "rev(v1)", "v3")), "rev(v1)+v3"),
        # a newer one posts and reverses what the claim may have left at the ERP first
        (3, State(claimed=claim(2, "v2")), "v2+rev(v2)+v3"),
        (4, State(applied(1), claim(2, "rev(v1)", "v2")), "rev(v1)+v2+rev(v2)+v4"),
        (5, State(applied(1), claim(4, "rev(v1)", "v2", "rev(v2)", "v4")),
         "rev(v1)+v2+rev(v2)+v4+rev(v4)+v5"),
        # ... but not what the ERP refused (certainly not there); a refused reversal is redone
        (4, State(applied(1), claim(2, "rev(v1)", "v2"),
                  frozenset({entry(1, 2, 2).idempotency_key})), "rev(v1)+v4"),
        (4, State(applied(1), claim(2, "rev(v1)", "v2"),
                  frozenset({reversal_of(entry(1, 1, 1)).idempotency_key})),
         "rev(v1)+v2+rev(v2)+v4"),
        # a claim at or below the applied version is settled: ignored
        (3, State(applied(2), claim(2, "v2")), "rev(v2)+v3"),
        (2, State(applied(2), claim(1, "v1")), "skip:applied"),
    ],
)
def test_plan_order_with_a_claim_table(version: int, state: State, expected: str) -> None:
    assert [show(v) for v in plan_order([cand(version)], {AGG: state})] == [expected]


def test_a_repair_of_the_applied_version_is_posted_again_without_a_reversal() -> None:
    have = {AGG: State(applied(2))}
    assert plan_order([cand(2, repair=True)], have) == [Apply((entry(1, 2, 2),))]
    assert plan_order([cand(1, repair=True)], have) == [Skip("stale", 2)]


def test_postings_outside_an_aggregate_are_always_applied() -> None:
    assert plan_order([cand(1, agg=None), cand(1, agg=None)], {}) == [
        Apply((entry(1, 1, 1),)), Apply((entry(1, 1, 1),))]


def test_a_reversal_swaps_every_line_and_depends_only_on_the_reversed_entry() -> None:
    v1 = entry(1, 1, 3)
    rev = reversal_of(v1)
    assert rev.external_id == "in_1" + REVERSAL_SUFFIX == "in_1:reversal"
    assert [(ln.account, ln.debit, ln.credit) for ln in rev.lines] == [
        (ln.account, ln.credit, ln.debit) for ln in v1.lines]
    assert (rev.amount, rev.currency, rev.posting_date) == (v1.amount, "USD", v1.posting_date)
    assert rev == reversal_of(v1) and rev.idempotency_key != v1.idempotency_key
    assert reversal_of(entry(1, 2, 2)).external_id == "in_1:v2:reversal"
    assert REVERSAL_SUFFIX == SIM_REVERSAL_SUFFIX  # the audit reads what the gateway writes


def test_external_ids_and_aggregates() -> None:
    assert [versioned_external_id("in_1", v) for v in (0, 1, 2, 10)] == [
        "in_1", "in_1", "in_1:v2", "in_1:v10"]
    assert aggregate_of(key(1, 1), entry(1, 1)) == AGG
    assert aggregate_of(key(1, 2), entry(1, 2)) == AGG
    # a posting keyed by the invoice but of another document is not ordered against it
    other = msgspec.structs.replace(entry(1, 1), external_id="py_1")
    assert aggregate_of(key(1, 1), other) is None


# -- the poster over the simulator's ERP books -------------------------------------------------


class FakeErp:
    """The simulator's pure ERP books behind the poster's HTTP client; ``reject`` external ids
    are refused (the injected VALIDATION error) while they are in the set."""

    def __init__(self) -> None:
        self.books = ErpLedger()
        self.reject: set[str] = set()
        self.requests: list[list[str]] = []

    async def request(self, method: str, path: str, body: bytes, **_: Any) -> HttpResponse:
        items = _bulk.decode(body).items
        self.requests.append([i.external_id for i in items])
        results = self.books.post(items, 1.0, reject={
            i for i, item in enumerate(items) if item.external_id in self.reject})
        return HttpResponse(200, msgspec.json.encode(BulkResponse(results=results)))

    def receivable(self) -> int:
        """The receivable account's balance (debit - credit) in the test's period."""
        return sum(b.balance for b in self.books.balances("2025-03").balances
                   if b.account == AccountMap().receivable)


def make_poster(erp: FakeErp, ledger: Ledger, bucket: MemoryBucket | None = None,
                consumer: ConsumerSettings | None = None) -> ErpPoster:
    """A poster with its process's ``ledger``; ``bucket``: the cluster's shared versions (a
    fresh one unless given: two posters given the same one are two gateway processes)."""
    guard = PlatformGuard("erp.journal", erp, open_code="erp.breaker_open")  # type: ignore[arg-type]
    versions = SharedVersions(bucket or MemoryBucket())  # type: ignore[arg-type]
    return ErpPoster("erp-journal", erp=guard, ledger=ledger, versions=versions,
                     dlq=FakeSink(),  # type: ignore[arg-type]
                     bus=FakeBus(), stream="ERPGW_BILLING", durable="erp-journal",
                     consumer=consumer or ConsumerSettings(), seed=1)


def command(n: int, version: int, quantity: int) -> FakeDelivery:
    inv = invoice(n, quantity)
    src = make_envelope(inv, source="billing", key=key(n, version))
    e = journal_for_invoice(inv, erp_idempotency_key(src), AccountMap(), version)
    return FakeDelivery(_codec.encode(make_envelope(e, source="gateway", key=key(n, version),
                                                    caused_by=src)))


async def run(p: ErpPoster, *batches: Sequence[FakeDelivery]) -> None:
    for batch in batches:
        await p.handle(list(batch))


async def test_v1_then_v2_reverses_v1_and_receivables_hold_v2_once(ledger: Ledger) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    v1, v2 = command(1, 1, 1), command(1, 2, 3)
    await run(p, [v1], [v2])
    assert erp.requests == [["in_1"], ["in_1:reversal", "in_1:v2"]]
    assert (v1.verdict, v2.verdict) == ("ack", "ack")
    assert erp.receivable() == 3300  # v2's total, not v1 + v2
    assert (p.posted, p.reversals, p.stale) == (2, 1, 0)
    # redeliveries of either version change nothing
    again = [command(1, 1, 1), command(1, 2, 3)]
    await run(p, again[:1], again[1:])
    assert len(erp.requests) == 2 and [d.verdict for d in again] == ["ack", "ack"]
    assert (p.stale, p.skipped_known) == (1, 1)
    audit = compute_audit([IssuedInvoice("in_1", "USD", 3300, 0.5, version=2)], {"in_1"},
                          erp.books.postings, now=2.0)
    assert (audit.posted, audit.superseded, audit.reversals, audit.duplicates,
            audit.unexpected, audit.order_violations) == (1, 1, 1, 0, 0, 0)
    assert audit.postings == (audit.posted + audit.duplicates + audit.unexpected
                              + audit.superseded + audit.reversals)
    assert audit.amount_posted_latest == audit.amount_issued == {"USD": 3300}
    assert audit.amount_reversed == {"USD": 1100}
    assert audit.amount_posted == audit.amount_issued  # the reversal counts negative


async def test_v2_before_v1_applies_v2_and_skips_v1_as_stale(ledger: Ledger) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    v2, v1 = command(1, 2, 3), command(1, 1, 1)
    await run(p, [v2], [v1])
    assert erp.requests == [["in_1:v2"]]
    assert (v2.verdict, v1.verdict, p.stale) == ("ack", "ack", 1)
    assert erp.receivable() == 3300
    events = [e for e in await audit_events(ledger) if e.startswith("version.")]
    assert events == ["version.claimed billing:in_1:v2", "version.applied billing:in_1:v2",
                      "version.stale billing:in_1:v1"]
    audit = compute_audit([IssuedInvoice("in_1", "USD", 3300, 0.5, version=2)], {"in_1"},
                          erp.books.postings, now=2.0)
    assert (audit.posted, audit.superseded, audit.reversals, audit.order_violations) == (
        1, 0, 0, 0)


async def test_both_versions_in_one_batch_post_only_the_latest(ledger: Ledger) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    batch = [command(1, 1, 1), command(1, 2, 3), command(2, 1, 1)]
    await run(p, batch)
    assert erp.requests == [["in_1:v2", "in_2"]]
    assert [d.verdict for d in batch] == ["ack"] * 3 and p.superseded == 1


async def test_a_refused_reversal_holds_the_aggregate_until_the_replay(ledger: Ledger) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    await run(p, [command(1, 1, 1)])
    erp.reject = {"in_1:reversal"}
    v2 = command(1, 2, 3)
    await run(p, [v2])
    assert v2.verdict == "term" and p.dlq.letters == [("erp.validation", "billing:in_1:v2")]
    assert erp.receivable() == 1100 + 3300  # v2 is at the ERP, v1 not reversed yet
    assert (await ledger.aggregate_versions([AGG]))[AGG].version == 1
    # the fix, then the replay of the dead letter: v2 answered replayed, v1 reversed once
    erp.reject = set()
    replay = command(1, 2, 3)
    await run(p, [replay])
    assert replay.verdict == "ack"
    assert erp.requests[-1] == ["in_1:reversal", "in_1:v2"]
    assert erp.receivable() == 3300
    assert (await ledger.aggregate_versions([AGG]))[AGG].version == 2
    assert [q.external_id for q in erp.books.postings] == ["in_1", "in_1:v2", "in_1:reversal"]


async def audit_events(ledger: Ledger) -> list[str]:
    rows = await ledger._db.execute_fetchall("SELECT event, key FROM audit ORDER BY seq")
    return [f"{event} {k}" for event, k in rows]


# -- the webhook route -------------------------------------------------------------------------


def billing_invoice_event(event_type: str, version: int) -> BillingEvent:
    line = BillingInvoiceLine(id="il_1", product="prod_seat", description="seat",
                              quantity=2 * version, unit_amount=1500, amount=3000 * version)
    inv = BillingInvoice(id="in_000009", number="INV-9", customer="cus_1", currency="usd",
                         created=1_740_787_200, period_start=1_740_787_200,
                         period_end=1_743_379_200, lines=LineList(data=[line]),
                         subtotal=3000 * version, tax=0, total=3000 * version, version=version)
    return BillingEvent(id=f"evt_{version}", type=event_type, created=1_740_787_200,
                        data=EventData(object=inv))


def test_invoice_updated_is_an_issued_v1_invoice_keyed_by_its_version() -> None:
    v1 = BILLING_ROUTES["invoice.finalized"].map(billing_invoice_event("invoice.finalized", 1))
    v2 = BILLING_ROUTES["invoice.updated"].map(billing_invoice_event("invoice.updated", 2))
    assert isinstance(v2.payload, InvoiceIssued) and v2.payload.total == 6000
    assert (str(v1.key), str(v2.key)) == ("billing:in_000009:v1", "billing:in_000009:v2")
    assert v2.msg_id == derive_id("billing", "in_000009", "2") != v1.msg_id
    with pytest.raises(ContractError) as err:
        BILLING_ROUTES["invoice.updated"].map(billing_invoice_event("invoice.updated", 1))
    assert (err.value.code, err.value.path) == ("invoice.update_version",
                                                "$.data.object.version")


async def test_a_crash_after_the_erp_posted_keeps_older_versions_out(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ERP posts v2, the process dies before the ledger records it (here: the commit
    fails); v1 arriving then is stale (v2 was claimed), and v2's redelivery completes."""
    erp = FakeErp()
    p = make_poster(erp, ledger)
    real_record = ledger.record

    async def crash(*args: Any, **kw: Any) -> None:
        raise LedgerUnavailable("disk gone")
    monkeypatch.setattr(ledger, "record", crash)
    v2 = command(1, 2, 3)
    with pytest.raises(LedgerUnavailable):
        await run(p, [v2])
    assert v2.verdict is None and erp.requests == [["in_1:v2"]]
    monkeypatch.setattr(ledger, "record", real_record)
    v1 = command(1, 1, 1)
    await run(p, [v1])
    assert v1.verdict == "ack" and p.stale == 1 and len(erp.requests) == 1
    again = command(1, 2, 3)
    await run(p, [again])
    assert again.verdict == "ack" and erp.requests[-1] == ["in_1:v2"] and p.replayed == 1
    assert (await ledger.aggregate_versions([AGG]))[AGG].claimed is None
    # newer versions after such crashes (two in a row here) reverse every claimed version
    # the ledger cannot vouch for
    monkeypatch.setattr(ledger, "record", crash)
    for version in (3, 4):
        with pytest.raises(LedgerUnavailable):
            await run(p, [command(1, version, version + 1)])
    assert erp.requests[-1] == ["in_1:v2:reversal", "in_1:v3", "in_1:v3:reversal", "in_1:v4"]
    monkeypatch.setattr(ledger, "record", real_record)
    await run(p, [command(1, 5, 6)])
    assert erp.requests[-1] == ["in_1:v2:reversal", "in_1:v3", "in_1:v3:reversal", "in_1:v4",
                                "in_1:v4:reversal", "in_1:v5"]
    assert erp.receivable() == 6600
    audit = compute_audit([IssuedInvoice("in_1", "USD", 6600, 0.5, version=5)], {"in_1"},
                          erp.books.postings, now=2.0)
    assert (audit.posted, audit.superseded, audit.reversals, audit.duplicates,
            audit.order_violations) == (1, 3, 3, 0, 0)
    assert audit.amount_posted == audit.amount_issued


async def test_the_versions_table_never_moves_down_and_settles_claims(ledger: Ledger) -> None:
    def mark(version: int) -> VersionMark:
        return VersionMark("billing", "in_1", version, f"e{version}".encode(), 1.0)

    await ledger.claim_versions([mark(3)])
    row = (await ledger.aggregate_versions([AGG]))[AGG]
    assert (row.version, row.claimed, row.claimed_entry) == (None, 3, b"e3")
    await ledger.record((), versions=[mark(2)])  # applied below the claim: the claim stays
    row = (await ledger.aggregate_versions([AGG]))[AGG]
    assert (row.version, row.entry, row.claimed) == (2, b"e2", 3)
    await ledger.record((), versions=[mark(3)])
    await ledger.record((), versions=[mark(1)])  # lower: ignored
    row = (await ledger.aggregate_versions([AGG]))[AGG]
    assert (row.version, row.entry, row.claimed, row.claimed_entry) == (3, b"e3", None, None)
    assert await ledger.aggregate_versions([("billing", "in_2")]) == {}
    assert await ledger.verify_audit() is None


# -- two gateway processes sharing the cluster's versions --------------------------------------


async def test_v1_posted_by_one_process_v2_by_another_reverses_v1(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """The old failure: each process kept its own versions, so the second posted v2 beside v1
    and receivables held both. With the shared versions the second reverses v1."""
    erp, shared = FakeErp(), MemoryBucket()
    a, b = make_poster(erp, ledger, shared), make_poster(erp, other_ledger, shared)
    await run(a, [command(1, 1, 1)])
    v2 = command(1, 2, 3)
    await run(b, [v2])
    assert v2.verdict == "ack"
    assert erp.requests == [["in_1"], ["in_1:reversal", "in_1:v2"]]
    assert erp.receivable() == 3300
    # v1 redelivered to the first process (say, after it froze): stale there too
    late = command(1, 1, 1)
    await run(a, [late])
    assert late.verdict == "ack" and a.stale == 1 and len(erp.requests) == 2


async def test_a_claim_lost_to_another_process_is_planned_again(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """Both processes read the aggregate before either claims: A (v1) and B (v2). B's claim
    lands first; A's claim, conditional on the revision it read, loses, and A plans again from
    the fresh read: v1 is then stale. Nothing of v1 is posted after v2."""
    erp, shared = FakeErp(), MemoryBucket()
    a, b = make_poster(erp, ledger, shared), make_poster(erp, other_ledger, shared)
    v2 = command(1, 2, 3)

    async def b_first(_key: str) -> None:  # runs inside A's first claim, after A's read
        await run(b, [v2])
    shared.before_write = b_first
    v1 = command(1, 1, 1)
    await run(a, [v1])
    assert (v1.verdict, v2.verdict) == ("ack", "ack")
    assert shared.conflicts == 1 and a.replans == 1 and a.stale == 1
    assert erp.requests == [["in_1:v2"]]
    assert erp.receivable() == 3300


async def test_a_batch_of_aggregates_is_one_read_and_a_lost_claim_re_reads_only_its_own(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """A batch of 12 invoices reads its 12 aggregates from the shared versions in one round
    trip; applying them after the ERP's answer reads nothing (each claim's revision is
    known). When another process claims one of them between A's read and A's claim, A
    re-reads that aggregate alone (a second round trip) and plans it again: stale."""
    erp, shared = FakeErp(), MemoryBucket()
    a, b = make_poster(erp, ledger, shared), make_poster(erp, other_ledger, shared)
    await run(a, [command(n, 1, 1) for n in range(1, 13)])
    assert len(shared.reads) == 1 and len(shared.reads[0]) == 12
    assert erp.requests == [[f"in_{n}" for n in range(1, 13)]]
    shared.reads.clear()
    v3 = command(5, 3, 2)

    async def b_first(_key: str) -> None:  # inside A's claim of the v2s, after A's read
        await run(b, [v3])
    shared.before_write = b_first
    batch = [command(n, 2, 3) for n in range(1, 13)]
    await run(a, batch)
    assert [d.verdict for d in batch] == ["ack"] * 12 and v3.verdict == "ack"
    b_read = [r for r in shared.reads if r == [shared.reads[1][0]]]
    assert len(shared.reads[0]) == 12 and len(b_read) == 2  # A's read; B's read, A's re-read
    assert len(shared.reads) == 3 and a.replans == 1 and a.stale == 1
    assert erp.requests[1] == ["in_5:reversal", "in_5:v3"]  # B's batch, inside A's claim
    assert sorted(erp.requests[2]) == sorted(
        x for n in range(1, 13) if n != 5 for x in (f"in_{n}:reversal", f"in_{n}:v2"))


async def test_a_claim_by_a_process_that_froze_is_carried_by_the_other(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claims v1 and sends it, then freezes before recording it (its ledger write fails);
    B gets v2: v1 may be at the ERP, so B posts and reverses it with v2. When A's v1 comes
    back it is stale; receivables hold v2 once."""
    erp, shared = FakeErp(), MemoryBucket()
    a, b = make_poster(erp, ledger, shared), make_poster(erp, other_ledger, shared)

    async def frozen(*args: Any, **kw: Any) -> None:
        raise LedgerUnavailable("process frozen")
    monkeypatch.setattr(ledger, "record", frozen)
    with pytest.raises(LedgerUnavailable):
        await run(a, [command(1, 1, 1)])
    v2 = command(1, 2, 3)
    await run(b, [v2])
    assert v2.verdict == "ack"
    # v1 was claimed and may be at the ERP (it is): posted again (replayed), reversed, then v2
    assert erp.requests == [["in_1"], ["in_1", "in_1:reversal", "in_1:v2"]]
    assert erp.receivable() == 3300
    monkeypatch.undo()
    again = command(1, 1, 1)
    await run(a, [again])
    assert again.verdict == "ack" and a.stale == 1
    assert erp.receivable() == 3300


async def test_another_process_moving_on_while_the_erp_answers_is_merged_not_overwritten(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """A claims v1 and sends it; while the ERP answers A, B posts v2 (carrying v1 and its
    reversal, since v1 is claimed). A's write of v1 as applied, conditional on its own claim's
    revision, then loses, and A merges instead: v2 stays the applied version."""
    shared = MemoryBucket()

    class SlowErp(FakeErp):
        inside: ErpPoster | None = None

        async def request(self, method: str, path: str, body: bytes, **kw: Any) -> HttpResponse:
            other, self.inside = self.inside, None
            if other is not None:  # B's whole batch runs while A's request is in flight
                await run(other, [v2])
            return await super().request(method, path, body, **kw)

    erp = SlowErp()
    a, b = make_poster(erp, ledger, shared), make_poster(erp, other_ledger, shared)
    v1, v2 = command(1, 1, 1), command(1, 2, 3)
    erp.inside = b
    await run(a, [v1])
    assert (v1.verdict, v2.verdict) == ("ack", "ack")
    assert erp.requests == [["in_1", "in_1:reversal", "in_1:v2"], ["in_1"]]
    assert shared.conflicts == 1  # A's conditional apply lost to B's write
    read = await SharedVersions(shared).read([AGG])  # type: ignore[arg-type]
    row = read[AGG].row
    assert row is not None and (row.version, row.claimed) == (2, None)
    assert erp.receivable() == 3300


class _Unavailable(FakeErp):
    async def request(self, method: str, path: str, body: bytes, **_: Any) -> HttpResponse:
        return HttpResponse(503, b'{"error":{"code":"UNAVAILABLE","message":"down"}}')


@pytest.mark.parametrize("erp_up", [True, False])
async def test_a_batch_costs_one_ledger_transaction_and_skips_are_acked_after_it(
        ledger: Ledger, erp_up: bool) -> None:
    """Claims, skip notes, postings and applied versions of one batch: one ledger
    transaction; a skipped command is acked only once its note is durable. When the ERP
    request fails, the claims and notes are still written (one transaction), the skips acked,
    the postings not."""
    erp = FakeErp() if erp_up else _Unavailable()
    p = make_poster(erp, ledger)
    log: list[str] = []
    transaction = ledger._transaction

    async def counted(*args: Any, **kw: Any) -> Any:
        log.append("transaction")
        return await transaction(*args, **kw)

    ledger._transaction = counted  # type: ignore[method-assign]
    old, new, other = command(2, 1, 1), command(2, 2, 2), command(3, 1, 1)
    for name, d in (("old", old), ("new", new), ("other", other)):
        settle = d._set

        async def noted(verdict: str, name: str = name, settle: Any = settle) -> bool:
            log.append(f"{verdict} {name}")
            return bool(await settle(verdict))

        d._set = noted  # type: ignore[method-assign]
    await p.handle([old, new, other])
    assert log.count("transaction") == 1
    assert log.index("transaction") < log.index("ack old")  # superseded: acked after its note
    events = [e for e in await audit_events(ledger) if e.startswith("version.")]
    assert "version.superseded billing:in_2:v1" in events
    assert {"version.claimed billing:in_2:v2", "version.claimed billing:in_3:v1"} <= set(events)
    if erp_up:
        assert (new.verdict, other.verdict, p.superseded) == ("ack", "ack", 1)
        assert {"version.applied billing:in_2:v2", "version.applied billing:in_3:v1"} <= set(
            events)
    else:
        assert old.verdict == "ack" and "ack" not in (new.verdict, other.verdict)
        assert not any(e.startswith("version.applied") for e in events)


# -- two batches in flight (``ErpPoster.pipelined``) -------------------------------------------


async def until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (a guard of 10 s against a hang, not a timing)."""
    with anyio.fail_after(10):
        while not check():
            await anyio.sleep(0.01)


class HeldRecord:
    """Holds the ledger's ``record`` (a batch's last step) until ``release``; ``fail`` makes
    the held call raise ``LedgerUnavailable`` instead."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = ledger.record
        self.entered = anyio.Event()
        self.gate = anyio.Event()
        self.fail = False
        self.calls = 0  # records begun (each batch's tail makes one)
        monkeypatch.setattr(ledger, "record", self)

    async def __call__(self, *args: Any, **kw: Any) -> None:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise LedgerUnavailable("disk gone")
        await self.real(*args, **kw)

    def release(self) -> None:
        self.gate.set()


async def test_pipelined_the_next_batch_is_sent_while_the_previous_one_is_recorded(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    held = HeldRecord(ledger, monkeypatch)
    first, second = command(1, 1, 1), command(2, 1, 1)
    async with p.pipelined(), anyio.create_task_group() as tg:
        await p.handle([first])  # returns once sent: its record is held
        await held.entered.wait()
        tg.start_soon(p.handle, [second])
        await until(lambda: len(erp.requests) >= 2)
        # The second request went while the first batch was still unrecorded and unacked.
        assert erp.requests == [["in_1"], ["in_2"]]
        assert (first.verdict, second.verdict) == (None, None)
        held.release()
    assert (first.verdict, second.verdict) == ("ack", "ack")
    assert (p.overlapped, p.tail_waits, p.posted) == (1, 0, 2)
    keys = [p_.idempotency_key for d in (first, second)
            if isinstance(p_ := _codec.decode(d.data).payload, PostJournalEntry)]
    assert len(keys) == 2 and await ledger.known(keys) == set(keys)  # both recorded


def test_the_tails_in_flight_are_what_the_ack_pending_limit_holds_whole() -> None:
    assert [tails_for(n, 100) for n in (100, 256, 299, 300, 512, 10_000)] == [1, 1, 1, 2, 2, 2]
    assert tails_for(512, 256) == 1 and tails_for(ConsumerSettings().max_ack_pending, 100) == 2


async def test_pipelined_two_batches_finish_behind_the_next_and_a_third_waits(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for three batches unacknowledged, two finish in the background while the
    next is sent; the next one's own tail waits for the oldest."""
    erp = FakeErp()
    p = make_poster(erp, ledger)
    assert p.max_tails == 2
    held = HeldRecord(ledger, monkeypatch)
    b = [command(n, 1, 1) for n in (1, 2, 3)]
    async with p.pipelined(), anyio.create_task_group() as tg:
        await p.handle([b[0]])  # sent; its record is held
        await held.entered.wait()
        await p.handle([b[1]])  # sent beside it: a second tail, held too
        tg.start_soon(p.handle, [b[2]])
        await until(lambda: p.tail_full >= 1)
        # The third request went too, and its tail waits: two are running.
        await anyio.sleep(0.05)  # (room for a third record to begin, were it allowed to)
        assert erp.requests == [["in_1"], ["in_2"], ["in_3"]]
        assert held.calls == 2 and [d.verdict for d in b] == [None, None, None]
        held.release()
    assert [d.verdict for d in b] == ["ack", "ack", "ack"]
    assert (p.overlapped, p.tail_full, p.tail_waits, p.posted) == (2, 1, 0, 3)


async def test_pipelined_with_room_for_two_batches_one_finishes_at_a_time(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger, consumer=ConsumerSettings(max_ack_pending=256))
    assert p.max_tails == 1
    held = HeldRecord(ledger, monkeypatch)
    first, second = command(1, 1, 1), command(2, 1, 1)
    async with p.pipelined(), anyio.create_task_group() as tg:
        await p.handle([first])
        await held.entered.wait()
        tg.start_soon(p.handle, [second])
        await until(lambda: p.tail_full >= 1)
        await anyio.sleep(0.05)  # (room for a second record to begin, were it allowed to)
        assert erp.requests == [["in_1"], ["in_2"]] and second.verdict is None
        assert held.calls == 1
        held.release()
    assert (first.verdict, second.verdict) == ("ack", "ack") and p.posted == 2


async def test_pipelined_a_batch_of_the_same_invoice_waits_for_the_one_before(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """v2 must be planned against v1 as the ledger and the bucket hold it once v1 is done:
    its batch waits, then reverses v1 (not v1's claim seen half-way)."""
    erp = FakeErp()
    p = make_poster(erp, ledger)
    held = HeldRecord(ledger, monkeypatch)
    v1, v2 = command(1, 1, 1), command(1, 2, 3)
    async with p.pipelined(), anyio.create_task_group() as tg:
        await p.handle([v1])
        await held.entered.wait()
        tg.start_soon(p.handle, [v2])
        await until(lambda: p.tail_waits >= 1)
        assert erp.requests == [["in_1"]] and v2.verdict is None  # waiting, nothing sent
        held.release()
    assert erp.requests == [["in_1"], ["in_1:reversal", "in_1:v2"]]
    assert (v1.verdict, v2.verdict) == ("ack", "ack")
    assert erp.receivable() == 3300 and p.overlapped == 0


async def test_pipelined_a_batch_whose_record_fails_is_naked_and_the_next_goes_on(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    erp = FakeErp()
    p = make_poster(erp, ledger)
    held = HeldRecord(ledger, monkeypatch)
    held.fail = True
    first = command(1, 1, 1)
    async with p.pipelined():
        await p.handle([first])
        await held.entered.wait()
        held.release()
        await until(lambda: first.verdict is not None)
        assert first.verdict == "nak"  # a passing failure: redelivered, answered replayed
        held.fail = False
        again, other = command(1, 1, 1), command(2, 1, 1)
        await p.handle([again, other])
    assert (again.verdict, other.verdict) == ("ack", "ack")
    assert erp.requests == [["in_1"], ["in_1", "in_2"]] and p.replayed == 1
    assert p.last_error is not None and "disk gone" in p.last_error


async def test_pipelined_a_failing_batch_lets_the_one_before_finish_first(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in batch k+1 (here the poster's fault hook) fails the actor, but only once batch
    k's ledger commit and acks are done: its commands are not sent again for nothing."""
    erp = FakeErp()
    p = make_poster(erp, ledger)
    held = HeldRecord(ledger, monkeypatch)
    first, second = command(1, 1, 1), command(2, 1, 1)

    async def release_soon() -> None:
        await anyio.sleep(0.05)
        held.release()

    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg, p.pipelined():
            await p.handle([first])
            await held.entered.wait()
            p._raise_every = 1  # the next batch raises at once, before any await
            tg.start_soon(release_soon)
            await p.handle([second])
    except BaseException as exc:  # what the supervisor would be handed
        failure = exc
    while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
        failure = failure.exceptions[0]
    assert isinstance(failure, RuntimeError) and "raise_every" in str(failure)
    assert first.verdict == "ack" and p.posted == 1  # finished, not cut off
    assert second.verdict is None and erp.requests == [["in_1"]]
