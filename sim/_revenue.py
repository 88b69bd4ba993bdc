"""The simulated revenue platform: batch upload of billing lines, all-or-nothing, and (like the
real one) no duplicate detection.

``RevenueBook`` is the pure core: ``upload`` validates every line of a batch and either records
all of them (append-only, numbered batches) or none, returning the per-line errors. The same
line uploaded twice is recorded twice: counting those is the audit's job (``RevenueAudit``).
``RevenueService`` is the HTTP shell (the fault guard wraps it like every platform route).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import date

import msgspec
from aiohttp import web

from contracts.platforms.revenue import (
    RevenueBatch,
    RevenueBatchResult,
    RevenueLineError,
    RevenueLineIn,
)

from ._config import SimConfig
from ._http import SimHTTPError, decode_body, json_response

__all__ = ["RevenueAudit", "RevenueBook", "RevenueService", "revenue_audit", "validate_line"]

_DECODER = msgspec.json.Decoder(RevenueBatch)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _date(value: str) -> date | None:
    if len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def validate_line(index: int, line: RevenueLineIn) -> RevenueLineError | None:
    """The error of one line, or ``None``: empty ids, a currency that is not three upper-case
    letters, a negative amount, a period that is not two ``YYYY-MM-DD`` dates in order."""
    if not line.line_id or not line.invoice_id or not line.product:
        return RevenueLineError(index=index, code="INVALID",
                                message="lineId, invoiceId and product must not be empty")
    if not _CURRENCY.match(line.currency):
        return RevenueLineError(index=index, code="INVALID",
                                message=f"currency must be 3 upper-case letters, got "
                                        f"{line.currency!r}")
    if line.amount < 0:
        return RevenueLineError(index=index, code="INVALID",
                                message=f"amount must not be negative, got {line.amount}")
    start, end = _date(line.period_start), _date(line.period_end)
    if start is None or end is None:
        return RevenueLineError(index=index, code="INVALID",
                                message="periodStart and periodEnd must be YYYY-MM-DD dates")
    if start > end:
        return RevenueLineError(index=index, code="PERIOD_REVERSED",
                                message=f"periodStart {start} is after periodEnd {end}")
    return None


class RevenueBook:
    """Uploaded batches and their lines, append-only. Pure; ``first_batch`` continues
    numbering across resets."""

    def __init__(self, *, first_batch: int = 1) -> None:
        self.lines: list[tuple[str, RevenueLineIn]] = []  # (batch id, line), upload order
        self.batches: dict[str, int] = {}
        self._next = first_batch

    @property
    def next_batch(self) -> int:
        return self._next

    def upload(self, lines: Sequence[RevenueLineIn]) -> RevenueBatchResult:
        """Record all of ``lines`` as one batch, or none when any is invalid."""
        errors = [e for i, line in enumerate(lines) if (e := validate_line(i, line)) is not None]
        if errors:
            return RevenueBatchResult(batch_id=None, status="rejected", lines=len(lines),
                                      errors=errors)
        batch_id = f"RB-{self._next}"
        self._next += 1
        self.batches[batch_id] = len(lines)
        self.lines.extend((batch_id, line) for line in lines)
        return RevenueBatchResult(batch_id=batch_id, status="accepted", lines=len(lines))


class RevenueAudit(msgspec.Struct, frozen=True):
    """The ``revenue`` section of the audit: ``batches`` and ``lines`` uploaded,
    ``duplicate_lines`` = sum of (uploads - 1) per ``lineId`` (the platform does not detect them),
    ``unexpected_lines`` for invoices billing never issued, ``amount`` per currency."""

    batches: int
    lines: int
    duplicate_lines: int
    unexpected_lines: int
    amount: dict[str, int]


def revenue_audit(book: RevenueBook, issued_ids: Iterable[str]) -> RevenueAudit:
    issued = set(issued_ids)
    counts: dict[str, int] = {}
    amount: dict[str, int] = {}
    unexpected = 0
    for _, line in book.lines:
        counts[line.line_id] = counts.get(line.line_id, 0) + 1
        amount[line.currency] = amount.get(line.currency, 0) + line.amount
        if line.invoice_id not in issued:
            unexpected += 1
    return RevenueAudit(batches=len(book.batches), lines=len(book.lines),
                        duplicate_lines=sum(c - 1 for c in counts.values()),
                        unexpected_lines=unexpected, amount=dict(sorted(amount.items())))


class RevenueService:
    """``POST /revenue/v1/batches`` and ``GET /revenue/v1/batches/{id}``."""

    def __init__(self, config: SimConfig) -> None:
        if config.revenue_max_batch < 1:
            raise ValueError(f"revenue_max_batch must be >= 1, got {config.revenue_max_batch}")
        self._max = config.revenue_max_batch
        self.book = RevenueBook()
        self.uploaded_at: dict[str, float] = {}

    def reset(self) -> None:
        self.book = RevenueBook(first_batch=self.book.next_batch)
        self.uploaded_at = {}

    async def upload(self, request: web.Request) -> web.Response:
        """201 ``accepted`` (all lines recorded), 422 ``rejected`` (none recorded, every bad
        line listed), 413 above the batch limit, 400 for a body that breaks the schema."""
        batch = await decode_body(request, _DECODER)
        if len(batch.lines) > self._max:
            raise SimHTTPError(413, "request.too_many_items",
                               f"a batch takes at most {self._max} lines, got {len(batch.lines)}",
                               path="$.lines")
        result = self.book.upload(batch.lines)
        if result.batch_id is not None:
            self.uploaded_at[result.batch_id] = time.time()
        return json_response(result, status=201 if result.status == "accepted" else 422)

    async def get_batch(self, request: web.Request) -> web.Response:
        batch_id = request.match_info["id"]
        lines = self.book.batches.get(batch_id)
        if lines is None:
            raise SimHTTPError(404, "not_found", f"no batch {batch_id!r}")
        return json_response(RevenueBatchResult(batch_id=batch_id, status="accepted",
                                                lines=lines))
