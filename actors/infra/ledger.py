"""The posting ledger and audit trail: SQLite (WAL, ``synchronous=FULL``) via aiosqlite.

Theory of operation: one ``Ledger`` per process, one connection, one writer (aiosqlite runs
every statement on its own thread, in order). ``postings`` has one row per idempotency key:
the ERP adapter skips keys it already posted, so a redelivered message never reaches the ERP
twice even past the stream's dedupe window. ``audit`` is append-only (triggers abort UPDATE
and DELETE) and hash-chained: ``hash_n = sha256(hash_{n-1} | row)``, so an offline edit is
detectable by ``verify_audit``. A batch's posting rows and their audit rows are written in the
same transaction, and that transaction commits before any message of the batch is acked.

``uploads`` is the guard for platforms that accept writes *without* an idempotency key (the
revenue platform's batch upload): one row per (platform, line id) with the state of its upload,
``pending`` → ``uploaded`` | ``in_doubt`` | ``rejected`` | ``released`` (``UPLOAD_TRANSITIONS``;
any other change raises ``UploadConflict`` and writes nothing). Same rules as ``postings``: one
transaction per batch of rows, each row audited in it, in the same hash chain. Several actors
share one ``Ledger``: write transactions take turns (one lock), so they never interleave on the
connection.

Errors: ``LedgerUnavailable`` (retryable: busy, disk full, I/O) — the caller must not ack.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import aiosqlite
import anyio

from contracts import GatewayError, Retryable

from ..crash import fault

__all__ = [
    "UPLOAD_STATUSES",
    "UPLOAD_TRANSITIONS",
    "Ledger",
    "LedgerUnavailable",
    "PostingRow",
    "UploadConflict",
    "UploadRow",
]

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
CREATE TABLE IF NOT EXISTS uploads (
    platform       TEXT NOT NULL,
    line_id        TEXT NOT NULL,
    invoice_id     TEXT NOT NULL,
    status         TEXT NOT NULL
                   CHECK (status IN ('pending', 'uploaded', 'in_doubt', 'rejected', 'released')),
    attempt        TEXT NOT NULL,
    batch_id       TEXT,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    correlation_id TEXT,
    recorded_at    REAL NOT NULL,
    PRIMARY KEY (platform, line_id)
);
CREATE INDEX IF NOT EXISTS uploads_invoice ON uploads(platform, invoice_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""

_GENESIS = "0" * 64


class LedgerUnavailable(Retryable):
    code = "ledger.unavailable"


class UploadConflict(GatewayError):
    """An upload row was asked to change in a way ``UPLOAD_TRANSITIONS`` does not allow (a bug
    in the caller, never a platform answer); nothing of the batch was written."""

    code = "ledger.upload_conflict"


# The states of an upload row and the only changes between them (None: no row yet).
#   pending   claimed by an attempt, durably, *before* the request is sent
#   uploaded  the platform answered that it recorded the line (batch id kept)
#   in_doubt  claimed, but the outcome is unknown (crash or no answer after sending):
#             presumed uploaded, never sent again by itself; a person resolves it
#   rejected  the platform refused it (nothing of that batch was recorded)
#   released  the platform certainly did not record it (it answered an error, or the
#             connection was never opened, or a person confirmed it missing)
UPLOAD_STATUSES = ("pending", "uploaded", "in_doubt", "rejected", "released")
UPLOAD_TRANSITIONS: Mapping[str | None, frozenset[str]] = MappingProxyType({
    None: frozenset({"pending"}),
    "pending": frozenset({"uploaded", "in_doubt", "rejected", "released"}),
    "released": frozenset({"pending"}),
    "rejected": frozenset({"pending"}),
    "in_doubt": frozenset({"uploaded", "released"}),
    "uploaded": frozenset(),
})


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


@dataclass(frozen=True, slots=True)
class UploadRow:
    """The new state of one line's upload to ``platform`` (see ``UPLOAD_TRANSITIONS``)."""

    platform: str
    line_id: str
    invoice_id: str
    status: str
    attempt: str
    batch_id: str | None
    amount: int
    currency: str
    correlation_id: str | None
    recorded_at: float
    audit_detail: str = ""

    @property
    def audit_key(self) -> str:
        return f"{self.platform}:{self.line_id}"


# (at, event, key, detail) of one audit row, before it is chained.
_AuditItem = tuple[float, str, str, str]


def _chain(prev: str, at: float, event: str, key: str, detail: str) -> str:
    row = f"{prev}|{at!r}|{event}|{key}|{detail}".encode()
    return hashlib.sha256(row).hexdigest()


class Ledger:
    def __init__(self, db: aiosqlite.Connection, last_hash: str) -> None:
        self._db = db
        self._last_hash = last_hash
        # Write transactions of several actors must not interleave on the one connection.
        self._write_lock = anyio.Lock()

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

        async def write() -> None:
            await self._db.executemany(
                "INSERT INTO postings VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT(idempotency_key) DO UPDATE SET status = excluded.status, "
                "erp_id = excluded.erp_id, recorded_at = excluded.recorded_at "
                "WHERE postings.status = 'dead_lettered'",
                [(r.idempotency_key, r.external_id, r.erp_id, r.status, r.amount,
                  r.currency, r.correlation_id, r.recorded_at) for r in rows],
            )

        await self._transaction(write, [(r.recorded_at, r.audit_event, r.idempotency_key,
                                         r.audit_detail) for r in rows])

    async def _transaction(self, write: Callable[[], Awaitable[None]],
                           audit: Sequence[_AuditItem]) -> None:
        """Run ``write`` and append ``audit`` (hash-chained) in one ``BEGIN IMMEDIATE``
        transaction, taking turns with other writers. Raises ``LedgerUnavailable`` (nothing
        written) or whatever ``write`` raises (rolled back)."""
        async with self._write_lock:
            prev = self._last_hash
            chained = []
            for at, event, key, detail in audit:
                h = _chain(prev, at, event, key, detail)
                chained.append((at, event, key, detail, prev, h))
                prev = h
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await write()
                    await self._db.executemany(
                        "INSERT INTO audit (at, event, key, detail, prev_hash, hash) "
                        "VALUES (?,?,?,?,?,?)",
                        chained,
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise LedgerUnavailable(f"ledger write failed: {exc}") from exc
            self._last_hash = prev

    # -- uploads without an idempotency key (see UPLOAD_TRANSITIONS) ---------------------------

    async def _upload_states(self, platform: str, line_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in range(0, len(line_ids), 500):
            chunk = list(line_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            sql = ("SELECT line_id, status FROM uploads "  # noqa: S608 - only '?' marks
                   f"WHERE platform = ? AND line_id IN ({marks})")
            async with self._db.execute(sql, [platform, *chunk]) as cur:
                found.update((r[0], r[1]) for r in await cur.fetchall())
        return found

    async def upload_states(self, platform: str, line_ids: Iterable[str]) -> dict[str, str]:
        """The status of every line of ``line_ids`` that has an upload row (absent: none).

        Raises ``LedgerUnavailable``.
        """
        try:
            return await self._upload_states(platform, list(dict.fromkeys(line_ids)))
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc

    async def record_uploads(self, rows: Sequence[UploadRow]) -> None:
        """Move upload rows to their new states, with one audit row each (``upload.<status>``,
        key ``<platform>:<line id>``), in one durable transaction.

        Raises ``UploadConflict`` when a row's change is not in ``UPLOAD_TRANSITIONS`` (checked
        inside the transaction), ``LedgerUnavailable``; either way nothing is written.
        """
        if not rows:
            return

        async def write() -> None:
            for platform in {r.platform for r in rows}:
                mine = [r for r in rows if r.platform == platform]
                now = await self._upload_states(platform, [r.line_id for r in mine])
                for r in mine:
                    if r.status not in UPLOAD_TRANSITIONS.get(now.get(r.line_id), ()):
                        raise UploadConflict(
                            f"upload {r.audit_key}: {now.get(r.line_id)} -> {r.status} is not "
                            "an allowed change")
                    now[r.line_id] = r.status
            await self._db.executemany(
                "INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(platform, line_id) DO UPDATE SET status = excluded.status, "
                "attempt = excluded.attempt, "
                "batch_id = COALESCE(excluded.batch_id, uploads.batch_id), "
                "recorded_at = excluded.recorded_at",
                [(r.platform, r.line_id, r.invoice_id, r.status, r.attempt, r.batch_id,
                  r.amount, r.currency, r.correlation_id, r.recorded_at) for r in rows],
            )

        await self._transaction(write, [(r.recorded_at, f"upload.{r.status}", r.audit_key,
                                         r.audit_detail) for r in rows])

    async def find_uploads(self, platform: str, *, status: str | None = None,
                           invoice_id: str | None = None) -> list[UploadRow]:
        """Upload rows of ``platform`` as they stand, optionally only one status and/or one
        invoice, in line id order (for operators, ``trace`` and tests; ``audit_detail`` is
        empty). Raises ``LedgerUnavailable``."""
        sql = ("SELECT platform, line_id, invoice_id, status, attempt, batch_id, amount, "
               "currency, correlation_id, recorded_at FROM uploads WHERE platform = ? "
               "AND (? IS NULL OR status = ?) AND (? IS NULL OR invoice_id = ?) "
               "ORDER BY line_id")
        try:
            async with self._db.execute(sql, (platform, status, status, invoice_id,
                                              invoice_id)) as cur:
                return [UploadRow(*r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc

    async def resolve_in_doubt(self, platform: str, line_ids: Iterable[str], *, present: bool,
                               note: str, now: float) -> int:
        """A person checked ``line_ids`` (rows ``in_doubt``) at the platform: ``present`` marks
        them ``uploaded`` (never sent again), otherwise ``released`` (the next delivery or
        replay of their invoice uploads them). Lines not in doubt are left alone. Returns how
        many changed. Raises ``LedgerUnavailable``.

        Run it with the gateway stopped: the audit chain's head is held by the process that
        writes, and a second writer would fork the chain.
        """
        wanted = set(line_ids)
        target = "uploaded" if present else "released"
        rows = [replace(r, status=target, recorded_at=now,
                        audit_detail=f"resolved by a person: {note}"[:500])
                for r in await self.find_uploads(platform, status="in_doubt")
                if r.line_id in wanted]
        await self.record_uploads(rows)
        return len(rows)

    async def upload_counts(self, platform: str) -> dict[str, int]:
        """Upload rows of ``platform`` by status. Raises ``LedgerUnavailable``."""
        try:
            async with self._db.execute(
                    "SELECT status, COUNT(*) FROM uploads WHERE platform = ? GROUP BY status",
                    (platform,)) as cur:
                return {status: n for status, n in await cur.fetchall()}
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc

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
