"""A scratch store of encoded records by partition: what a pass reads in any order is written
here as it is read, then read back one partition at a time, so the pass holds one partition,
never the whole.

One SQLite file in a temporary directory of its own (under ``parent`` when given), deleted
when the ``Spill.opened`` block ends, however it ends. It is scratch data: no journal, no
fsync (``journal_mode=OFF``, ``synchronous=OFF``); a crash leaves only a temporary file. The
stdlib ``sqlite3`` connection runs in a worker thread (``anyio.to_thread``), one call at a
time, so the event loop never waits on the disk.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio

from contracts import Retryable

__all__ = ["Spill", "SpillUnavailable"]

_T = TypeVar("_T")

_SCHEMA = """
PRAGMA journal_mode=OFF;
PRAGMA synchronous=OFF;
CREATE TABLE spill (kind TEXT NOT NULL, part INTEGER NOT NULL, data BLOB NOT NULL);
"""


class SpillUnavailable(Retryable):
    """The scratch file could not be created, written or read (disk full, I/O error)."""

    code = "spill.unavailable"


class Spill:
    """Records (``bytes``) by ``kind`` and partition, read back in the order written."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = anyio.Lock()
        self._indexed = False
        self.rows = 0  # written so far

    @classmethod
    @asynccontextmanager
    async def opened(cls, parent: Path | None = None) -> AsyncIterator[Spill]:
        """A new, empty spill, deleted (file and directory) when the block ends. Raises
        ``SpillUnavailable``."""
        where = await anyio.to_thread.run_sync(partial(_directory, parent))
        db: sqlite3.Connection | None = None
        try:
            db = await anyio.to_thread.run_sync(partial(
                _connect, Path(where.name) / "spill.db"))
            yield cls(db)
        finally:
            # Fast and local: done inline so that a cancelled pass still deletes its file.
            if db is not None:
                db.close()
            where.cleanup()

    async def add(self, kind: str, rows: Iterable[tuple[int, bytes]]) -> None:
        """Write ``(partition, record)`` rows of ``kind``. Raises ``SpillUnavailable``."""
        batch = [(kind, part, data) for part, data in rows]
        if batch:
            await self._run(partial(self._db.executemany,
                                    "INSERT INTO spill VALUES (?, ?, ?)", batch))
            self.rows += len(batch)

    async def read(self, kind: str, part: int) -> list[bytes]:
        """The records of ``kind`` in partition ``part``, in the order written. Raises
        ``SpillUnavailable``."""
        if not self._indexed:
            await self._run(partial(self._db.execute,
                                    "CREATE INDEX IF NOT EXISTS spill_kp ON spill (kind, part)"))
            self._indexed = True
        return await self._run(partial(_select, self._db, kind, part))

    async def _run(self, call: partial[_T]) -> _T:
        async with self._lock:
            try:
                return await anyio.to_thread.run_sync(call)
            except sqlite3.Error as exc:
                raise SpillUnavailable(f"spill: {exc}") from exc


def _directory(parent: Path | None) -> tempfile.TemporaryDirectory[str]:
    try:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix="erpgw-spill-", dir=parent)
    except OSError as exc:
        raise SpillUnavailable(f"cannot create a spill directory: {exc}") from exc


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise SpillUnavailable(f"cannot open a spill at {path}: {exc}") from exc
    return db


def _select(db: sqlite3.Connection, kind: str, part: int) -> list[bytes]:
    return [row[0] for row in db.execute(
        "SELECT data FROM spill WHERE kind = ? AND part = ? ORDER BY rowid", (kind, part))]
