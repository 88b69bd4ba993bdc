"""Fault injection for the simulated ERP: the settings, and the pure decision per request.

``PUT /sim/v1/faults`` replaces the settings, ``DELETE`` clears them, ``GET`` shows them. The
decision for one bulk request (``plan_bulk``) draws from a seeded ``random.Random`` in a fixed
order, so a run with the same seed and the same request sequence fails the same requests.
"""

from __future__ import annotations

import random
from typing import Annotated

import msgspec

__all__ = ["BulkPlan", "ErpFaults", "Faults", "plan_bulk"]

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class ErpFaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How ``POST /erp/v1/journal-entries/bulk`` misbehaves.

    ``error_rate``: that share of requests answers ``status`` (a JSON error) and commits
    nothing; ``outage``: every request answers 503; ``latency_ms``: sleep before answering;
    ``commit_then_timeout_rate``: that share commits the postings, then sleeps 30 s before
    answering, so the caller times out without knowing the outcome.
    """

    error_rate: Rate = 0.0
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 0
    outage: bool = False
    commit_then_timeout_rate: Rate = 0.0


class Faults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """All fault settings; the body of ``PUT``/``GET /sim/v1/faults``.

    Unknown fields are refused (400) so that a misspelt fault is not silently ignored.
    """

    erp: ErpFaults = msgspec.field(default_factory=ErpFaults)


class BulkPlan(msgspec.Struct, frozen=True):
    """What the bulk handler does for one request, decided before it reads the body.

    ``fail_status`` (when set) answers that status and commits nothing;
    ``commit_then_timeout`` commits, then stalls the answer.
    """

    delay_s: float = 0.0
    fail_status: int | None = None
    commit_then_timeout: bool = False


def plan_bulk(faults: ErpFaults, rng: random.Random) -> BulkPlan:
    """Decide the fate of one bulk request. Draws from ``rng`` only for rates above zero.

    Raises nothing. Precedence: outage, then ``error_rate``, then commit-then-timeout.
    """
    delay_s = faults.latency_ms / 1000.0
    if faults.outage:
        return BulkPlan(delay_s=delay_s, fail_status=503)
    if faults.error_rate > 0.0 and rng.random() < faults.error_rate:
        return BulkPlan(delay_s=delay_s, fail_status=faults.status)
    stall = faults.commit_then_timeout_rate > 0.0 and rng.random() < faults.commit_then_timeout_rate
    return BulkPlan(delay_s=delay_s, commit_then_timeout=stall)
