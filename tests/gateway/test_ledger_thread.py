"""A ledger transaction is one call in the connection's thread, on a real SQLite file: one hop
from the event loop however many statements it holds, and a caller cancelled while it runs
neither tears it nor breaks the audit chain (the chain's head moves with what committed)."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest

from actors.infra.ledger import Ledger, PostingRow, UploadConflict, UploadRow, VersionMark


def rows(batch: int, n: int) -> tuple[list[PostingRow], list[VersionMark]]:
    now = time.time()
    posts = [PostingRow(f"k{batch}-{i}", f"in_{batch}_{i}", f"je_{i}", "posted", 100, "USD",
                        "corr", now, "created", "erp_id=je") for i in range(n)]
    marks = [VersionMark("billing", f"in_{batch}_{i}", 1, b"{}", now) for i in range(n)]
    return posts, marks


def count_hops(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls queued to the connection's thread."""
    hops = [0]
    real = ledger._db._execute

    async def counted(*args: Any, **kw: Any) -> Any:
        hops[0] += 1
        return await real(*args, **kw)

    monkeypatch.setattr(ledger._db, "_execute", counted)
    return hops


async def test_a_batch_with_claims_postings_versions_and_audit_is_one_hop(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    posts, marks = rows(0, 3)
    await ledger.record(posts, versions=marks, claims=marks)  # the first looks up the chain
    hops = count_hops(ledger, monkeypatch)
    posts, marks = rows(1, 50)
    await ledger.record(posts, versions=marks, claims=marks,
                        notes=[(time.time(), "version.stale", "billing:x:v1", "applied=v2")])
    assert hops[0] == 1
    assert await ledger.known(p.idempotency_key for p in posts) == {
        p.idempotency_key for p in posts}
    versions = await ledger.aggregate_versions((m.source, m.object_id) for m in marks)
    assert {v.version for v in versions.values()} == {1} and len(versions) == 50
    assert await ledger.verify_audit() is None


async def test_an_upload_transition_checked_inside_the_transaction_is_still_refused(
        ledger: Ledger) -> None:
    now = time.time()
    pending = UploadRow("revenue", "in_1:il_1", "in_1", "pending", "a1", None, 100, "USD",
                        "corr", now)
    await ledger.record_uploads([pending])
    # pending -> pending is not an allowed change: refused, nothing written, chain intact
    with pytest.raises(UploadConflict):
        await ledger.record_uploads([pending])
    assert await ledger.upload_states("revenue", ["in_1:il_1"]) == {"in_1:il_1": "pending"}
    assert await ledger.verify_audit() is None


async def test_a_cancelled_caller_leaves_the_transaction_whole_and_the_chain_intact(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    await ledger.record(rows(9, 1)[0])  # the chain's lookup done: the next record is one call
    real = ledger._db._execute
    queued = anyio.Event()

    async def noted(*args: Any, **kw: Any) -> Any:
        queued.set()
        return await real(*args, **kw)

    busy = threading.Event()  # holds the connection's thread, so the record waits queued
    posts, marks = rows(0, 200)
    scope = anyio.CancelScope()

    async def record() -> None:
        with scope:
            await ledger.record(posts, versions=marks, claims=marks)

    async with anyio.create_task_group() as tg:
        tg.start_soon(real, busy.wait)
        await anyio.sleep(0.05)
        monkeypatch.setattr(ledger._db, "_execute", noted)
        tg.start_soon(record)
        await queued.wait()
        scope.cancel()  # the caller gives up while its transaction waits for the thread
        busy.set()
    assert scope.cancel_called  # (delivered at the caller's next checkpoint, if any)
    assert len(await ledger.known(p.idempotency_key for p in posts)) == 200  # committed whole
    later, _ = rows(1, 2)
    await ledger.record(later)  # chained onto what the cancelled call committed
    assert await ledger.verify_audit() is None
