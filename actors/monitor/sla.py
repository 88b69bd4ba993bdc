"""The ``[sla]`` section: the business KPIs' targets and how often they are evaluated."""

from __future__ import annotations

import math

import msgspec

__all__ = ["LOWER_BOUND", "SlaConfig"]

# KPIs whose SLA target is a lower bound (breached below it); the others are upper bounds.
LOWER_BOUND = frozenset({"revenue_event_accuracy"})


class SlaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[sla]`` section: targets of the business KPIs and how often they are evaluated.

    Latency and recovery targets are upper bounds; ``0`` means "no target". ``dlq_unresolved``
    is the most unresolved dead letters tolerated (``0`` is a real target: none); leave it out
    for no target. ``revenue_event_accuracy`` is a lower bound (breached below it), within
    0..1, 0 for no target. Raises ``ValueError`` (``msgspec.ValidationError`` from config)
    for a negative value, an accuracy above 1 or a non-positive interval.
    """

    invoice_posting_p50_ms: float = 0.0
    invoice_posting_p95_ms: float = 0.0
    invoice_posting_p99_ms: float = 5000.0
    failure_recovery_s: float = 300.0
    dlq_unresolved: int | None = None
    kpi_interval_s: float = 5.0
    # A lower bound (0..1; 0: no target): lines uploaded exactly once / lines that should be.
    revenue_event_accuracy: float = 0.0

    def __post_init__(self) -> None:
        for name in ("invoice_posting_p50_ms", "invoice_posting_p95_ms",
                     "invoice_posting_p99_ms", "failure_recovery_s"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be finite and >= 0 (0: no target), got {value}")
        if self.dlq_unresolved is not None and self.dlq_unresolved < 0:
            raise ValueError(f"dlq_unresolved must be >= 0, got {self.dlq_unresolved}")
        if not 0 < self.kpi_interval_s < math.inf:
            raise ValueError(f"kpi_interval_s must be finite and > 0, got {self.kpi_interval_s}")
        if not 0 <= self.revenue_event_accuracy <= 1:
            raise ValueError("revenue_event_accuracy must be within 0..1 (0: no target), got "
                             f"{self.revenue_event_accuracy}")

    def targets(self) -> dict[str, float]:
        """The targets in force, by KPI name (absent or 0: not checked)."""
        out: dict[str, float] = {}
        for name in ("invoice_posting_p50_ms", "invoice_posting_p95_ms",
                     "invoice_posting_p99_ms", "failure_recovery_s"):
            if getattr(self, name) > 0:
                out[name] = float(getattr(self, name))
        if self.dlq_unresolved is not None:
            out["dlq_unresolved"] = float(self.dlq_unresolved)
        if self.revenue_event_accuracy > 0:
            out["revenue_event_accuracy"] = float(self.revenue_event_accuracy)
        return out
