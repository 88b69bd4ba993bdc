"""Reconciliation matching: three-way comparison of billing, the ERP and the gateway's ledger.

Pure: records in, breaks and a repair plan out. No I/O, no clock (``now`` is passed in).

Per business key (the billing document id — an invoice, a credit note or a payment — which
the ERP carries as its external id):

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

Entities and currencies: a document the ERP must hold in another currency than billing's (a
foreign-currency payment posted in its entity's functional currency, ``.fx``) carries that
expectation (``posted_currency``, ``posted_amount``, exact in minor units, and ``posted_as``
saying at which rates); its posting is compared with it instead, and a difference is a
``currency`` or ``amount`` break like any other.

Versions and reversals (flow 6): the ERP posting of version n > 1 of a document carries the
external id ``<id>:v<n>``, and an amendment reverses the entry it replaces with a posting
``<that external id>:reversal``. So first the reversals cancel the entries they name (neither
counts any more), and what remains are the document's *live* postings. Billing's latest
version must have exactly one live posting; an older version still live beside it is a
``duplicate`` (its reversal is missing: propose it); only older versions live and the latest
not posted is ``missing`` (or in flight, or dead-lettered) like any unposted document. A
reversal naming no posting is an ``orphan``; one that does not carry the amount (or currency)
of the entry it names leaves the difference in the GL: an ``amount`` break on the document,
whatever its live posting holds.

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
    "BREAK_KINDS",
    "EXPLAINED_KINDS",
    "REVERSAL_SUFFIX",
    "Action",
    "BillingDoc",
    "Break",
    "ErpPosting",
    "Flag",
    "ReconReport",
    "Repost",
    "Reupload",
    "reconcile",
    "split_external_id",
]

REVERSAL_SUFFIX = ":reversal"

# Every break kind, all legs. The first seven are the ERP leg's (this module); the
# ``revenue_*`` and ``in_doubt`` kinds the revenue leg's (``.revenue``); ``gl`` and the
# ``payable_*`` kinds the GL and payables legs' (``.books``). ``in_flight`` and
# ``dead_lettered`` serve every leg (the break's ``leg`` says which).
BREAK_KINDS = ("missing", "in_flight", "dead_lettered", "duplicate", "amount", "currency",
               "orphan", "revenue_missing", "revenue_duplicate", "revenue_amount",
               "revenue_orphan", "in_doubt", "gl", "payable_missing", "payable_duplicate",
               "payable_amount", "payable_orphan")
# Kinds that are not (yet) a break for a person: timing, or explained by a dead letter.
EXPLAINED_KINDS = frozenset({"in_flight", "dead_lettered"})


class BillingDoc(msgspec.Struct, frozen=True):
    key: str  # the billing document id (the ERP's external id)
    currency: str
    amount: int  # minor units
    issued_at: float  # unix seconds
    version: int = 1  # the document's latest version at billing
    # What the ERP must hold when it is not (currency, amount): a payment restated in its
    # entity's functional currency (``.fx``), and how (``posted_as``: the rates).
    posted_currency: str | None = None
    posted_amount: int | None = None
    posted_as: str = ""

    @property
    def expected(self) -> tuple[str, int]:
        """The (currency, amount) the ERP's posting of the document must carry."""
        if self.posted_currency is None or self.posted_amount is None:
            return self.currency, self.amount
        return self.posted_currency, self.posted_amount


def split_external_id(external_id: str) -> tuple[str, int, bool]:
    """``(document id, version, is a reversal)`` of an ERP external id (pure):
    ``in_1`` → ``("in_1", 1, False)``, ``in_1:v2`` → ``("in_1", 2, False)``,
    ``in_1:v2:reversal`` → ``("in_1", 2, True)`` (the reversal of version 2's entry)."""
    reversal = external_id.endswith(REVERSAL_SUFFIX)
    base = external_id[:-len(REVERSAL_SUFFIX)] if reversal else external_id
    doc, sep, tail = base.rpartition(":v")
    if sep and doc and tail.isdigit():
        return doc, int(tail), reversal
    return base, 1, reversal


class ErpPosting(msgspec.Struct, frozen=True):
    key: str  # external id
    erp_id: str
    currency: str
    amount: int
    # The entity (subsidiary) and, for a document foreign to it, the functional currency and
    # the rate it was booked at, as the ERP holds them (None when the entry has none).
    entity: str | None = None
    functional_currency: str | None = None
    exchange_rate: str | None = None


class Break(msgspec.Struct, frozen=True):
    kind: str
    key: str
    detail: str
    billing_amount: int | None = None
    erp_amount: int | None = None  # the other system's amount (ERP, revenue platform, GL)
    currency: str | None = None
    leg: str = "erp"  # erp | revenue | gl | payables


class Repost(msgspec.Struct, frozen=True, tag="repost"):
    """Re-drive the source event of ``key`` (same idempotency key) through the gateway."""

    key: str


class Reupload(msgspec.Struct, frozen=True, tag="reupload"):
    """Re-drive invoice ``key``'s issued event to the revenue poster: the ledger proves none
    of its lines was sent (no row, or ``released``), and the poster sends only such lines."""

    key: str


class Flag(msgspec.Struct, frozen=True, tag="flag"):
    """For a person: the break, its evidence and a proposal (``reverse <erp_id>`` …)."""

    key: str
    kind: str
    proposal: str


Action = Repost | Reupload | Flag


class ReconReport(msgspec.Struct, frozen=True):
    checked: int
    matched: int
    breaks: list[Break]
    actions: list[Action]
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
    everything = list(erp)
    reversed_ids = {p.key[:-len(REVERSAL_SUFFIX)] for p in everything
                    if p.key.endswith(REVERSAL_SUFFIX)}
    posted: dict[str, list[ErpPosting]] = defaultdict(list)
    for p in everything:
        posted[p.key].append(p)
    # Live postings by document: neither a reversal nor reversed.
    postings: dict[str, list[tuple[int, ErpPosting]]] = defaultdict(list)
    breaks: list[Break] = []
    actions: list[Action] = []
    residue: set[str] = set()  # documents a reversal did not cancel exactly
    for p in everything:
        doc_id, version, is_reversal = split_external_id(p.key)
        if is_reversal:
            targets = posted.get(p.key[:-len(REVERSAL_SUFFIX)], [])
            if not targets:
                breaks.append(Break("orphan", p.key, f"reversal {p.erp_id} reverses no "
                                    "posting", None, p.amount, p.currency))
                actions.append(Flag(p.key, "orphan", f"investigate {p.erp_id}"))
            elif not any((t.currency, t.amount) == (p.currency, p.amount) for t in targets):
                t = targets[0]
                residue.add(doc_id)
                breaks.append(Break("amount", doc_id, f"reversal {p.erp_id} took {p.amount} "
                                    f"{p.currency}, the entry it reverses ({t.erp_id}) holds "
                                    f"{t.amount} {t.currency}: the difference stays in the GL",
                                    t.amount, p.amount, t.currency))
                actions.append(Flag(doc_id, "amount", f"reverse {p.erp_id} and reverse "
                                    f"{t.erp_id} at {t.amount} {t.currency}"))
        elif p.key not in reversed_ids:
            postings[doc_id].append((version, p))
    flying = set(in_flight)
    dead = set(dead_lettered)
    totals: dict[str, dict[str, int]] = {"billing": defaultdict(int), "erp": defaultdict(int)}
    matched = 0
    for key in sorted(docs):
        doc = docs[key]
        totals["billing"][doc.currency] += doc.amount
        live = postings.get(key, [])
        got = [p for v, p in live if v == doc.version]
        stale = [p for v, p in live if v != doc.version]
        if not got:
            superseded = (f"; version(s) {sorted(v for v, _ in live)} still posted"
                          if stale else "")
            if key in dead:
                breaks.append(Break("dead_lettered", key, "no posting: a dead letter explains "
                                    f"it (see erpgw dlq){superseded}", doc.amount, None,
                                    doc.currency))
            elif key in flying or now - doc.issued_at < grace_s:
                breaks.append(Break("in_flight", key, "no posting yet: still within the grace "
                                    f"period or in the gateway's backlog{superseded}",
                                    doc.amount, None, doc.currency))
            else:
                at = f" at version {doc.version}" if doc.version > 1 else ""
                breaks.append(Break("missing", key, f"billed, never posted to the ERP{at}"
                                    f"{superseded}", doc.amount, None, doc.currency))
                actions.append(Repost(key))
            continue
        ok = key not in residue
        if len(got) > 1 or stale:
            ok = False
            ids = ", ".join(p.erp_id for p in got + stale)
            breaks.append(Break("duplicate", key, f"{len(got) + len(stale)} live postings: "
                                f"{ids}", doc.amount, sum(p.amount for p in got + stale),
                                doc.currency))
            actions.append(Flag(key, "duplicate",
                                "reverse " + ", ".join(p.erp_id for p in got[1:] + stale)))
        first = got[0]
        currency, amount = doc.expected
        how = f" ({doc.posted_as})" if doc.posted_as else ""
        if first.currency != currency:
            ok = False
            breaks.append(Break("currency", key, f"billed in {doc.currency}{how}, posted in "
                                f"{first.currency} ({first.erp_id})", amount, first.amount,
                                currency))
            actions.append(Flag(key, "currency", f"reverse {first.erp_id} and repost"))
        elif first.amount != amount:
            ok = False
            breaks.append(Break("amount", key, f"billed {amount}{how}, posted {first.amount} "
                                f"({first.erp_id})", amount, first.amount, currency))
            actions.append(Flag(key, "amount", f"reverse {first.erp_id} and repost "
                                f"{amount} {currency}"))
        matched += ok
    for key in sorted(set(postings) - set(docs)):
        for _, p in postings[key]:
            breaks.append(Break("orphan", key, f"posting {p.erp_id} matches no billing "
                                "document", None, p.amount, p.currency))
            actions.append(Flag(key, "orphan", f"investigate {p.erp_id}; reverse if unfounded"))
    for ps in postings.values():
        for _, p in ps:
            totals["erp"][p.currency] += p.amount
    by_kind = {k: 0 for k in BREAK_KINDS}
    for b in breaks:
        by_kind[b.kind] += 1
    return ReconReport(checked=len(docs), matched=matched, breaks=breaks, actions=actions,
                       totals={k: dict(v) for k, v in totals.items()}, by_kind=by_kind)
