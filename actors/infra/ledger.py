"""The posting ledger and audit trail: SQLite (WAL, ``synchronous=FULL``) via aiosqlite.

Theory of operation: one ``Ledger`` per process, one connection, one writer (aiosqlite runs
every statement on its own thread, in order). ``postings`` has one row per idempotency key:
the ERP adapter skips keys it already posted, so a redelivered message never reaches the ERP
twice even past the stream's dedupe window. ``audit`` is append-only (triggers abort UPDATE
and DELETE) and hash-chained: ``hash_n = HMAC-SHA256(key, hash_{n-1} | row)`` with the audit
key (``use_audit_key``; a chain written before keying used plain SHA-256 up to its
``audit.keyed`` marker row), so an offline edit is detectable by ``verify_audit``, and without
the key it cannot be re-chained. A batch's posting rows and their audit rows are written in the
same transaction, and that transaction commits before any message of the batch is acked.

``uploads`` is the guard for platforms that accept writes *without* an idempotency key (the
revenue platform's batch upload): one row per (platform, line id) with the state of its upload,
``pending`` → ``uploaded`` | ``in_doubt`` | ``rejected`` | ``released`` (``UPLOAD_TRANSITIONS``;
any other change raises ``UploadConflict`` and writes nothing). Same rules as ``postings``: one
transaction per batch of rows, each row audited in it, in the same hash chain. Several actors
share one ``Ledger``: write transactions take turns (one lock), so they never interleave on the
connection.

``versions`` holds, per aggregate (source, object id), the highest version whose posting the
ERP holds and that posting's entry (per-aggregate ordering, ``actors.erp.ordering``), written
in the same transaction as the postings that applied it and never moving down; and the version
being applied (``claimed``, with its entry), committed *before* its ERP request, so that after
a crash the poster knows which version may be at the ERP without the ledger knowing it.

Errors: ``LedgerUnavailable`` (retryable: busy, disk full, I/O) — the caller must not ack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import aiosqlite
import anyio

from contracts import GatewayError, Retryable

from ..crash import fault

__all__ = [
    "AUDIT_KEYED",
    "UPLOAD_STATUSES",
    "UPLOAD_TRANSITIONS",
    "AuditBreak",
    "AuditCheck",
    "Ledger",
    "LedgerUnavailable",
    "ParkedPayment",
    "PostingRow",
    "SettlementRow",
    "UploadConflict",
    "UploadRow",
    "VersionMark",
    "VersionRow",
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
-- Lookups by key: a trace's rows, and "already audited?" before a row of what is recorded
-- elsewhere (a dead letter, an operator's action). Without it each such lookup read the whole
-- table, on the connection every poster shares: thousands of letters after an outage, each a
-- scan of a month's rows, would have stalled posting.
CREATE INDEX IF NOT EXISTS audit_key ON audit(key);
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
CREATE TABLE IF NOT EXISTS versions (
    source        TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    version       INTEGER,
    entry         BLOB,
    claimed       INTEGER,
    claimed_entry BLOB,
    recorded_at   REAL NOT NULL,
    PRIMARY KEY (source, object_id)
);
CREATE TABLE IF NOT EXISTS parked_payments (
    payment_id  TEXT PRIMARY KEY,
    invoice_ids TEXT NOT NULL,
    envelope    BLOB NOT NULL,
    subject     TEXT NOT NULL,
    stream_seq  INTEGER NOT NULL,
    parked_at   REAL NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('parked', 'resumed')),
    resumed_at  REAL
);
CREATE TABLE IF NOT EXISTS settlements (
    settlement_id  TEXT PRIMARY KEY,
    commission_id  TEXT NOT NULL,
    partner_id     TEXT NOT NULL,
    portal_key     TEXT NOT NULL,
    erp_key        TEXT NOT NULL,
    erp_id         TEXT,
    amount         INTEGER NOT NULL,
    currency       TEXT NOT NULL,
    correlation_id TEXT,
    recorded_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sagas (
    saga_id        TEXT PRIMARY KEY,
    status         TEXT NOT NULL,
    state          BLOB NOT NULL,
    correlation_id TEXT,
    updated_at     REAL NOT NULL
);
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


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One aggregate (``source``, ``object_id``) in the ``versions`` table: the version the ERP
    holds and the entry that applied it (``version``/``entry``, None: none yet), and the version
    claimed for an ERP request whose outcome is not recorded yet (``claimed``/
    ``claimed_entry``). Entries are encoded by the caller. See ``actors.erp.ordering``."""

    source: str
    object_id: str
    version: int | None
    entry: bytes | None
    claimed: int | None
    claimed_entry: bytes | None
    recorded_at: float


@dataclass(frozen=True, slots=True)
class VersionMark:
    """A version of an aggregate and its entry (encoded by the caller): claimed before the ERP
    request (``Ledger.claim_versions``), or applied once the ERP holds it (``Ledger.record``)."""

    source: str
    object_id: str
    version: int
    entry: bytes
    recorded_at: float

    @property
    def audit_key(self) -> str:
        return f"{self.source}:{self.object_id}:v{self.version}"


# (at, event, key, detail) of one audit row, before it is chained.
_AuditItem = tuple[float, str, str, str]


def _chain(prev: str, at: float, event: str, key: str, detail: str,
           mac_key: bytes | None = None) -> str:
    """The hash of one audit row: HMAC-SHA256 with the audit key, or plain SHA-256 for rows
    written before the chain was keyed (up to the ``audit.keyed`` marker row)."""
    row = f"{prev}|{at!r}|{event}|{key}|{detail}".encode()
    if mac_key is None:
        return hashlib.sha256(row).hexdigest()
    return hmac.new(mac_key, row, hashlib.sha256).hexdigest()


# The audit row from which on every row is keyed (itself included).
AUDIT_KEYED = "audit.keyed"


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """The first audit row that does not verify, and why."""

    seq: int
    event: str
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What ``check_audit`` found: the rows, the head (``seq``, hash), where keying began."""

    rows: int
    head_seq: int
    head_hash: str
    keyed_from: int | None
    broken: AuditBreak | None


@dataclass(frozen=True, slots=True)
class ParkedPayment:
    """A payment held until the ERP posting of every invoice it applies to is in ``postings``
    (flow 3's ordering: a payment may arrive before its invoice was posted)."""

    payment_id: str
    invoice_ids: tuple[str, ...]
    envelope: bytes  # the payment's envelope as it was delivered (msgpack)
    subject: str  # where it was delivered from, and its stream sequence (for a dead letter)
    stream_seq: int
    parked_at: float


@dataclass(frozen=True, slots=True)
class SettlementRow:
    """A partner settlement recorded at the portal and posted as a payable in the ERP."""

    settlement_id: str
    commission_id: str
    partner_id: str
    portal_key: str
    erp_key: str
    erp_id: str | None
    amount: int
    currency: str
    correlation_id: str | None
    recorded_at: float


def _invoice_ids(stored: str) -> tuple[str, ...]:
    """The invoice ids of a parked payment as stored: a JSON list (an id may hold any
    character), or space-separated in rows written before that."""
    if stored.startswith('["'):
        try:
            ids = json.loads(stored)
        except ValueError:
            pass
        else:
            if isinstance(ids, list) and all(isinstance(i, str) for i in ids):
                return tuple(ids)
    return tuple(stored.split())


_T = TypeVar("_T")


def _write_claims(conn: sqlite3.Connection, claims: Sequence[VersionMark]) -> None:
    conn.executemany(
        "INSERT INTO versions VALUES (?,?,NULL,NULL,?,?,?) "
        "ON CONFLICT(source, object_id) DO UPDATE SET claimed = excluded.claimed, "
        "claimed_entry = excluded.claimed_entry, recorded_at = excluded.recorded_at",
        [(c.source, c.object_id, c.version, c.entry, c.recorded_at) for c in claims],
    )


def _padded(chunk: Sequence[Any], fill: Any = None) -> list[Any]:
    """``chunk`` padded with ``fill`` to the next power of two (``None``, SQL NULL, matches
    no row of an ``IN`` list). Why: each length of an ``IN (?,?,…)`` list is its own SQL text,
    and the connection caches up to 128 prepared statements; unpadded, a longer run met more
    batch lengths and SQLite's own memory grew with them (2.8 MB after 1,000 invoices, 8.3 MB
    after 10,000; docs/benchmarks.md, "What grew"). Padded, a query has at most ten texts."""
    return [*chunk, *[fill] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))]


def _upload_states_in(conn: sqlite3.Connection, platform: str,
                      line_ids: Sequence[str]) -> dict[str, str]:
    """The status of every line of ``line_ids`` that has an upload row (in a transaction)."""
    found: dict[str, str] = {}
    for i in range(0, len(line_ids), 500):
        chunk = _padded(line_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        sql = ("SELECT line_id, status FROM uploads "  # noqa: S608 - only '?' marks
               f"WHERE platform = ? AND line_id IN ({marks})")
        found.update((r[0], r[1]) for r in conn.execute(sql, [platform, *chunk]))
    return found


class Ledger:
    # The audit key (``use_audit_key``); None: rows are chained with plain SHA-256, which a
    # keyed chain (``_chain_keyed``: it has its ``audit.keyed`` row) refuses.
    _audit_mac: bytes | None = None
    _chain_keyed: bool | None = None

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
                chunk = _padded(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                sql = ("SELECT idempotency_key FROM postings "  # noqa: S608 - only '?' marks
                       f"WHERE status = 'posted' AND idempotency_key IN ({marks})")
                async with self._db.execute(sql, chunk) as cur:
                    found.update(r[0] for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    async def record(self, rows: Sequence[PostingRow], *, versions: Sequence[VersionMark] = (),
                     notes: Sequence[tuple[float, str, str, str]] = (),
                     claims: Sequence[VersionMark] = ()) -> None:
        """Write posting rows and their audit rows in one durable transaction.

        A posted key is never changed again; a dead-lettered key becomes posted when a replay
        succeeds. Every row is audited either way. ``versions`` move aggregates to the versions
        the postings applied (never down: a lower version than the stored one is ignored; a
        claim at or below the new version is cleared), each audited as ``version.applied``;
        ``notes`` are further audit rows ``(at, event, key, detail)`` of the same batch (e.g.
        a stale version skipped), so they are durable before their messages are acked;
        ``claims`` are written first, as ``claim_versions`` writes them, so that a batch's
        claims, postings and applied versions cost one transaction.
        Raises ``LedgerUnavailable``; on failure nothing of the batch is written.
        """
        if not rows and not versions and not notes and not claims:
            return

        def write(conn: sqlite3.Connection) -> None:
            if claims:
                _write_claims(conn, claims)
            conn.executemany(
                "INSERT INTO postings VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT(idempotency_key) DO UPDATE SET status = excluded.status, "
                "erp_id = excluded.erp_id, recorded_at = excluded.recorded_at "
                "WHERE postings.status = 'dead_lettered'",
                [(r.idempotency_key, r.external_id, r.erp_id, r.status, r.amount,
                  r.currency, r.correlation_id, r.recorded_at) for r in rows],
            )
            # SET expressions read the row as it was (SQLite upsert semantics).
            conn.executemany(
                "INSERT INTO versions VALUES (?,?,?,?,NULL,NULL,?) "
                "ON CONFLICT(source, object_id) DO UPDATE SET version = excluded.version, "
                "entry = excluded.entry, recorded_at = excluded.recorded_at, "
                "claimed = CASE WHEN versions.claimed <= excluded.version THEN NULL "
                "ELSE versions.claimed END, "
                "claimed_entry = CASE WHEN versions.claimed <= excluded.version THEN NULL "
                "ELSE versions.claimed_entry END "
                "WHERE versions.version IS NULL OR excluded.version >= versions.version",
                [(v.source, v.object_id, v.version, v.entry, v.recorded_at) for v in versions],
            )

        audit = [(c.recorded_at, "version.claimed", c.audit_key, "") for c in claims]
        audit += [(r.recorded_at, r.audit_event, r.idempotency_key, r.audit_detail)
                  for r in rows]
        audit += [(v.recorded_at, "version.applied", v.audit_key, "") for v in versions]
        await self._transaction(write, [*audit, *notes])

    async def claim_versions(self, claims: Sequence[VersionMark], *,
                             notes: Sequence[tuple[float, str, str, str]] = ()) -> None:
        """Record, durably and before the ERP request, that ``claims`` are being applied (each
        audited as ``version.claimed``): until ``record`` applies them, the poster treats them
        as possibly at the ERP. ``notes``: further audit rows, as for ``record``.
        Raises ``LedgerUnavailable``; on failure nothing is written."""
        if not claims and not notes:
            return

        def write(conn: sqlite3.Connection) -> None:
            _write_claims(conn, claims)

        await self._transaction(write, [*[(c.recorded_at, "version.claimed", c.audit_key, "")
                                          for c in claims], *notes])

    async def posting_states(self, keys: Iterable[str]) -> dict[str, str]:
        """The status (``posted``/``dead_lettered``) of each of ``keys`` that has a posting row.

        Raises ``LedgerUnavailable``.
        """
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        try:
            for i in range(0, len(wanted), 500):
                chunk = _padded(wanted[i : i + 500])
                marks = ",".join("?" * len(chunk))
                sql = ("SELECT idempotency_key, status FROM postings "  # noqa: S608 - only '?' marks
                       f"WHERE idempotency_key IN ({marks})")
                async with self._db.execute(sql, chunk) as cur:
                    found.update((r[0], r[1]) for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    async def aggregate_versions(self, aggregates: Iterable[tuple[str, str]]
                                 ) -> dict[tuple[str, str], VersionRow]:
        """The ``versions`` row of each of ``aggregates`` (``(source, object id)``) that has one.

        Raises ``LedgerUnavailable``.
        """
        wanted = list(dict.fromkeys(aggregates))
        found: dict[tuple[str, str], VersionRow] = {}
        try:
            for i in range(0, len(wanted), 250):
                chunk = _padded(wanted[i : i + 250], (None, None))
                marks = ",".join("(?,?)" for _ in chunk)
                sql = ("SELECT source, object_id, version, entry, claimed, claimed_entry, "  # noqa: S608 - only '?' marks
                       f"recorded_at FROM versions WHERE (source, object_id) IN (VALUES {marks})")
                params = [part for agg in chunk for part in agg]
                async with self._db.execute(sql, params) as cur:
                    for r in await cur.fetchall():
                        found[(r[0], r[1])] = VersionRow(
                            r[0], r[1], r[2], None if r[3] is None else bytes(r[3]), r[4],
                            None if r[5] is None else bytes(r[5]), float(r[6]))
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    async def _transaction(self, write: Callable[[sqlite3.Connection], None],
                           audit: Sequence[_AuditItem]) -> None:
        """Run ``write`` and append ``audit`` (hash-chained) in one ``BEGIN IMMEDIATE``
        transaction, taking turns with other writers. Raises ``LedgerUnavailable`` (nothing
        written) or whatever ``write`` raises (rolled back).

        The whole transaction is one call in the connection's thread (``write`` runs there,
        given the ``sqlite3`` connection): one hop from the event loop and back, not one per
        statement, so a busy loop does not stretch the time the write lock is held (under load
        each hop waited for the loop, and other writers for the lock). It is shielded: once
        queued it completes, and the chain's head moves with what was committed."""
        async with self._write_lock:
            if self._audit_mac is None and await self._keyed():
                raise GatewayError("the audit chain is keyed: call use_audit_key before "
                                   "writing, or the rows would break it",
                                   code="ledger.audit_key_required")
            prev = self._last_hash
            chained = []
            for at, event, key, detail in audit:
                h = _chain(prev, at, event, key, detail, self._audit_mac)
                chained.append((at, event, key, detail, prev, h))
                prev = h

            def run(conn: sqlite3.Connection) -> None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    write(conn)
                    conn.executemany(
                        "INSERT INTO audit (at, event, key, detail, prev_hash, hash) "
                        "VALUES (?,?,?,?,?,?)",
                        chained,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise

            try:
                with anyio.CancelScope(shield=True):
                    await self._in_thread(run)
            except sqlite3.Error as exc:
                raise LedgerUnavailable(f"ledger write failed: {exc}") from exc
            self._last_hash = prev

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Call ``fn`` with the ``sqlite3`` connection in the connection's own thread, in turn
        with every other statement (aiosqlite's queue; its ``_execute`` and ``_conn``, pinned
        with the package in requirements.lock: ``tests/gateway/test_ledger_thread.py``)."""
        db = self._db
        result: _T = await db._execute(lambda: fn(db._conn))  # type: ignore[no-untyped-call]
        return result

    # -- uploads without an idempotency key (see UPLOAD_TRANSITIONS) ---------------------------

    async def _upload_states(self, platform: str, line_ids: Sequence[str]) -> dict[str, str]:
        return await self._in_thread(lambda conn: _upload_states_in(conn, platform, line_ids))

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

        def write(conn: sqlite3.Connection) -> None:
            for platform in {r.platform for r in rows}:
                mine = [r for r in rows if r.platform == platform]
                now = _upload_states_in(conn, platform, [r.line_id for r in mine])
                for r in mine:
                    if r.status not in UPLOAD_TRANSITIONS.get(now.get(r.line_id), ()):
                        raise UploadConflict(
                            f"upload {r.audit_key}: {now.get(r.line_id)} -> {r.status} is not "
                            "an allowed change")
                    now[r.line_id] = r.status
            conn.executemany(
                "INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(platform, line_id) DO UPDATE SET status = excluded.status, "
                "attempt = excluded.attempt, "
                "batch_id = COALESCE(excluded.batch_id, uploads.batch_id), "
                # A rating platform tells the amount only in its answer, and a claim names
                # the aggregate the line is sent in this time (flow 4).
                "amount = excluded.amount, currency = excluded.currency, "
                "invoice_id = CASE WHEN excluded.status = 'pending' "
                "THEN excluded.invoice_id ELSE uploads.invoice_id END, "
                "recorded_at = excluded.recorded_at",
                [(r.platform, r.line_id, r.invoice_id, r.status, r.attempt, r.batch_id,
                  r.amount, r.currency, r.correlation_id, r.recorded_at) for r in rows],
            )

        await self._transaction(write, [(r.recorded_at, f"upload.{r.status}", r.audit_key,
                                         r.audit_detail) for r in rows])

    async def upload_amounts(self, platform: str,
                             line_ids: Iterable[str]) -> dict[str, tuple[int, str]]:
        """``(amount, currency)`` of every line of ``line_ids`` that has an upload row (flow 4
        keeps the amount billing rated each usage record at). Raises ``LedgerUnavailable``."""
        ids = list(dict.fromkeys(line_ids))
        found: dict[str, tuple[int, str]] = {}
        try:
            for i in range(0, len(ids), 500):
                chunk = _padded(ids[i : i + 500])
                sql = ("SELECT line_id, amount, currency FROM uploads "  # noqa: S608 - '?' only
                       f"WHERE platform = ? AND line_id IN ({','.join('?' * len(chunk))})")
                async with self._db.execute(sql, [platform, *chunk]) as cur:
                    found.update((r[0], (r[1], r[2])) for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

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

    async def upload_tallies(self, platform: str, *, chunk: int = 500
                             ) -> AsyncIterator[tuple[str, str, int, int]]:
        """``(invoice id, status, rows, sum of their amounts)`` of ``platform``'s upload rows,
        per invoice and status, in invoice id order: what the reconciler needs of them, summed
        by SQLite and handed over ``chunk`` groups at a time (never every line's row, nor every
        group, in memory at once). Raises ``LedgerUnavailable``."""
        try:
            async with self._db.execute(
                    "SELECT invoice_id, status, COUNT(*), SUM(amount) FROM uploads "
                    "WHERE platform = ? GROUP BY invoice_id, status ORDER BY invoice_id, status",
                    (platform,)) as cur:
                while rows := await cur.fetchmany(chunk):
                    for i, s, n, a in rows:
                        yield str(i), str(s), int(n), int(a)
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

    async def lineage(self, correlation_ids: Iterable[str]) -> list[tuple[float, str, str, str]]:
        """What the settlement and saga tables know of these transactions, for ``trace``:
        ``(at, system, step, detail)`` per row. Raises ``LedgerUnavailable``."""
        ids = list(dict.fromkeys(correlation_ids))
        out: list[tuple[float, str, str, str]] = []
        try:
            for i in range(0, len(ids), 500):
                chunk = _padded(ids[i:i + 500])
                marks = ",".join("?" * len(chunk))
                async with self._db.execute(
                        "SELECT recorded_at, settlement_id, partner_id, amount, currency, erp_id "  # noqa: S608 - only '?' marks
                        f"FROM settlements WHERE correlation_id IN ({marks})", chunk) as cur:
                    out += [(at, "partner", "settled",
                             f"settlement {sid} {amount} {cur_} to partner {pid}; ERP payable "
                             f"{erp_id or '-'}")
                            for at, sid, pid, amount, cur_, erp_id in await cur.fetchall()]
                async with self._db.execute(
                        "SELECT updated_at, saga_id, status FROM sagas "  # noqa: S608 - only '?' marks
                        f"WHERE correlation_id IN ({marks})", chunk) as cur:
                    out += [(at, "gateway", f"saga {status}", f"deal saga {sid}")
                            for at, sid, status in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return out

    async def counts(self) -> dict[str, int]:
        async with self._db.execute(
            "SELECT status, COUNT(*) FROM postings GROUP BY status"
        ) as cur:
            return {status: n for status, n in await cur.fetchall()}

    async def verify_audit(self, mac_key: bytes | None = None) -> int | None:
        """Walk the hash chain; the ``seq`` of the first broken row, or None when intact.
        ``mac_key``: the audit key (default: the one in use), needed once the chain is keyed."""
        return None if (b := (await self.check_audit(mac_key)).broken) is None else b.seq

    async def check_audit(self, mac_key: bytes | None = None) -> AuditCheck:
        """Walk the whole chain: plain SHA-256 up to the ``audit.keyed`` marker, HMAC-SHA256
        with ``mac_key`` (default: the key in use) from it on. Names the first row whose
        link or hash is wrong, a keyed row when no key is given, or a missing marker when a
        key is given (a chain re-hashed without the key)."""
        mac = mac_key if mac_key is not None else self._audit_mac
        prev, rows, seq_n, keyed_from = _GENESIS, 0, 0, None
        broken: AuditBreak | None = None
        last: tuple[int, str, str] = (0, "", "")
        async with self._db.execute(
            "SELECT seq, at, event, key, detail, prev_hash, hash FROM audit ORDER BY seq"
        ) as cur:
            async for seq, at, event, key, detail, prev_hash, h in cur:
                rows, seq_n, last = rows + 1, int(seq), (int(seq), str(event), str(key))
                if broken is not None:
                    continue
                if keyed_from is None and event == AUDIT_KEYED:
                    keyed_from = int(seq)
                    if mac is None:
                        broken = AuditBreak(int(seq), event, key, "keyed row, no audit key given")
                        continue
                keyed = mac if keyed_from is not None else None
                if not hmac.compare_digest(str(prev_hash).encode(), prev.encode()):
                    broken = AuditBreak(int(seq), event, key, "link to the previous row broken")
                elif not hmac.compare_digest(_chain(prev, at, event, key, detail, keyed).encode(),
                                             str(h).encode()):
                    broken = AuditBreak(int(seq), event, key, "hash does not match the row")
                prev = h
        if broken is None and mac is not None and keyed_from is None and rows:
            broken = AuditBreak(*last, "no audit.keyed marker: the chain is not keyed")
        return AuditCheck(rows, seq_n, prev, keyed_from, broken)

    async def audit_hash_at(self, seq: int) -> str | None:
        """The stored hash of audit row ``seq``, or None when there is no such row."""
        async with self._db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def audit_head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last audit row; ``(0, genesis)`` when there is none."""
        async with self._db.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") as cur:
            row = await cur.fetchone()
        return (0, _GENESIS) if row is None else (int(row[0]), str(row[1]))

    async def append_audit_once(self, rows: Sequence[tuple[float, str, str, str, int]], *,
                                source: str = "audit") -> int:
        """Audit rows ``(at, event, key, detail, source seq)`` of what is recorded elsewhere
        (``source``: the audit stream's actions, the DLQ stream's letters), each at most once:
        a row whose event, key and detail (which ends with ``[<source>#<source seq>]``) is
        already there is skipped. Returns how many were new. Raises ``LedgerUnavailable``."""
        items = [(at, event, key, f"{detail} [{source}#{seq}]") for at, event, key, detail, seq
                 in rows]
        new: list[_AuditItem] = []
        try:
            for at, event, key, detail in items:
                async with self._db.execute(
                        "SELECT 1 FROM audit WHERE event = ? AND key = ? AND detail = ? LIMIT 1",
                        (event, key, detail)) as cur:
                    if await cur.fetchone() is None:
                        new.append((at, event, key, detail))
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc

        def nothing(conn: sqlite3.Connection) -> None:
            return None

        if new:
            await self._transaction(nothing, new)
        return len(new)

    async def _keyed(self) -> bool:
        """Whether the chain has its ``audit.keyed`` row (looked up once, then remembered)."""
        if self._chain_keyed is None:
            async with self._db.execute(
                    "SELECT 1 FROM audit WHERE event = ? LIMIT 1", (AUDIT_KEYED,)) as cur:
                self._chain_keyed = await cur.fetchone() is not None
        return self._chain_keyed

    async def use_audit_key(self, mac_key: bytes, *, now: float) -> bool:
        """Chain every later row with HMAC-SHA256 under ``mac_key``. On the first keyed
        start the ``audit.keyed`` marker row is appended (keyed itself, so it seals the
        plain chain before it); returns True when it was. Raises ``LedgerUnavailable``."""
        marked = await self._keyed()
        self._audit_mac = mac_key
        if marked:
            return False

        def nothing(conn: sqlite3.Connection) -> None:
            return None

        seq, _ = await self.audit_head()
        try:
            await self._transaction(nothing, [
                (now, AUDIT_KEYED, "", f"hmac-sha256 from here on; rows 1..{seq} plain sha-256")])
        except BaseException:
            self._audit_mac = None  # no marker: keep chaining as before
            raise
        self._chain_keyed = True
        return True

    # -- flow 3: parked payments and partner settlements -----------------------------------

    async def posted_external_ids(self, external_ids: Iterable[str]) -> set[str]:
        """The subset of ``external_ids`` with a posting the ERP holds (status ``posted``),
        under the id itself or a versioned one (``<id>:v<n>``). Raises ``LedgerUnavailable``."""
        found: set[str] = set()
        try:
            for external_id in dict.fromkeys(external_ids):
                async with self._db.execute(
                        "SELECT 1 FROM postings WHERE status = 'posted' AND (external_id = ? "
                        "OR (external_id >= ? AND external_id < ?)) LIMIT 1",
                        (external_id, f"{external_id}:v", f"{external_id}:w")) as cur:
                    if await cur.fetchone() is not None:
                        found.add(external_id)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    async def park_payments(self, rows: Sequence[ParkedPayment]) -> None:
        """Hold ``rows`` (audited ``payment.parked``) in one durable transaction; a payment
        already held (or resumed) is left as it is. Raises ``LedgerUnavailable``."""
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO parked_payments VALUES (?,?,?,?,?,?,'parked',NULL) "
                "ON CONFLICT(payment_id) DO NOTHING",
                [(r.payment_id, json.dumps(list(r.invoice_ids)), r.envelope, r.subject,
                  r.stream_seq, r.parked_at) for r in rows])

        await self._transaction(write, [(r.parked_at, "payment.parked", r.payment_id,
                                         "waits for invoice(s) " + " ".join(r.invoice_ids))
                                        for r in rows])

    async def parked_payments(self) -> list[ParkedPayment]:
        """The payments still held, oldest first. Raises ``LedgerUnavailable``."""
        try:
            async with self._db.execute(
                    "SELECT payment_id, invoice_ids, envelope, subject, stream_seq, parked_at "
                    "FROM parked_payments WHERE status = 'parked' "
                    "ORDER BY parked_at, payment_id") as cur:
                return [ParkedPayment(p, _invoice_ids(i), bytes(e), subj, seq, at)
                        for p, i, e, subj, seq, at in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc

    async def resume_payments(self, payment_ids: Sequence[str], now: float,
                              detail: str = "invoice(s) posted") -> None:
        """Mark held payments ``resumed`` (their outputs are published, or they were
        dead-lettered: ``detail`` says which), audited ``payment.resumed``. Raises
        ``LedgerUnavailable``."""
        if not payment_ids:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE parked_payments SET status = 'resumed', resumed_at = ? "
                "WHERE payment_id = ? AND status = 'parked'",
                [(now, p) for p in payment_ids])

        await self._transaction(write, [(now, "payment.resumed", p, detail)
                                        for p in payment_ids])

    async def record_settlements(self, rows: Sequence[SettlementRow]) -> None:
        """Record settlements done at both platforms (audited ``settlement.recorded``) in one
        durable transaction; a settlement already recorded is kept. Raises
        ``LedgerUnavailable``."""
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO settlements VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(settlement_id) DO NOTHING",
                [(r.settlement_id, r.commission_id, r.partner_id, r.portal_key, r.erp_key,
                  r.erp_id, r.amount, r.currency, r.correlation_id, r.recorded_at)
                 for r in rows])

        await self._transaction(write, [
            (r.recorded_at, "settlement.recorded", r.settlement_id,
             f"partner={r.partner_id} amount={r.amount} {r.currency} erp_id={r.erp_id}")
            for r in rows])

    async def settled(self, settlement_ids: Iterable[str]) -> set[str]:
        """The subset of ``settlement_ids`` already recorded. Raises ``LedgerUnavailable``."""
        ids = list(dict.fromkeys(settlement_ids))
        found: set[str] = set()
        try:
            for i in range(0, len(ids), 500):
                chunk = _padded(ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                sql = ("SELECT settlement_id FROM settlements "  # noqa: S608 - only '?' marks
                       f"WHERE settlement_id IN ({marks})")
                async with self._db.execute(sql, chunk) as cur:
                    found.update(r[0] for r in await cur.fetchall())
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return found

    # -- flow 1: deal sagas (actors.commercial) ------------------------------------------------

    async def saga_state(self, saga_id: str) -> bytes | None:
        """The stored state of saga ``saga_id`` (the caller's encoding), or None before its
        first step. Raises ``LedgerUnavailable``."""
        try:
            async with self._db.execute("SELECT state FROM sagas WHERE saga_id = ?",
                                        (saga_id,)) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
        return None if row is None else bytes(row[0])

    async def save_saga(self, saga_id: str, status: str, state: bytes, *,
                        correlation_id: str | None, now: float, event: str,
                        detail: str = "") -> None:
        """Store saga ``saga_id``'s new ``state`` with one audit row (``saga.<event>``, key
        ``saga:<id>``) in one durable transaction: a step's outcome is durable before the saga
        goes on (so a crash resumes after it). Raises ``LedgerUnavailable``."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sagas VALUES (?,?,?,?,?) ON CONFLICT(saga_id) DO UPDATE SET "
                "status = excluded.status, state = excluded.state, "
                "updated_at = excluded.updated_at",
                (saga_id, status, state, correlation_id, now))

        await self._transaction(write, [(now, f"saga.{event}", f"saga:{saga_id}",
                                         detail[:1000])])

    async def saga_counts(self) -> dict[str, int]:
        """Sagas by status. Raises ``LedgerUnavailable``."""
        try:
            async with self._db.execute(
                    "SELECT status, COUNT(*) FROM sagas GROUP BY status") as cur:
                return {status: n for status, n in await cur.fetchall()}
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"ledger lookup failed: {exc}") from exc
