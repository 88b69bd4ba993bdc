"""``erpgw bench``: fire peak-billing loads through the real stack and hold the gateway to
account against the raw stack and a peer measured in the same run (issue 8).

``run_peak_billing(BenchOptions(...))`` returns the report; ``render_human`` prints it.
The baselines run in their own processes via ``python -m bench.baseline``. See
docs/benchmarks.md for what is measured and how.

The names below are imported on first use (PEP 562), not with the package: every baseline and
load-generator process imports ``bench.<module>``, and loading the whole stack driver there
(the gateway, the simulator, the drills) cost each of those processes about a second of start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {"TARGETS": "_report", "build_report": "_report", "render_human": "_report",
         "verdicts": "_report", "PROFILES": "_run", "BenchOptions": "_run",
         "plan_legs": "_run", "run_peak_billing": "_run", "write_outputs": "_run"}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
