"""A warning before unresolved dead letters reach the DLQ stream's ``max_age`` (S28).

The DLQ stream keeps a letter for ``streams.max_age_s`` (14 days by default), then the broker
drops it: a money event nobody replayed or purged would be gone without a trace but the
audit of what produced it. ``DlqExpiryWatch`` reads the stream every ``interval_s`` seconds
(letters and resolution markers: ``<prefix>.dlq.resolved.<action>.<seq>``), counts the
letters that are unresolved and older than ``fraction * max_age_s``, logs one warning
line when there are any (how many, the oldest's sequence and how long until the broker drops
it) and hands the figures to ``report`` (the monitor's ``note_dlq_expiry``: ``dlq.expiring``
in the metrics, the KPI document and ``erpgw_dlq_expiring``). Read-only: every gateway
process may run one. A pass that cannot read the broker keeps the last figures.

``expiring`` is the pure core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus

from contracts import GatewayError, Subjects

from .infra.bus import NatsBus
from .runtime import Actor

__all__ = ["DlqExpiryWatch", "Expiring", "expiring"]

log = logging.getLogger("erpgw.dlq")

# Letters read per page of the scan.
_PAGE = 10_000


@dataclass(frozen=True)
class Expiring:
    """Unresolved letters past the warning age: how many, and the oldest one's sequence and
    age (``None`` when there are none)."""

    count: int
    oldest_seq: int | None
    oldest_age_s: float | None


def expiring(letters: Iterable[tuple[int, float]], resolved: Iterable[int], *, now: float,
             max_age_s: float, fraction: float) -> Expiring:
    """The letters (``(stream sequence, stored at)``) not in ``resolved`` and older than
    ``fraction * max_age_s`` at ``now``. ``max_age_s`` 0 (kept for good): none expire."""
    if max_age_s <= 0:
        return Expiring(0, None, None)
    done = set(resolved)
    horizon = fraction * max_age_s
    old = [(now - at, seq) for seq, at in letters if seq not in done and now - at >= horizon]
    if not old:
        return Expiring(0, None, None)
    age, seq = max(old)
    return Expiring(len(old), seq, age)


def resolved_seq(subject: str) -> int | None:
    """The letter's sequence a resolution marker's subject names (its last token)."""
    last = subject.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else None


class DlqExpiryWatch(Actor):
    """Every ``interval_s`` seconds (the first pass at once): the letters of the DLQ stream
    nearing ``max_age_s`` (see the module docstring), to the log and to ``report``."""

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, max_age_s: float,
                 fraction: float, interval_s: float,
                 report: Callable[[Expiring], None],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name)
        self.bus, self.subjects = bus, subjects
        self.max_age_s, self.fraction, self.interval_s = max_age_s, fraction, interval_s
        self.report = report
        self._clock = clock
        self.passes = 0
        self.failures = 0
        self.last: Expiring | None = None
        self.last_error: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self.stop_requested:
            await self.check()
            with anyio.move_on_after(self.interval_s):
                await self.wait_stop_requested()

    async def _scan(self, subject: str) -> list[tuple[int, float, str]]:
        out: list[tuple[int, float, str]] = []
        start = 1
        while True:
            page = await self.bus.scan(self.subjects.dlq_stream, subject=subject,
                                       start_seq=start, limit=_PAGE)
            out += [(m.seq, m.time, m.subject) for m in page]
            if len(page) < _PAGE:
                return out
            start = page[-1].seq + 1

    async def check(self) -> Expiring | None:
        """One pass; ``None`` when the broker could not be read."""
        try:
            letters = await self._scan(self.subjects.dlq_letters)
            markers = await self._scan(self.subjects.dlq_resolutions)
        except GatewayError as err:
            self.failures += 1
            self.last_error = f"[{err.code}] {err.message}"
            log.warning("dead-letter expiry check skipped: %s", self.last_error)
            return None
        found = expiring(((seq, at) for seq, at, _ in letters),
                         (s for _, _, subj in markers if (s := resolved_seq(subj)) is not None),
                         now=self._clock(), max_age_s=self.max_age_s, fraction=self.fraction)
        self.passes += 1
        self.last = found
        if found.count and found.oldest_age_s is not None:
            log.warning(
                "%d unresolved dead letter(s) older than %.0f%% of the DLQ's max_age (%.0f s); "
                "the oldest, seq %s, is dropped by the broker in %.0f s: replay or purge them "
                "(erpgw dlq ls)", found.count, self.fraction * 100, self.max_age_s,
                found.oldest_seq, max(0.0, self.max_age_s - found.oldest_age_s),
                extra={"code": "dlq.expiring"})
        self.report(found)
        return found

    def statistics(self) -> dict[str, object]:
        last = self.last
        return {"name": self.name, "passes": self.passes, "failures": self.failures,
                "expiring": last.count if last else None,
                "oldest_seq": last.oldest_seq if last else None,
                "oldest_age_s": last.oldest_age_s if last else None,
                "last_error": self.last_error}
