"""The shell of close readiness (``close_blockers``): read what the close of a period depends on,
and ``CloseWatch``, the actor that keeps the ``close.blocking`` KPI current.

``close_status`` reads, publishing nothing and repairing nothing: billing's documents (every
period, so that a posting of another month's document is not taken for an orphan of this one),
the ERP's journal entries, the dead letters and their resolutions (DLQ stream), with
``revenue`` the revenue platform's billings report and the gateway's ledger (in-doubt lines),
and the close run's plan (``plan_run``: the recognition against the shared ``versions``). The
ERP's entries of the close itself (``recognition:…``) are judged by that plan, not by the
document reconciliation.

Memory (the ``close-watch`` actor runs this every ``close.status_interval_s`` in the gateway
process): what is read is reduced as it is read (billing's pages to ``read_billing``'s
tallies, without the GL leg's documents; the revenue report's rows to the period's invoices
and those billing never issued; the ledger's upload tallies to the period's invoices), and
the matching runs over ``PARTS`` partitions of the document ids, one at a time, so its own
indexes cover a partition, never the period. What is held is still one compact record per
document of the period (docs/benchmarks.md, "What grew"). Both matchings are per document
(a document's breaks depend only on its own records, a reversal's included: its external
id names the same document), so the breaks are those of one whole-period call.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import DeadLetter, Envelope, GatewayError, JsonCodec, MsgpackCodec, Subjects

from ..infra import Ledger, NatsBus
from ..infra.state import SharedVersions
from ..lifecycle.fx import EntityMap
from ..reconcile import Break, ErpPosting, reconcile, reconcile_revenue
from ..reconcile.matching import BillingDoc, split_external_id
from ..reconcile.revenue import LedgerView, RevenueDoc, RevenueRecord
from ..reconcile.runner import (
    BillingRead,
    erp_postings,
    fx_read,
    ledger_views,
    read_billing,
    revenue_records,
)
from ..router.invoices import AccountMap
from ..runtime import Actor
from .readiness import CloseStatus, OpenLetter, close_blockers
from .revenue_gl import aggregate_id
from .runner import RevenueReader, plan_run, previous_period

__all__ = ["CloseWatch", "close_status", "kpi_document", "open_letters", "period_of"]

log = logging.getLogger("erpgw.close")
_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)
_envelopes: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
# The ERP's entries of the close itself: the object id prefix of ``aggregate_id``.
_CLOSE_ENTRIES = aggregate_id("", "", "").split(":", 1)[0] + ":"
# The matching's partitions of document ids (see the module docstring).
PARTS = 16
_T = TypeVar("_T")


def part_of(document: str) -> int:
    """The partition of a document id (stable across processes). Pure."""
    return zlib.crc32(document.encode()) % PARTS


def _parts(items: Iterable[_T], document: Callable[[_T], str]) -> list[list[_T]]:
    out: list[list[_T]] = [[] for _ in range(PARTS)]
    for it in items:
        out[part_of(document(it))].append(it)
    return out


class _Resolved(msgspec.Struct, frozen=True):
    """What the close needs of a resolution marker (``gateway.dlq.Resolution``)."""

    seq: int


_resolved: JsonCodec[_Resolved] = JsonCodec(_Resolved)  # raises ContractError, not msgspec's


def period_of(ts: float) -> str:
    """``YYYY-MM`` (UTC) of a unix time. Pure."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def _document_period(data: bytes) -> str | None:
    """The period of a dead letter's document, when its message is a canonical one dated by
    its posting (a journal entry); ``None`` otherwise (undecodable messages included)."""
    try:
        payload = _envelopes.decode(data).payload
    except GatewayError:
        return None
    when = getattr(payload, "posting_date", None)
    return when.isoformat()[:7] if isinstance(when, date) else None


async def open_letters(bus: NatsBus, subjects: Subjects) -> tuple[list[OpenLetter], set[str]]:
    """The unresolved dead letters, and the object ids every letter names (resolved ones
    too: the reconciliation's "explained by a dead letter"). Raises ``BrokerUnavailable``."""
    stream = subjects.dlq_stream
    resolved = {_resolved.decode(m.data).seq
                for m in await bus.scan(stream, subject=subjects.dlq_resolutions)}
    out: list[OpenLetter] = []
    named: set[str] = set()
    for m in await bus.scan(stream, subject=subjects.dlq_letters):
        dl = _letters.decode(m.data)
        parts = (dl.business_key or "").split(":", 2)
        document = parts[1] if len(parts) == 3 else ""
        if document:
            named.add(document)
        if m.seq in resolved:
            continue
        out.append(OpenLetter(m.seq, dl.code, dl.lane, document, _document_period(dl.data),
                              dl.failed_at.strftime("%Y-%m")))
    return out, named


async def close_status(bus: NatsBus, subjects: Subjects, *, billing: RevenueReader,
                       erp: RevenueReader, revenue: RevenueReader, versions: SharedVersions,
                       entity: str, period: str, accounts: AccountMap, grace_s: float = 300.0,
                       revenue_leg: bool = True, ledger: Ledger | None = None,
                       postings: Callable[[], Awaitable[list[ErpPosting]]] | None = None,
                       billing_read: Callable[[str | None], Awaitable[BillingRead]] | None
                       = None, entities: EntityMap | None = None) -> CloseStatus:
    """What blocks the close of ``period`` for ``entity`` now (``close_blockers``).

    ``postings`` / ``billing_read`` read the ERP and billing in their vendors' dialects, as
    for the reconciler (``run_once``). Raises ``GatewayError`` subclasses when a platform, the
    ledger or the broker cannot be read."""
    read = (await billing_read(None) if billing_read is not None
            else await read_billing(billing, None, gl=False))
    keys = {d.key for d in read.docs if period_of(d.issued_at) == period}
    elsewhere = {d.key for d in read.docs} - keys
    found = await (postings() if postings is not None else erp_postings(erp))
    # a payment foreign to its entity is expected in the functional currency (reconcile.fx)
    if postings is None:  # the erpgw ERP (rates and booked rates readable)
        read = await fx_read(read, found, erp, entities, msgspec.structs.asdict(accounts))
    docs = [d for d in read.docs if d.key in keys]
    mine = [p for p in found if not p.key.startswith(_CLOSE_ENTRIES)
            and split_external_id(p.key)[0] not in elsewhere]
    invoices = [r for r in read.revenue if r.key in keys] if revenue_leg else []
    known = read.invoice_ids
    del found, elsewhere, read
    letters, named = await open_letters(bus, subjects)
    now = time.time()
    breaks = _erp_breaks(docs, mine, now=now, grace_s=grace_s, named=named)
    del docs, mine
    if revenue_leg:
        views = await ledger_views(ledger, keys) if ledger is not None else None
        # rows of another period's invoice are left out by the matching: not kept
        records = await revenue_records(revenue, lambda k: k in keys or k not in known)
        breaks += _revenue_breaks(invoices, records, views, now=now, grace_s=grace_s,
                                  named=named, known=known)
    plan = await plan_run(revenue, versions, entity=entity, period=period, accounts=accounts,
                          entities=entities, only=True)
    return close_blockers(entity, period, breaks=breaks, letters=letters, documents=keys,
                          revenue=plan)


def _erp_breaks(docs: Sequence[BillingDoc], postings: Sequence[ErpPosting], *, now: float,
                grace_s: float, named: set[str]) -> list[Break]:
    """``reconcile``'s breaks, one partition of the documents at a time. Pure."""
    out: list[Break] = []
    for d, p in zip(_parts(docs, lambda d: d.key),
                    _parts(postings, lambda p: split_external_id(p.key)[0]), strict=True):
        out += reconcile(d, p, now=now, grace_s=grace_s, dead_lettered=named).breaks
    return out


def _revenue_breaks(docs: Sequence[RevenueDoc], records: Sequence[RevenueRecord],
                    views: Mapping[str, LedgerView] | None, *, now: float, grace_s: float,
                    named: set[str], known: set[str]) -> list[Break]:
    """``reconcile_revenue``'s breaks, one partition of the invoices at a time. Pure."""
    out: list[Break] = []
    for d, r in zip(_parts(docs, lambda d: d.key), _parts(records, lambda r: r.key),
                    strict=True):
        mine = None if views is None else {k.key: views[k.key] for k in d if k.key in views}
        out += reconcile_revenue(d, r, ledger=mine, now=now, grace_s=grace_s,
                                 dead_lettered=named, known=known).breaks
    return out


def kpi_document(statuses: Sequence[CloseStatus], at: float) -> dict[str, Any]:
    """The ``close`` section of the KPI document: ``blocking`` over the watched periods, and
    each period's count by kind. Pure."""
    return {"blocking": sum(s.blocking for s in statuses), "at": at,
            "entity": statuses[0].entity if statuses else None,
            "periods": {s.period: {"blocking": s.blocking,
                                   "by_kind": {k: n for k, n in s.by_kind.items() if n}}
                        for s in statuses}}


class CloseWatch(Actor):
    """Every ``interval_s`` seconds (the first pass after ``first_pass_s``), the close status
    of the month just ended and of the current month (UTC), handed to ``report`` (the
    monitor's ``note_close``) as ``kpi_document``. A pass that cannot read a platform or the broker
    keeps the last figures and is tried again at the next interval. Read-only: every gateway
    process may run one."""

    def __init__(self, name: str, *, status: Callable[[str], Awaitable[CloseStatus]],
                 report: Callable[[Mapping[str, Any]], None], interval_s: float) -> None:
        super().__init__(name)
        self.status, self.report, self.interval_s = status, report, interval_s
        self.passes = 0
        self.failures = 0
        self.blocking: int | None = None
        self.last_error: str | None = None

    # The first pass waits this long (or the interval, if shorter): not at every start-up.
    first_pass_s = 30.0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        wait = min(self.first_pass_s, self.interval_s)
        while True:
            with anyio.move_on_after(wait):
                await self.wait_stop_requested()
            if self.stop_requested:
                return
            await self._pass(datetime.now(UTC).date())
            wait = self.interval_s

    async def _pass(self, today: date) -> None:
        periods = [previous_period(today), today.isoformat()[:7]]
        try:
            statuses = [await self.status(p) for p in periods]
        except GatewayError as err:
            self.failures += 1
            self.last_error = f"[{err.code}] {err.message}"
            log.warning("close status skipped: %s", self.last_error)
            return
        self.passes += 1
        doc = kpi_document(statuses, time.time())
        self.blocking = int(doc["blocking"])
        self.report(doc)

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "passes": self.passes, "failures": self.failures,
                "blocking": self.blocking, "last_error": self.last_error}
