"""Python's cyclic garbage collector, tuned for the gateway daemon (``[runtime]``).

Every event makes many short-lived objects (decoded messages, envelopes, rows, futures), few of
them in reference cycles. With Python's default thresholds (700, 10, 10) a gateway at 1,000
invoices/s ran about 350 young collections a second and a full collection, which walks every
object the process holds, of about 45 ms every second or so: a tenth of the event loop's time,
and the longest pauses any webhook or pricing request waited through (docs/benchmarks.md,
"Seventh round"). ``erpgw up`` raises the thresholds before it starts, and once the gateway has
started collects once and freezes what exists then (configuration, actors, connections, the
modules' objects: it lives as long as the process), so later full collections walk only what
came after. Reference counting frees everything else as before; only cycles wait longer.
"""

from __future__ import annotations

import gc
import logging

from .config import RuntimeConfig

__all__ = ["freeze_started", "set_thresholds"]

log = logging.getLogger("erpgw.runtime")


def set_thresholds(settings: RuntimeConfig) -> None:
    """The collector's thresholds from ``settings`` (before the gateway starts)."""
    first, second, third = settings.gc_threshold
    gc.set_threshold(first, second, third)


def freeze_started(settings: RuntimeConfig) -> None:
    """Once the gateway has started: collect, then freeze what survives (``gc_freeze``)."""
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    log.info("garbage collector: thresholds %s, %s objects frozen at start",
             ",".join(str(t) for t in gc.get_threshold()),
             gc.get_freeze_count() if settings.gc_freeze else "no")
