"""The data directory's lock: one gateway process per data directory (its ledger file).

Theory of operation: ``erpgw up`` holds an exclusive ``flock`` on ``<data_dir>/erpgw.lock`` for
as long as it runs, taken before anything else in the directory is opened (the ledger, the
embedded broker's store, the identities). A second process on the same directory finds the
lock held and refuses at start with ``data_dir.locked``, naming the directory and the holder's
pid (written into the lock file). The kernel drops the lock when the holder exits, however it
exits (SIGKILL included), so a stale lock file never blocks a restart. Several processes on one
machine or cluster each need a data directory of their own.

``flock`` is advisory and per open file: it protects against another erpgw, not against other
programs, and on a network file system it may not hold; keep data directories on local disks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from contracts import GatewayError

__all__ = ["LOCK_NAME", "DataDirLocked", "data_dir_lock"]

LOCK_NAME = "erpgw.lock"


class DataDirLocked(GatewayError):
    code = "data_dir.locked"


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[Path]:
    """Hold the lock of ``data_dir`` (created if missing) for the ``with`` block; yields the
    lock file's path. Raises ``DataDirLocked`` when another process holds it."""
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            raise DataDirLocked(
                f"data directory {data_dir} is in use by another erpgw process"
                f"{f' (pid {pid})' if pid else ''}: every gateway process needs a data "
                "directory (ledger) of its own; pass another --data-dir, or stop that process",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
