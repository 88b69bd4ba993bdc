"""Close readiness: what stops an entity's month from being closed, each with the command that
resolves it (``erpgw close status``, the ``close.blocking`` KPI, ``erpgw demo``).

Theory of operation: ``close_blockers`` is pure. Its shell (``.status``) reads, for one period,
the reconciliation of billing's documents against the ERP (and the revenue platform, when that
leg runs), the unresolved dead letters, and the close run that ``erpgw close run`` would make
now; this module turns them into blockers:

====================  ==========================================================  =================
kind                  when                                                        resolved by
====================  ==========================================================  =================
``unposted``          a billing document of the period has no ERP posting (or     ``erpgw reconcile
                      revenue lines not uploaded) and no open dead letter         --repair``; wait
                      explains it: ``missing``, ``in_flight``, or dead-lettered   when in flight
                      once and replayed but not posted yet
``dead_lettered``     an unresolved dead letter of the period: its document's     ``erpgw dlq
                      date (a journal entry's posting date), else a billing       replay``
                      document of the period it names, else the month it failed
                      (``saga.compensated`` aside: a refused deal, reversed)
``recon_break``       a reconciliation break a person must decide: duplicate,     ``erpgw
                      amount, currency, orphan, ``revenue_*``                     reconcile``
``in_doubt``          revenue lines whose upload outcome is unknown               ``erpgw reconcile
                                                                                  --legs revenue``
``revenue_unposted``  the revenue platform recognises revenue in the period that  ``erpgw close
                      the GL does not hold yet (a close run would post or true    run``
                      it up)
====================  ==========================================================  =================

The GL leg is not counted: a posting moved into the next open period by the closed-period
policy makes the closed month's balances differ from billing by design; ``erpgw reconcile
--legs gl`` compares them. Nothing here reads a clock: the grace period of "in flight" is the
reconciliation's.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.platforms.erp import PERIOD_CLOSED

from ..reconcile import Break
from .revenue_gl import RunPosting

__all__ = ["BLOCKER_KINDS", "SETTLED_CODES", "Blocker", "CloseStatus", "OpenLetter",
           "close_blockers", "letter_period"]

# The dead-letter code of a posting the ERP refused for a closed period (the ERP poster's
# ``erp.<the ERP's code, lower case>``).
PERIOD_CLOSED_CODE = f"erp.{PERIOD_CLOSED.lower()}"
# Letters that record a business outcome already complete, not work left undone: a deal whose
# saga was refused and reversed every step it had made (docs/flows.md, flow 1). They do not
# block a close.
SETTLED_CODES = frozenset({"saga.compensated"})
BLOCKER_KINDS = ("unposted", "dead_lettered", "recon_break", "in_doubt", "revenue_unposted")
# Reconciliation kinds that are neither a document waiting for its posting nor a dead letter.
_UNPOSTED = frozenset({"missing", "in_flight", "revenue_missing"})


@dataclass(frozen=True, slots=True)
class OpenLetter:
    """An unresolved dead letter, as far as the close needs it (the shell reads it)."""

    seq: int
    code: str
    lane: str
    document: str  # the object id of its business key ("" without one)
    period: str | None  # YYYY-MM of the document's own date, when the letter carries one
    failed_period: str  # YYYY-MM of the moment it was dead-lettered


@dataclass(frozen=True, slots=True)
class Blocker:
    kind: str
    key: str
    detail: str
    resolve: str  # the command that resolves it

    @property
    def code(self) -> str:
        """Its stable code (docs/errors.md, "Close readiness"): ``close.<kind>``."""
        return f"close.{self.kind}"


@dataclass(frozen=True, slots=True)
class CloseStatus:
    entity: str
    period: str
    blockers: tuple[Blocker, ...] = ()
    # Each kind's command for all its items at once (e.g. every period-closed letter).
    resolve_all: Mapping[str, str] = field(default_factory=dict)

    @property
    def blocking(self) -> int:
        return len(self.blockers)

    @property
    def by_kind(self) -> dict[str, int]:
        out = dict.fromkeys(BLOCKER_KINDS, 0)
        for b in self.blockers:
            out[b.kind] += 1
        return out

    def to_builtins(self) -> dict[str, Any]:
        """The JSON document of ``erpgw close status --json`` for this entity."""
        return {"entity": self.entity, "period": self.period, "ready": not self.blockers,
                "blocking": self.blocking, "by_kind": self.by_kind,
                "resolve": dict(self.resolve_all),
                "items": [{"kind": b.kind, "code": b.code, "key": b.key, "detail": b.detail,
                           "resolve": b.resolve} for b in self.blockers]}


def letter_period(letter: OpenLetter, documents: Container[str], period: str) -> str:
    """The period a dead letter blocks: its document's own date, else ``period`` when it names
    one of billing's documents of ``period`` (``documents``: their ids), else the month it
    failed in. Pure."""
    if letter.period is not None:
        return letter.period
    if letter.document and letter.document in documents:
        return period
    return letter.failed_period


def _letter_resolve(letter: OpenLetter) -> str:
    if letter.code == PERIOD_CLOSED_CODE:
        return f"erpgw dlq replay --seq {letter.seq} --repost-open"
    return f"erpgw dlq show {letter.seq}, fix the cause, then erpgw dlq replay --seq {letter.seq}"


def close_blockers(entity: str, period: str, *, breaks: Iterable[Break],
                   letters: Iterable[OpenLetter], documents: Iterable[str],
                   revenue: Iterable[RunPosting]) -> CloseStatus:
    """What blocks the close of ``period`` for ``entity``. Pure; raises nothing.

    ``breaks``: the period's reconciliation breaks (every leg that ran); ``letters``: the
    unresolved dead letters (of any period: those of ``period`` are kept, see
    ``letter_period``); ``documents``: the ids of billing's documents of the period;
    ``revenue``: the close run's plan for the period (``plan_close``)."""
    docs = set(documents)
    mine = sorted((lt for lt in letters if lt.code not in SETTLED_CODES
                   and letter_period(lt, docs, period) == period), key=lambda lt: lt.seq)
    lettered = {lt.document for lt in mine if lt.document}
    out: list[Blocker] = []
    for lt in mine:
        out.append(Blocker("dead_lettered", f"dlq:{lt.seq}",
                           f"{lt.code} on lane {lt.lane}"
                           + (f" ({lt.document})" if lt.document else ""),
                           _letter_resolve(lt)))
    reconcile = f"erpgw reconcile --period {period}"
    for b in sorted(breaks, key=lambda b: (b.leg, b.kind, b.key)):
        where = f"[{b.leg}] {b.kind}: {b.detail}"
        if b.kind == "dead_lettered":
            if b.key in lettered:
                continue  # the letter is listed itself
            # A letter replayed (resolved) whose posting has not landed yet.
            out.append(Blocker("unposted", b.key, where,
                               f"wait for the gateway to drain (erpgw monitor), then "
                               f"{reconcile} --repair"))
        elif b.kind in _UNPOSTED:
            resolve = (f"wait for the gateway to drain (erpgw monitor), then {reconcile}"
                       if b.kind == "in_flight" else f"{reconcile} --repair")
            out.append(Blocker("unposted", b.key, where, resolve))
        elif b.kind == "in_doubt":
            out.append(Blocker("in_doubt", b.key, where,
                               f"{reconcile} --legs revenue (check the revenue platform, "
                               "then release the lines)"))
        else:
            out.append(Blocker("recon_break", f"{b.leg}:{b.key}", where,
                               f"{reconcile} (a person approves the proposal)"))
    close_run = f"erpgw close run --period {period} --entity {entity}"
    for rp in revenue:
        if rp.entry is None:
            continue
        what = "not posted to the GL" if rp.action == "posted" else "changed since run " \
            f"{rp.run - 1} (a true-up)"
        out.append(Blocker("revenue_unposted", f"revenue:{entity}:{period}:{rp.currency}",
                           f"recognised {rp.currency} {rp.amount} {what}", close_run))
    resolve_all: dict[str, str] = {}
    if any(b.kind == "dead_lettered" for b in out):
        codes = {lt.code for lt in mine}
        resolve_all["dead_lettered"] = (
            "erpgw dlq replay --code erp.period_closed --repost-open"
            if codes == {PERIOD_CLOSED_CODE} else "erpgw dlq ls, then erpgw dlq replay --seq ...")
    if any(b.kind in ("unposted", "recon_break") for b in out):
        resolve_all["unposted"] = f"{reconcile} --repair"
        resolve_all["recon_break"] = reconcile
    if any(b.kind == "in_doubt" for b in out):
        resolve_all["in_doubt"] = f"{reconcile} --legs revenue"
    if any(b.kind == "revenue_unposted" for b in out):
        resolve_all["revenue_unposted"] = close_run
    present = {b.kind for b in out}
    return CloseStatus(entity, period, tuple(out),
                       {k: v for k, v in resolve_all.items() if k in present})
