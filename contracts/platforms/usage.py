"""Usage wire shapes: what metering sources send the gateway, and the billing platform's usage
rating API (shaped like a metered-billing bulk endpoint).

Ingest (``POST /usage/v1/records`` on the gateway): a JSON array of ``UsageRecordIn``. ``id``
is the measurement's idempotency key: the same record sent again is counted once.

Rating (``POST /billing/v1/usage-records/bulk``, header ``Idempotency-Key``) with
``{"items": [UsageItemIn, …]}``: each item is an aggregate (one subscription, product, meter
and period) naming the usage records it sums (``usageIds``). The answer has one
``UsageItemResult`` per item, in order: ``created`` (rated, with the unit price and amount),
``replayed`` (the item id was rated before with the same content: nothing new was rated) or
``rejected`` (``error`` says why). The same ``Idempotency-Key`` with the same body answers the
stored response; with another body, 422 ``idempotency.key_reused``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "UNKNOWN_METER",
    "UsageBulkRequest",
    "UsageBulkResponse",
    "UsageError",
    "UsageItemIn",
    "UsageItemResult",
    "UsageRecordIn",
    "UsageRunCreated",
    "UsageRunRequest",
]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

# ``UsageError.code`` of an item whose (product, meter) has no usage price (permanent).
UNKNOWN_METER = "UNKNOWN_METER"


class UsageRecordIn(msgspec.Struct, frozen=True, rename="camel"):
    """One measurement: ``quantity`` units of ``meter`` used on ``subscription`` during
    ``[windowStart, windowEnd)`` (RFC 3339 instants with an offset)."""

    id: _Id
    subscription: _Id
    customer: _Id
    product: _Id
    meter: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    quantity: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    window_start: Annotated[datetime, msgspec.Meta(tz=True)]
    window_end: Annotated[datetime, msgspec.Meta(tz=True)]


class UsageItemIn(msgspec.Struct, frozen=True, rename="camel"):
    """One aggregate to rate: the sum of the usage records ``usageIds`` over a period
    (``periodStart``..``periodEnd``, ``YYYY-MM-DD``, inclusive)."""

    id: str
    subscription: str
    product: str
    meter: str
    quantity: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    period_start: str
    period_end: str
    usage_ids: list[str] = []


class UsageBulkRequest(msgspec.Struct, frozen=True):
    items: list[UsageItemIn]


class UsageError(msgspec.Struct, frozen=True):
    code: str
    message: str


class UsageItemResult(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """``unitAmount`` and ``amount`` (= unitAmount * quantity) are minor units of
    ``currency``; present when the item was rated (``created`` or ``replayed``)."""

    id: str
    status: Literal["created", "replayed", "rejected"]
    currency: str | None = None
    unit_amount: int | None = None
    amount: int | None = None
    error: UsageError | None = None


class UsageBulkResponse(msgspec.Struct, frozen=True):
    results: list[UsageItemResult]


class UsageRunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /sim/v1/usage-runs``: make ``count`` seeded usage records over
    ``subscriptions`` subscriptions in month ``period`` (``YYYY-MM``; empty: the current one)."""

    count: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**31)] = 7
    subscriptions: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    period: Annotated[str, msgspec.Meta(pattern="^([12][0-9]{3}-(0[1-9]|1[0-2]))?$")] = ""


class UsageRunCreated(msgspec.Struct, frozen=True):
    """The records of a usage run, for the caller to send to the gateway. The simulator keeps
    their ids as the ground truth the audit's ``usage`` section checks against."""

    id: str
    count: int
    records: list[UsageRecordIn]
