"""The posting ledger and audit trail: SQLite (WAL, ``synchronous=FULL``) via aiosqlite.

Theory of operation: one ``Ledger`` per process, one connection, one writer (aiosqlite runs
every statement on its own thread, in order). ``postings`` has one row per idempotency key:
the ERP adapter skips keys it already posted, so a redelivered message never reaches the ERP
twice even past the stream's dedupe window. ``audit`` is append-only (triggers abort UPDATE
and DELETE) and hash-chained: ``hash_n = sha256(hash_{n-1} | row)``, so an offline edit is
detectable by ``verify_audit``. A batch's posting rows and their audit rows are written in the
same transaction, and that transaction commits before any message of the batch is acked.

Errors: ``LedgerUnavailable`` (retryable: busy, disk full, I/O) — the caller must not ack.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import anyio

from contracts import Retryable

from ..crash import fault

__all__ = ["Ledger", "LedgerUnavailable", "PostingRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS postings (
    idempotency_key TEXT PRIMARY KEY,
    external_id     TEXT NOT NULL,
    erp_id          TEXT,
    status          TEXT NOT NULL CHECK (status IN ('posted', 'dead_lettered')),
    amount          INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    correlation_id  TEXT,
    recorded_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS postings_external ON postings(external_id);
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    event     TEXT NOT NULL,
    key       TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""

_GENESIS = "0" * 64


class LedgerUnavailable(Retryable):
    code = "ledger.unavailable"


@dataclass(frozen=True, slots=True)
class PostingRow:
    idempotency_key: str
    external_id: str
    erp_id: str | None
    status: str  # 'posted' | 'dead_lettered'
    amount: int
    currency: str
    correlation_id: str | None
    recorded_at: float
    audit_event: str  # 'posted' | 'replayed' | 'dead_lettered'
    audit_detail: str = ""


def _chain(prev: str, at: float, event: str, key: str, detail: str) -> str:
    row = f"{prev}|{at!r}|{event}|{key}|{detail}".encode()
    return hashlib.sha256(row).hexdigest()


class Ledger:
    def __init__(self, db: aiosqlite.Connection, last_hash: str) -> None:
        self._db = db
        self._last_hash = last_hash

    @classmethod
    async def open(cls, path: Path) -> Ledger:
        """Open (creating if needed) the ledger at ``path``. Raises ``LedgerUnavailable``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA foreign_keys=ON")
            pages = fault("ledger.max_page_count")
            if pages and pages.isdigit():  # disk-full drill (GW_FAULT)
                await db.execute(f"PRAGMA max_page_count={int(pages)}")
            await db.executescript(_SCHEMA)
            async with db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot open ledger {path}: {exc}") from exc
        return cls(db, row[0] if row else _GENESIS)

    async def close(self) -> None:
        await self._db.close()

    async def known(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` already posted.

        A dead-lettered key is not "known": replaying its dead letter after a fix must reach
        the ERP again (whose idempotency key still guards against a double posting).
        """
        keys = list(keys)
        found: set[str] = set()
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = ("SELECT idempotency_key FROM postings "  # noqa: S608 - only '?' marks
                       f"WHERE status = 'posted' AND idempotency_key IN ({marks})")
                async with self._db.execute(sql, chunk) as cur:
                    found.update(r[0] for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    async def record(self, rows: Sequence[PostingRow]) -> None:
        """Write posting rows and their audit rows in one durable transaction.

        A posted key is never changed again; a dead-lettered key becomes posted when a replay
        succeeds. Every row is audited either way.
        Raises ``LedgerUnavailable``; on failure nothing of the batch is written.
        """
        if not rows:
            return
        prev = self._last_hash
        audit = []
        for r in rows:
            h = _chain(prev, r.recorded_at, r.audit_event, r.idempotency_key, r.audit_detail)
            audit.append((r.recorded_at, r.audit_event, r.idempotency_key, r.audit_detail, prev, h))
            prev = h
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(
                    "INSERT INTO postings VALUES (?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(idempotency_key) DO UPDATE SET status = excluded.status, "
                    "erp_id = excluded.erp_id, recorded_at = excluded.recorded_at "
                    "WHERE postings.status = 'dead_lettered'",
                    [(r.idempotency_key, r.external_id, r.erp_id, r.status, r.amount,
                      r.currency, r.correlation_id, r.recorded_at) for r in rows],
                )
                await self._db.executemany(
                    "INSERT INTO audit (at, event, key, detail, prev_hash, hash) "
                    "VALUES (?,?,?,?,?,?)",
                    audit,
                )
                await self._db.execute("COMMIT")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger write failed: {exc}") from exc
        self._last_hash = prev

    async def find(self, *, correlation_id: str | None = None, external_id: str | None = None,
                   idempotency_key: str | None = None) -> list[dict[str, object]]:
        """Posting rows matching any given id, each with its audit trail (for ``trace``)."""
        clauses, params = [], []
        for column, value in (("correlation_id", correlation_id), ("external_id", external_id),
                              ("idempotency_key", idempotency_key)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not clauses:
            return []
        sql = ("SELECT idempotency_key, external_id, erp_id, status, amount, currency, "  # noqa: S608 - fixed column names, '?' values
               f"correlation_id, recorded_at FROM postings WHERE {' OR '.join(clauses)}")
        rows: list[dict[str, object]] = []
        try:
            async with self._db.execute(sql, params) as cur:
                names = [c[0] for c in cur.description]
                for r in await cur.fetchall():
                    rows.append(dict(zip(names, r, strict=True)))
            for row in rows:
                async with self._db.execute(
                        "SELECT seq, at, event, detail FROM audit WHERE key = ? ORDER BY seq",
                        (row["idempotency_key"],)) as cur:
                    row["audit"] = [{"seq": s, "at": a, "event": e, "detail": d}
                                    for s, a, e, d in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return rows

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT status, COUNT(*) FROM postings GROUP BY status"
        ) as cur:
            return {status: n for status, n in await cur.fetchall()}

    async def verify_audit(self) -> int | None:
        """Walk the hash chain; the ``seq`` of the first broken row, or None when intact."""
        prev = _GENESIS
        async with self._db.execute(
            "SELECT seq, at, event, key, detail, prev_hash, hash FROM audit ORDER BY seq"
        ) as cur:
            async for seq, at, event, key, detail, prev_hash, h in cur:
                if prev_hash != prev or _chain(prev, at, event, key, detail) != h:
                    return int(seq)
                prev = h
        return None
