"""``erpgw demo``'s credit memos and flow 3 (payment to settlement), judged by the simulator.

The demo's bill run asks billing for credit notes and payments on a share of its invoices;
once the invoices drained, ``wait_money`` waits until every follow-up webhook was delivered
and the ERP, the partner portal and the ERP's payables hold what they should, then
``money_figures`` turns the simulator's audit into the report's figures (pure): every credit
memo posted once as a reversal, every payment cash-applied once, every commissioned invoice
settled once at the portal and once as a payable, and the settlement cycle time measured by
the platforms (payment webhook's 2xx → vendor bill recorded).
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from .stack import Stack

__all__ = ["expected_followups", "money_figures", "money_ok", "wait_money"]


def expected_followups(seed: int, invoices: int, first: int, credit_memo_rate: float,
                       payment_rate: float, billing_dialect: str = "erpgw") -> tuple[int, int]:
    """How many credit notes and payments a bill run of ``invoices`` numbered from ``first``
    sends (billing's draws are seeded per invoice and do not depend on the issue time, so the
    simulator's own pure functions tell). In Stripe's dialect a void counts as a credit
    note (it is posted as a reversing credit memo)."""
    from sim import generate_invoices  # the simulator, as `erpgw sim` loads it: on demand
    from sim._billing import BillRunOptions, followup_events
    from sim._stripe import followup_events as stripe_followups
    from sim._stripe import stripe_invoice

    opts = BillRunOptions(credit_memo_rate=credit_memo_rate, payment_rate=payment_rate)
    notes = payments = 0
    for i in range(first, first + invoices):
        events = (stripe_followups(seed, i, stripe_invoice(seed, i, 0), 0, credit_memo_rate,
                                   payment_rate) if billing_dialect == "stripe"
                  else followup_events(seed, i, generate_invoices(1, seed, i, now=0)[0], 0,
                                       opts))
        for kind, _ in events:
            if kind == "credit_memos":
                notes += 1
            else:
                payments += 1
    return notes, payments


def _settled(audit: dict[str, Any], notes: int, payments: int) -> bool:
    cm, pay = audit["credit_memo_postings"], audit["payment_postings"]
    st = audit.get("settlements") or {}
    return (audit["credit_memos"]["accepted"] == notes
            and audit["payments"]["accepted"] == payments
            and cm["unposted"] == 0 and pay["unposted"] == 0
            and st.get("missing") == 0 and st.get("without_payable") == 0)


async def wait_money(stack: Stack, invoices: int, credit_memo_rate: float, payment_rate: float,
                     *, stall_timeout: float = 60.0, billing_dialect: str = "erpgw"
                     ) -> tuple[dict[str, Any], bool]:
    """The audit once the follow-ups of the stack's first bill run of ``invoices`` were all
    delivered, posted and settled, read once the system is at rest (``Stack.wait_quiet``;
    ``True``), or when nothing moved for ``stall_timeout`` seconds (``False``). Raises what
    ``Stack.audit`` raises."""
    notes, payments = expected_followups(stack.seed, invoices, 1, credit_memo_rate,
                                         payment_rate, billing_dialect)
    last: tuple[int, ...] = ()
    last_change = time.monotonic()
    while True:
        audit = await stack.audit()
        if _settled(audit, notes, payments):
            # Count at rest: a posting doubled by a late redelivery is in the audit then.
            rest = await stack.wait_quiet(timeout=stall_timeout)
            return (rest.audit or audit), rest.quiet and _settled(rest.audit, notes, payments)
        st = audit.get("settlements") or {}
        sig = (audit["credit_memos"]["accepted"], audit["payments"]["accepted"],
               audit["credit_memo_postings"]["postings"], audit["payment_postings"]["postings"],
               int(st.get("recorded", 0)), int(st.get("payables", 0)))
        now = time.monotonic()
        if sig != last:
            last, last_change = sig, now
        elif now - last_change > stall_timeout:
            return audit, False
        await anyio.sleep(0.25)


def money_figures(audit: dict[str, Any], drained: bool) -> dict[str, Any]:
    """The report's ``flows`` entries and KPI for credit memos and flow 3 (pure)."""
    cm, pay = audit["credit_memo_postings"], audit["payment_postings"]
    st = audit.get("settlements") or {}
    completed = min(int(st.get("distinct", 0)), int(st.get("payables", 0)))
    cycle = st.get("cycle_ms") or {}
    return {
        "flows": {
            "credit_memo_to_ledger": {"completed": cm["posted"], "expected": cm["issued"],
                                      "duplicates": cm["duplicates"],
                                      "unexpected": cm["unexpected"]},
            "payment_to_cash": {"completed": pay["posted"], "expected": pay["issued"],
                                "duplicates": pay["duplicates"],
                                "unexpected": pay["unexpected"]},
            "payment_to_settlement": {
                "completed": completed, "expected": int(st.get("expected", 0)),
                "duplicates": int(st.get("duplicates", 0)),
                "payable_duplicates": int(st.get("payable_duplicates", 0)),
                "without_payable": int(st.get("without_payable", 0)),
                "drained": drained},
        },
        "kpi": {"partner_settlement_cycle_ms": {"p50": cycle.get("p50"),
                                                "p99": cycle.get("p99")}},
    }


def money_ok(figures: dict[str, Any]) -> bool:
    """Nothing of the money flows lost, doubled or unexpected."""
    flows = figures["flows"]
    docs = (flows["credit_memo_to_ledger"], flows["payment_to_cash"])
    settle = flows["payment_to_settlement"]
    return (settle["drained"]
            and all(d["completed"] == d["expected"] and d["duplicates"] == 0
                    and d["unexpected"] == 0 for d in docs)
            and settle["completed"] == settle["expected"]
            and settle["duplicates"] == settle["payable_duplicates"] == 0
            and settle["without_payable"] == 0)
