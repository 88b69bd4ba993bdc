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
- ``plan_version``: the lines of an invoice's version ``n >= 2``: one line per invoice line,
  id ``<invoice id>:<line id>:v<n>``, amount = the new amount - what the lines of versions
  ``< n`` that are presumed recorded add up to (``uploaded``, ``in_doubt`` or ``pending``:
  "in doubt = presumed recorded", so the rule stays "understate, never double"), plus a
  negative line for each line the version removed; ``None`` until version ``n - 1`` is
  applied (see "Flow 6", revenue half, in docs/flows.md).
- ``credit_lines``: a credit memo's lines as negative corrections of the invoice it credits,
  id ``<credit memo id>:<line id>``.
- ``never_recorded``: whether a failed upload certainly left nothing at the platform (it
  answered an error status, or the connection was never opened). Everything else after the
  request may have left is *in doubt*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from contracts import (
    ContractError,
    CreditMemoIssued,
    CreditMemoLine,
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
    "PRESUMED_RECORDED",
    "Recorded",
    "accepted_batch_id",
    "credit_lines",
    "halves",
    "never_recorded",
    "pack",
    "plan_version",
    "refused_invoices",
    "revenue_line_id",
    "revenue_lines",
    "version_line_id",
    "version_of_line",
]

# Ledger states of a line the platform is presumed to hold: recorded, or sent without an
# answer (in doubt, or claimed by an attempt that never recorded one).
PRESUMED_RECORDED: frozenset[str] = frozenset({"uploaded", "in_doubt", "pending"})

# Answers that carry an error status: the platform's contract is all-or-nothing and 201 means
# recorded, so an error status means nothing of the upload was recorded.
NOT_RECORDED_CODES: frozenset[str] = frozenset({"http.rate_limited", "http.server_error"})

_result: JsonCodec[RevenueBatchResult] = JsonCodec(RevenueBatchResult)


def revenue_line_id(invoice_id: str, line_id: str) -> str:
    """The revenue platform's ``lineId`` of an invoice line (stable across versions and
    deliveries: the platform does not deduplicate, the gateway's ledger does, by this id)."""
    return f"{invoice_id}:{line_id}"


def _unique_line_ids(doc_id: str, lines: Sequence[InvoiceLine | InvoiceLineV3 | CreditMemoLine]
                     ) -> None:
    seen: set[str] = set()
    for i, ln in enumerate(lines):
        if ln.line_id in seen:
            raise ContractError(f"document {doc_id} has line id {ln.line_id!r} twice",
                                code="revenue.duplicate_line_id",
                                path=f"$.payload.lines[{i}].line_id")
        seen.add(ln.line_id)


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
    _unique_line_ids(inv.invoice_id, lines)
    start, end = inv.period_start.isoformat(), inv.period_end.isoformat()
    currency = inv.currency.upper()
    amounts = (revenue_by_line(inv) if isinstance(inv, InvoiceIssuedV3)
               else [ln.amount for ln in inv.lines])
    return [RevenueLineIn(line_id=revenue_line_id(inv.invoice_id, ln.line_id),
                          invoice_id=inv.invoice_id, product=ln.product_id, currency=currency,
                          amount=amount, period_start=start, period_end=end)
            for ln, amount in zip(lines, amounts, strict=True)]


def version_line_id(invoice_id: str, line_id: str, version: int) -> str:
    """The ``lineId`` of invoice line ``line_id`` in version ``version`` of the invoice:
    ``<invoice id>:<line id>`` for version 1, ``<invoice id>:<line id>:v<n>`` (the line's
    difference from the earlier versions) for ``n >= 2``."""
    base = revenue_line_id(invoice_id, line_id)
    return base if version <= 1 else f"{base}:v{version}"


def version_of_line(invoice_id: str, revenue_id: str) -> tuple[str, int] | None:
    """``(invoice line id, version)`` of a ``lineId`` made by ``version_line_id`` for
    ``invoice_id``; ``None`` for a line id of another kind (a credit memo's). Raises
    nothing."""
    prefix = f"{invoice_id}:"
    if not revenue_id.startswith(prefix):
        return None
    rest = revenue_id[len(prefix):]
    base, sep, n = rest.rpartition(":v")
    if sep and n.isdigit() and int(n) >= 2 and str(int(n)) == n:
        return base, int(n)
    return rest, 1


class Recorded(NamedTuple):
    """One ledger row of an invoice's revenue lines: its ``lineId``, amount and state."""

    line_id: str
    amount: int
    status: str


def plan_version(inv: InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3, version: int,
                 rows: Iterable[Recorded]) -> list[RevenueLineIn] | None:
    """The lines version ``version`` (>= 2) of ``inv`` adds at the revenue platform, given
    ``rows``, the ledger's rows of the invoice's lines; ``None`` while version ``version - 1``
    is not applied (no row of it, or one not presumed recorded): the caller waits for it.

    Each invoice line ``L`` gets ``version_line_id(…, version)`` with amount = its revenue in
    ``inv`` - the sum of ``L``'s rows of versions below ``version`` that are presumed
    recorded (``PRESUMED_RECORDED``), zero included (so every applied version leaves a row
    per line, which is how the next one knows it was applied); a line of an earlier version
    that ``inv`` no longer has gets the negative of that sum (empty product: the corrected
    line's), when not zero. Every line ``adjusts`` ``<invoice id>:<line id>``. Rows of
    ``version`` itself and above are left out, so a redelivery names the same lines with the
    same amounts as long as the earlier versions' rows stand. Raises ``ContractError`` like
    ``revenue_lines``; ``ValueError`` for ``version < 2``."""
    if version < 2:
        raise ValueError(f"plan_version is for versions >= 2, got {version}")
    full = revenue_lines(inv)
    held: dict[str, int] = {}
    previous: list[bool] = []  # presumed recorded, per row of version - 1
    for row in rows:
        parsed = version_of_line(inv.invoice_id, row.line_id)
        if parsed is None or parsed[1] >= version:
            continue
        line, v = parsed
        recorded = row.status in PRESUMED_RECORDED
        if v == version - 1:
            previous.append(recorded)
        if recorded:
            held[line] = held.get(line, 0) + row.amount
    if not previous or not all(previous):
        return None
    prefix = len(inv.invoice_id) + 1
    out: list[RevenueLineIn] = []
    for ln in full:
        line = ln.line_id[prefix:]
        out.append(msgspec.structs.replace(
            ln, line_id=version_line_id(inv.invoice_id, line, version),
            amount=ln.amount - held.pop(line, 0), adjusts=ln.line_id))
    first = full[0]
    for line, amount in sorted(held.items()):
        if amount:
            out.append(msgspec.structs.replace(
                first, line_id=version_line_id(inv.invoice_id, line, version), product="",
                amount=-amount, adjusts=revenue_line_id(inv.invoice_id, line)))
    return out


def credit_lines(cm: CreditMemoIssued) -> list[RevenueLineIn]:
    """A credit memo's lines at the revenue platform: each a correction of the invoice it
    credits (``adjusts`` and ``invoiceId`` = that invoice), id ``<credit memo id>:<line id>``,
    amount the negative of the credited amount (a re-charged line: positive), product the
    line's, recognised on the memo's issue date. Empty for a memo that names no invoice.
    Raises ``ContractError`` (``revenue.duplicate_line_id``) for two lines with one id."""
    if cm.invoice_id is None:
        return []
    _unique_line_ids(cm.credit_memo_id, cm.lines)
    day = cm.issued_at.date().isoformat()
    return [RevenueLineIn(line_id=revenue_line_id(cm.credit_memo_id, ln.line_id),
                          invoice_id=cm.invoice_id, product=ln.product_id,
                          currency=cm.currency.upper(), amount=-ln.amount, period_start=day,
                          period_end=day, adjusts=cm.invoice_id)
            for ln in cm.lines]


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
