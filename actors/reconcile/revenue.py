"""Reconciliation, revenue leg: billing vs the revenue platform vs the gateway's ledger.

Pure: records in, breaks and actions out; no I/O, no clock (``now`` is passed in).

Per invoice (the revenue platform's ``invoiceId``), three views:

- billing: the invoice's latest version — revenue is recognised on the subtotal
  (``actors.revenue.plan.revenue_lines``: one line per invoice line, its billed amount) —
  less what its credit memos credit (``credited``): the revenue poster uploads an amendment
  as the per-line differences from the earlier versions and a credit memo as negative lines
  of the invoice, so the platform must hold exactly that (``billed``; docs/flows.md,
  "Flow 6", revenue half). Every version's line count bounds the line ids it may hold;
- the platform's billings report (``GET /revenue/v1/reports/billings``): the amount, lines and
  distinct line ids it recorded for the invoice (it does not deduplicate);
- the gateway's ledger (``uploads`` rows of platform ``revenue``), per invoice: how many lines
  are ``uploaded``, ``in_doubt``, ``pending``, ``rejected``, ``released``. ``None`` when the
  ledger cannot be read (``erpgw reconcile`` without the gateway's data dir): then nothing is
  repaired, since only the ledger can prove a line was never sent.

====================  =========================================================  ==============
break                 when                                                       action
====================  =========================================================  ==============
``in_doubt``          the ledger holds lines ``in_doubt`` (an upload whose       ``Flag``: the
                      answer never came): the poster never re-sends them         report's count
``in_flight``         nothing recorded yet, but younger than the grace period,   none (wait)
                      in the backlog, or lines ``pending`` (an upload running)
``dead_lettered``     nothing recorded; the platform refused lines (ledger       none (DLQ)
                      ``rejected``) or a dead letter names the invoice
``revenue_missing``   nothing recorded (or fewer distinct lines than billed)     ``Reupload``
                                                                                 only when the
                                                                                 ledger proves
                                                                                 none was sent,
                                                                                 else ``Flag``
``revenue_duplicate`` more lines recorded than distinct line ids, or than the    ``Flag``
                      invoice has: doubled revenue
``revenue_amount``    the amount (or currency) is not the latest version's       ``Flag``
                      subtotal less its credit memos
``revenue_orphan``    the platform holds billings of an invoice billing never    ``Flag``
                      issued
====================  =========================================================  ==============

"Never twice": the only automatic repair re-drives the invoice's issued event to the revenue
poster, and only when the ledger has no row for any of its lines or only ``released`` rows
(an error status: nothing recorded). The poster itself sends only lines in such states, so the
re-drive can never double a line even if the ledger moved in between. Lines ``in_doubt`` or
``uploaded`` and absent from the platform are flagged for a person, who checks the platform
and releases them (``Ledger.resolve_in_doubt``); the next run then re-drives them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from .matching import BREAK_KINDS, Action, Break, Flag, ReconReport, Reupload

__all__ = ["LedgerView", "RevenueDoc", "RevenueRecord", "reconcile_revenue"]


class RevenueDoc(msgspec.Struct, frozen=True):
    """An invoice as billing issued it: its latest version's subtotal and line count,
    ``versions`` ``(subtotal, lines)`` of every version issued in version order (the latest
    included), and what its credit memos credit (``credited``, in ``credit_lines`` lines)."""

    key: str  # the invoice id
    currency: str  # upper-case
    subtotal: int
    lines: int
    issued_at: float
    versions: tuple[tuple[int, int], ...] = ()
    credited: int = 0
    credit_lines: int = 0

    @property
    def billed(self) -> int:
        """What the revenue platform must hold for the invoice: the latest subtotal less the
        credit memos."""
        return self.subtotal - self.credited

    @property
    def most_lines(self) -> int:
        """The most line ids the platform may hold for the invoice: every version's lines
        (each amendment names all of them again), a negative line per line an amendment
        removed (at most the version before it had), and the credit memos' lines."""
        counts = [n for _, n in self.versions] or [self.lines]
        return sum(counts) + sum(counts[:-1]) + self.credit_lines


class RevenueRecord(msgspec.Struct, frozen=True):
    """One row of the platform's billings report."""

    key: str  # the invoice id
    currency: str
    amount: int
    lines: int
    distinct_lines: int


class LedgerView(msgspec.Struct, frozen=True):
    """The ledger's upload rows of one invoice, by status; ``amount`` sums its lines that are
    ``uploaded`` or ``in_doubt`` (what the gateway believes the platform holds)."""

    uploaded: int = 0
    in_doubt: int = 0
    pending: int = 0
    rejected: int = 0
    released: int = 0
    amount: int = 0

    @property
    def never_sent(self) -> bool:
        """No line of the invoice can be at the platform by the gateway's hand."""
        return not (self.uploaded or self.in_doubt or self.pending)


def _add(totals: dict[str, defaultdict[str, int]], system: str, currency: str,
         amount: int) -> None:
    totals[system][currency] += amount


def reconcile_revenue(billing: Iterable[RevenueDoc], platform: Iterable[RevenueRecord], *,
                      ledger: Mapping[str, LedgerView] | None, now: float,
                      grace_s: float = 300.0, in_flight: Iterable[str] = (),
                      dead_lettered: Iterable[str] = (),
                      known: Iterable[str] | None = None) -> ReconReport:
    """Match the three views (see the module docstring). ``known``: every invoice id billing
    ever issued (default: those of ``billing``), so that a period's run does not call another
    period's invoices orphans; platform rows of known invoices outside ``billing`` are left
    out. Invoices without lines are not checked (nothing goes to the platform). Raises
    nothing."""
    docs = {d.key: d for d in billing if d.lines > 0}
    records = {r.key: r for r in platform}
    issued = set(docs) if known is None else set(known) | set(docs)
    flying, dead = set(in_flight), set(dead_lettered)
    breaks: list[Break] = []
    actions: list[Action] = []
    totals: dict[str, defaultdict[str, int]] = {
        "billing": defaultdict(int), "revenue": defaultdict(int), "ledger": defaultdict(int)}
    matched = 0

    def flag(kind: str, key: str, detail: str, proposal: str, doc: RevenueDoc | None,
             rec: RevenueRecord | None) -> None:
        breaks.append(Break(kind, key, detail, doc.billed if doc else None,
                            rec.amount if rec else None,
                            doc.currency if doc else rec.currency if rec else None, "revenue"))
        actions.append(Flag(key, kind, proposal))

    for key in sorted(docs):
        doc = docs[key]
        rec = records.get(key)
        led = None if ledger is None else ledger.get(key, LedgerView())
        _add(totals, "billing", doc.currency, doc.billed)
        if rec is not None:
            _add(totals, "revenue", rec.currency, rec.amount)
        if led is not None and led.amount:
            _add(totals, "ledger", doc.currency, led.amount)
        held = (f"the platform's report holds {rec.distinct_lines} of {doc.lines} line(s), "
                f"{rec.amount} {rec.currency}" if rec else
                f"the platform's report holds none of its {doc.lines} line(s)")
        if led is not None and led.in_doubt:
            present = rec is not None and rec.distinct_lines >= doc.lines
            flag("in_doubt", key, f"{led.in_doubt} line(s) in doubt in the ledger (an upload "
                 f"whose answer never came); {held}",
                 ("present at the platform: resolve them as uploaded "
                  "(Ledger.resolve_in_doubt present=True)") if present else
                 ("not all at the platform: check there, then resolve the absent lines as "
                  "released (Ledger.resolve_in_doubt present=False); the next "
                  "reconciliation re-drives them"), doc, rec)
            continue
        if rec is None:
            if key in dead or (led is not None and led.rejected):
                breaks.append(Break("dead_lettered", key, "no revenue line: the platform "
                                    "refused the invoice or a dead letter explains it (see "
                                    "erpgw dlq)", doc.billed, None, doc.currency, "revenue"))
            elif (key in flying or now - doc.issued_at < grace_s
                  or (led is not None and led.pending)):
                breaks.append(Break("in_flight", key, "no revenue line yet: within the grace "
                                    "period, in the backlog or being uploaded", doc.billed,
                                    None, doc.currency, "revenue"))
            elif led is not None and led.never_sent:
                breaks.append(Break("revenue_missing", key, f"billed, never sent to the "
                                    f"revenue platform ({held}; the ledger proves no line "
                                    "was sent)", doc.billed, None, doc.currency, "revenue"))
                actions.append(Reupload(key))
            else:
                why = ("the ledger cannot be read: only it can prove the lines were never "
                       "sent; run with the gateway's data dir" if led is None else
                       f"the ledger says {led.uploaded} line(s) uploaded")
                flag("revenue_missing", key, f"billed, not at the revenue platform ({held}); "
                     f"{why}", "check at the revenue platform; re-drive only lines proven "
                     "absent (never twice)", doc, rec)
            continue
        most = doc.most_lines
        if rec.lines > rec.distinct_lines or rec.distinct_lines > most:
            extra = rec.lines - min(rec.distinct_lines, most)
            # what the gateway sent, else what billing billed
            base = led.amount if led is not None and led.amount else doc.billed
            flag("revenue_duplicate", key, f"{rec.lines} line(s) recorded, at most {most} "
                 f"billed ({rec.distinct_lines} distinct): {rec.amount} {rec.currency}, "
                 f"expected {base}", f"reverse {extra} doubled line(s) at the revenue platform "
                 f"({rec.amount - base} {rec.currency}); never delete", doc, rec)
            continue
        if rec.currency != doc.currency:
            flag("revenue_amount", key, f"billed in {doc.currency}, recorded in {rec.currency}",
                 "reverse the recorded lines and have them uploaded in the billed currency",
                 doc, rec)
            continue
        if rec.distinct_lines < doc.lines:
            flag("revenue_missing", key, f"partly recorded: {held}", "check the missing lines "
                 "at the revenue platform; re-drive only lines proven absent", doc, rec)
            continue
        if rec.amount != doc.billed:
            credits = f" less {doc.credited} credited" if doc.credited else ""
            flag("revenue_amount", key, f"recorded {rec.amount} {rec.currency}, billed "
                 f"{doc.billed} (the latest version's {doc.subtotal}{credits})",
                 f"adjust at the revenue platform by {doc.billed - rec.amount} "
                 f"{doc.currency}", doc, rec)
            continue
        matched += 1
    for key in sorted(set(records) - issued):
        rec = records[key]
        _add(totals, "revenue", rec.currency, rec.amount)
        flag("revenue_orphan", key, f"{rec.lines} line(s), {rec.amount} {rec.currency} for an "
             "invoice billing never issued", "investigate; reverse at the revenue platform if "
             "unfounded", None, rec)
    by_kind = {k: 0 for k in BREAK_KINDS}
    for b in breaks:
        by_kind[b.kind] += 1
    return ReconReport(checked=len(docs), matched=matched, breaks=breaks, actions=actions,
                       totals={k: dict(v) for k, v in totals.items()}, by_kind=by_kind)
