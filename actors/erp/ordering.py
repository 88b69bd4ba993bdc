"""Per-aggregate ordering of ERP postings (flow 6): a later version is never applied before an
earlier one, and an amendment replaces, rather than adds to, what the ERP already holds.

Pure: no I/O, no clock. The ERP poster reads, per aggregate (``(source, object id)`` of the
business key), its ``State`` from the ledger's ``versions`` table: the version it last applied
with the journal entry that applied it, and the version it *claimed* (committed before sending
it to the ERP, whose outcome was never recorded: a crash or an unanswered request) which may
therefore be at the ERP. It asks ``plan_order`` what to do with each command of a batch, claims
what it is about to apply, performs it, and records the new applied version in the same
transaction as the postings.

The rules, for a command of version ``n`` of an aggregate whose applied version is ``a`` and
claimed version ``c`` (each may be absent); ``floor`` is the higher of ``a`` and ``c``:

- a higher version of the same aggregate is in the same batch: ``Skip("superseded")``;
- ``n == c``: ``Apply`` again exactly what the claim sent (the ERP answers ``replayed`` for
  whatever of it arrived);
- ``n == a``: ``Skip("applied")`` (a redelivery), unless it is a repair of a posting proven
  missing at the ERP (and nothing newer is claimed), which is posted again as it was;
- ``n < floor``: ``Skip("stale")``, an older version arrived after a newer one was applied or
  claimed (the billing platform delivered v2 before v1, v1 was redelivered late, or v2 may be
  at the ERP since a crash). The newer version is a complete document, so nothing is lost by
  not applying the older one; skipping it below a claim keeps ORDER_OK through a crash;
- ``n > floor`` (or nothing applied nor claimed): ``Apply``. When an earlier version is
  applied, the amendment is posted as the *reversal* of the applied entry (every line with
  debit and credit swapped) and the new version in full, so accounts receivable holds the
  latest total once, never the sum of the versions. Every document entry of a claim that the
  ERP may hold (not refused, not the applied one) is posted and reversed first (idempotent: if
  it was there, posting it is ``replayed``; if not, it is created and at once cancelled), so
  nothing the ERP may hold stays unreversed, however many crashes came in between.

We apply the latest version as soon as it arrives rather than parking it until the earlier one
lands: the earlier one may never come (the platform only promises the latest state), and
parking would need a durable queue of its own, while skipping a stale version is enough to keep
ORDER_OK (no version below an applied one is ever posted).

A reversal's idempotency key and body depend only on the reversed entry (its date included),
so every attempt to reverse the same posting, whichever version supersedes it, sends the same
item and the ERP answers ``replayed``: an applied posting is reversed at most once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts import BusinessKey, JournalLine, PostJournalEntry, derive_id

__all__ = [
    "REVERSAL_SUFFIX",
    "Aggregate",
    "Applied",
    "Apply",
    "Candidate",
    "Claim",
    "Skip",
    "State",
    "aggregate_of",
    "plan_order",
    "reversal_of",
    "versioned_external_id",
]

# (source, object id) of a business key: what versions are ordered within.
Aggregate = tuple[str, str]

# The external id of the reversal of the posting with external id X is X + this suffix.
REVERSAL_SUFFIX = ":reversal"


def versioned_external_id(object_id: str, version: int) -> str:
    """The ERP external id of version ``version`` of ``object_id``: the bare id for versions 0
    and 1 (what flow 2 has always sent), ``<id>:v<n>`` from version 2 on."""
    return object_id if version <= 1 else f"{object_id}:v{version}"


def aggregate_of(key: BusinessKey, entry: PostJournalEntry) -> Aggregate | None:
    """The aggregate whose versions ``entry`` takes part in, or None when the entry is not the
    posting of its business key's own document (a posting derived from another document, such
    as a payment keyed by its invoice, is never ordered against that document's versions)."""
    if entry.external_id in (key.object_id, versioned_external_id(key.object_id, key.version)):
        return key.source, key.object_id
    return None


@dataclass(frozen=True, slots=True)
class Applied:
    """The version of an aggregate the ERP holds, and the entry that applied it."""

    version: int
    entry: PostJournalEntry


@dataclass(frozen=True, slots=True)
class Claim:
    """A version sent to the ERP whose outcome was never recorded, with every entry of that
    request (``entries``, its own last): any of them may be at the ERP."""

    version: int
    entries: tuple[PostJournalEntry, ...]


@dataclass(frozen=True, slots=True)
class State:
    """What the ledger knows of one aggregate: the ``applied`` version, the ``claimed`` one
    (when above it), and the idempotency keys among the claim's entries that the ERP refused
    (``refused``: certainly not there)."""

    applied: Applied | None = None
    claimed: Claim | None = None
    refused: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One command of a batch: its aggregate (None: not ordered), version and entry;
    ``repair``: a replay of a posting proven missing at the ERP."""

    aggregate: Aggregate | None
    version: int
    entry: PostJournalEntry
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Apply:
    """Post ``entries`` in order, the command's own entry last (before it: the reversal of the
    applied version, and a claimed version with its reversal); once the ERP holds all of them
    the aggregate's applied version becomes the command's."""

    entries: tuple[PostJournalEntry, ...]


@dataclass(frozen=True, slots=True)
class Skip:
    """Do not post: ``reason`` is ``stale`` (older than the applied or claimed version),
    ``applied`` (the applied version itself, redelivered) or ``superseded`` (a newer version is
    in the batch); ``applied_version`` is the higher of the aggregate's applied and claimed
    versions when planned (0: none)."""

    reason: str
    applied_version: int


def reversal_of(entry: PostJournalEntry) -> PostJournalEntry:
    """The entry that cancels ``entry``: the same accounts and amounts with debit and credit
    swapped, dated like it, external id ``<its external id>:reversal``, idempotency key derived
    from its key alone (so it is posted at most once); for the same entity at the same
    exchange rate as ``entry``, so it cancels it in the functional currency too. Raises
    nothing for a valid entry."""
    return PostJournalEntry(
        idempotency_key=derive_id("erp.journal.reversal", entry.idempotency_key),
        external_id=entry.external_id + REVERSAL_SUFFIX,
        posting_date=entry.posting_date,
        currency=entry.currency,
        memo=f"Reversal of {entry.external_id} (superseded by a later version)",
        lines=[JournalLine(account=ln.account, debit=ln.credit, credit=ln.debit,
                           memo=f"reversal: {ln.memo}" if ln.memo else "reversal")
               for ln in entry.lines],
        entity=entry.entity, functional_currency=entry.functional_currency,
        exchange_rate=entry.exchange_rate,
    )


def plan_order(candidates: Sequence[Candidate],
               states: Mapping[Aggregate, State]) -> list[Apply | Skip]:
    """What to do with each of ``candidates`` (one verdict each, in order), given the state of
    each aggregate (absent: nothing applied nor claimed). See the module docstring for the
    rules. At most one candidate per aggregate is applied. Raises nothing."""
    newest: dict[Aggregate, int] = {}
    for c in candidates:
        if c.aggregate is not None:
            newest[c.aggregate] = max(newest.get(c.aggregate, c.version), c.version)
    chosen: set[Aggregate] = set()
    out: list[Apply | Skip] = []
    for c in candidates:
        if c.aggregate is None:
            out.append(Apply((c.entry,)))
            continue
        state = states.get(c.aggregate, State())
        applied, claimed = state.applied, state.claimed
        if claimed is not None and applied is not None and claimed.version <= applied.version:
            claimed = None  # settled by the applied version
        floor = max(applied.version if applied else -1, claimed.version if claimed else -1)
        reverse = () if applied is None else (reversal_of(applied.entry),)
        if c.version < newest[c.aggregate] or c.aggregate in chosen:
            out.append(Skip("superseded", max(floor, 0)))
        elif claimed is not None and c.version == claimed.version:
            chosen.add(c.aggregate)
            out.append(Apply(claimed.entries))
        elif applied is not None and c.version == applied.version:
            if c.repair and claimed is None:
                chosen.add(c.aggregate)
                out.append(Apply((c.entry,)))
            else:
                out.append(Skip("applied", floor))
        elif c.version < floor:
            out.append(Skip("stale", floor))
        else:
            chosen.add(c.aggregate)
            out.append(Apply((*reverse, *_carried(claimed, applied, state.refused), c.entry)))
    return out


def _carried(claimed: Claim | None, applied: Applied | None,
             refused: frozenset[str]) -> tuple[PostJournalEntry, ...]:
    """Each document entry of ``claimed`` that the ERP may hold, followed by its reversal
    (reversals, refused entries and the applied entry, reversed anyway, are left out)."""
    if claimed is None:
        return ()
    done = {applied.entry.idempotency_key} if applied is not None else set()
    out: list[PostJournalEntry] = []
    for e in claimed.entries:
        if (e.external_id.endswith(REVERSAL_SUFFIX) or e.idempotency_key in refused
                or e.idempotency_key in done):
            continue
        done.add(e.idempotency_key)
        out += [e, reversal_of(e)]
    return tuple(out)
