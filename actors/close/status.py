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
process): bounded by one partition of the documents and one page of a platform's reply, not
by the period. As each page of billing (``billing_records``: an invoice's lines reduced to
their count), the ERP, the revenue report and the ledger's upload tallies is read, its
records are written, msgpack-encoded, to a scratch SQLite file (``actors.infra.spill``: a
temporary directory under ``scratch``, deleted after the pass), each in one of ``PARTS``
partitions of the document ids (``part_of``; an ERP entry by the document its external id
names, so a reversal lands with its document; a credit note also with the invoice it
credits). Then each partition is read back and matched alone: billing's figures of its
documents (``reduce_billing``), which of them are of the period, which postings belong to
another period's document, the revenue rows to keep and the ledger views are all decided per
partition, so no set of the period's keys is held. Global: the dead letters (``named``) and,
with ``entities``, the foreign payments and their restatements (``_fx``). A dialect's read
(``billing_read``, ``postings``) arrives whole and is held until it is written. Both
matchings are per document (a document's breaks depend only on its own records, a
reversal's included: its external id names the same document), so the breaks are those of
one whole-period call (``tests/close/test_close_status_parts.py``).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import DeadLetter, Envelope, GatewayError, JsonCodec, MsgpackCodec, Subjects

from ..infra import Ledger, NatsBus
from ..infra.spill import Spill
from ..infra.state import SharedVersions
from ..lifecycle.fx import EntityMap
from ..reconcile import Break, ErpPosting, reconcile, reconcile_revenue
from ..reconcile.fx import PaymentRef, Restated, foreign_payments
from ..reconcile.matching import BillingDoc, split_external_id
from ..reconcile.revenue import LedgerView, RevenueDoc, RevenueRecord
from ..reconcile.runner import (
    BillingRead,
    BillingRecord,
    billing_records,
    erp_pages,
    fold_view,
    fx_restated,
    record_documents,
    reduce_billing,
    revenue_pages,
    with_restated,
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


# The pass reads the platforms in pages of this many items (the reconciler's are 1,000): a
# page of billing's wire events is what the pass holds at its peak, and the pass runs in the
# gateway process every close.status_interval_s (docs/benchmarks.md, "What grew").
CLOSE_PAGE = 250


def part_of(document: str) -> int:
    """The partition of a document id (stable across processes). Pure."""
    return zlib.crc32(document.encode()) % PARTS


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
                       = None, entities: EntityMap | None = None,
                       scratch: Path | None = None) -> CloseStatus:
    """What blocks the close of ``period`` for ``entity`` now (``close_blockers``).

    ``postings`` / ``billing_read`` read the ERP and billing in their vendors' dialects, as
    for the reconciler (``run_once``). ``scratch``: where the spill's temporary directory
    goes (default: the system's). Raises ``GatewayError`` subclasses when a platform, the
    ledger, the broker or the spill cannot be read."""
    async with Spill.opened(scratch) as spill:
        streamed = await _spill_billing(spill, billing, billing_read)
        if postings is not None:
            await _add(spill, _POSTINGS, await postings(), _posting_part)
        else:
            async for page in erp_pages(erp, CLOSE_PAGE):
                await _add(spill, _POSTINGS, page, _posting_part)
        if revenue_leg:
            async for rows in revenue_pages(revenue, CLOSE_PAGE):
                await _add(spill, _ROWS, rows, lambda r: (r.key,))
            if ledger is not None:
                async for tally in _chunks(ledger.upload_tallies("revenue")):
                    await _add(spill, _TALLIES, tally, lambda t: (t[0],))
        letters, named = await open_letters(bus, subjects)
        part = _Part(spill, streamed)
        # a payment foreign to its entity is expected in the functional currency (reconcile.fx)
        fx = (await _fx(part, erp, entities, msgspec.structs.asdict(accounts))
              if postings is None else None)
        now = time.time()
        lettered = {lt.document for lt in letters if lt.document}
        erp_breaks: list[Break] = []
        revenue_breaks: list[Break] = []
        documents: set[str] = set()  # the period's documents that letters name
        for p in range(PARTS):
            read = await part.billing(p)
            if fx is not None:
                read = with_restated(read, *fx)
            own = [d for d in read.docs if part_of(d.key) == p]
            keys = {d.key for d in own if period_of(d.issued_at) == period}
            elsewhere = {d.key for d in own} - keys
            mine = [e for e in await part.postings(p) if not e.key.startswith(_CLOSE_ENTRIES)
                    and split_external_id(e.key)[0] not in elsewhere]
            erp_breaks += reconcile([d for d in own if d.key in keys], mine, now=now,
                                    grace_s=grace_s, dead_lettered=named).breaks
            documents |= keys & lettered
            if revenue_leg:
                revenue_breaks += await _revenue_part(
                    part, p, read, keys, ledger is not None, now=now, grace_s=grace_s,
                    named=named)
    plan = await plan_run(revenue, versions, entity=entity, period=period, accounts=accounts,
                          entities=entities, only=True)
    return close_blockers(entity, period, breaks=erp_breaks + revenue_breaks, letters=letters,
                          documents=documents, revenue=plan)


# The spill's kinds: billing's records as read (or a dialect's read: its documents, revenue
# documents, invoice ids and payments), the ERP's postings, the revenue report's rows and the
# ledger's upload tallies.
_RECORDS, _DOCS, _REVENUE, _KNOWN, _PAYMENTS = "records", "docs", "revenue", "known", "payments"
_POSTINGS, _ROWS, _TALLIES = "postings", "rows", "tallies"
_encode = msgspec.msgpack.Encoder().encode
_records: msgspec.msgpack.Decoder[BillingRecord] = msgspec.msgpack.Decoder(BillingRecord)
_docs = msgspec.msgpack.Decoder(BillingDoc)
_revenue_docs = msgspec.msgpack.Decoder(RevenueDoc)
_known = msgspec.msgpack.Decoder(str)
_payments = msgspec.msgpack.Decoder(PaymentRef)
_postings = msgspec.msgpack.Decoder(ErpPosting)
_rows = msgspec.msgpack.Decoder(RevenueRecord)
_tallies = msgspec.msgpack.Decoder(tuple[str, str, int, int])


def _posting_part(e: ErpPosting) -> tuple[str]:
    # a reversal's external id names its document: it lands with the document
    return (split_external_id(e.key)[0],)


async def _add(spill: Spill, kind: str, items: Iterable[_T],
               documents: Callable[[_T], Iterable[str]]) -> None:
    """Write ``items`` to ``spill``, each once in the partition of every document id
    ``documents`` names."""
    await spill.add(kind, [(q, data) for it in items
                           for data in (_encode(it),)
                           for q in {part_of(d) for d in documents(it)}])


async def _chunks(items: AsyncIterator[_T], size: int = 500) -> AsyncIterator[list[_T]]:
    chunk: list[_T] = []
    async for it in items:
        chunk.append(it)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _spill_billing(spill: Spill, billing: RevenueReader,
                         billing_read: Callable[[str | None], Awaitable[BillingRead]] | None
                         ) -> bool:
    """Billing into ``spill``: its records page by page (``True``), or a dialect's whole read
    (``False``: that read is held until it is written)."""
    if billing_read is None:
        async for page in billing_records(billing, CLOSE_PAGE):
            await _add(spill, _RECORDS, page, record_documents)
        return True
    read = await billing_read(None)
    await _add(spill, _DOCS, read.docs, lambda d: (d.key,))
    await _add(spill, _REVENUE, read.revenue, lambda d: (d.key,))
    await _add(spill, _KNOWN, sorted(read.invoice_ids), lambda k: (k,))
    await _add(spill, _PAYMENTS, read.payments, lambda r: (r.key,))
    return False


class _Part:
    """One partition's records, read back from the spill."""

    def __init__(self, spill: Spill, streamed: bool) -> None:
        self.spill, self.streamed = spill, streamed

    async def billing(self, p: int) -> BillingRead:
        """Billing's read of the documents of partition ``p`` (and of the documents their
        records also name, which the caller leaves out)."""
        read = self.spill.read
        if self.streamed:
            return reduce_billing([_records.decode(b) for b in await read(_RECORDS, p)], None,
                                  gl=False)
        return BillingRead([_docs.decode(b) for b in await read(_DOCS, p)],
                           [_revenue_docs.decode(b) for b in await read(_REVENUE, p)], [],
                           {_known.decode(b) for b in await read(_KNOWN, p)},
                           [_payments.decode(b) for b in await read(_PAYMENTS, p)])

    async def postings(self, p: int) -> list[ErpPosting]:
        return [_postings.decode(b) for b in await self.spill.read(_POSTINGS, p)]

    async def rows(self, p: int) -> list[RevenueRecord]:
        return [_rows.decode(b) for b in await self.spill.read(_ROWS, p)]

    async def tallies(self, p: int) -> list[tuple[str, str, int, int]]:
        return [_tallies.decode(b) for b in await self.spill.read(_TALLIES, p)]


async def _fx(part: _Part, erp: RevenueReader, entities: EntityMap | None,
              accounts: Mapping[str, object]
              ) -> tuple[dict[str, Restated], dict[str, str]] | None:
    """``fx_restated`` of billing's payments: the foreign ones gathered a partition at a
    time, with the ERP postings of their invoices only."""
    if entities is None or not entities.configured:
        return None
    foreign: list[PaymentRef] = []
    for p in range(PARTS):
        foreign += [f.payment for f in
                    foreign_payments((await part.billing(p)).payments, entities)]
    invoices = {r.invoice for r in foreign}
    booked: list[ErpPosting] = []
    for p in sorted({part_of(i) for i in invoices}):
        booked += [e for e in await part.postings(p) if split_external_id(e.key)[0] in invoices]
    return await fx_restated(foreign, booked, erp, entities, accounts)


async def _revenue_part(part: _Part, p: int, read: BillingRead, keys: set[str],
                        ledgered: bool, *, now: float, grace_s: float, named: set[str]
                        ) -> list[Break]:
    """``reconcile_revenue``'s breaks of partition ``p``'s invoices of the period (``keys``):
    the report's rows of those invoices and of the invoices billing never issued."""
    known = read.invoice_ids  # of the partition: the rows matched here are of it too
    invoices = [d for d in read.revenue if d.key in keys]
    records = [r for r in await part.rows(p) if r.key in keys or r.key not in known]
    views: dict[str, LedgerView] | None = None
    if ledgered:
        views = {}
        for tally in await part.tallies(p):
            fold_view(views, tally, keys)
        views = {d.key: views[d.key] for d in invoices if d.key in views}
    return reconcile_revenue(invoices, records, ledger=views, now=now, grace_s=grace_s,
                             dead_lettered=named, known=known).breaks


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
