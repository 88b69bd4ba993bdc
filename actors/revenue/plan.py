"""The revenue poster's pure core: invoice → billing lines, lines → uploads, answers → verdicts.

No I/O, no clock: the actor shell (``actors.revenue.poster``) performs what these return, and
the tests are tables.

- ``revenue_lines``: one ``RevenueLineIn`` per invoice line, its id derived from the business
  key alone (``<invoice id>:<line id>``), so every delivery, redelivery or replay of an invoice
  names the same lines and the ledger can tell which are already at the platform.
- ``pack``: lines into uploads of at most the platform's limit, keeping each invoice's lines in
  one upload whenever they fit (an invoice is then never half uploaded by a refusal).
- ``refused_invoices``: which invoices a 422 names, from its per-line errors.
- ``halves``: when a 422 cannot be read, split the upload between invoices and try each half:
  the platform is all-or-nothing per upload, so bisection finds the refused invoices.
- ``never_recorded``: whether a failed upload certainly left nothing at the platform (it
  answered an error status, or the connection was never opened). Everything else after the
  request may have left is *in doubt*.
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts import (
    ContractError,
    InvoiceIssued,
    InvoiceIssuedV2,
    InvoiceIssuedV3,
    InvoiceLine,
    InvoiceLineV3,
    JsonCodec,
    Retryable,
    revenue_by_line,
)
from contracts.platforms.revenue import RevenueBatchResult, RevenueLineIn

__all__ = [
    "NOT_RECORDED_CODES",
    "accepted_batch_id",
    "halves",
    "never_recorded",
    "pack",
    "refused_invoices",
    "revenue_line_id",
    "revenue_lines",
]

# Answers that carry an error status: the platform's contract is all-or-nothing and 201 means
# recorded, so an error status means nothing of the upload was recorded.
NOT_RECORDED_CODES: frozenset[str] = frozenset({"http.rate_limited", "http.server_error"})

_result: JsonCodec[RevenueBatchResult] = JsonCodec(RevenueBatchResult)


def revenue_line_id(invoice_id: str, line_id: str) -> str:
    """The revenue platform's ``lineId`` of an invoice line (stable across versions and
    deliveries: the platform does not deduplicate, the gateway's ledger does, by this id)."""
    return f"{invoice_id}:{line_id}"


def revenue_lines(inv: InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3
                  ) -> list[RevenueLineIn]:
    """The billing lines of ``inv`` for the revenue platform: the billed amount of each line,
    recognised over the invoice's service period (dates inclusive), currency upper-case. For
    ``invoice.issued.v3`` the amount is the line's revenue (``revenue_by_line``: net of its
    discounts and included tax, prorations netted against the charges), the same figure the
    ERP entry credits to deferred revenue.

    Raises ``ContractError`` (``revenue.duplicate_line_id``) when two lines share an id: the
    id is what keeps a line from being recorded twice, so such an invoice is never sent.
    """
    lines: Sequence[InvoiceLine | InvoiceLineV3] = inv.lines
    seen: set[str] = set()
    for i, ln in enumerate(lines):
        if ln.line_id in seen:
            raise ContractError(f"invoice {inv.invoice_id} has line id {ln.line_id!r} twice",
                                code="revenue.duplicate_line_id",
                                path=f"$.payload.lines[{i}].line_id")
        seen.add(ln.line_id)
    start, end = inv.period_start.isoformat(), inv.period_end.isoformat()
    currency = inv.currency.upper()
    amounts = (revenue_by_line(inv) if isinstance(inv, InvoiceIssuedV3)
               else [ln.amount for ln in inv.lines])
    return [RevenueLineIn(line_id=revenue_line_id(inv.invoice_id, ln.line_id),
                          invoice_id=inv.invoice_id, product=ln.product_id, currency=currency,
                          amount=amount, period_start=start, period_end=end)
            for ln, amount in zip(lines, amounts, strict=True)]


def pack(groups: Sequence[Sequence[RevenueLineIn]], max_lines: int) -> list[list[RevenueLineIn]]:
    """Uploads of at most ``max_lines`` lines, in order. Each group (one invoice's lines) stays
    in one upload when it fits in one; a group larger than ``max_lines`` is cut into full
    uploads and a remainder. Empty groups are skipped. Raises ``ValueError`` for
    ``max_lines < 1``."""
    if max_lines < 1:
        raise ValueError(f"max_lines must be >= 1, got {max_lines}")
    out: list[list[RevenueLineIn]] = []
    current: list[RevenueLineIn] = []
    for group in groups:
        if len(current) + len(group) > max_lines and current:
            out.append(current)
            current = []
        for i in range(0, len(group), max_lines):
            piece = list(group[i : i + max_lines])
            if len(current) + len(piece) > max_lines:
                out.append(current)
                current = []
            current.extend(piece)
    if current:
        out.append(current)
    return out


def refused_invoices(lines: Sequence[RevenueLineIn],
                     body: str | bytes) -> dict[str, list[tuple[str, str, str]]] | None:
    """The invoices a 422 refused, each with its lines' ``(line id, code, message)`` errors;
    ``None`` when ``body`` is not a readable rejection of exactly these lines (then bisect).
    Raises nothing."""
    try:
        result = _result.decode(body)
    except ContractError:
        return None
    if result.status != "rejected" or not result.errors or result.lines != len(lines):
        return None
    out: dict[str, list[tuple[str, str, str]]] = {}
    for err in result.errors:
        if not 0 <= err.index < len(lines):
            return None
        line = lines[err.index]
        out.setdefault(line.invoice_id, []).append((line.line_id, err.code, err.message))
    return out


def accepted_batch_id(body: bytes) -> str | None:
    """The batch id of an accepted upload, or ``None`` when the body does not say (the 2xx
    status alone already says the lines were recorded). Raises nothing."""
    try:
        return _result.decode(body).batch_id
    except ContractError:
        return None


def halves(lines: Sequence[RevenueLineIn]) -> list[list[RevenueLineIn]]:
    """``lines`` split into two uploads between invoices (one per invoice when there are only
    two); ``[lines]`` when they belong to a single invoice."""
    order = list(dict.fromkeys(ln.invoice_id for ln in lines))
    if len(order) < 2:
        return [list(lines)]
    first = set(order[: len(order) // 2])
    return [[ln for ln in lines if ln.invoice_id in first],
            [ln for ln in lines if ln.invoice_id not in first]]


def never_recorded(err: BaseException) -> bool:
    """True when the failed upload certainly recorded nothing at the platform: it answered an
    error status (``NOT_RECORDED_CODES``), or the connection could not even be opened (a
    connector error, which carries the ``os_error`` of the failed connect). A timeout, a
    disconnect or a reset after the request may have been sent is *not* proof: the platform
    may have recorded the lines. Raises nothing."""
    if not isinstance(err, Retryable):
        return False
    if err.code in NOT_RECORDED_CODES:
        return True
    return err.code == "http.connection" and isinstance(
        getattr(err.__cause__, "os_error", None), OSError)
