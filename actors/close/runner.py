"""The shell of a close run (``plan_close``): read the recognition and the shared versions,
publish the
ERP commands; and ``RevenueToGl``, the actor that runs it for the month just ended on a schedule.

Both ``erpgw close run`` and the actor go through ``close_run``: read what the revenue platform
recognises in the period (``GET /revenue/v1/recognition/contracts``), read each (entity,
period, currency) aggregate's latest run from the shared ``versions`` bucket (every gateway
process's ERP poster writes it, ``actors.infra.state``), plan, and publish each
planned run on the ERP journal subject with the ``next_open`` closed-period policy and a
message id derived from its idempotency key (the stream drops a repeat within its window, the
shared versions and the ERP's key beyond). ``wait_applied`` waits until the poster applied
them.

With entities configured (``EntityMap``, the ``[entities]`` section), a run posts one entry
per entity of the contracts' customers, period and currency (``plan_close_entities``); the
``entity`` argument then only selects which entities' runs ``plan_run`` reports when given
``only``. Without, every entry is posted for ``entity``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from contracts import (
    Envelope,
    GatewayError,
    JsonCodec,
    MsgpackCodec,
    PostJournalEntry,
    Subjects,
    derive_id,
    make_envelope,
)
from contracts.platforms.revenue import RecognitionDetail

from ..erp.periods import POLICY_HEADER
from ..infra import NatsBus, OutMsg
from ..infra.lease import KvLease, run_periodically, run_while_held
from ..infra.state import SharedVersions
from ..lifecycle.fx import EntityMap
from ..platforms import HttpResponse
from ..router.invoices import AccountMap
from ..runtime import Actor
from .revenue_gl import (
    Latest,
    RunPosting,
    aggregate_id,
    group_by_entity,
    plan_close,
    plan_close_entities,
)

__all__ = ["RECOGNITION_PATH", "RevenueReader", "RevenueToGl", "close_run", "plan_run",
           "previous_period", "wait_applied"]

log = logging.getLogger("erpgw.close")
RECOGNITION_PATH = "/revenue/v1/recognition/contracts"
_entries: JsonCodec[PostJournalEntry] = JsonCodec(PostJournalEntry)
_detail: JsonCodec[RecognitionDetail] = JsonCodec(RecognitionDetail)
_envelopes: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


class RevenueReader(Protocol):
    async def get(self, path: str) -> HttpResponse: ...


def previous_period(today: date) -> str:
    """The ``YYYY-MM`` of the month before ``today``'s. Pure."""
    index = today.year * 12 + today.month - 2
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


async def _latest(versions: SharedVersions, period: str,
                  pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Latest]:
    """The latest run of each ``(entity, currency)`` aggregate of ``period`` posted so far."""
    aggs = {(e, c): ("revenue", aggregate_id(e, period, c)) for e, c in pairs}
    read = await versions.read(aggs.values())
    out: dict[tuple[str, str], Latest] = {}
    for pair, agg in aggs.items():
        row = read[agg].row
        if row is None:
            continue
        run = max(row.version or 0, row.claimed or 0)
        known = (_entries.decode(row.entry) if row.entry is not None and row.version == run
                 else None)
        out[pair] = Latest(run, known)
    return out


async def plan_run(revenue: RevenueReader, versions: SharedVersions, *, entity: str,
                   period: str, accounts: AccountMap, entities: EntityMap | None = None,
                   only: bool = False) -> list[RunPosting]:
    """What a close run of ``period`` for ``entity`` would publish now, publishing nothing
    (``erpgw close status``). With ``entities`` configured: for every entity of the
    contracts' customers (only ``entity``'s with ``only``). Raises as ``close_run`` does,
    ``BrokerUnavailable`` aside."""
    resp = await revenue.get(f"{RECOGNITION_PATH}?period={period}")
    detail = _detail.decode(resp.body)
    if entities is None or not entities.configured:
        currencies = sorted({it.currency.upper() for it in detail.items})
        latest = await _latest(versions, period, [(entity, c) for c in currencies])
        return plan_close(entity, period, detail.items, accounts,
                          {c: v for (_, c), v in latest.items()})
    groups = group_by_entity(detail.items, entities)
    if only:
        groups = {e: g for e, g in groups.items() if e == entity}
    pairs = sorted({(e, it.currency.upper()) for e, g in groups.items() for it in g})
    return plan_close_entities(period, [it for g in groups.values() for it in g], accounts,
                               await _latest(versions, period, pairs), entities)


async def close_run(revenue: RevenueReader, versions: SharedVersions, bus: NatsBus,
                    subjects: Subjects, *, entity: str, period: str, accounts: AccountMap,
                    entities: EntityMap | None = None) -> list[RunPosting]:
    """Plan and publish the close run of ``period`` for ``entity`` (with ``entities``
    configured: for every entity of the contracts' customers); returns the plan.

    Raises what the revenue platform's reader raises (``GatewayError``s), ``ContractError``
    for an answer that breaks ``RecognitionDetail``, ``LedgerUnavailable`` and
    ``BrokerUnavailable``; a rerun after any of them is safe (the same runs, the same keys).
    """
    plan = await plan_run(revenue, versions, entity=entity, period=period, accounts=accounts,
                          entities=entities)
    for rp in plan:
        if rp.entry is None or rp.key is None:
            continue
        env = make_envelope(rp.entry, source="gateway", key=rp.key,
                            msg_id=derive_id("close.revenue_gl", rp.entry.idempotency_key))
        # next_open: a true-up of a month the ERP has closed lands in the first open period.
        await bus.publish(OutMsg(subject=subjects.erp_journal, data=_envelopes.encode(env),
                                 msg_id=env.id, headers={POLICY_HEADER: "next_open"}))
    return plan


async def wait_applied(versions: SharedVersions, plan: Sequence[RunPosting],
                       timeout: float) -> bool:
    """Whether the ERP poster applied every published run of ``plan`` (the shared applied
    version) within ``timeout`` seconds (``0``: look once). Raises ``BrokerUnavailable``."""
    want = {("revenue", rp.key.object_id): rp.run for rp in plan if rp.key is not None}
    deadline = time.monotonic() + timeout
    while True:
        read = await versions.read(want)
        if all((row := read[a].row) is not None and (row.version or 0) >= run
               for a, run in want.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(0.2)


class RevenueToGl(Actor):
    """Runs ``close_run`` for the month before today (UTC) every ``interval_s`` seconds, the
    first run after one interval. A run that fails (a platform down) is tried again at the next
    interval; a run with nothing changed publishes nothing.

    With ``lease`` (several gateway processes): runs only when the lease
    (``actors.infra.lease``) is confirmed just before the run; a run is cancelled when the lease
    is lost meanwhile (a rerun is safe: the same runs, the same keys). A process that does not
    hold it counts the run as ``skipped``."""

    def __init__(self, name: str, *, revenue: RevenueReader, versions: SharedVersions,
                 bus: NatsBus,
                 subjects: Subjects, accounts: AccountMap, entity: str,
                 interval_s: float, lease: KvLease | None = None,
                 entities: EntityMap | None = None) -> None:
        super().__init__(name)
        self.entities = entities
        self.lease = lease
        self.skipped = 0
        self.revenue, self.versions, self.bus, self.subjects = revenue, versions, bus, subjects
        self.accounts, self.entity, self.interval_s = accounts, entity, interval_s
        self.runs = 0
        self.published = 0
        self.last_period: str | None = None
        self.last_error: str | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await run_periodically(
            self, self.interval_s, self.lease,
            lambda: self._pass(previous_period(datetime.now(UTC).date())),
            task_status=task_status)

    async def _pass(self, period: str) -> None:
        async def once() -> list[RunPosting]:
            return await close_run(self.revenue, self.versions, self.bus, self.subjects,
                                   entity=self.entity, period=period, accounts=self.accounts,
                                   entities=self.entities)

        try:
            if self.lease is None:
                plan: list[RunPosting] | None = await once()
            else:
                _, plan = await run_while_held(self.lease, once)
        except GatewayError as err:
            self.last_error = f"[{err.code}] {err.message}"
            log.warning("close run %s skipped: %s", period, self.last_error)
            return
        if plan is None:  # another process holds the lease (or it was lost mid-run)
            self.skipped += 1
            return
        self.runs += 1
        self.last_period = period
        published = [rp for rp in plan if rp.entry is not None]
        self.published += len(published)
        if published:
            log.info("close run %s entity %s: %s", period, self.entity,
                     ", ".join(f"{rp.entity} {rp.currency} run {rp.run} {rp.action}"
                               for rp in published))

    def statistics(self) -> dict[str, object]:
        return {"name": self.name, "runs": self.runs, "skipped": self.skipped,
                "published": self.published, "last_period": self.last_period,
                "last_error": self.last_error,
                "lease": self.lease.statistics() if self.lease is not None else None}
