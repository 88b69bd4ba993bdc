"""Flow 1 in ``erpgw demo``: a deal run through the gateway, judged by the simulator.

The partner portal registers ``DEMO_DEALS`` seeded deals and delivers them to the gateway
(a share rejected, a few refused later by the ERP or the revenue platform so that the saga
compensates); the audit's ``deals`` section is polled until every approved deal completed or
was compensated, or nothing moved for ``stall_timeout`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from .stack import Stack

__all__ = ["DEMO_CHANGES", "DEMO_DEALS", "changes_ok", "deals_ok", "run_changes", "run_deals"]

DEMO_DEALS = 100
# The demo's deal run: rejections at the portal, and permanent refusals further on.
REJECT_RATE = 0.1
ORDER_REJECT_RATE = 0.03
CONTRACT_REJECT_RATE = 0.03
DEMO_CHANGES = 30  # subscriptions amended, renewed or cancelled afterwards (flow 5)


async def run_deals(stack: Stack, count: int = DEMO_DEALS, *,
                    stall_timeout: float = 60.0) -> dict[str, Any]:
    """``flows.deal_to_contract`` of the demo: ``{"completed", "expected", "compensated",
    "refused", "rejected", "duplicates", "unexpected", "incomplete"}``. Raises
    ``GatewayError`` when the simulator refuses the run."""
    await stack.deal_run(count, reject_rate=REJECT_RATE, order_reject_rate=ORDER_REJECT_RATE,
                         contract_reject_rate=CONTRACT_REJECT_RATE)
    d = await stack.wait_deals(count, stall_timeout=stall_timeout)
    return {"completed": int(d.get("completed", 0)),
            "expected": int(d.get("approved", 0)) - int(d.get("injected_failures", 0)),
            "compensated": int(d.get("compensated", 0)),
            "refused": int(d.get("injected_failures", 0)),
            "rejected": int(d.get("rejected", 0)),
            "duplicates": int(d.get("duplicates", 0)),
            "unexpected": int(d.get("unexpected", 0)),
            "incomplete": int(d.get("incomplete_count", count))}


def deals_ok(flow: dict[str, Any]) -> bool:
    """Every approved deal completed or compensated exactly once; nothing doubled."""
    return bool(flow["completed"] == flow["expected"] and flow["compensated"] == flow["refused"]
            and flow["duplicates"] == 0 and flow["unexpected"] == 0
            and flow["incomplete"] == 0)


async def run_changes(stack: Stack, count: int = DEMO_CHANGES, *,
                      stall_timeout: float = 60.0) -> dict[str, Any]:
    """``flows.subscription_changes`` of the demo (flow 5): billing amends, renews or cancels
    ``count`` of the deals' subscriptions, a third of their webhooks shuffled; ``completed``
    counts those whose ERP order and revenue contract ended at the latest version."""
    run = await stack.subscription_changes(count, reorder_rate=0.3)
    last: tuple[int, int] = (-1, -1)
    moved = time.monotonic()
    subs: dict[str, Any] = {}
    while True:
        subs = (await stack.audit()).get("subscriptions") or {}
        sig = (int(subs.get("in_sync", 0)), int(subs.get("accepted", 0)))
        if sig[0] >= int(run["subscriptions"]) and sig[1] >= int(run["changes"]):
            # Read again at rest: a late stale version would show as out of sync then.
            rest = await stack.wait_quiet(timeout=stall_timeout)
            subs = rest.audit.get("subscriptions") or subs
            break
        if sig != last:
            last, moved = sig, time.monotonic()
        elif time.monotonic() - moved > stall_timeout:
            break
        await anyio.sleep(0.25)
    return {"completed": int(subs.get("in_sync", 0)), "expected": int(run["subscriptions"]),
            "changes": int(run["changes"]), "reordered": int(run["reordered"]),
            "out_of_sync": int(subs.get("out_of_sync_count", 0))}


def changes_ok(flow: dict[str, Any]) -> bool:
    """Every changed subscription's order and contract at its latest version."""
    return bool(flow["completed"] == flow["expected"] and flow["out_of_sync"] == 0)
