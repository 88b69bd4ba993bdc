"""The usage aggregator's pure core: records → aggregates → billing items and revenue lines.

No I/O, no clock: the actor shell (``actors.usage.aggregator``) performs what these return, and
the tests are tables.

- ``aggregate``: usage records grouped per (subscription, product, meter, period), the period
  being the calendar month (UTC) the record's window starts in. An aggregate's id is derived
  from its key *and the ids of the records it sums*, so the same records always make the same
  aggregate (a replayed billing item is answered ``replayed``) and different records never
  share an id.
- ``billing_item`` / ``bulk_key``: the billing platform's rating item of an aggregate and the
  ``Idempotency-Key`` of a bulk request (derived from its items' ids: the same request sent
  again is answered from the platform's store).
- ``record_amounts``: what billing rated each record of an aggregate at (unit price times the
  record's quantity), kept per record so that revenue lines can be built from any grouping.
- ``revenue_line``: the revenue platform's usage line of an aggregate (``kind: "usage"``,
  ``invoiceId`` = the aggregate id, ``usageIds`` = its records).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC

from contracts import UsageRecorded, derive_id
from contracts.platforms.revenue import RevenueLineIn
from contracts.platforms.usage import UsageItemIn, UsageItemResult

__all__ = [
    "Aggregate",
    "aggregate",
    "billing_item",
    "bulk_key",
    "chunks",
    "period_of",
    "record_amounts",
    "revenue_line",
]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Usage records of one (subscription, product, meter, period), summed. ``records`` are
    sorted by usage id; ``currency`` is set for revenue aggregates (grouped by it too)."""

    id: str
    subscription: str
    product: str
    meter: str
    period: str  # YYYY-MM
    records: tuple[UsageRecorded, ...]
    currency: str = ""

    @property
    def quantity(self) -> int:
        return sum(r.quantity for r in self.records)

    @property
    def usage_ids(self) -> list[str]:
        return [r.usage_id for r in self.records]

    @property
    def period_start(self) -> str:
        return f"{self.period}-01"

    @property
    def period_end(self) -> str:
        year, month = (int(x) for x in self.period.split("-"))
        return f"{self.period}-{calendar.monthrange(year, month)[1]:02d}"


def period_of(record: UsageRecorded) -> str:
    """The billing period (``YYYY-MM``, UTC) a record belongs to: its window's start month."""
    return record.window_start.astimezone(UTC).strftime("%Y-%m")


def aggregate(records: Iterable[UsageRecorded],
              currency_of: Mapping[str, str] | None = None) -> list[Aggregate]:
    """``records`` (distinct usage ids) summed per (subscription, product, meter, period) and,
    when ``currency_of`` (usage id → currency) is given, per currency too. Deterministic:
    aggregates in key order, records in id order, ids derived from key and record ids."""
    groups: dict[tuple[str, str, str, str, str], list[UsageRecorded]] = {}
    for r in records:
        cur = currency_of[r.usage_id] if currency_of is not None else ""
        groups.setdefault((r.subscription_id, r.product_id, r.meter, period_of(r), cur),
                          []).append(r)
    out = []
    for key in sorted(groups):
        recs = tuple(sorted(groups[key], key=lambda r: r.usage_id))
        agg_id = "ua_" + derive_id("usage.aggregate", *key, *(r.usage_id for r in recs))
        out.append(Aggregate(agg_id, key[0], key[1], key[2], key[3], recs, key[4]))
    return out


def billing_item(agg: Aggregate) -> UsageItemIn:
    """The billing platform's rating item of ``agg``."""
    return UsageItemIn(id=agg.id, subscription=agg.subscription, product=agg.product,
                       meter=agg.meter, quantity=agg.quantity, period_start=agg.period_start,
                       period_end=agg.period_end, usage_ids=agg.usage_ids)


def bulk_key(items: Sequence[UsageItemIn]) -> str:
    """The ``Idempotency-Key`` of a bulk request of ``items``: derived from their ids (which
    are derived from their content), so only the very same request shares it."""
    return derive_id("usage.billing", *(i.id for i in items))


def record_amounts(agg: Aggregate, result: UsageItemResult) -> dict[str, tuple[int, str]]:
    """``usage id → (amount, currency)`` billing rated each record of ``agg`` at, from the
    item's answer (``created`` or ``replayed``). Raises ``ValueError`` when the answer has no
    unit price or currency (the platform broke its contract)."""
    if result.unit_amount is None or not result.currency:
        raise ValueError(f"rated item {result.id} has no unitAmount or currency")
    currency = result.currency.upper()
    return {r.usage_id: (result.unit_amount * r.quantity, currency) for r in agg.records}


def revenue_line(agg: Aggregate, amounts: Mapping[str, tuple[int, str]]) -> RevenueLineIn:
    """The revenue platform's usage line of ``agg``: the billed amounts of its records,
    recognised over its period. ``agg`` must be grouped by currency (``aggregate(...,
    currency_of)``)."""
    return RevenueLineIn(line_id=agg.id, invoice_id=agg.id, product=agg.product,
                         currency=agg.currency,
                         amount=sum(amounts[r.usage_id][0] for r in agg.records),
                         period_start=agg.period_start, period_end=agg.period_end,
                         kind="usage", quantity=agg.quantity, usage_ids=agg.usage_ids)


def chunks(items: Sequence[Aggregate], limit: int) -> list[list[Aggregate]]:
    """``items`` in consecutive pieces of at most ``limit``. Raises ``ValueError`` for
    ``limit < 1``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return [list(items[i : i + limit]) for i in range(0, len(items), limit)]
