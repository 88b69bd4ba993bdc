"""The revenue poster over fakes (a scripted platform, a real ledger in a temporary file):
the answers the simulator cannot be made to give — an unreadable 422, a timeout after
sending, a claim left behind — and what each leaves in the ledger and on the deliveries."""

from __future__ import annotations

import asyncio
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.infra import ConsumerSettings
from actors.infra.http import Ambiguous, HttpResponse, PlatformRejected, PlatformUnavailable
from actors.infra.ledger import Ledger, UploadRow
from actors.infra.state import SharedUploads
from actors.platforms import PlatformGuard
from actors.revenue import BREAKER_OPEN, PLATFORM, RevenuePoster
from contracts import (
    BusinessKey,
    InvoiceIssued,
    InvoiceLine,
    MsgpackCodec,
    Subjects,
    make_envelope,
)
from contracts.platforms.revenue import (
    RevenueBatch,
    RevenueBatchResult,
    RevenueLineError,
    RevenueLineIn,
)

from ..actors.memory_kv import MemoryBucket

_codec = MsgpackCodec(object)
_batch = msgspec.json.Decoder(RevenueBatch)


def envelope(n: int, lines: int = 2) -> bytes:
    items = [InvoiceLine(line_id=f"il_{k}", product_id="prod", description="", quantity=1,
                         unit_amount=100, amount=100) for k in range(1, lines + 1)]
    inv = InvoiceIssued(invoice_id=f"in_{n}", number=f"INV-{n}", customer_id="cus_1",
                        currency="USD", issued_at=datetime(2025, 3, 1, tzinfo=UTC),
                        period_start=date(2025, 3, 1), period_end=date(2025, 3, 31),
                        lines=items, subtotal=100 * lines, tax=0, total=100 * lines)
    env = make_envelope(inv, source="billing",
                        key=BusinessKey(source="billing", object_id=inv.invoice_id, version=1))
    return _codec.encode(env)


class FakeDelivery:
    def __init__(self, data: bytes, num_delivered: int = 1) -> None:
        self.data = data
        self.num_delivered = num_delivered
        self.stream_seq = 1
        self.subject = "erpgw.billing.evt.invoice.issued.v1"
        self.headers: dict[str, str] = {}
        self.settled = False
        self.verdict: str | None = None

    async def _set(self, verdict: str) -> bool:
        self.settled, self.verdict = True, verdict
        return True

    async def ack(self) -> bool:
        return await self._set("ack")

    async def nak(self, delay: float | None = None) -> bool:
        return await self._set("nak")

    async def term(self) -> bool:
        return await self._set("term")

    async def in_progress(self) -> bool:
        return True


class FakeSink:
    def __init__(self) -> None:
        self.letters: list[tuple[str, str | None]] = []
        self.count = 0

    async def send(self, d: FakeDelivery, err: Any, **context: Any) -> None:
        self.letters.append((err.code, context.get("business_key")))
        self.count += 1
        await d.term()


class FakeBus:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, subject: str, data: bytes) -> None:
        self.emitted.append((subject, msgspec.json.decode(data)))


Answer = Callable[[list[RevenueLineIn]], HttpResponse]


class Platform:
    """A scripted revenue platform: each upload is answered by the next script entry (the
    last repeats) and, when accepted, recorded."""

    def __init__(self, *script: Answer) -> None:
        self.script = list(script)
        self.uploads: list[list[str]] = []
        self.recorded: list[str] = []

    async def request(self, method: str, path: str, body: bytes, **_: Any) -> HttpResponse:
        lines = _batch.decode(body).lines
        self.uploads.append([ln.line_id for ln in lines])
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        resp = answer(lines)
        self.recorded += [ln.line_id for ln in lines]
        return resp


def accept(lines: list[RevenueLineIn]) -> HttpResponse:
    return HttpResponse(201, msgspec.json.encode(RevenueBatchResult(
        batch_id="RB-1", status="accepted", lines=len(lines))))


def fail(err: Exception) -> Answer:
    def answer(lines: list[RevenueLineIn]) -> HttpResponse:
        raise err
    return answer


def refuse_invoice(invoice_id: str, readable: bool = True) -> Answer:
    """422 when the upload holds ``invoice_id``'s lines, else accept."""
    def answer(lines: list[RevenueLineIn]) -> HttpResponse:
        bad = [i for i, ln in enumerate(lines) if ln.invoice_id == invoice_id]
        if not bad:
            return accept(lines)
        body = msgspec.json.encode(RevenueBatchResult(
            batch_id=None, status="rejected", lines=len(lines),
            errors=[RevenueLineError(index=i, code="INVALID", message="no") for i in bad]))
        raise PlatformRejected("422", status=422,
                               body=body.decode() if readable else "<html>422</html>")
    return answer


# The cluster's shared uploads of each test's process (its ledger): a poster made again on the
# same ledger (a restart) finds what the earlier one shared. Keyed by the ledger object itself, not
# its id(): an id is reused once a test's ledger is freed, and the next test got its bucket.
_SHARED: weakref.WeakKeyDictionary[Ledger, MemoryBucket] = weakref.WeakKeyDictionary()


def poster(platform: Platform, ledger: Ledger, max_lines: int = 500, *,
           bucket: MemoryBucket | None = None, owner: str = "gw-1") -> RevenuePoster:
    """A revenue poster of the process that owns ``ledger``; ``bucket``: the shared uploads
    (two posters given the same one, with other ledgers and owners, are two processes)."""
    guard = PlatformGuard("revenue", platform, open_code=BREAKER_OPEN)  # type: ignore[arg-type]
    shared = bucket or _SHARED.setdefault(ledger, MemoryBucket())
    uploads = SharedUploads(shared, owner)  # type: ignore[arg-type]
    return RevenuePoster("revenue-billing", revenue=guard, ledger=ledger, uploads=uploads,
                         dlq=FakeSink(),
                         subjects=Subjects(), max_batch_lines=max_lines, bus=FakeBus(),
                         stream="ERPGW_BILLING", durable="revenue-billing",
                         consumer=ConsumerSettings(), seed=1)


async def states(ledger: Ledger) -> dict[str, str]:
    return {r.line_id: r.status for r in await ledger.find_uploads(PLATFORM)}


async def test_an_unreadable_422_is_bisected_down_to_the_refused_invoice(ledger: Ledger) -> None:
    platform = Platform(refuse_invoice("in_3", readable=False))
    p = poster(platform, ledger)
    batch = [FakeDelivery(envelope(n)) for n in range(1, 6)]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "ack", "term", "ack", "ack"]
    assert p.dlq.letters == [("http.rejected", "billing:in_3:v1")]
    assert sorted(platform.recorded) == sorted(
        f"in_{n}:il_{k}" for n in (1, 2, 4, 5) for k in (1, 2))
    got = await states(ledger)
    assert {v for k, v in got.items() if k.startswith("in_3:")} == {"rejected"}
    assert {v for k, v in got.items() if not k.startswith("in_3:")} == {"uploaded"}


async def test_a_readable_422_sends_the_other_lines_again_at_once(ledger: Ledger) -> None:
    platform = Platform(refuse_invoice("in_2"))
    p = poster(platform, ledger)
    batch = [FakeDelivery(envelope(n)) for n in range(1, 4)]
    await p.handle(batch)
    assert len(platform.uploads) == 2  # the refused upload, then the rest in one
    assert [d.verdict for d in batch] == ["ack", "term", "ack"]
    assert p.dlq.letters == [("revenue.invalid", "billing:in_2:v1")]


async def test_more_lines_than_the_platform_takes_are_sent_in_halves(ledger: Ledger) -> None:
    def small(lines: list[RevenueLineIn]) -> HttpResponse:
        if len(lines) > 3:
            raise PlatformRejected("413", status=413, body='{"code": "too_many"}')
        return accept(lines)
    platform = Platform(small)
    p = poster(platform, ledger)
    batch = [FakeDelivery(envelope(n)) for n in range(1, 5)]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack"] * 4
    assert sorted(platform.recorded) == sorted(
        f"in_{n}:il_{k}" for n in range(1, 5) for k in (1, 2))


async def test_no_answer_after_sending_is_in_doubt_and_never_sent_again(ledger: Ledger) -> None:
    platform = Platform(fail(Ambiguous("no answer within 10 s")), accept)
    p = poster(platform, ledger)
    first = [FakeDelivery(envelope(1))]
    await p.handle(first)
    assert first[0].verdict == "ack"  # outcome unknown, not failed: flagged, not dead-lettered
    assert set((await states(ledger)).values()) == {"in_doubt"}
    assert p.in_doubt_lines == 2 and p.dlq.letters == []
    (subject, event), = p.bus.emitted
    assert subject == "erpgw.mon.events.revenue" and event["event"] == "upload_in_doubt"
    assert event["invoices"] == ["in_1"] and event["line_count"] == 2
    again = [FakeDelivery(envelope(1), num_delivered=2)]  # a replay, say
    await p.handle(again)
    assert again[0].verdict == "ack" and len(platform.uploads) == 1
    assert p.skipped_lines == 2


async def test_a_claim_left_behind_is_held_in_doubt(ledger: Ledger) -> None:
    """What a restart finds after dying between the claim and the answer."""
    await ledger.record_uploads([
        UploadRow(PLATFORM, f"in_1:il_{k}", "in_1", "pending", "a0", None, 100, "USD", None,
                  time.time()) for k in (1, 2)])
    platform = Platform(accept)
    p = poster(platform, ledger)
    batch = [FakeDelivery(envelope(1)), FakeDelivery(envelope(2))]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "ack"]
    assert platform.uploads == [["in_2:il_1", "in_2:il_2"]]
    assert await states(ledger) == {"in_1:il_1": "in_doubt", "in_1:il_2": "in_doubt",
                                    "in_2:il_1": "uploaded", "in_2:il_2": "uploaded"}


async def test_an_error_status_records_nothing_so_the_lines_go_again(ledger: Ledger) -> None:
    platform = Platform(fail(PlatformUnavailable("503", code="http.server_error")), accept)
    p = poster(platform, ledger)
    first = [FakeDelivery(envelope(1))]
    await p.handle(first)
    assert first[0].verdict == "nak"
    assert set((await states(ledger)).values()) == {"released"}
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await p.handle(again)
    assert again[0].verdict == "ack"
    assert set((await states(ledger)).values()) == {"uploaded"}
    assert platform.uploads[0] == platform.uploads[1]  # the same lines, proven not recorded


async def test_one_invoice_twice_in_a_batch_is_sent_once(ledger: Ledger) -> None:
    platform = Platform(accept)
    p = poster(platform, ledger, max_lines=3)
    batch = [FakeDelivery(envelope(1)), FakeDelivery(envelope(1)), FakeDelivery(envelope(2))]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack", "ack", "ack"]
    assert platform.uploads == [["in_1:il_1", "in_1:il_2"], ["in_2:il_1", "in_2:il_2"]]


# -- two gateway processes sharing the cluster's uploads ---------------------------------------


async def test_a_line_one_process_is_sending_is_not_sent_by_another(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """The old failure: each process guarded its own lines only, so a redelivery to a second
    process (the first frozen past ack_wait mid-upload) uploaded them again. Now the second
    waits while the first is sending, then finds them uploaded and sends nothing."""
    shared = MemoryBucket()
    b_deliveries: list[FakeDelivery] = []

    class Slow(Platform):
        async def request(self, method: str, path: str, body: bytes, **kw: Any) -> HttpResponse:
            if not b_deliveries:  # while A's upload is in flight, B gets the invoice
                b_deliveries.append(FakeDelivery(envelope(1), num_delivered=2))
                await b.handle(b_deliveries)
            return await super().request(method, path, body, **kw)

    platform = Slow(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    first = [FakeDelivery(envelope(1))]
    await a.handle(first)
    assert first[0].verdict == "ack" and b_deliveries[0].verdict == "nak"
    assert b.waiting_lines == 2 and b.requests == 0
    again = [FakeDelivery(envelope(1), num_delivered=3)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.skipped_lines == 2 and b.requests == 0
    assert sorted(platform.recorded) == ["in_1:il_1", "in_1:il_2"]  # once each


async def test_a_claim_lost_to_another_process_sends_nothing_and_waits(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """Both read the lines free; B claims them first (inside A's claim, after A's read). A
    sends nothing, releases its own claim and waits; once B recorded them, A skips them."""
    shared = MemoryBucket()
    platform = Platform(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    b_first = [FakeDelivery(envelope(1), num_delivered=2)]

    async def b_claims_first(_key: str) -> None:
        await b.handle(b_first)
    shared.before_write = b_claims_first
    first = [FakeDelivery(envelope(1))]
    await a.handle(first)
    assert b_first[0].verdict == "ack" and first[0].verdict == "nak"
    assert platform.uploads == [["in_1:il_1", "in_1:il_2"]]  # B's upload only
    assert await states(ledger) == {}  # the shared claim came first: A's ledger never claimed
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await a.handle(again)
    assert again[0].verdict == "ack" and a.requests == 1 and len(platform.uploads) == 1
    assert sorted(platform.recorded) == ["in_1:il_1", "in_1:il_2"]


async def test_lines_another_process_released_are_sent_by_the_next_one(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """A's upload gets a 503 (certainly not recorded): A releases the lines everywhere, so B
    (say, the redelivery went there) sends them, once."""
    shared = MemoryBucket()
    platform = Platform(fail(PlatformUnavailable("503", code="http.server_error")), accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    first = [FakeDelivery(envelope(1))]
    await a.handle(first)
    assert first[0].verdict == "nak" and platform.recorded == []
    assert set((await states(ledger)).values()) == {"released"}
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.uploaded_lines == 2
    assert platform.recorded == ["in_1:il_1", "in_1:il_2"]


async def test_a_restarted_owner_flags_its_unfinished_claims_so_others_stop_waiting(
        ledger: Ledger, other_ledger: Ledger) -> None:
    """A dies between claiming two lines and recording the answer. B, given the invoice,
    waits for A. A restarts: at start it flags its unfinished claims in doubt (here and in the
    shared uploads) without waiting for that invoice to come back to it; B then skips them."""
    shared = MemoryBucket()
    uploads_a = SharedUploads(shared, "gw-a")  # type: ignore[arg-type]
    ids = ["in_1:il_1", "in_1:il_2"]
    await ledger.record_uploads([UploadRow(PLATFORM, i, "in_1", "pending", "a0", None, 100,
                                           "USD", None, time.time()) for i in ids])
    await uploads_a.read(PLATFORM, ids)
    assert await uploads_a.claim(PLATFORM, ids, "a0", time.time()) == set()
    platform = Platform(accept)
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    waiting = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(waiting)
    assert waiting[0].verdict == "nak" and b.waiting_lines == 2
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    await a._left_behind()  # what its run() does first
    assert set((await states(ledger)).values()) == {"in_doubt"} and a.in_doubt_lines == 2
    again = [FakeDelivery(envelope(1), num_delivered=3)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.skipped_lines == 2 and platform.uploads == []


# -- the order of the two claims: shared, then ledger, then the request ------------------------


class Crash(BaseException):
    """What ``os._exit`` at a crash point does to the code after it: nothing more runs (the
    poster's clean-up handlers catch ``Exception`` only, so they do not run either)."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str, module: Any = None) -> None:
    """Crash point ``name`` of ``module`` (default: the revenue poster's) raises ``Crash`` the
    first time execution passes it."""
    if module is None:
        from actors.revenue import poster as module

    passed: list[str] = []

    def point(at: str) -> None:
        if at == name and not passed:
            passed.append(at)
            raise Crash(at)
    monkeypatch.setattr(module, "crashpoint", point)


def freeze_after_the_shared_claim(monkeypatch: pytest.MonkeyPatch,
                                  meanwhile: Callable[[], Awaitable[None]]) -> None:
    """The first upload stops right after its shared claim (a process frozen there) while
    ``meanwhile`` runs, then goes on."""
    original = RevenuePoster._claim_shared
    frozen = [meanwhile]

    async def claim_then_freeze(self: RevenuePoster, part: Any, attempt: str,
                                invoices: Any) -> None:
        await original(self, part, attempt, invoices)
        while frozen:
            await frozen.pop()()
    monkeypatch.setattr(RevenuePoster, "_claim_shared", claim_then_freeze)


def die_before_mirroring_uploaded(monkeypatch: pytest.MonkeyPatch,
                                  uploads: SharedUploads) -> None:
    """``uploads`` crashes when asked to mirror an ``uploaded`` outcome (the ledger has
    committed it): a process dying between the two writes."""
    mark = uploads.mark

    async def die_before_uploaded(platform_: str, ids: Any, status: str, *args: Any,
                                  **kw: Any) -> None:
        if status == "uploaded":
            raise Crash("after the ledger's uploaded commit")
        await mark(platform_, ids, status, *args, **kw)
    monkeypatch.setattr(uploads, "mark", die_before_uploaded)


async def died_in_upload(monkeypatch: pytest.MonkeyPatch, point: str,
                         ledger: Ledger) -> tuple[MemoryBucket, Platform]:
    """Process ``gw-a`` (``ledger``) dies at crash point ``point`` of its first upload (invoice
    1); the shared uploads and the platform it leaves behind."""
    shared, platform = MemoryBucket(), Platform(accept)
    crash_at(monkeypatch, point)
    with pytest.raises(Crash):
        await poster(platform, ledger, bucket=shared, owner="gw-a").handle(
            [FakeDelivery(envelope(1))])
    return shared, platform


async def restart(platform: Platform, ledger: Ledger, shared: MemoryBucket) -> RevenuePoster:
    """Process ``gw-a`` started again on ``ledger``: what its run() does first."""
    p = poster(platform, ledger, bucket=shared, owner="gw-a")
    await p._left_behind()
    return p


def shared_states(bucket: MemoryBucket) -> dict[str, tuple[str, str]]:
    """Every line's (status, owner) in the shared uploads."""
    out = {}
    for key, (value, _) in bucket.data.items():
        if value is not None:
            u = msgspec.msgpack.decode(value)
            out[key.split(".", 1)[1].replace("=3A", ":")] = (u["status"], u["owner"])
    return out


async def test_the_shared_claim_comes_first_and_the_request_right_after_the_ledger_claim(
        ledger: Ledger) -> None:
    """When the shared claim is written the ledger holds nothing of the attempt; when the
    request leaves both hold the lines ``pending``."""
    shared = MemoryBucket()
    seen: list[tuple[str, dict[str, str], dict[str, tuple[str, str]]]] = []

    async def at_shared_claim(key: str) -> None:
        seen.append(("shared claim", await states(ledger), shared_states(shared)))
    shared.before_write = at_shared_claim

    class Watching(Platform):
        async def request(self, method: str, path: str, body: bytes, **kw: Any) -> HttpResponse:
            seen.append(("request", await states(ledger), shared_states(shared)))
            return await super().request(method, path, body, **kw)

    p = poster(Watching(accept), ledger, bucket=shared, owner="gw-a")
    await p.handle([FakeDelivery(envelope(1))])
    ids = ["in_1:il_1", "in_1:il_2"]
    assert seen[0] == ("shared claim", {}, {})
    assert seen[1] == ("request", dict.fromkeys(ids, "pending"),
                       dict.fromkeys(ids, ("pending", "gw-a")))
    assert shared_states(shared) == dict.fromkeys(ids, ("uploaded", "gw-a"))


async def test_a_crash_between_the_claims_is_given_back_at_start_and_sent_once(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dies after its shared claim, before its ledger claim: nothing was sent, so its
    restart gives the claim back (no line in doubt) and the invoice is uploaded once, by
    whichever process gets it next."""
    shared, platform = await died_in_upload(monkeypatch, "revenue.between_claims", ledger)
    ids = ["in_1:il_1", "in_1:il_2"]
    assert await states(ledger) == {} and platform.uploads == []
    assert shared_states(shared) == dict.fromkeys(ids, ("pending", "gw-a"))
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    waiting = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(waiting)
    assert waiting[0].verdict == "nak" and b.requests == 0  # A's claim holds it meanwhile
    restarted = await restart(platform, ledger, shared)
    assert restarted.released_claims == 2 and restarted.in_doubt_lines == 0
    assert shared_states(shared) == dict.fromkeys(ids, ("released", "gw-a"))
    again = [FakeDelivery(envelope(1), num_delivered=3)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.uploaded_lines == 2
    assert platform.recorded == ids  # once
    assert await states(ledger) == {} and set((await states(other_ledger)).values()) == \
        {"uploaded"}


async def test_a_crash_after_the_ledger_claim_is_in_doubt_everywhere(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window left: both claims committed, the request not sent. Presumed recorded, as
    before: in doubt in the ledger and in the shared uploads, never sent by anyone."""
    shared, platform = await died_in_upload(monkeypatch, "revenue.before_upload", ledger)
    restarted = await restart(platform, ledger, shared)
    ids = ["in_1:il_1", "in_1:il_2"]
    assert restarted.in_doubt_lines == 2 and restarted.released_claims == 0
    assert shared_states(shared) == dict.fromkeys(ids, ("in_doubt", "gw-a"))
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.skipped_lines == 2 and platform.uploads == []


async def test_an_outcome_the_shared_uploads_missed_is_mirrored_at_start(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dies after committing ``uploaded`` in its ledger, before mirroring it: its restart
    mirrors it, so B stops waiting and skips the lines instead of being held until its
    deliveries run out."""
    shared = MemoryBucket()
    platform = Platform(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    die_before_mirroring_uploaded(monkeypatch, a.uploads)
    with pytest.raises(Crash):
        await a.handle([FakeDelivery(envelope(1))])
    ids = ["in_1:il_1", "in_1:il_2"]
    assert shared_states(shared) == dict.fromkeys(ids, ("pending", "gw-a"))
    restarted = await restart(platform, ledger, shared)
    assert shared_states(shared) == dict.fromkeys(ids, ("uploaded", "gw-a"))
    assert restarted.released_claims == 0 and restarted.in_doubt_lines == 0
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.skipped_lines == 2 and platform.recorded == ids


async def test_a_process_frozen_between_the_claims_is_waited_for_and_sends_once(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """A is stopped (SIGSTOP past ack_wait) right after its shared claim; the invoice goes to
    B, which waits. A resumes: its ledger claim and request go through; B then skips."""
    shared = MemoryBucket()
    platform = Platform(accept)
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    b_first = [FakeDelivery(envelope(1), num_delivered=2)]

    async def meanwhile() -> None:
        await b.handle(b_first)
    freeze_after_the_shared_claim(monkeypatch, meanwhile)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    first = [FakeDelivery(envelope(1))]
    await a.handle(first)
    assert b_first[0].verdict == "nak" and b.requests == 0 and b.waiting_lines == 2
    assert first[0].verdict == "ack" and a.uploaded_lines == 2
    again = [FakeDelivery(envelope(1), num_delivered=3)]
    await b.handle(again)
    assert again[0].verdict == "ack" and b.skipped_lines == 2
    assert platform.recorded == ["in_1:il_1", "in_1:il_2"]


async def test_a_failed_ledger_claim_gives_the_shared_claim_back_at_once(
        ledger: Ledger, other_ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger refuses the claim (disk full, busy): nothing is sent, the batch is nak'ed,
    and the shared claim is given back then, so another process need not wait for it."""
    from actors.infra.ledger import LedgerUnavailable

    shared = MemoryBucket()
    platform = Platform(accept)
    a = poster(platform, ledger, bucket=shared, owner="gw-a")
    record = ledger.record_uploads

    async def full(rows: Any) -> None:
        if rows and rows[0].status == "pending":
            raise LedgerUnavailable("database or disk is full")
        await record(rows)
    monkeypatch.setattr(ledger, "record_uploads", full)
    with pytest.raises(LedgerUnavailable):
        await a.handle([FakeDelivery(envelope(1))])
    ids = ["in_1:il_1", "in_1:il_2"]
    assert platform.uploads == [] and shared_states(shared) == dict.fromkeys(
        ids, ("released", "gw-a"))
    b = poster(platform, other_ledger, bucket=shared, owner="gw-b")
    again = [FakeDelivery(envelope(1), num_delivered=2)]
    await b.handle(again)
    assert again[0].verdict == "ack" and platform.recorded == ids


async def test_the_wait_for_budget_and_the_breaker_come_before_both_claims(
        ledger: Ledger) -> None:
    """The rate limiter's wait for a permit happens before anything is claimed (a wait for
    budget never sits inside the window), and a breaker that refuses leaves no claim."""
    shared = MemoryBucket()
    # What the shared uploads hold at each permit request (the shared claim is the first of
    # the two claims: the test above proves the order).
    snapshots: list[dict[str, tuple[str, str]]] = []

    class Limiter:
        def __init__(self) -> None:
            self.waits = 1

        def acquire(self, n: int, now: float) -> float:
            snapshots.append(shared_states(shared))
            if self.waits:
                self.waits -= 1
                return 0.001
            return 0.0

        def release(self, n: int) -> None: ...
        def on_success(self, now: float) -> None: ...
        def on_throttled(self, retry_after: float | None, now: float) -> None: ...

    class Breaker:
        open = False

        def allow(self, now: float) -> bool:
            return not self.open

        def retry_in(self, now: float) -> float:
            return 5.0 if self.open else 0.0

        def release(self) -> None: ...
        def record_success(self, now: float) -> None: ...
        def record_error(self, err: Exception, now: float) -> None: ...
        def drain_transitions(self) -> list[Any]:
            return []

    platform = Platform(accept)
    p = poster(platform, ledger, bucket=shared, owner="gw-a")
    breaker = Breaker()
    p.guard = PlatformGuard("revenue", platform, open_code=BREAKER_OPEN,  # type: ignore[arg-type]
                            breaker=breaker, limiter=Limiter())  # type: ignore[arg-type]
    await p.handle([FakeDelivery(envelope(1))])
    assert snapshots == [{}, {}]  # waited once, then permitted: nothing claimed meanwhile
    assert platform.recorded == ["in_1:il_1", "in_1:il_2"]
    breaker.open = True
    refused = [FakeDelivery(envelope(2))]
    await p.handle(refused)
    assert refused[0].verdict == "nak" and len(platform.uploads) == 1
    assert not any(k.startswith("in_2") for k in await states(ledger))
    assert not any(k.startswith("in_2") for k in shared_states(shared))


# -- property: two processes, crashes anywhere in an upload, restarts ----------------------------

_POINTS = (None, "revenue.between_claims", "revenue.before_upload", "revenue.after_upload",
           "revenue.after_commit")


@settings(max_examples=25)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 3), st.sampled_from(_POINTS)),
                min_size=1, max_size=8))
def test_no_line_is_ever_sent_twice_whatever_crashes_and_restarts(
        steps: list[tuple[int, int, str | None]]) -> None:
    """Deliveries of three invoices to two processes, each handling possibly dying at a crash
    point of its upload; a dead process restarts (same ledger, same owner) before its next
    delivery, and at the end every invoice goes round until settled. The platform records
    every line at most once; a line is left in doubt only by a crash between the ledger's
    claim and the answer, and is at the platform only if the request had left."""
    asyncio.run(_crash_and_restart(steps))


def arm_crashpoints(module: Any) -> tuple[list[str], Callable[[], None]]:
    """``module``'s crash points raise ``Crash`` at the one name the returned list holds, once
    (the caller arms it before each step); and the function that puts the real ones back."""
    armed: list[str] = []

    def point(at: str) -> None:
        if armed and armed[0] == at:
            armed.clear()
            raise Crash(at)

    original = module.crashpoint
    module.crashpoint = point

    def restore() -> None:
        module.crashpoint = original
    return armed, restore


async def _crash_and_restart(steps: list[tuple[int, int, str | None]]) -> None:
    from actors.revenue import poster as module

    armed, restore = arm_crashpoints(module)
    shared, platform = MemoryBucket(), Platform(accept)
    crashed_at: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = [await Ledger.open(Path(tmp) / f"gw{i}" / "ledger.db") for i in (0, 1)]
        try:
            procs: list[RevenuePoster | None] = [None, None]

            async def process(i: int) -> RevenuePoster:
                if procs[i] is None:  # (re)start: what run() does first
                    procs[i] = poster(platform, ledgers[i], bucket=shared, owner=f"gw-{i}")
                    await procs[i]._left_behind()  # type: ignore[union-attr]
                return procs[i]  # type: ignore[return-value]

            async def deliver(i: int, n: int, crash: str | None) -> str | None:
                p = await process(i)
                armed[:] = [crash] if crash else []
                d = FakeDelivery(envelope(n))
                try:
                    await p.handle([d])
                except Crash as c:
                    crashed_at.append(str(c))
                    procs[i] = None
                    return None
                armed.clear()
                return d.verdict

            for i, n, crash in steps:
                await deliver(i, n, crash)
            for n in (1, 2, 3):
                for attempt in range(4):
                    if await deliver(attempt % 2, n, None) == "ack":
                        break
                else:
                    raise AssertionError(f"in_{n} never settled")
            recorded = platform.recorded
            assert len(recorded) == len(set(recorded)), "a line was sent twice"
            doubt = {k for led in ledgers for k, v in (await states(led)).items()
                     if v == "in_doubt"}
            lines = {f"in_{n}:il_{k}" for n in (1, 2, 3) for k in (1, 2)}
            assert lines == set(recorded) | doubt
            if doubt:
                assert set(crashed_at) & {"revenue.before_upload", "revenue.after_upload"}
            if doubt & set(recorded):
                assert "revenue.after_upload" in crashed_at
            assert set(recorded) - doubt <= lines
        finally:
            restore()
            for led in ledgers:
                await led.close()


def test_an_invoice_waiting_for_another_process_backs_off_then_waits_longer() -> None:
    from actors.resilience.retry import Retry, decide
    from actors.revenue.poster import CLAIM_PATIENCE, CLAIM_WAIT_S, ClaimedElsewhere

    early = decide(ClaimedElsewhere("l", deliveries=1), 1, 8, 0.5)
    late = decide(ClaimedElsewhere("l", deliveries=CLAIM_PATIENCE + 1), CLAIM_PATIENCE + 1, 8,
                  0.5)
    assert isinstance(early, Retry) and early.delay < CLAIM_WAIT_S
    assert isinstance(late, Retry) and late.delay >= CLAIM_WAIT_S
    assert late.code == "revenue.claimed_elsewhere"


@pytest.mark.parametrize("invoices", [2, 12])
async def test_a_batch_reads_the_shared_uploads_in_one_round_trip_whatever_its_size(
        ledger: Ledger, invoices: int) -> None:
    """Every line of the batch (and the next version's ids) is read in one round trip, and
    the claim re-reads nothing: one read per batch, whatever its size."""
    shared = MemoryBucket()
    p = poster(Platform(accept), ledger, bucket=shared)
    batch = [FakeDelivery(envelope(n)) for n in range(1, invoices + 1)]
    await p.handle(batch)
    assert [d.verdict for d in batch] == ["ack"] * invoices
    assert len(shared.reads) == 1  # lines and next-version ids, one batched read
    assert len(shared.reads[0]) == invoices * 2 * 2  # 2 lines each, and their v2 ids
