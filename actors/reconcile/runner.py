"""The reconciler's shell: read billing, the ERP and the DLQ, match, publish, repair.

One ``run_once`` is one reconciliation: it pages through the billing platform's event list and
the ERP's journal entries (their public APIs, through the rate-limited HTTP clients), reads the
dead letters from the DLQ stream, calls the pure ``reconcile``, publishes every break and the
report on ``<prefix>.mon.recon.*`` (JSON), and — when ``repair`` is on — re-drives each missing
posting's original event from the billing lane stream (same idempotency key, so a posting that
existed after all is answered "replayed"). ``Reconciler`` runs it periodically as an actor.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import anyio
import msgspec
from anyio.abc import TaskStatus

from contracts import DeadLetter, GatewayError, JsonCodec, Subjects
from contracts.platforms.billing import BillingEventList
from contracts.platforms.erp import JournalEntryList

from ..infra import HttpClient, NatsBus
from ..replay import replay_lane, select_events
from ..runtime import Actor
from .matching import BillingDoc, ErpPosting, ReconReport, Repost, reconcile

__all__ = ["Reconciler", "RunResult", "run_once"]

log = logging.getLogger("erpgw.reconcile")
_events: JsonCodec[BillingEventList] = JsonCodec(BillingEventList)
_entries: JsonCodec[JournalEntryList] = JsonCodec(JournalEntryList)
_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)
_json = msgspec.json.Encoder()
PAGE = 1000


class RunResult(msgspec.Struct, frozen=True):
    period: str | None
    started_at: float
    elapsed_s: float
    report: ReconReport
    repaired: list[str]
    unrepairable: list[str]


def _period_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


async def billing_docs(billing: HttpClient, period: str | None) -> list[BillingDoc]:
    """Finalized invoices from the billing platform's event list (all pages)."""
    docs: dict[str, BillingDoc] = {}
    cursor = "0"
    while True:
        page = _events.decode((await billing.get(
            f"/billing/v1/events?after={cursor}&limit={PAGE}")).body)
        for evt in page.data:
            inv = evt.data.object
            if evt.type != "invoice.finalized" or (period and _period_of(inv.created) != period):
                continue
            docs[inv.id] = BillingDoc(inv.id, inv.currency.upper(), inv.total, float(inv.created))
        if not page.has_more or page.next_cursor == cursor:
            return list(docs.values())
        cursor = page.next_cursor


async def erp_postings(erp: HttpClient) -> list[ErpPosting]:
    """Every journal entry the ERP recorded (all pages)."""
    out: list[ErpPosting] = []
    after = 0
    while True:
        page = _entries.decode((await erp.get(
            f"/erp/v1/journal-entries?after={after}&limit={PAGE}")).body)
        out += [ErpPosting(e.external_id, e.id, e.currency, e.amount) for e in page.items]
        if len(page.items) < PAGE:
            return out
        after = page.items[-1].seq


async def dead_lettered(bus: NatsBus, subjects: Subjects) -> set[str]:
    """Object ids named by dead letters' business keys (``billing:<id>:v<n>``)."""
    out = set()
    for m in await bus.scan(subjects.dlq_stream, subject=subjects.dlq_letters):
        key = _letters.decode(m.data).business_key or ""
        if key.count(":") >= 2:
            out.add(key.split(":", 2)[1])
    return out


async def run_once(bus: NatsBus, subjects: Subjects, billing: HttpClient, erp: HttpClient, *,
                   period: str | None = None, grace_s: float = 300.0,
                   repair: bool = True) -> RunResult:
    """One reconciliation (see the module docstring). Raises ``GatewayError`` subclasses when
    a platform or the broker cannot be read; nothing is repaired then."""
    t0 = time.time()
    docs = await billing_docs(billing, period)
    postings = await erp_postings(erp)
    dead = await dead_lettered(bus, subjects)
    report = reconcile(docs, postings, now=time.time(), grace_s=grace_s, dead_lettered=dead)
    for b in report.breaks:
        if b.kind != "in_flight":
            await bus.emit(f"{subjects.prefix}.mon.recon.break", _json.encode(b))
    repaired: list[str] = []
    unrepairable: list[str] = []
    if repair:
        since = datetime.fromtimestamp(0, UTC)
        for action in report.actions:
            if not isinstance(action, Repost):
                continue
            # The ERP poster's command for this document, with its original idempotency key.
            items = await select_events(bus, subjects, "billing", since=since,
                                        key=f"billing:{action.key}:",
                                        subject=subjects.billing_erp_commands)
            if items:
                await replay_lane(bus, subjects, "billing", items[-1:], repair=True)
                repaired.append(action.key)
                await bus.emit(f"{subjects.prefix}.mon.recon.repair", _json.encode(
                    {"key": action.key, "action": "repost", "events": len(items)}))
            else:
                unrepairable.append(action.key)  # never reached the gateway: not in a stream
    result = RunResult(period, t0, round(time.time() - t0, 3), report, repaired, unrepairable)
    await bus.emit(f"{subjects.prefix}.mon.recon.report", _json.encode(summary(result)))
    return result


def summary(r: RunResult) -> dict[str, object]:
    rep = r.report
    return {"period": r.period, "at": r.started_at, "elapsed_s": r.elapsed_s,
            "checked": rep.checked, "matched": rep.matched, "breaks": rep.by_kind,
            "totals": rep.totals, "accuracy": round(rep.accuracy, 6),
            "auto_repairable_share": round(rep.auto_repairable_share, 6),
            "repaired": len(r.repaired), "unrepairable": len(r.unrepairable)}


class Reconciler(Actor):
    """Runs ``run_once`` every ``interval_s`` seconds (the first run after one interval)."""

    def __init__(self, name: str, *, bus: NatsBus, subjects: Subjects, billing: HttpClient,
                 erp: HttpClient, interval_s: float, grace_s: float, repair: bool) -> None:
        super().__init__(name)
        self.bus, self.subjects, self.billing, self.erp = bus, subjects, billing, erp
        self.interval_s, self.grace_s, self.repair = interval_s, grace_s, repair
        self.runs = 0
        self.last: dict[str, object] | None = None
        self.last_error: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self.stop_requested:
            with anyio.move_on_after(self.interval_s):
                await self.wait_stop_requested()
            if self.stop_requested:
                return
            try:
                result = await run_once(self.bus, self.subjects, self.billing, self.erp,
                                        grace_s=self.grace_s, repair=self.repair)
            except GatewayError as err:  # a platform is down: try again next period
                self.last_error = f"[{err.code}] {err.message}"
                log.warning("reconciliation skipped: %s", self.last_error)
                continue
            self.runs += 1
            self.last = summary(result)
            log.info("reconciled %d documents: %d matched, breaks %s, repaired %d",
                     result.report.checked, result.report.matched,
                     {k: v for k, v in result.report.by_kind.items() if v},
                     len(result.repaired))

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "runs": self.runs, "last": self.last,
                "last_error": self.last_error}
