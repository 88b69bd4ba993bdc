"""Reconciliation matching: three-way comparison of billing, the ERP and the gateway's ledger.

Pure: records in, breaks and a repair plan out. No I/O, no clock (``now`` is passed in).

Per business key (the billing document id, which the ERP carries as its external id):

=================  ==============================================================  ===========
break              when                                                            repair
=================  ==============================================================  ===========
``missing``        billing has it, the ERP has no posting, nothing in flight,       ``Repost``
                   not dead-lettered
``in_flight``      billing has it, no posting yet, but younger than the grace      none (wait)
                   period or still in the gateway's backlog (a *timing* break)
``dead_lettered``  billing has it, no posting, a dead letter explains why          none (DLQ)
``duplicate``      the ERP holds more than one posting for it                      ``Flag``
``amount``         the posting's amount differs from billing's total               ``Flag``
``currency``       the posting's currency differs from billing's                   ``Flag``
``orphan``         the ERP holds a posting no billing document explains            ``Flag``
=================  ==============================================================  ===========

Only ``missing`` is repaired automatically, by re-driving the original event from its stream
with its original idempotency key (safe: if the posting did exist after all, the ERP answers
"replayed"). A duplicate or a wrong amount is never "fixed" by the gateway: it is flagged with
the evidence and a *reversal proposal* for a person to approve, never a deletion.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import msgspec

__all__ = [
    "BillingDoc",
    "Break",
    "ErpPosting",
    "Flag",
    "ReconReport",
    "Repost",
    "reconcile",
]

BREAK_KINDS = ("missing", "in_flight", "dead_lettered", "duplicate", "amount", "currency",
               "orphan")


class BillingDoc(msgspec.Struct, frozen=True):
    key: str  # the billing document id (the ERP's external id)
    currency: str
    amount: int  # minor units
    issued_at: float  # unix seconds


class ErpPosting(msgspec.Struct, frozen=True):
    key: str  # external id
    erp_id: str
    currency: str
    amount: int


class Break(msgspec.Struct, frozen=True):
    kind: str
    key: str
    detail: str
    billing_amount: int | None = None
    erp_amount: int | None = None
    currency: str | None = None


class Repost(msgspec.Struct, frozen=True, tag="repost"):
    """Re-drive the source event of ``key`` (same idempotency key) through the gateway."""

    key: str


class Flag(msgspec.Struct, frozen=True, tag="flag"):
    """For a person: the break, its evidence and a proposal (``reverse <erp_id>`` …)."""

    key: str
    kind: str
    proposal: str


class ReconReport(msgspec.Struct, frozen=True):
    checked: int
    matched: int
    breaks: list[Break]
    actions: list[Repost | Flag]
    totals: dict[str, dict[str, int]]  # system -> currency -> minor units
    by_kind: dict[str, int]

    @property
    def auto_repairable_share(self) -> float:
        """Share of breaks the gateway repairs by itself (manual-reconciliation reduction)."""
        real = [b for b in self.breaks if b.kind not in ("in_flight", "dead_lettered")]
        if not real:
            return 1.0
        return sum(1 for b in real if b.kind == "missing") / len(real)

    @property
    def accuracy(self) -> float:
        """Matched documents / documents checked (1.0 when nothing to check)."""
        return self.matched / self.checked if self.checked else 1.0


def reconcile(billing: Iterable[BillingDoc], erp: Iterable[ErpPosting], *, now: float,
              grace_s: float = 300.0, in_flight: Iterable[str] = (),
              dead_lettered: Iterable[str] = ()) -> ReconReport:
    """Compare the three views; see the module docstring. Raises nothing."""
    docs = {d.key: d for d in billing}
    postings: dict[str, list[ErpPosting]] = defaultdict(list)
    for p in erp:
        postings[p.key].append(p)
    flying = set(in_flight)
    dead = set(dead_lettered)
    breaks: list[Break] = []
    actions: list[Repost | Flag] = []
    totals: dict[str, dict[str, int]] = {"billing": defaultdict(int), "erp": defaultdict(int)}
    matched = 0
    for key in sorted(docs):
        doc = docs[key]
        totals["billing"][doc.currency] += doc.amount
        got = postings.get(key, [])
        if not got:
            if key in dead:
                breaks.append(Break("dead_lettered", key, "no posting: a dead letter explains "
                                    "it (see erpgw dlq)", doc.amount, None, doc.currency))
            elif key in flying or now - doc.issued_at < grace_s:
                breaks.append(Break("in_flight", key, "no posting yet: still within the grace "
                                    "period or in the gateway's backlog", doc.amount, None,
                                    doc.currency))
            else:
                breaks.append(Break("missing", key, "billed, never posted to the ERP",
                                    doc.amount, None, doc.currency))
                actions.append(Repost(key))
            continue
        ok = True
        if len(got) > 1:
            ok = False
            ids = ", ".join(p.erp_id for p in got)
            breaks.append(Break("duplicate", key, f"{len(got)} postings: {ids}", doc.amount,
                                sum(p.amount for p in got), doc.currency))
            actions.append(Flag(key, "duplicate",
                                "reverse " + ", ".join(p.erp_id for p in got[1:])))
        first = got[0]
        if first.currency != doc.currency:
            ok = False
            breaks.append(Break("currency", key, f"billed in {doc.currency}, posted in "
                                f"{first.currency} ({first.erp_id})", doc.amount, first.amount,
                                doc.currency))
            actions.append(Flag(key, "currency", f"reverse {first.erp_id} and repost"))
        elif first.amount != doc.amount:
            ok = False
            breaks.append(Break("amount", key, f"billed {doc.amount}, posted {first.amount} "
                                f"({first.erp_id})", doc.amount, first.amount, doc.currency))
            actions.append(Flag(key, "amount", f"reverse {first.erp_id} and repost "
                                f"{doc.amount} {doc.currency}"))
        matched += ok
    for key in sorted(set(postings) - set(docs)):
        for p in postings[key]:
            breaks.append(Break("orphan", key, f"posting {p.erp_id} matches no billing "
                                "document", None, p.amount, p.currency))
            actions.append(Flag(key, "orphan", f"investigate {p.erp_id}; reverse if unfounded"))
    for ps in postings.values():
        for p in ps:
            totals["erp"][p.currency] += p.amount
    by_kind = {k: 0 for k in BREAK_KINDS}
    for b in breaks:
        by_kind[b.kind] += 1
    return ReconReport(checked=len(docs), matched=matched, breaks=breaks, actions=actions,
                       totals={k: dict(v) for k, v in totals.items()}, by_kind=by_kind)
