"""Reconciliation, GL and payables legs. Pure: records in, breaks out; no I/O, no clock.

**GL.** The ERP's GL balances (``GET /erp/v1/gl/balances?period=``: per account and currency,
debit - credit) against what the gateway's postings of billing's documents must add up to, per
(period, account, currency), exact in minor units (``expected_balances``):

=====================  ==========================================================
document               net effect (debit +, credit -), in the month of its date
=====================  ==========================================================
invoice (latest ver.)  receivable ``+total``, deferred revenue ``-subtotal``, tax ``-tax``
credit note            deferred revenue ``+amount``, receivable ``-amount``
payment                cash ``+amount``, receivable ``-amount``
=====================  ==========================================================

(a zero invoice is not posted; an amendment's reversal cancels the replaced version in the
same period.) A payment foreign to its entity (``.fx``) is booked as its restated lines
instead (``GlDoc.parts``, in the functional currency: cash, receivable and the realized FX gain
or loss). Tax per jurisdiction (``accounts.tax_payable_by_jurisdiction``) is compared as one
sum: the GL rows of every tax account are folded into ``tax_payable``'s (``fold_accounts``)
before the comparison, since billing's documents give the tax total only.

Only the accounts of the account map the gateway posts to are compared; a
difference is a ``gl`` break, flagged with it: a person finds the entries behind it (a
duplicate, an orphan or an altered amount shows here too, alongside its document break).
Documents still in flight (no posting yet) and dead-lettered ones (the gateway gave up: the
dead letter is the evidence) are left out of the expectation.

**Payables.** Settlements at the partner portal against the ERP's vendor bills (``externalId``
= settlement id), like the simulator audit's ``settlements`` section: ``payable_duplicate``
(a settlement recorded twice at the portal, or billed twice), ``payable_missing`` (no bill;
``in_flight`` within the grace period), ``payable_amount`` (amount or currency differs),
``payable_orphan`` (a bill naming no settlement). All flagged, none repaired: a vendor bill
is money owed, and the settlement poster already retries with its idempotency keys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec

from .matching import BREAK_KINDS, Action, Break, Flag, ReconReport

__all__ = ["GlDoc", "GlRow", "Payable", "Settlement", "expected_balances", "fold_accounts",
           "reconcile_gl", "reconcile_payables"]


class GlDoc(msgspec.Struct, frozen=True):
    """A billing document's parts, as the ERP postings of it use them."""

    key: str
    kind: str  # invoice | credit_note | payment
    period: str  # YYYY-MM of its posting date
    currency: str  # upper-case
    total: int
    subtotal: int = 0
    tax: int = 0
    # The net effect per account when not the table's (account, debit - credit), in
    # ``currency``: a foreign payment's restated lines.
    parts: tuple[tuple[str, int], ...] = ()


class GlRow(msgspec.Struct, frozen=True):
    period: str
    account: str
    currency: str
    balance: int  # debit - credit


class Settlement(msgspec.Struct, frozen=True):
    key: str  # the settlement id
    currency: str  # upper-case
    amount: int
    recorded_at: float


class Payable(msgspec.Struct, frozen=True):
    key: str  # the vendor bill's external id
    bill_id: str
    currency: str
    amount: int


def expected_balances(docs: Iterable[GlDoc], accounts: Mapping[str, str]
                      ) -> dict[tuple[str, str, str], int]:
    """Net balance per (period, account, currency) of the postings of ``docs`` (the table in
    the module docstring). ``accounts`` maps ``receivable``, ``deferred_revenue``,
    ``tax_payable`` and ``cash`` to account numbers. Raises ``KeyError`` for a missing role or
    an unknown document kind."""
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    ar, rev, tax, cash = (accounts["receivable"], accounts["deferred_revenue"],
                          accounts["tax_payable"], accounts["cash"])
    for d in docs:
        if d.parts:
            parts = list(d.parts)
        elif d.kind == "invoice":
            if d.total == 0:
                continue  # a zero invoice is not posted
            parts = [(ar, d.total), (rev, -d.subtotal), (tax, -d.tax)]
        elif d.kind == "credit_note":
            parts = [(rev, d.total), (ar, -d.total)]
        elif d.kind == "payment":
            parts = [(cash, d.total), (ar, -d.total)]
        else:
            raise KeyError(f"unknown document kind {d.kind!r}")
        for account, amount in parts:
            out[(d.period, account, d.currency)] += amount
    return dict(out)


def fold_accounts(rows: Iterable[GlRow], into: Mapping[str, str]) -> list[GlRow]:
    """``rows`` with every account of ``into`` booked on the account it maps to (balances of
    the same period, account and currency summed): the per-jurisdiction tax accounts into
    ``tax_payable``. Rows of other accounts are kept as they are. Raises nothing."""
    out: dict[tuple[str, str, str], int] = {}
    for r in rows:
        k = (r.period, into.get(r.account, r.account), r.currency)
        out[k] = out.get(k, 0) + r.balance
    return [GlRow(p, a, c, b) for (p, a, c), b in out.items()]


def _report(checked: int, matched: int, breaks: list[Break], actions: list[Action],
            totals: Mapping[str, Mapping[str, int]]) -> ReconReport:
    by_kind = {k: 0 for k in BREAK_KINDS}
    for b in breaks:
        by_kind[b.kind] += 1
    return ReconReport(checked=checked, matched=matched, breaks=breaks, actions=actions,
                       totals={k: dict(v) for k, v in totals.items()}, by_kind=by_kind)


def reconcile_gl(expected: Mapping[tuple[str, str, str], int], gl: Iterable[GlRow], *,
                 accounts: Iterable[str], periods: Iterable[str],
                 headline: str) -> ReconReport:
    """One ``gl`` break per (period, account, currency) of ``periods`` and ``accounts`` whose
    GL balance differs from ``expected`` (an absent row counts as 0); ``checked`` counts the
    compared balances. ``totals`` (``expected``, ``erp``) hold the balance of account
    ``headline`` (the receivable: what customers owe) per currency, over the periods.
    Raises nothing."""
    wanted, months = set(accounts), set(periods)
    actual = {(r.period, r.account, r.currency): r.balance for r in gl
              if r.account in wanted and r.period in months}
    keys = sorted({k for k in expected if k[1] in wanted and k[0] in months} | set(actual))
    breaks: list[Break] = []
    actions: list[Action] = []
    totals: dict[str, defaultdict[str, int]] = {"expected": defaultdict(int),
                                                "erp": defaultdict(int)}
    matched = 0
    for period, account, currency in keys:
        want = expected.get((period, account, currency), 0)
        got = actual.get((period, account, currency), 0)
        if account == headline:
            totals["expected"][currency] += want
            totals["erp"][currency] += got
        if want == got:
            matched += 1
            continue
        key = f"{period}/{account}/{currency}"
        breaks.append(Break("gl", key, f"GL balance {got}, the gateway's postings of billing's "
                            f"documents make {want}: difference {got - want}", want, got,
                            currency, "gl"))
        actions.append(Flag(key, "gl", f"find the entries behind {got - want} {currency} on "
                            f"account {account} in {period} (see the document breaks); "
                            "correct by a journal entry a person approves"))
    return _report(len(keys), matched, breaks, actions, totals)


def reconcile_payables(settlements: Iterable[Settlement], bills: Iterable[Payable], *,
                       now: float, grace_s: float = 300.0) -> ReconReport:
    """Match the portal's settlements with the ERP's vendor bills by settlement id (see the
    module docstring). ``checked`` counts distinct settlement ids. Raises nothing."""
    recorded: dict[str, list[Settlement]] = defaultdict(list)
    for s in settlements:
        recorded[s.key].append(s)
    billed: dict[str, list[Payable]] = defaultdict(list)
    for b in bills:
        billed[b.key].append(b)
    breaks: list[Break] = []
    actions: list[Action] = []
    totals: dict[str, defaultdict[str, int]] = {"partner": defaultdict(int),
                                                "erp": defaultdict(int)}
    matched = 0

    def flag(kind: str, key: str, detail: str, proposal: str, amount: int | None,
             other: int | None, currency: str) -> None:
        breaks.append(Break(kind, key, detail, amount, other, currency, "payables"))
        actions.append(Flag(key, kind, proposal))

    for key in sorted(recorded):
        first, *again = recorded[key]
        bs = billed.get(key, [])
        totals["partner"][first.currency] += first.amount
        for b in bs:
            totals["erp"][b.currency.upper()] += b.amount
        ok = True
        if again:
            ok = False
            flag("payable_duplicate", key, f"recorded {len(again) + 1} times at the partner "
                 "portal", f"void {len(again)} repeated statement(s) at the portal",
                 first.amount, sum(s.amount for s in again) + first.amount, first.currency)
        if not bs:
            if now - first.recorded_at < grace_s:
                breaks.append(Break("in_flight", key, "no vendor bill yet: within the grace "
                                    "period", first.amount, None, first.currency, "payables"))
            else:
                flag("payable_missing", key, "settled at the partner portal, no vendor bill in "
                     "the ERP", "check the settlement's dead letters (erpgw dlq); re-drive its "
                     "commission (same idempotency keys)", first.amount, None, first.currency)
            continue
        if len(bs) > 1:
            ok = False
            flag("payable_duplicate", key, f"{len(bs)} vendor bills: "
                 + ", ".join(b.bill_id for b in bs), "void " + ", ".join(b.bill_id
                                                                        for b in bs[1:]),
                 first.amount, sum(b.amount for b in bs), first.currency)
        bill = bs[0]
        if bill.currency.upper() != first.currency or bill.amount != first.amount:
            ok = False
            flag("payable_amount", key, f"settled {first.amount} {first.currency}, billed "
                 f"{bill.amount} {bill.currency} ({bill.bill_id})", f"void {bill.bill_id} and "
                 f"bill {first.amount} {first.currency}", first.amount, bill.amount,
                 first.currency)
        matched += ok
    for key in sorted(set(billed) - set(recorded)):
        for b in billed[key]:
            totals["erp"][b.currency.upper()] += b.amount
            flag("payable_orphan", key, f"vendor bill {b.bill_id} names no settlement at the "
                 "partner portal", f"investigate {b.bill_id}; void if unfounded", None,
                 b.amount, b.currency.upper())
    return _report(len(recorded), matched, breaks, actions, totals)
