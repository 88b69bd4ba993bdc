"""``erpgw bench``: fire peak-billing loads through the real stack and hold the gateway to
account against the raw stack and a peer measured in the same run (issue 8).

``run_peak_billing(BenchOptions(...))`` returns the report; ``render_human`` prints it.
The baselines run in their own processes via ``python -m bench.baseline``. See
docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

from ._report import TARGETS, build_report, render_human, verdicts
from ._run import PROFILES, BenchOptions, plan_legs, run_peak_billing, write_outputs

__all__ = [
    "PROFILES",
    "TARGETS",
    "BenchOptions",
    "build_report",
    "plan_legs",
    "render_human",
    "run_peak_billing",
    "verdicts",
    "write_outputs",
]
