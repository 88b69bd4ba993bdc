"""Ground truth for a run: what billing issued against what the ERP posted.

Theory of operation: the business key of an invoice is its id, and the gateway sends it as the
journal entry's ``externalId``. So every posting either belongs to an issued invoice (the first
one counts as ``posted``, any further one as a ``duplicate``) or to nothing we issued
(``unexpected``), which gives the identity ``postings == posted + duplicates + unexpected``.
An invoice whose webhook got a 2xx (``accepted``) but has no posting is ``unposted``: either
still in flight, or lost. The sim cannot tell which, since it does not see the gateway's dead
letters; the caller subtracts those to find the truly lost.

Everything here is pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import msgspec

from ._records import IssuedInvoice, Posting

__all__ = ["MAX_UNPOSTED_LISTED", "AuditReport", "LatencyMs", "compute_audit", "nearest_rank"]

MAX_UNPOSTED_LISTED = 1000


class LatencyMs(msgspec.Struct, frozen=True):
    """Issue-to-first-posting latency in milliseconds (nearest-rank percentiles)."""

    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0


class AuditReport(msgspec.Struct, frozen=True):
    """The audit of everything issued and posted since the sim started or was last reset.

    ``amount_issued`` sums the totals of accepted invoices and ``amount_posted`` the amounts of
    all postings (duplicates and unexpected ones included: it is what the ERP's books say), both
    keyed by upper-case currency so the two compare directly. ``unposted`` lists at most
    ``MAX_UNPOSTED_LISTED`` ids, sorted; ``unposted_count`` is the full count.
    ``generated_at`` is the ``now`` the report was computed for.
    """

    issued: int
    accepted: int
    posted: int
    postings: int
    duplicates: int
    unexpected: int
    unposted: list[str]
    unposted_count: int
    amount_issued: dict[str, int]
    amount_posted: dict[str, int]
    latency_ms: LatencyMs
    first_issued_at: float | None
    last_posted_at: float | None
    throughput_eps: float
    generated_at: float


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ascending ``sorted_values``; 0.0 when empty.

    The smallest value with at least ``pct`` percent of the values at or below it (rank
    ``ceil(pct/100 * n)``, at least 1). Raises ``ValueError`` when ``pct`` is outside 0..100.
    """
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def compute_audit(
    issued: Iterable[IssuedInvoice],
    accepted_ids: Collection[str],
    postings: Iterable[Posting],
    now: float,
) -> AuditReport:
    """Match ``postings`` to ``issued`` invoices by external id and count what went where.

    ``accepted_ids`` are the invoice ids whose webhook got a 2xx; ids not among ``issued`` are
    ignored. Postings may come in any order: the first posting of an invoice is the one with
    the lowest ``seq``. ``last_posted_at`` and the throughput consider only postings of issued
    invoices. Raises nothing for any well-typed input.
    """
    by_id: dict[str, IssuedInvoice] = {}
    for inv in issued:
        by_id[inv.invoice_id] = inv

    first: dict[str, Posting] = {}
    counts: dict[str, int] = {}
    amount_posted: dict[str, int] = {}
    total_postings = 0
    unexpected = 0
    last_posted_at: float | None = None
    for p in postings:
        total_postings += 1
        amount_posted[p.currency] = amount_posted.get(p.currency, 0) + p.amount
        if p.external_id not in by_id:
            unexpected += 1
            continue
        counts[p.external_id] = counts.get(p.external_id, 0) + 1
        seen = first.get(p.external_id)
        if seen is None or p.seq < seen.seq:
            first[p.external_id] = p
        if last_posted_at is None or p.accepted_at > last_posted_at:
            last_posted_at = p.accepted_at

    accepted = [by_id[i] for i in set(accepted_ids) if i in by_id]
    amount_issued: dict[str, int] = {}
    for inv in accepted:
        cur = inv.currency.upper()
        amount_issued[cur] = amount_issued.get(cur, 0) + inv.total
    unposted = sorted(inv.invoice_id for inv in accepted if inv.invoice_id not in first)

    latencies = sorted(
        (posting.accepted_at - by_id[key].issued_at) * 1000.0 for key, posting in first.items()
    )
    latency = LatencyMs(
        p50=nearest_rank(latencies, 50),
        p95=nearest_rank(latencies, 95),
        p99=nearest_rank(latencies, 99),
        max=latencies[-1] if latencies else 0.0,
    )

    first_issued_at = min((inv.issued_at for inv in by_id.values()), default=None)
    throughput = 0.0
    if first_issued_at is not None and last_posted_at is not None:
        span = last_posted_at - first_issued_at
        if span > 0:
            throughput = len(first) / span

    return AuditReport(
        issued=len(by_id),
        accepted=len(accepted),
        posted=len(first),
        postings=total_postings,
        duplicates=sum(c - 1 for c in counts.values()),
        unexpected=unexpected,
        unposted=unposted[:MAX_UNPOSTED_LISTED],
        unposted_count=len(unposted),
        amount_issued=dict(sorted(amount_issued.items())),
        amount_posted=dict(sorted(amount_posted.items())),
        latency_ms=latency,
        first_issued_at=first_issued_at,
        last_posted_at=last_posted_at,
        throughput_eps=throughput,
        generated_at=now,
    )
