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
- ``guess_line_ids`` / ``merge_recorded``: the rows ``plan_version`` needs, gathered by any
  gateway process: its own ledger's rows of the invoice, joined with the shared ``uploads``
  rows of every line id it can name (the invoice's lines and its ledger's, in each earlier
  version), the ledger winning for its own lines; with what keeps the plan from being made
  (a shared row without an amount, a row another process is still sending, or fewer rows of
  version ``n - 1`` than that version wrote).
- ``credit_lines``: a credit memo's lines as negative corrections of the invoice it credits,
  id ``<credit memo id>:<line id>``.
- ``never_recorded``: whether a failed upload certainly left nothing at the platform (it
  answered an error status, or the connection was never opened). Everything else after the
  request may have left is *in doubt*.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple, TypeVar

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
    "Merged",
    "Recorded",
    "SharedRecorded",
    "accepted_batch_id",
    "credit_lines",
    "guess_line_ids",
    "halves",
    "merge_recorded",
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


class SharedRecorded(NamedTuple):
    """One line's row in the shared ``uploads``, as ``merge_recorded`` reads it: its
    ``lineId``, amount (None when the value does not carry one), status, whether another
    gateway process last moved it, and how many lines its document version wrote (None when
    not stored)."""

    line_id: str
    amount: int | None
    status: str
    elsewhere: bool
    lines: int | None = None


def guess_line_ids(inv: InvoiceIssued | InvoiceIssuedV2 | InvoiceIssuedV3, version: int,
                   own: Iterable[Recorded]) -> list[str]:
    """The ``lineId`` of every line of versions ``1 .. version - 1`` of ``inv``'s invoice that
    can be named without asking anyone: each line id of ``inv`` and of the ``own`` rows (this
    process's ledger), in each of those versions. A line an earlier version had that neither
    names cannot be guessed (``merge_recorded`` counts on the line count to notice)."""
    names = [ln.line_id for ln in inv.lines]
    for row in own:
        parsed = version_of_line(inv.invoice_id, row.line_id)
        if parsed is not None:
            names.append(parsed[0])
    return [version_line_id(inv.invoice_id, name, v)
            for name in dict.fromkeys(names) for v in range(1, version)]


class Merged(NamedTuple):
    """What ``merge_recorded`` found: the rows to plan from, and what keeps the plan from
    being made (then the invoice waits): presumed-recorded shared rows without an amount,
    rows another process is still sending (``pending`` there), and version ``n - 1``'s rows
    found against the number of lines it wrote (``previous_count`` None: not stored)."""

    rows: list[Recorded]
    no_amount: list[str]
    sending_elsewhere: list[str]
    previous_found: int
    previous_count: int | None

    @property
    def incomplete(self) -> bool:
        """Fewer rows of version ``n - 1`` found than it wrote (a line of it that no id known
        here names: a line dropped by an amendment)."""
        return self.previous_count is not None and self.previous_found < self.previous_count

    @property
    def plannable(self) -> bool:
        return not (self.no_amount or self.sending_elsewhere or self.incomplete)


def merge_recorded(invoice_id: str, version: int, own: Iterable[Recorded],
                   shared: Iterable[SharedRecorded]) -> Merged:
    """The union of this process's ledger rows (``own``) and the shared rows of the invoice's
    line ids (``shared``), for planning version ``version`` of ``invoice_id``. The ledger wins
    for every line it holds (it is the authority on this process's attempts, and the shared
    row may lag it), except where its row is not presumed recorded and another process's
    shared row is (that process recorded the line after this one gave it up). A shared row
    that wins must carry an amount when presumed recorded (``no_amount`` otherwise), and must
    not be another process's unfinished claim (``sending_elsewhere``: its outcome is coming).
    Rows of other documents and of ``version`` and above are kept as given (``plan_version``
    leaves them out). Raises nothing."""
    rows: dict[str, Recorded] = {}
    for row in own:
        rows[row.line_id] = row
    no_amount: list[str] = []
    sending: list[str] = []
    counts: list[int] = []
    for sh in shared:
        parsed = version_of_line(invoice_id, sh.line_id)
        if parsed is not None and parsed[1] == version - 1 and sh.lines is not None:
            counts.append(sh.lines)
        mine = rows.get(sh.line_id)
        presumed = sh.status in PRESUMED_RECORDED
        if mine is not None and (mine.status in PRESUMED_RECORDED or not sh.elsewhere
                                 or not presumed):
            continue
        if parsed is None or parsed[1] >= version:
            continue  # not an earlier version's line: not this plan's concern
        if sh.elsewhere and sh.status == "pending":
            sending.append(sh.line_id)
        elif presumed and sh.amount is None:
            no_amount.append(sh.line_id)
        rows[sh.line_id] = Recorded(sh.line_id, sh.amount or 0, sh.status)
    previous = sum(1 for line_id in rows
                   if (p := version_of_line(invoice_id, line_id)) is not None
                   and p[1] == version - 1)
    return Merged(sorted(rows.values()), no_amount, sending, previous,
                  max(counts) if counts else None)


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


_Line = TypeVar("_Line")


def pack(groups: Sequence[Sequence[_Line]], max_lines: int) -> list[list[_Line]]:
    """Uploads of at most ``max_lines`` lines, in order. Each group (one invoice's lines) stays
    in one upload when it fits in one; a group larger than ``max_lines`` is cut into full
    uploads and a remainder. Empty groups are skipped. Raises ``ValueError`` for
    ``max_lines < 1``. (Any line type: the benchmark's baselines pack theirs with it.)"""
    if max_lines < 1:
        raise ValueError(f"max_lines must be >= 1, got {max_lines}")
    out: list[list[_Line]] = []
    current: list[_Line] = []
    for group in groups:
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
