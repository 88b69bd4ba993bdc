"""Ground truth for a run: what billing issued against what the ERP posted.

Theory of operation: the business key of an invoice is its id, and the gateway sends it as the
journal entry's ``externalId``, optionally with its version (``in_000001:v2``). So every posting
either belongs to an issued invoice (the first one counts as ``posted``, any further one with
the same external id as a ``duplicate``) or to nothing we issued (``unexpected``), which gives
the identity ``postings == posted + duplicates + unexpected`` when no invoice is posted under
two versions.
An invoice whose webhook got a 2xx (``accepted``) but has no posting is ``unposted``: either
still in flight, or lost. The sim cannot tell which, since it does not see the gateway's dead
letters; the caller subtracts those to find the truly lost.

Amendments: an issued invoice whose latest ``version`` is n > 1 counts as ``posted`` only by
a posting of version n (external id ``<id>:v<n>``); its postings of lower versions (an external
id without ``:v<n>`` counts as version 1) are ``superseded``: the first posting of each such
external id, while further ones are ``duplicates`` as usual. So the identity reads
``postings == posted + duplicates + unexpected + superseded + reversals``. ``amount_issued``
uses the latest version's total and ``amount_posted_latest`` sums, per currency, the first
posting of each posted invoice's latest version, so SUM_OK for amended runs compares those two.

Reversals: a posting with external id ``<external id>:reversal`` cancels the posting with
that external id (the gateway replaces a superseded version that way); it counts as one of the
``reversals`` (and ``amount_reversed``), never as a version of its invoice, and its amount
counts negative in ``amount_posted``.

ORDER_OK: postings that carry a version are grouped by aggregate (the external id without the
version; an amended invoice's unversioned posting is its version 1) and read in commit order;
a posting whose version is below one already applied to the same aggregate is a violation
(the ERP applied version n after m > n).

Partial batch failure (F19): the ERP's injected ``VALIDATION`` rejections are listed by
external id (``rejected_ids``, distinct, sorted, capped like ``unposted``; ``rejected_count``
is the full count). A rejected invoice records no posting, so it is also ``unposted``: a
gateway that dead-letters business rejections should have exactly ``rejected_count`` dead
letters from them (DLQ_EXACT), and ``unposted_count - rejected_count`` is what is left to
explain once the run has drained.

Altered amounts: the postings the ERP recorded with another amount than sent (the injected
``alter_amount_rate``) are listed by external id (``altered_ids``, sorted, capped;
``altered_count``), and ``amount_altered`` sums, per currency, what they added to (or took
off) ``amount_posted``: SUM_OK fails by exactly that, and a reconciler should report exactly
those ids as amount breaks.

The ``faults`` section reports the webhook fault deliveries (sent, statuses, and for the shadow
modes how many were posted anyway) and the HTTP faults injected per endpoint.

Everything here is pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec

from ._deals import DealAudit
from ._faults import DRIFT_MODES, MANGLE_MODES
from ._partner import SettlementAudit
from ._records import IssuedInvoice, Posting, split_external_id
from ._revenue import RevenueAudit
from ._sub_changes import LifecycleAudit
from ._usage import UsageAudit
from ._webhooks import shadow_mode

__all__ = [
    "FOLLOWUP_PREFIXES",
    "MAX_UNPOSTED_LISTED",
    "SHADOW_MODES",
    "AuditReport",
    "BillingFaultReport",
    "DeliveryReport",
    "DocumentPostings",
    "FaultInputs",
    "FaultReport",
    "FollowUpReport",
    "LatencyMs",
    "compute_audit",
    "nearest_rank",
]

MAX_UNPOSTED_LISTED = 1000

# Journal postings whose external id starts with one of these belong to a follow-up document
# (a credit memo's reversal, a payment's cash application), not to an invoice: they are
# counted per kind in their own section and never touch the invoice counts.
FOLLOWUP_PREFIXES = {"cn_": "credit_memos", "py_": "payments"}
MAX_ORDER_LISTED = 100

# A posting whose external id is another's plus this suffix reverses that one (the gateway
# posts an amendment as the reversal of the applied version plus the new version in full;
# the same suffix as ``actors.erp.ordering.REVERSAL_SUFFIX``, which the sim cannot import).
REVERSAL_SUFFIX = ":reversal"

# The webhook fault modes whose deliveries carry shadow ids (so postings are attributable).
SHADOW_MODES = frozenset(MANGLE_MODES) | (frozenset(DRIFT_MODES) - {"unknown_field"})


class DeliveryReport(msgspec.Struct, frozen=True):
    """Extra webhook deliveries of one fault mode.

    ``statuses`` counts the HTTP statuses that came back (0: no answer); ``accepted`` are the
    2xx, ``refused`` the 4xx, ``failed`` the 5xx and no-answers. ``posted`` counts ERP postings
    made from this mode's shadow invoices (should be 0); ``null`` for modes that carry the
    genuine event (duplicate, replay, unknown_field), where a posting is not attributable.
    """

    sent: int
    statuses: dict[int, int]
    accepted: int
    refused: int
    failed: int
    posted: int | None


class BillingFaultReport(msgspec.Struct, frozen=True):
    """``deliveries`` per mode; ``mangled`` sums the five signature-mangling modes;
    ``reordered`` is how many events reordering moved from their issue position."""

    deliveries: dict[str, DeliveryReport]
    mangled: DeliveryReport
    reordered: int


class FaultReport(msgspec.Struct, frozen=True):
    """The ``faults`` section of the audit. ``http`` counts injected faults per
    ``service/endpoint`` (``erp/account`` for the concurrency limit, ``billing/api`` for the
    request-rate limit) and kind (``outage``, ``rate_limit``, ``error_503``, ``reset``, …)."""

    billing: BillingFaultReport
    http: dict[str, dict[str, int]]


class FaultInputs(msgspec.Struct, frozen=True):
    """What the services counted, for ``compute_audit``: per webhook fault mode, the statuses
    of its extra deliveries; the number of reordered events; the injected HTTP faults."""

    webhook_statuses: Mapping[str, Mapping[int, int]] = {}
    reordered: int = 0
    http: Mapping[str, Mapping[str, int]] = {}


class FollowUpReport(msgspec.Struct, frozen=True):
    """Credit note or payment webhooks of the bill runs: ``issued`` (delivery started) and
    ``accepted`` (got a 2xx)."""

    issued: int = 0
    accepted: int = 0


class DocumentPostings(msgspec.Struct, frozen=True):
    """Journal postings of one follow-up document kind (external id ``cn_…`` or ``py_…``).

    ``issued`` documents billing delivered (webhook 2xx); ``posted`` those with at least one
    posting; ``postings`` all postings of the kind, ``duplicates`` those beyond the first per
    external id, ``unexpected`` those naming a document billing never delivered; ``unposted``
    = ``issued - posted``; ``amount`` sums every posting per currency. Exactly once is
    ``posted == issued``, ``duplicates == 0``, ``unexpected == 0``.
    """

    issued: int = 0
    posted: int = 0
    postings: int = 0
    duplicates: int = 0
    unexpected: int = 0
    unposted: int = 0
    amount: dict[str, int] = {}


def document_postings(issued_ids: Collection[str], postings: Iterable[Posting]
                      ) -> DocumentPostings:
    """Count ``postings`` (all of one follow-up kind) against the ``issued_ids``. Pure."""
    issued = set(issued_ids)
    counts: dict[str, int] = {}
    amount: dict[str, int] = {}
    unexpected = total = 0
    for p in postings:
        total += 1
        amount[p.currency] = amount.get(p.currency, 0) + p.amount
        base, _ = split_external_id(p.external_id)
        if base not in issued:
            unexpected += 1
            continue
        counts[base] = counts.get(base, 0) + 1
    return DocumentPostings(
        issued=len(issued), posted=len(counts), postings=total,
        duplicates=sum(c - 1 for c in counts.values()), unexpected=unexpected,
        unposted=len(issued) - len(counts), amount=dict(sorted(amount.items())))


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

    ORDER_OK holds when ``order_violations`` is 0: ``order_checked`` aggregates had versioned
    postings, ``order_violating`` lists (sorted, at most 100) those where a lower version was
    applied after a higher one. ``faults`` is the fault section (see ``FaultReport``);
    ``revenue`` what the revenue platform received (see ``RevenueAudit``).
    ``credit_memos`` and ``payments`` count those webhooks (issued, accepted).
    ``amended`` counts issued invoices whose latest version is above 1; ``superseded`` the
    postings of an amended invoice's older versions (first per external id);
    ``amount_posted_latest`` the first posting of each posted invoice's latest version, per
    currency.
    ``rejected_ids`` (sorted, at most ``MAX_UNPOSTED_LISTED``) are the distinct external ids
    the ERP rejected with the injected ``VALIDATION`` error; ``rejected_count`` their count.
    ``altered_ids`` (sorted, at most ``MAX_UNPOSTED_LISTED``) are the external ids the ERP
    recorded with another amount than sent; ``altered_count`` their count; ``amount_altered``
    the recorded minus the sent amounts per currency.
    ``reversals`` counts the postings reversing a superseded one (external id
    ``<reversed external id>:reversal``, first per external id) and ``amount_reversed`` sums
    them per currency. A reversal counts negative in ``amount_posted`` (it cancels what it
    reverses), so with every superseded posting reversed ``amount_posted == amount_issued``
    holds for amended runs too: the books hold each invoice's latest version once.
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
    order_checked: int = 0
    order_violations: int = 0
    order_violating: list[str] = []
    faults: FaultReport | None = None
    revenue: RevenueAudit | None = None
    rejected_ids: list[str] = []
    rejected_count: int = 0
    amended: int = 0
    superseded: int = 0
    amount_posted_latest: dict[str, int] = {}
    credit_memos: FollowUpReport = FollowUpReport()
    payments: FollowUpReport = FollowUpReport()
    usage: UsageAudit | None = None  # flow 4: usage records rated and recorded (sim._usage)
    # Flow 2 credit memos / flow 3 (see DocumentPostings and sim._partner.SettlementAudit).
    credit_memo_postings: DocumentPostings = DocumentPostings()
    payment_postings: DocumentPostings = DocumentPostings()
    settlements: SettlementAudit | None = None
    altered_ids: list[str] = []
    altered_count: int = 0
    amount_altered: dict[str, int] = {}
    reversals: int = 0  # flow 6: postings reversing a superseded version
    amount_reversed: dict[str, int] = {}
    deals: DealAudit | None = None  # flow 1: deals against subscriptions, orders, contracts
    subscriptions: LifecycleAudit | None = None  # flow 5: changed subscriptions in sync


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
    *,
    faults: FaultInputs | None = None,
    rejected: Iterable[str] = (),
    altered: Iterable[tuple[str, str, int]] = (),
    followups: Mapping[str, Collection[str]] | None = None,
) -> AuditReport:
    """Match ``postings`` to ``issued`` invoices by external id and count what went where.

    ``accepted_ids`` are the invoice ids whose webhook got a 2xx; ids not among ``issued`` are
    ignored. Postings may come in any order: the first posting of an invoice is the one with
    the lowest ``seq``. ``last_posted_at`` and the throughput consider only postings of issued
    invoices. With ``faults`` the report has a ``faults`` section. Raises nothing for any
    well-typed input. ``rejected`` are the external ids of the ERP's injected item
    rejections (repeats allowed). ``altered`` are ``(external id, currency, recorded - sent)``
    of the postings the ERP recorded with an altered amount.
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
    versioned: dict[str, list[tuple[int, int]]] = {}
    shadow_posted: dict[str, int] = {}
    superseded = 0
    reversals = 0
    amount_reversed: dict[str, int] = {}
    # Follow-up documents' postings (FOLLOWUP_PREFIXES) are counted apart, per kind:
    # ``followups`` maps a kind to the ids of its delivered documents.
    diverted: dict[str, list[Posting]] = {kind: [] for kind in FOLLOWUP_PREFIXES.values()}
    for p in postings:
        kind = FOLLOWUP_PREFIXES.get(p.external_id[:3])
        if kind is not None:
            diverted[kind].append(p)
            continue
        total_postings += 1
        if p.external_id.endswith(REVERSAL_SUFFIX):
            # The gateway's reversal of a superseded posting: it takes its amount off the books
            # (``amount_posted``), is counted apart (first per external id; further ones are
            # duplicates) and is never a version of the invoice.
            amount_posted[p.currency] = amount_posted.get(p.currency, 0) - p.amount
            reversed_base, _ = split_external_id(p.external_id[:-len(REVERSAL_SUFFIX)])
            if reversed_base not in by_id:
                unexpected += 1
                continue
            counts[p.external_id] = counts.get(p.external_id, 0) + 1
            if counts[p.external_id] == 1:
                reversals += 1
                amount_reversed[p.currency] = amount_reversed.get(p.currency, 0) + p.amount
            continue
        amount_posted[p.currency] = amount_posted.get(p.currency, 0) + p.amount
        base, version = split_external_id(p.external_id)
        if version is None:
            version = p.version
        if version is None and base in by_id and by_id[base].version > 1:
            version = 1  # an amended invoice's unversioned posting is its version 1
        if version is not None:
            versioned.setdefault(base, []).append((p.seq, version))
        if base not in by_id:
            unexpected += 1
            mode = shadow_mode(base)
            if mode is not None and mode in SHADOW_MODES:
                shadow_posted[mode] = shadow_posted.get(mode, 0) + 1
            continue
        counts[p.external_id] = counts.get(p.external_id, 0) + 1
        latest = by_id[base].version
        if latest > 1 and (version or 1) != latest:
            if counts[p.external_id] == 1:
                superseded += 1
            continue
        seen = first.get(base)
        if seen is None or p.seq < seen.seq:
            first[base] = p
        if last_posted_at is None or p.accepted_at > last_posted_at:
            last_posted_at = p.accepted_at

    violating: list[str] = []
    violations = 0
    for aggregate, applied in versioned.items():
        highest = -1
        bad = 0
        for _, version in sorted(applied):
            if version < highest:
                bad += 1
            highest = max(highest, version)
        if bad:
            violations += bad
            violating.append(aggregate)

    accepted = [by_id[i] for i in set(accepted_ids) if i in by_id]
    amount_issued: dict[str, int] = {}
    for inv in accepted:
        cur = inv.currency.upper()
        amount_issued[cur] = amount_issued.get(cur, 0) + inv.total
    unposted = sorted(inv.invoice_id for inv in accepted if inv.invoice_id not in first)

    amount_latest: dict[str, int] = {}
    for posting in first.values():
        amount_latest[posting.currency] = amount_latest.get(posting.currency, 0) + posting.amount

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

    altered_ids: set[str] = set()
    amount_altered: dict[str, int] = {}
    for external_id, currency, delta in altered:
        altered_ids.add(external_id)
        amount_altered[currency] = amount_altered.get(currency, 0) + delta

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
        order_checked=len(versioned),
        order_violations=violations,
        order_violating=sorted(violating)[:MAX_ORDER_LISTED],
        faults=None if faults is None else _fault_report(faults, shadow_posted),
        rejected_ids=sorted(set(rejected))[:MAX_UNPOSTED_LISTED],
        rejected_count=len(set(rejected)),
        amended=sum(1 for inv in by_id.values() if inv.version > 1),
        superseded=superseded,
        amount_posted_latest=dict(sorted(amount_latest.items())),
        reversals=reversals,
        amount_reversed=dict(sorted(amount_reversed.items())),
        credit_memo_postings=document_postings(
            (followups or {}).get("credit_memos", ()), diverted["credit_memos"]),
        payment_postings=document_postings(
            (followups or {}).get("payments", ()), diverted["payments"]),
        altered_ids=sorted(altered_ids)[:MAX_UNPOSTED_LISTED],
        altered_count=len(altered_ids),
        amount_altered=dict(sorted(amount_altered.items())),
    )


def _delivery_report(statuses: Mapping[int, int], posted: int | None) -> DeliveryReport:
    return DeliveryReport(
        sent=sum(statuses.values()),
        statuses=dict(sorted(statuses.items())),
        accepted=sum(n for s, n in statuses.items() if 200 <= s < 300),
        refused=sum(n for s, n in statuses.items() if 400 <= s < 500),
        failed=sum(n for s, n in statuses.items() if s == 0 or s >= 500),
        posted=posted,
    )


def _fault_report(faults: FaultInputs, shadow_posted: Mapping[str, int]) -> FaultReport:
    deliveries: dict[str, DeliveryReport] = {}
    modes = set(faults.webhook_statuses) | set(shadow_posted)
    for mode in sorted(modes):
        statuses = faults.webhook_statuses.get(mode, {})
        posted = shadow_posted.get(mode, 0) if mode in SHADOW_MODES else None
        deliveries[mode] = _delivery_report(statuses, posted)
    mangled_statuses: dict[int, int] = {}
    for mode in MANGLE_MODES:
        for status, n in faults.webhook_statuses.get(mode, {}).items():
            mangled_statuses[status] = mangled_statuses.get(status, 0) + n
    mangled = _delivery_report(mangled_statuses,
                               sum(shadow_posted.get(m, 0) for m in MANGLE_MODES))
    return FaultReport(
        billing=BillingFaultReport(deliveries=deliveries, mangled=mangled,
                                   reordered=faults.reordered),
        http={k: dict(sorted(v.items())) for k, v in sorted(faults.http.items())},
    )
