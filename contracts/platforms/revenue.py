"""The revenue platform's batch upload API (shaped like Zuora Revenue's billing-line upload).

``POST /revenue/v1/batches`` with ``{"lines": [RevenueLineIn, …]}`` (at most the platform's
batch limit) answers ``201`` with a ``RevenueBatchResult`` when every line is valid, and ``422``
with the same shape (``status: "rejected"``, one ``RevenueLineError`` per bad line) when any is
not: a batch is all-or-nothing. Like the real platform it does **not** detect duplicates:
uploading a line twice records it twice, so the uploader must deduplicate.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["RevenueBatch", "RevenueBatchResult", "RevenueLineError", "RevenueLineIn"]


class RevenueLineIn(msgspec.Struct, frozen=True, rename="camel"):
    """One billing line to recognise: amounts in minor units of ``currency`` (upper-case),
    recognised evenly over ``periodStart``..``periodEnd`` (``YYYY-MM-DD``, inclusive)."""

    line_id: str
    invoice_id: str
    product: str
    currency: str
    amount: int
    period_start: str
    period_end: str


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
