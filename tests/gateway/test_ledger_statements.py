"""The ledger's ``IN (?,?,…)`` lookups send a handful of SQL texts whatever the batch lengths:
the connection caches 128 prepared statements, and one text per length made SQLite's memory
grow with the length of a run (docs/benchmarks.md, "What grew, and what bounds it now")."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.infra.ledger import Ledger, PostingRow, VersionMark


def texts_sent(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The SQL texts given to the connection from now on."""
    seen: set[str] = set()
    real = ledger._db.execute

    def execute(sql: str, *args: Any, **kw: Any) -> Any:
        seen.add(sql)
        return real(sql, *args, **kw)

    monkeypatch.setattr(ledger._db, "execute", execute)
    return seen


async def test_lookups_of_every_batch_length_share_a_few_statements(
        ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    posted = [PostingRow(f"k{i}", f"in_{i}", f"je_{i}", "posted", 100, "USD", "corr", now,
                         "created") for i in range(0, 600, 3)]
    marks = [VersionMark("billing", f"in_{i}", 1, b"{}", now) for i in range(0, 600, 3)]
    await ledger.record(posted, versions=marks)
    seen = texts_sent(ledger, monkeypatch)
    for n in range(1, 301):
        keys = [f"k{i}" for i in range(n)]
        want = {k for k in keys if int(k[1:]) % 3 == 0}  # padding matches no row
        assert await ledger.known(keys) == want
        assert set(await ledger.posting_states(keys)) == want
        got = await ledger.aggregate_versions(("billing", f"in_{i}") for i in range(n))
        assert {o for _, o in got} == {f"in_{i}" for i in range(0, n, 3)}
    # lengths 1..300 → 1, 2, 4, …, 512: ten texts per query at most, three queries
    assert len(seen) <= 3 * 10
