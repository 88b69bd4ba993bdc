"""The revenue platform's batch upload API (shaped like Zuora Revenue's billing-line upload).

``POST /revenue/v1/batches`` with ``{"lines": [RevenueLineIn, …]}`` (at most the platform's
batch limit) answers ``201`` with a ``RevenueBatchResult`` when every line is valid, and ``422``
with the same shape (``status: "rejected"``, one ``RevenueLineError`` per bad line) when any is
not: a batch is all-or-nothing. Like the real platform it does **not** detect duplicates:
uploading a line twice records it twice, so the uploader must deduplicate.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

__all__ = ["RevenueBatch", "RevenueBatchResult", "RevenueLineError", "RevenueLineIn"]


class RevenueLineIn(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One billing line to recognise: amounts in minor units of ``currency`` (upper-case),
    recognised evenly over ``periodStart``..``periodEnd`` (``YYYY-MM-DD``, inclusive).

    ``kind`` is ``"billing"`` (an invoice line, the default) or ``"usage"``: rated usage, one
    line per aggregate, which names the aggregate in ``invoiceId``, its summed ``quantity`` and
    the usage records it sums in ``usageIds`` (omitted for billing lines).

    ``adjusts`` (omitted when empty) makes a billing line a correction: the ``lineId`` of the
    billing line it corrects (an invoice amendment's difference) or the ``invoiceId`` it
    credits (a credit memo's line). Only a correction may carry a negative amount, and it may
    leave ``product`` empty (the corrected line's product)."""

    line_id: str
    invoice_id: str
    product: str
    currency: str
    amount: int
    period_start: str
    period_end: str
    kind: Literal["billing", "usage"] = "billing"
    quantity: int | None = None
    usage_ids: list[str] = []
    adjusts: str = ""


class RevenueBatch(msgspec.Struct, frozen=True):
    lines: list[RevenueLineIn]


class RevenueLineError(msgspec.Struct, frozen=True):
    index: int
    code: str
    message: str


class RevenueBatchResult(msgspec.Struct, frozen=True, rename="camel"):
    """Answer to an upload (and body of ``GET /revenue/v1/batches/{id}``); ``batchId`` is null
    for a rejected batch."""

    batch_id: str | None
    status: Literal["accepted", "rejected"]
    lines: int
    errors: list[RevenueLineError] = []


# -- Revenue contracts (flow 1, deal to contract) ----------------------------------------------
#
# ``PUT /revenue/v1/contracts/{id}`` with ``RevenueContractIn`` upserts a contract by version:
# new → 201, a higher version → 200 (replaces lines and schedule), the same version and body →
# 200 replay, a lower version → 409 ``STALE_VERSION``, the same version with another body → 409
# ``VERSION_CONFLICT``; a business rejection is 422 ``CONTRACT_REJECTED``. The platform
# computes the schedule (ratable: each line evenly over the calendar months of its period).
# ``GET /revenue/v1/contracts/{id}`` → ``RevenueContract``;
# ``GET /revenue/v1/recognition?period=YYYY-MM`` → ``RecognitionTotals``.

__all__ += ["CONTRACT_REJECTED", "STALE_VERSION", "VERSION_CONFLICT", "ContractError",
            "ContractLine", "ContractLineIn", "RecognitionTotals", "RevenueContract",
            "RevenueContractIn", "ScheduleEntry"]

STALE_VERSION = "STALE_VERSION"
VERSION_CONFLICT = "VERSION_CONFLICT"
CONTRACT_REJECTED = "CONTRACT_REJECTED"


class ContractError(msgspec.Struct, frozen=True):
    """The error body of the contracts API (409, 422)."""

    code: str
    message: str


class ContractLineIn(msgspec.Struct, frozen=True, rename="camel"):
    """One performance obligation: ``amount`` minor units recognised over ``months`` calendar
    months from ``period_start`` (to the day before the same day ``months`` later)."""

    line_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    product: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    amount: Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]
    period_start: date
    months: Annotated[int, msgspec.Meta(ge=1, le=240)]


class RevenueContractIn(msgspec.Struct, frozen=True, rename="camel"):
    """Body of ``PUT /revenue/v1/contracts/{id}``; ``source_id`` names the billing
    subscription, ``deal_id`` the partner deal."""

    version: Annotated[int, msgspec.Meta(ge=1, le=2**31)]
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
    lines: Annotated[list[ContractLineIn], msgspec.Meta(min_length=1, max_length=500)]
    deal_id: str = ""
    source_id: str = ""


class ContractLine(msgspec.Struct, frozen=True, rename="camel"):
    """A line as the platform keeps it, with its service period (both dates inclusive)."""

    line_id: str
    product: str
    amount: int
    period_start: date
    period_end: date


class ScheduleEntry(msgspec.Struct, frozen=True, rename="camel"):
    """``amount`` of line ``line_id`` recognised in ``period`` (``YYYY-MM``)."""

    line_id: str
    period: str
    amount: int


class RevenueContract(msgspec.Struct, frozen=True, rename="camel"):
    """A revenue contract at its latest version, with the platform's schedule."""

    id: str
    version: int
    customer: str
    currency: str
    total: int
    lines: list[ContractLine]
    schedule: list[ScheduleEntry]
    updated_at: float
    deal_id: str = ""
    source_id: str = ""


class RecognitionTotals(msgspec.Struct, frozen=True):
    """Body of ``GET /revenue/v1/recognition?period=YYYY-MM``: what the contracts recognise in
    the period, per upper-case currency."""

    period: str
    contracts: int
    amount: dict[str, int]


# ``GET /revenue/v1/recognition/contracts?period=YYYY-MM`` → ``RecognitionDetail``: what each
# contract (at its latest version) recognises in the period, per product line — what the
# gateway's revenue-to-GL close run posts.

__all__ += ["RecognitionDetail", "RecognitionItem"]


class RecognitionItem(msgspec.Struct, frozen=True):
    """``amount`` (minor units of ``currency``, upper-case) that version ``version`` of
    contract ``contract`` recognises in the period for ``product``. ``customer`` is the
    contract's customer (empty when the platform does not say): it names the legal entity the
    revenue is posted for."""

    contract: str
    version: int
    currency: str
    product: str
    amount: int
    customer: str = ""


class RecognitionDetail(msgspec.Struct, frozen=True):
    """Body of ``GET /revenue/v1/recognition/contracts?period=YYYY-MM``: one item per contract
    and product with a schedule entry in the period, sorted by contract then product."""

    period: str
    items: list[RecognitionItem]


# -- Billings report (what the platform recorded per invoice, for reconciliation) ---------------
#
# ``GET /revenue/v1/reports/billings?period=YYYY-MM&after=<invoice id>&limit=`` →
# ``BillingReport``: one row per invoice id (source document) whose billing lines the platform
# recorded, in invoice id order, at most ``limit`` (1..1000, default 100) after ``after``.
# ``period`` (optional) keeps the invoices with a line recorded in that month (UTC). The
# platform does not deduplicate, so a line uploaded twice shows as ``lines`` above
# ``distinctLines`` and an ``amount`` above the invoice's. Usage lines are not billings.

__all__ += ["BillingReport", "BillingReportRow"]


class BillingReportRow(msgspec.Struct, frozen=True, rename="camel"):
    """What the platform recorded for one invoice: the sum of its lines' ``amount`` (minor
    units of ``currency``, upper-case), how many lines, how many distinct line ids."""

    invoice_id: str
    currency: str
    amount: int
    lines: int
    distinct_lines: int


class BillingReport(msgspec.Struct, frozen=True, rename="camel"):
    """One page of the billings report; ``nextAfter`` is the ``after`` of the next page (the
    last row's invoice id), ``hasMore`` whether there is one."""

    items: list[BillingReportRow]
    has_more: bool
    next_after: str
