"""``--rss-check``: is the gateway's memory flat, or does it grow with the length of a run?

Theory of operation: the issue's target is "RSS within ±10 % between a run and a 10x longer
one". The bench restarts the gateway (a fresh process, same broker, same ledger directory),
sends it a run of N invoices at maximum load and reads its peak RSS (``VmHWM``, the high-water
mark of this process's life, so a fresh process per run makes the two comparable); then
restarts it again and sends 10 x N. The change is ``peak(10N) / peak(N) - 1``; the target is
met when its magnitude is at most 0.10. Both runs are audited like any leg (LOST and DUP count
towards the run's result). Latency and the sync probe are skipped in these runs: only memory
and correctness are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from contracts import Subjects
from gateway.stack import Stack

from ._gateway import GatewayLeg, run_gateway_leg

__all__ = ["RSS_BOUND", "rss_change", "run_rss_check"]

RSS_BOUND = 0.10


def rss_change(short_mb: float | None, long_mb: float | None) -> float | None:
    """``long / short - 1`` rounded to 3 places, or None when either figure is missing."""
    if short_mb is None or long_mb is None or short_mb <= 0:
        return None
    return round(long_mb / short_mb - 1.0, 3)


async def run_rss_check(stack: Stack, invoices: int, first_index: int, *,
                        stall_timeout: float, phase: Callable[[str], None],
                        say: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """The two runs and the comparison; returns the report section and the next invoice number.

    Raises what ``Stack.start_gateway`` raises when the gateway does not come back up.
    """
    runs: list[dict[str, Any]] = []
    for label, n in (("run", invoices), ("10x run", 10 * invoices)):
        phase(f"RSS check: {label}, {n} invoices at maximum load, fresh gateway process")
        await stack.stop_gateway()
        await stack.start_gateway()
        leg = GatewayLeg(f"rss-{label}", n, None, first_index)
        t0 = time.monotonic()
        figures = await run_gateway_leg(stack, leg, stall_timeout=stall_timeout,
                                        metrics_subject=Subjects().metrics, say=say, lean=True)
        first_index = leg.first_index + n
        audit = figures["audit"]
        runs.append({"label": label, "invoices": n, "peak_rss_mb": figures["peak_rss_mb"],
                     "rss_mb_after": figures["rss_mb_after"],
                     "wall_s": round(time.monotonic() - t0, 1),
                     "throughput_eps": figures["throughput_eps"],
                     "lost": audit["lost"], "duplicates": audit["duplicates"],
                     "drained": audit["drained"]})
    change = rss_change(runs[0]["peak_rss_mb"], runs[1]["peak_rss_mb"])
    return {
        "runs": runs,
        "change": change,
        "bound": RSS_BOUND,
        "met": None if change is None else abs(change) <= RSS_BOUND,
        "lost": sum(int(r["lost"]) for r in runs),
        "duplicates": sum(int(r["duplicates"]) for r in runs),
        "drained": all(bool(r["drained"]) for r in runs),
    }, first_index
