"""The ledger's ``uploads`` table: only the allowed state changes, each audited in the hash
chain, one transaction per batch, and writers that never interleave."""

from __future__ import annotations

import time

import anyio
import pytest

from actors.infra.ledger import (
    UPLOAD_STATUSES,
    UPLOAD_TRANSITIONS,
    Ledger,
    PostingRow,
    UploadConflict,
    UploadRow,
)
from actors.reconcile.revenue import LedgerView
from actors.reconcile.runner import ledger_views


def row(line_id: str, status: str, attempt: str = "a1", batch: str | None = None) -> UploadRow:
    return UploadRow("revenue", line_id, line_id.split(":")[0], status, attempt, batch, 100,
                     "USD", "corr", time.time(), f"to {status}")


def test_the_transition_table_covers_every_status() -> None:
    assert set(UPLOAD_TRANSITIONS) == {None, *UPLOAD_STATUSES}
    assert UPLOAD_TRANSITIONS["uploaded"] == frozenset()  # never changes again
    # a claimed line is sent again only once proven not recorded (released or rejected)
    assert "pending" not in UPLOAD_TRANSITIONS["in_doubt"]
    assert "pending" not in UPLOAD_TRANSITIONS["pending"]


async def test_claim_then_uploaded_is_audited_and_final(ledger: Ledger) -> None:
    await ledger.record_uploads([row("in_1:l1", "pending"), row("in_1:l2", "pending")])
    await ledger.record_uploads([row("in_1:l1", "uploaded", batch="RB-1"),
                                 row("in_1:l2", "uploaded", batch="RB-1")])
    assert await ledger.upload_states("revenue", ["in_1:l1", "in_1:l2", "in_9:l1"]) == {
        "in_1:l1": "uploaded", "in_1:l2": "uploaded"}
    with pytest.raises(UploadConflict, match="uploaded -> pending"):
        await ledger.record_uploads([row("in_2:l1", "pending"), row("in_1:l1", "pending")])
    # the refused batch wrote nothing, not even its valid row
    assert await ledger.upload_states("revenue", ["in_2:l1"]) == {}
    found = await ledger.find_uploads("revenue", invoice_id="in_1", status="uploaded")
    assert [(r.line_id, r.batch_id) for r in found] == [("in_1:l1", "RB-1"),
                                                        ("in_1:l2", "RB-1")]
    assert await ledger.upload_counts("revenue") == {"uploaded": 2}
    assert await ledger.verify_audit() is None
    trail = await ledger._db.execute_fetchall("SELECT event, key FROM audit ORDER BY seq")
    assert [tuple(t) for t in trail] == [
        ("upload.pending", "revenue:in_1:l1"), ("upload.pending", "revenue:in_1:l2"),
        ("upload.uploaded", "revenue:in_1:l1"), ("upload.uploaded", "revenue:in_1:l2")]


async def test_in_doubt_is_resolved_only_by_a_person(ledger: Ledger) -> None:
    await ledger.record_uploads([row("in_1:l1", "pending"), row("in_1:l2", "pending")])
    await ledger.record_uploads([row("in_1:l1", "in_doubt"), row("in_1:l2", "in_doubt")])
    with pytest.raises(UploadConflict):
        await ledger.record_uploads([row("in_1:l1", "pending", attempt="a2")])
    assert await ledger.resolve_in_doubt("revenue", ["in_1:l1"], present=True, note="seen",
                                         now=time.time()) == 1
    assert await ledger.resolve_in_doubt("revenue", ["in_1:l2", "in_1:l1"], present=False,
                                         note="missing", now=time.time()) == 1
    assert await ledger.upload_states("revenue", ["in_1:l1", "in_1:l2"]) == {
        "in_1:l1": "uploaded", "in_1:l2": "released"}
    await ledger.record_uploads([row("in_1:l2", "pending", attempt="a3")])  # sendable again
    assert await ledger.verify_audit() is None


async def test_concurrent_writers_take_turns(ledger: Ledger) -> None:
    """The ERP poster and the revenue poster share one ledger connection: their transactions
    must not interleave (a BEGIN inside another's transaction would fail or merge them)."""
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(ledger.record_uploads, [row(f"in_{i}:l1", "pending")])
            tg.start_soon(ledger.record, [PostingRow(
                f"key-{i}", f"in_{i}", f"je-{i}", "posted", 100, "USD", None, time.time(),
                "posted")])
    assert await ledger.upload_counts("revenue") == {"pending": 20}
    assert await ledger.counts() == {"posted": 20}
    assert await ledger.verify_audit() is None


async def test_upload_tallies_sum_per_invoice_and_status(ledger: Ledger) -> None:
    """What the reconciler reads of the uploads (``ledger_views``): per invoice and status the
    rows and their amounts, summed in SQL and handed over a chunk at a time, in invoice order;
    the views the same as folding every row."""
    await ledger.record_uploads([row("in_1:l1", "pending"), row("in_1:l2", "pending"),
                                 row("in_1:l3", "pending"), row("in_2:l1", "pending")])
    await ledger.record_uploads([row("in_1:l1", "uploaded", batch="RB-1"),
                                 row("in_1:l2", "in_doubt"), row("in_2:l1", "rejected")])
    await ledger.record_uploads([UploadRow("usage", "in_1:u1", "in_1", "pending", "a1", None,
                                           5, "USD", None, time.time())])  # another platform
    assert [t async for t in ledger.upload_tallies("revenue", chunk=2)] == [
        ("in_1", "in_doubt", 1, 100), ("in_1", "pending", 1, 100),
        ("in_1", "uploaded", 1, 100), ("in_2", "rejected", 1, 100)]
    assert await ledger_views(ledger) == {
        "in_1": LedgerView(uploaded=1, in_doubt=1, pending=1, amount=200),
        "in_2": LedgerView(rejected=1)}
