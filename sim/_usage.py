"""The simulated billing platform's usage rating, a usage load generator, and the usage audit.

``UsageBook`` is the pure core of ``POST /billing/v1/usage-records/bulk``: each item is an
aggregate (subscription, product, meter, period) that names the usage records it sums; a valid
item is rated at the meter's unit price and recorded (``created``), an item id seen before with
the same content is ``replayed`` (nothing new is rated), with other content ``rejected``
(``IDEMPOTENCY_KEY_REUSED``). Like a real platform it does **not** know usage records by id:
two different items naming the same record both rate it. Counting that is the audit's job:
``usage_audit`` reports, per usage record id, how often billing rated it and how often the
revenue platform recorded it (usage lines of ``POST /revenue/v1/batches``), against the
records the usage runs generated (the ground truth): missing (LOST), rated or recorded more
than once (DUP), or never generated (unexpected).

``generate_usage`` makes seeded records; ``POST /sim/v1/usage-runs`` returns them to the
caller (a bench or a test), which sends them to the gateway, and remembers their ids and
quantities. ``UsageService`` is the HTTP shell.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import msgspec
from aiohttp import web

from contracts.platforms.revenue import RevenueLineIn
from contracts.platforms.usage import (
    UNKNOWN_METER,
    UsageBulkRequest,
    UsageBulkResponse,
    UsageError,
    UsageItemIn,
    UsageItemResult,
    UsageRecordIn,
    UsageRunCreated,
    UsageRunRequest,
)

from ._http import SimHTTPError, decode_body, json_response

__all__ = [
    "MAX_BULK_ITEMS",
    "USAGE_PRICES",
    "UsageAudit",
    "UsageBook",
    "UsageService",
    "generate_usage",
    "usage_audit",
]

# The usage price book: (product, meter) → (unit amount in minor units, currency).
USAGE_PRICES: dict[tuple[str, str], tuple[int, str]] = {
    ("prod_api", "api_calls"): (2, "USD"),
    ("prod_storage", "storage_gb_hours"): (3, "USD"),
    ("prod_sms", "sms_sent"): (5, "USD"),
}
MAX_BULK_ITEMS = 1000
MAX_LISTED = 100
IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_BULK = msgspec.json.Decoder(UsageBulkRequest)
_RUN = msgspec.json.Decoder(UsageRunRequest)
_ENC = msgspec.json.Encoder()


def _month(period: str) -> tuple[datetime, int]:
    """The first instant of ``period`` (``YYYY-MM``) and its number of hours."""
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return start, int((nxt - start).total_seconds() // 3600)


def generate_usage(seed: int, run: int, count: int, *, subscriptions: int = 20,
                   period: str = "2026-11") -> list[UsageRecordIn]:
    """``count`` usage records of run number ``run``, the same for the same arguments: each
    an hour's use of one priced meter on one of ``subscriptions`` subscriptions in ``period``.
    Ids are ``ur<seed>_<run>_<n>``. Raises ``ValueError`` for a malformed ``period``."""
    start, hours = _month(period)
    meters = sorted(USAGE_PRICES)
    rng = random.Random(f"{seed}/usage/{run}")
    out = []
    for i in range(count):
        sub = rng.randrange(subscriptions)
        product, meter = meters[rng.randrange(len(meters))]
        at = start + timedelta(hours=rng.randrange(hours))
        out.append(UsageRecordIn(
            id=f"ur{seed}_{run}_{i:06d}", subscription=f"sub_{sub:05d}",
            customer=f"cus_{sub:05d}", product=product, meter=meter,
            quantity=rng.randint(1, 100), window_start=at, window_end=at + timedelta(hours=1)))
    return out


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def _invalid(item: UsageItemIn) -> UsageError | None:
    if not item.id or not item.subscription or not item.usage_ids:
        return UsageError(code="INVALID", message="id, subscription and usageIds must not be "
                                                  "empty")
    if item.quantity < 0:
        return UsageError(code="INVALID", message=f"quantity must not be negative, got "
                                                  f"{item.quantity}")
    start, end = _day(item.period_start), _day(item.period_end)
    if start is None or end is None or start > end:
        return UsageError(code="INVALID", message="periodStart and periodEnd must be "
                                                  "YYYY-MM-DD dates in order")
    if (item.product, item.meter) not in USAGE_PRICES:
        return UsageError(code=UNKNOWN_METER, message=f"no usage price for product "
                                                      f"{item.product!r}, meter {item.meter!r}")
    return None


class UsageBook:
    """Rated usage items and the ground truth of the usage runs. Pure; ``next_run`` continues
    numbering across resets so record ids never repeat within one sim process."""

    def __init__(self, *, first_run: int = 1) -> None:
        self.items: dict[str, tuple[bytes, UsageItemResult]] = {}  # item id → (digest, result)
        self.rated: list[UsageItemIn] = []  # created items, in order
        self.replayed = 0
        self.rejected = 0
        self.requests: dict[str, tuple[bytes, bytes]] = {}  # Idempotency-Key → (digest, body)
        self.generated: dict[str, int] = {}  # usage id → quantity, from the usage runs
        self.next_run = first_run

    def rate(self, items: Sequence[UsageItemIn]) -> list[UsageItemResult]:
        """Rate ``items`` in order; one result per item. Raises nothing."""
        return [self._rate_one(item) for item in items]

    def _rate_one(self, item: UsageItemIn) -> UsageItemResult:
        digest = hashlib.sha256(_ENC.encode(item)).digest()
        seen = self.items.get(item.id)
        if seen is not None:
            if hmac.compare_digest(seen[0], digest):
                self.replayed += 1
                return msgspec.structs.replace(seen[1], status="replayed")
            self.rejected += 1
            return UsageItemResult(id=item.id, status="rejected", error=UsageError(
                code="IDEMPOTENCY_KEY_REUSED",
                message=f"item id {item.id!r} was rated before with different content"))
        error = _invalid(item)
        if error is not None:
            self.rejected += 1
            return UsageItemResult(id=item.id, status="rejected", error=error)
        unit, currency = USAGE_PRICES[(item.product, item.meter)]
        result = UsageItemResult(id=item.id, status="created", currency=currency,
                                 unit_amount=unit, amount=unit * item.quantity)
        self.items[item.id] = (digest, result)
        self.rated.append(item)
        return result

    def start_run(self, req: UsageRunRequest) -> UsageRunCreated:
        """Generate a usage run's records and remember them as the ground truth."""
        run = self.next_run
        self.next_run += 1
        period = req.period or datetime.now(UTC).strftime("%Y-%m")
        records = generate_usage(req.seed, run, req.count, subscriptions=req.subscriptions,
                                 period=period)
        for r in records:
            self.generated[r.id] = r.quantity
        return UsageRunCreated(id=f"urun_{run:06d}", count=len(records), records=records)


class UsageAudit(msgspec.Struct, frozen=True):
    """The ``usage`` section of the audit, per usage record id.

    ``generated`` records (and ``quantity_generated``) came from the usage runs. Billing:
    ``billed`` distinct records rated in created items, ``billing_duplicates`` = Σ (ratings - 1)
    per record, ``billing_missing`` generated but never rated, ``billing_unexpected`` rated but
    never generated; ``aggregates`` created items (``replayed``, ``rejected`` the other
    answers); ``quantity_mismatches`` created items whose quantity is not the sum of the
    generated records they name; ``amount_billed`` per currency. Revenue (usage lines):
    ``revenue_lines``, ``revenue_recorded`` distinct records, ``revenue_duplicates``,
    ``revenue_missing`` (generated, not recorded), ``revenue_unexpected`` (recorded but never
    rated by billing), ``amount_revenue`` per currency. ``missing_ids`` and ``duplicate_ids``
    list up to 100 each (sorted). LOST = the missing counts, DUP = the duplicate counts.
    """

    generated: int = 0
    quantity_generated: int = 0
    billed: int = 0
    billing_duplicates: int = 0
    billing_missing: int = 0
    billing_unexpected: int = 0
    aggregates: int = 0
    replayed: int = 0
    rejected: int = 0
    quantity_mismatches: int = 0
    quantity_billed: int = 0
    amount_billed: dict[str, int] = {}
    revenue_lines: int = 0
    revenue_recorded: int = 0
    revenue_duplicates: int = 0
    revenue_missing: int = 0
    revenue_unexpected: int = 0
    amount_revenue: dict[str, int] = {}
    missing_ids: list[str] = []
    duplicate_ids: list[str] = []


def usage_audit(book: UsageBook, revenue_lines: Iterable[RevenueLineIn]) -> UsageAudit:
    """The ``usage`` section over ``book`` and the revenue platform's lines. Pure."""
    billed: dict[str, int] = {}
    amount_billed: dict[str, int] = {}
    mismatches = quantity_billed = 0
    for item in book.rated:
        for uid in item.usage_ids:
            billed[uid] = billed.get(uid, 0) + 1
        quantity_billed += item.quantity
        unit, currency = USAGE_PRICES[(item.product, item.meter)]
        amount_billed[currency] = amount_billed.get(currency, 0) + unit * item.quantity
        known = [book.generated.get(uid) for uid in item.usage_ids]
        if all(q is not None for q in known) and sum(q or 0 for q in known) != item.quantity:
            mismatches += 1
    recorded: dict[str, int] = {}
    amount_revenue: dict[str, int] = {}
    lines = 0
    for line in revenue_lines:
        if line.kind != "usage":
            continue
        lines += 1
        amount_revenue[line.currency] = amount_revenue.get(line.currency, 0) + line.amount
        for uid in line.usage_ids:
            recorded[uid] = recorded.get(uid, 0) + 1
    gen = book.generated
    missing = sorted(u for u in gen if u not in billed or u not in recorded)
    dups = sorted({u for u, n in billed.items() if n > 1} | {u for u, n in recorded.items()
                                                             if n > 1})
    return UsageAudit(
        generated=len(gen), quantity_generated=sum(gen.values()), billed=len(billed),
        billing_duplicates=sum(n - 1 for n in billed.values()),
        billing_missing=sum(1 for u in gen if u not in billed),
        billing_unexpected=sum(1 for u in billed if u not in gen),
        aggregates=len(book.rated), replayed=book.replayed, rejected=book.rejected,
        quantity_mismatches=mismatches, quantity_billed=quantity_billed,
        amount_billed=dict(sorted(amount_billed.items())), revenue_lines=lines,
        revenue_recorded=len(recorded),
        revenue_duplicates=sum(n - 1 for n in recorded.values()),
        revenue_missing=sum(1 for u in gen if u not in recorded),
        revenue_unexpected=sum(1 for u in recorded if u not in billed),
        amount_revenue=dict(sorted(amount_revenue.items())),
        missing_ids=missing[:MAX_LISTED], duplicate_ids=dups[:MAX_LISTED])


class UsageService:
    """``POST /billing/v1/usage-records/bulk`` and ``POST /sim/v1/usage-runs``. Handlers run
    in aiohttp's request tasks; the fault guard and the billing rate limit wrap them."""

    def __init__(self) -> None:
        self.book = UsageBook()

    def reset(self) -> None:
        self.book = UsageBook(first_run=self.book.next_run)

    async def post_bulk(self, request: web.Request) -> web.Response:
        """``UsageBulkRequest`` in, ``UsageBulkResponse`` (200) out: one result per item.

        400 naming the field for a body that breaks the schema or a malformed
        ``Idempotency-Key``; 413 above ``MAX_BULK_ITEMS`` items; with an ``Idempotency-Key``
        seen before: the stored response again (``Idempotent-Replayed: true``) for the same
        body, 422 ``idempotency.key_reused`` for another. Nothing is rated for those.
        """
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _KEY.match(key):
            raise SimHTTPError(400, "request.invalid", f"{IDEMPOTENCY_HEADER} must be 1 to 255 "
                               "visible ASCII characters", path=IDEMPOTENCY_HEADER)
        bulk = await decode_body(request, _BULK)
        if len(bulk.items) > MAX_BULK_ITEMS:
            raise SimHTTPError(413, "request.too_many_items", f"a bulk request takes at most "
                               f"{MAX_BULK_ITEMS} items, got {len(bulk.items)}", path="$.items")
        digest = hashlib.sha256(_ENC.encode(bulk)).digest()
        if key is not None:
            seen = self.book.requests.get(key)
            if seen is not None:
                if not hmac.compare_digest(seen[0], digest):
                    raise SimHTTPError(422, "idempotency.key_reused", f"{IDEMPOTENCY_HEADER} "
                                       f"{key!r} was used with a different request body",
                                       path=IDEMPOTENCY_HEADER)
                return web.Response(body=seen[1], content_type="application/json",
                                    headers={"Idempotent-Replayed": "true"})
        body = _ENC.encode(UsageBulkResponse(results=self.book.rate(bulk.items)))
        if key is not None:
            self.book.requests[key] = (digest, body)
        return web.Response(body=body, content_type="application/json")

    async def create_run(self, request: web.Request) -> web.Response:
        """``UsageRunRequest`` in, 201 ``UsageRunCreated`` out; 400 naming the field when the
        body breaks ``UsageRunRequest`` (``count`` 1..100,000, ``subscriptions`` 1..10,000,
        ``period`` ``YYYY-MM`` or empty)."""
        req = await decode_body(request, _RUN)
        return json_response(self.book.start_run(req), status=201)
