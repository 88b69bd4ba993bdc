"""S20's failure and repair transitions, counted per object on a real ledger file (the
platforms, the broker and the shared buckets are fakes; no sleeps, no broker): every ERP
posting and revenue line gets exactly one audit row per transition its state machine made,
a redelivery adds none, and the keyed chain verifies.

- an ERP posting out of retries: its version claimed, its dead letter (``dlq.dead_lettered``,
  written from the letter by ``LetterAudit``), the operator's replay (``dlq.replayed``, by
  ``AuditActions``), then claimed again and applied, ``created`` once;
- an ERP posting refused by itself: the same, with the posting's ``dead_lettered`` row in the
  transaction that records the refusal;
- a revenue line with no answer (``in_doubt``), refused (``rejected``), answered 503
  (``released``) or left ``pending`` by a crash, then resolved by a person or sent again:
  ``upload.<status>`` once per change (``UPLOAD_TRANSITIONS``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.audit import AuditActions, LetterAudit, encode_action, letter_audit_key
from actors.deadletter import DeadLetterSink
from actors.infra import ConsumerSettings
from actors.infra.bus import OutMsg
from actors.infra.http import Ambiguous, HttpResponse, PlatformUnavailable
from actors.infra.ledger import Ledger, UploadRow
from actors.revenue import PLATFORM
from contracts import ContractError, Envelope, MsgpackCodec, PostJournalEntry, Subjects

from ..actors.test_erp_ordering import FakeErp, command, make_poster
from ..revenue.test_poster import FakeDelivery, Platform, accept, envelope, fail, poster
from ..revenue.test_poster import refuse_invoice as refuse_lines

KEY = b"k" * 32
MAX_DELIVER = ConsumerSettings().max_deliver
_codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = await Ledger.open(tmp_path / "ledger.db")
    await ledger.use_audit_key(KEY, now=time.time())
    try:
        yield ledger
    finally:
        await ledger.close()


async def audit_by_key(ledger: Ledger) -> dict[str, list[str]]:
    """Every audit row's event, by key, in the chain's order."""
    out: dict[str, list[str]] = defaultdict(list)
    async with ledger._db.execute("SELECT event, key FROM audit ORDER BY seq") as cur:
        async for event, key in cur:
            out[key].append(event)
    return dict(out)


async def verified(ledger: Ledger) -> int:
    check = await ledger.check_audit(KEY)
    assert check.broken is None
    return check.rows


class DlqBus:
    """The DLQ stream as the sink sees it: a letter per message id, stored once."""

    def __init__(self) -> None:
        self.stored: list[OutMsg] = []

    async def publish(self, out: OutMsg) -> bool:
        duplicate = any(m.msg_id == out.msg_id for m in self.stored)
        if not duplicate:
            self.stored.append(out)
        return duplicate

    async def emit(self, subject: str, data: bytes) -> None:
        return None

    def deliveries(self) -> list[FakeDelivery]:
        """The stored letters as ``LetterAudit`` is handed them (DLQ sequence 1, 2, ...)."""
        out = []
        for seq, m in enumerate(self.stored, 1):
            d = FakeDelivery(m.data)
            d.stream_seq, d.subject = seq, m.subject
            out.append(d)
        return out


class SwitchErp(FakeErp):
    """The simulator's ERP books, answering 503 to every request while ``down``."""

    down = False

    async def request(self, method: str, path: str, body: bytes, **kw: Any) -> HttpResponse:
        if self.down:
            raise PlatformUnavailable("503", code="http.server_error")
        return await super().request(method, path, body, **kw)


def again(d: FakeDelivery, *, seq: int, replay_of: int | None = None) -> FakeDelivery:
    """``d``'s message delivered once more (a redelivery, or a replay of letter
    ``replay_of``)."""
    out = FakeDelivery(d.data, num_delivered=1 if replay_of else d.num_delivered + 1)
    out.stream_seq, out.subject = seq, d.subject
    if replay_of is not None:
        out.headers = {"Erpgw-Replay-Of": str(replay_of)}
    return out


async def test_a_dead_lettered_posting_and_its_replay_are_one_row_each(ledger: Ledger) -> None:
    erp = SwitchErp()
    p = make_poster(erp, ledger)
    dlq = DlqBus()
    p.dlq = DeadLetterSink(dlq, Subjects(), "billing", "ERPGW_BILLING")  # type: ignore[arg-type]
    letters = LetterAudit("audit-letters", bus=dlq, stream="ERPGW_DLQ",  # type: ignore[arg-type]
                          durable="audit-letters", consumer=ConsumerSettings(), ledger=ledger)
    actions = AuditActions("audit-actions", bus=dlq,  # type: ignore[arg-type]
                           stream="ERPGW_AUDIT", durable="audit-actions",
                           consumer=ConsumerSettings(), ledger=ledger, prefix="erpgw")
    # in_1: the ERP is down on the last allowed delivery: out of retries, a dead letter.
    out_of_retries = command(1, 1, 1)
    out_of_retries.num_delivered, out_of_retries.stream_seq = MAX_DELIVER, 11
    erp.down = True
    await p.handle([out_of_retries])
    assert out_of_retries.verdict == "term"
    # in_2: the ERP refuses the entry itself: a dead_lettered posting, and a dead letter.
    erp.down = False
    refused = command(2, 1, 1)
    refused.stream_seq = 12
    entry = _codec.decode(refused.data).payload
    assert isinstance(entry, PostJournalEntry)
    erp.reject.add(entry.external_id)
    await p.handle([refused])
    assert refused.verdict == "term"

    # Each stored letter becomes one row; a redelivery of the letters adds none.
    stored = dlq.deliveries()
    assert [(d.stream_seq, d.subject) for d in stored] == [
        (1, "erpgw.dlq.billing.retry_exhausted"), (2, "erpgw.dlq.billing.erp_validation")]
    await letters.handle(stored)
    assert letters.recorded == 2 and all(d.verdict == "ack" for d in stored)
    await letters.handle(dlq.deliveries())
    assert letters.recorded == 2

    # The operator replays both (the audit record of each, delivered twice), and the ERP
    # takes them.
    erp.reject.clear()
    records = []
    for seq, key in ((1, "billing:in_1:v1"), (2, "billing:in_2:v1")):
        assert letter_audit_key(seq, key) == key
        rec = FakeDelivery(encode_action("dlq.replayed", key, detail=f"dead letter #{seq}",
                                         identity="UOPERATOR"))
        rec.stream_seq, rec.subject = 40 + seq, "erpgw.audit.action.operator.dlq_replayed"
        records.append(rec)
    await actions.handle(records)
    await actions.handle([again(r, seq=r.stream_seq) for r in records])
    assert actions.recorded == 2
    replays = [again(out_of_retries, seq=21, replay_of=1), again(refused, seq=22, replay_of=2)]
    await p.handle(replays)
    assert [d.verdict for d in replays] == ["ack", "ack"]
    # A redelivery of the replays (a lost ack) writes nothing.
    await p.handle([again(d, seq=d.stream_seq) for d in replays])

    rows = await audit_by_key(ledger)
    postings = {r["external_id"]: r["idempotency_key"]
                for n in (1, 2) for r in await ledger.find(external_id=f"in_{n}")}
    repaired = ["version.claimed", "dlq.dead_lettered", "dlq.replayed", "version.claimed",
                "version.applied"]
    assert rows == {
        "": ["audit.keyed"],
        "billing:in_1:v1": repaired,
        postings["in_1"]: ["created"],  # out of retries: no posting row until it posts
        "billing:in_2:v1": repaired,
        postings["in_2"]: ["dead_lettered", "created"],
    }
    assert {ext: len(erp.books.by_external_id(ext)) for ext in postings} == {
        "in_1": 1, "in_2": 1}  # posted once each at the ERP
    assert await verified(ledger) == sum(len(v) for v in rows.values())


async def test_every_upload_failure_and_its_repair_is_one_row_per_line(ledger: Ledger) -> None:
    # Each upload answered in turn: in_1 no answer, in_2 refused, in_3 a 503, then all taken.
    platform = Platform(fail(Ambiguous("no answer within 10 s")), refuse_lines("in_2"),
                        fail(PlatformUnavailable("503", code="http.server_error")), accept)
    p = poster(platform, ledger)
    # in_4: a crash left its claim pending.
    await ledger.record_uploads([
        UploadRow(PLATFORM, f"in_4:il_{k}", "in_4", "pending", "a0", None, 100, "USD", None,
                  time.time()) for k in (1, 2)])
    first = [FakeDelivery(envelope(n)) for n in (1, 2, 3, 4)]
    for d in first:
        await p.handle([d])
    assert [d.verdict for d in first] == ["ack", "term", "nak", "ack"]
    assert p.dlq.letters == [("revenue.invalid", "billing:in_2:v1")]
    # A person checks the lines in doubt: in_1's are missing, in_4's are there.
    now = time.time()
    assert await ledger.resolve_in_doubt(PLATFORM, ["in_1:il_1", "in_1:il_2"], present=False,
                                         note="not at the platform", now=now) == 2
    assert await ledger.resolve_in_doubt(PLATFORM, ["in_4:il_1", "in_4:il_2"], present=True,
                                         note="found at the platform", now=now) == 2
    # in_1 and in_3 delivered again, in_2's letter replayed, in_4 redelivered: one upload.
    second = [again(d, seq=d.stream_seq) for d in first]
    await p.handle(second)
    assert [d.verdict for d in second] == ["ack"] * 4
    await p.handle([again(d, seq=d.stream_seq) for d in second])  # a lost ack: nothing new
    assert len(platform.uploads) == 4

    rows = await audit_by_key(ledger)
    expected = {
        "in_1": ["pending", "in_doubt", "released", "pending", "uploaded"],
        "in_2": ["pending", "rejected", "pending", "uploaded"],
        "in_3": ["pending", "released", "pending", "uploaded"],
        "in_4": ["pending", "in_doubt", "uploaded"],
    }
    assert rows == {"": ["audit.keyed"]} | {
        f"{PLATFORM}:{inv}:il_{k}": [f"upload.{s}" for s in states]
        for inv, states in expected.items() for k in (1, 2)}
    assert await verified(ledger) == sum(len(v) for v in rows.values())


async def test_a_letter_without_a_key_or_not_a_letter_is_still_one_row(ledger: Ledger) -> None:
    """Whatever sits on a letter subject is accounted for: a letter with no business key
    under ``dlq:<seq>`` (as its replay or purge is), a record that is no letter too."""
    dlq = DlqBus()
    sink = DeadLetterSink(dlq, Subjects(), "billing", "ERPGW_BILLING")  # type: ignore[arg-type]
    poison = FakeDelivery(b"\x00not msgpack")
    poison.stream_seq = 5
    await sink.send(poison, ContractError("not an envelope"))  # type: ignore[arg-type]
    garbage = OutMsg("erpgw.dlq.billing.contract_invalid", b"{not json", msg_id="x")
    await dlq.publish(garbage)
    letters = LetterAudit("audit-letters", bus=dlq, stream="ERPGW_DLQ",  # type: ignore[arg-type]
                          durable="audit-letters", consumer=ConsumerSettings(), ledger=ledger)
    for _ in range(2):  # delivered twice: one row each
        await letters.handle(dlq.deliveries())
    rows = await audit_by_key(ledger)
    assert rows == {"": ["audit.keyed"], "dlq:1": ["dlq.dead_lettered"],
                    "dlq:2": ["dlq.dead_lettered"]}
    assert letters.recorded == 2
    assert await verified(ledger) == 3
