"""The simulated revenue platform: batch upload of billing lines, all-or-nothing, and (like the
real one) no duplicate detection.

``RevenueBook`` is the pure core: ``upload`` validates every line of a batch and either records
all of them (append-only, numbered batches) or none, returning the per-line errors. The same
line uploaded twice is recorded twice: counting those is the audit's job (``RevenueAudit``).
Corrections (``adjusts``: an amendment's difference per line, a credit memo's lines) may be
negative: the billings report nets them into their invoice's amount.
``RevenueService`` is the HTTP shell (the fault guard wraps it like every platform route).

Partial batch failure: with ``item_reject_rate`` on (the ``revenue`` section of the runtime
faults, or a scenario window on ``revenue/batches``), a line is rejected with ``VALIDATION``
when ``rejects_line(seed, lineId, rate)`` says so, decided per line id like the ERP's item
rejection, so a resent line is rejected again. The platform being all-or-nothing, the batch
is then answered 422 naming those lines and nothing is recorded; the book remembers the
rejected line ids (``rejections``) for the audit.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Collection, Iterable, Sequence
from datetime import date

import msgspec
from aiohttp import web

from contracts.platforms.revenue import (
    BillingReport,
    BillingReportRow,
    RevenueBatch,
    RevenueBatchResult,
    RevenueLineError,
    RevenueLineIn,
)

from ._config import SimConfig
from ._control import FaultControl, current_plan
from ._erp import check_period
from ._http import SimHTTPError, decode_body, json_response, query_int

__all__ = ["RevenueAudit", "RevenueBook", "RevenueService", "rejects_line", "revenue_audit",
           "validate_line"]


def rejects_line(seed: int, line_id: str, rate: float) -> bool:
    """Whether the injected partial batch failure rejects the line ``line_id`` at ``rate``.

    Pure and seeded per line id: the same line is always answered the same way.
    """
    if rate <= 0.0:
        return False
    return random.Random(f"{seed}/revenue/reject/{line_id}").random() < rate

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
    """The error of one line, or ``None``: empty ids (an empty product is allowed on a
    correction: a line that ``adjusts`` another), a currency that is not three upper-case
    letters, a negative amount on a line that is not a correction, a period that is not two
    ``YYYY-MM-DD`` dates in order, a usage line that corrects."""
    if not line.line_id or not line.invoice_id or not (line.product or line.adjusts):
        return RevenueLineError(index=index, code="INVALID",
                                message="lineId, invoiceId and product must not be empty")
    if not _CURRENCY.match(line.currency):
        return RevenueLineError(index=index, code="INVALID",
                                message=f"currency must be 3 upper-case letters, got "
                                        f"{line.currency!r}")
    if line.adjusts and line.kind == "usage":
        return RevenueLineError(index=index, code="INVALID",
                                message="a usage line cannot adjust another line")
    if line.amount < 0 and not line.adjusts:
        return RevenueLineError(index=index, code="INVALID",
                                message=f"amount must not be negative, got {line.amount} (only "
                                        "a correction, naming what it adjusts, may be)")
    start, end = _date(line.period_start), _date(line.period_end)
    if start is None or end is None:
        return RevenueLineError(index=index, code="INVALID",
                                message="periodStart and periodEnd must be YYYY-MM-DD dates")
    if start > end:
        return RevenueLineError(index=index, code="PERIOD_REVERSED",
                                message=f"periodStart {start} is after periodEnd {end}")
    if line.kind == "usage" and (not line.usage_ids or line.quantity is None
                                 or line.quantity < 0):
        return RevenueLineError(index=index, code="INVALID",
                                message="a usage line names its usageIds and a quantity >= 0")
    return None


class RevenueBook:
    """Uploaded batches and their lines, append-only. Pure; ``first_batch`` continues
    numbering across resets."""

    def __init__(self, *, first_batch: int = 1) -> None:
        self.lines: list[tuple[str, RevenueLineIn]] = []  # (batch id, line), upload order
        self.batches: dict[str, int] = {}
        self.rejections: list[str] = []  # line ids rejected by the injected fault
        self._next = first_batch

    @property
    def next_batch(self) -> int:
        return self._next

    def upload(self, lines: Sequence[RevenueLineIn],
               reject: Collection[int] = ()) -> RevenueBatchResult:
        """Record all of ``lines`` as one batch, or none when any is invalid. Valid lines whose
        index is in ``reject`` are refused with ``VALIDATION`` (the injected partial batch
        failure) and remembered in ``rejections``."""
        errors: list[RevenueLineError] = []
        for i, line in enumerate(lines):
            error = validate_line(i, line)
            if error is None and i in reject:
                self.rejections.append(line.line_id)
                error = RevenueLineError(index=i, code="VALIDATION",
                                         message=f"lineId {line.line_id!r}: field validation "
                                                 "failed (injected partial batch failure)")
            if error is not None:
                errors.append(error)
        if errors:
            return RevenueBatchResult(batch_id=None, status="rejected", lines=len(lines),
                                      errors=errors)
        batch_id = f"RB-{self._next}"
        self._next += 1
        self.batches[batch_id] = len(lines)
        self.lines.extend((batch_id, line) for line in lines)
        return RevenueBatchResult(batch_id=batch_id, status="accepted", lines=len(lines))

    def billings(self, after: str, limit: int,
                 batches: Collection[str] | None = None) -> BillingReport:
        """The billings report (``contracts.platforms.revenue.BillingReport``): per invoice id
        above ``after``, in id order, at most ``limit`` rows, what its billing lines add up to;
        only lines of ``batches`` when given. Usage lines are left out. Raises nothing."""
        rows: dict[str, list[RevenueLineIn]] = {}
        for batch_id, line in self.lines:
            if line.kind == "usage" or line.invoice_id <= after:
                continue
            if batches is None or batch_id in batches:
                rows.setdefault(line.invoice_id, []).append(line)
        ids = sorted(rows)
        page = ids[:limit]
        return BillingReport(
            items=[BillingReportRow(invoice_id=i, currency=rows[i][0].currency,
                                    amount=sum(ln.amount for ln in rows[i]),
                                    lines=len(rows[i]),
                                    distinct_lines=len({ln.line_id for ln in rows[i]}))
                   for i in page],
            has_more=len(ids) > limit, next_after=page[-1] if page else after)


class RevenueAudit(msgspec.Struct, frozen=True):
    """The ``revenue`` section of the audit: ``batches`` and ``lines`` uploaded,
    ``duplicate_lines`` = sum of (uploads - 1) per ``lineId`` (the platform does not detect them),
    ``unexpected_lines`` for invoices billing never issued, ``amount`` per currency;
    ``rejected_lines`` the distinct line ids refused by the injected ``VALIDATION``. Billing
    lines only: usage lines (``kind: "usage"``) are in the audit's ``usage`` section."""

    batches: int
    lines: int
    duplicate_lines: int
    unexpected_lines: int
    amount: dict[str, int]
    rejected_lines: int = 0


def revenue_audit(book: RevenueBook, issued_ids: Iterable[str]) -> RevenueAudit:
    issued = set(issued_ids)
    counts: dict[str, int] = {}
    amount: dict[str, int] = {}
    unexpected = 0
    lines = 0
    for _, line in book.lines:
        if line.kind == "usage":
            continue
        lines += 1
        counts[line.line_id] = counts.get(line.line_id, 0) + 1
        amount[line.currency] = amount.get(line.currency, 0) + line.amount
        if line.invoice_id not in issued:
            unexpected += 1
    return RevenueAudit(batches=len(book.batches), lines=lines,
                        duplicate_lines=sum(c - 1 for c in counts.values()),
                        unexpected_lines=unexpected, amount=dict(sorted(amount.items())),
                        rejected_lines=len(set(book.rejections)))


class RevenueService:
    """``POST /revenue/v1/batches``, ``GET /revenue/v1/batches/{id}`` and
    ``GET /revenue/v1/reports/billings``."""

    def __init__(self, config: SimConfig, control: FaultControl | None = None) -> None:
        if config.revenue_max_batch < 1:
            raise ValueError(f"revenue_max_batch must be >= 1, got {config.revenue_max_batch}")
        self._max = config.revenue_max_batch
        self._seed = config.seed
        self._control = control
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
        rate = current_plan.get().reject_rate
        reject = {i for i, line in enumerate(batch.lines)
                  if rejects_line(self._seed, line.line_id, rate)} if rate > 0 else set()
        before = len(self.book.rejections)
        result = self.book.upload(batch.lines, reject)
        if self._control is not None and len(self.book.rejections) > before:
            self._control.count("revenue/batches", "item_rejected",
                                len(self.book.rejections) - before)
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

    async def billings_report(self, request: web.Request) -> web.Response:
        """``GET /revenue/v1/reports/billings?period=&after=&limit=`` → ``BillingReport``
        (``RevenueBook.billings``; ``period`` keeps the batches recorded in that UTC month).
        400 naming the parameter when one is malformed."""
        after = request.query.get("after", "")
        if len(after) > 200:
            raise SimHTTPError(400, "request.invalid", "after is at most 200 characters",
                               path="after")
        limit = query_int(request.query.get("limit"), "limit", 100, 1, 1000)
        batches: set[str] | None = None
        period = request.query.get("period")
        if period is not None:
            check_period(period)
            batches = {b for b, at in self.uploaded_at.items()
                       if time.strftime("%Y-%m", time.gmtime(at)) == period}
        return json_response(self.book.billings(after, limit, batches))
