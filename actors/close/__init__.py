"""The close: recognised revenue to the general ledger (``erpgw close run`` and, on a schedule,
the ``revenue-gl`` actor)."""

from .revenue_gl import Latest, RunPosting, aggregate_id, period_end, plan_close, revenue_entry
from .runner import RevenueToGl, close_run, previous_period, wait_applied

__all__ = ["Latest", "RevenueToGl", "RunPosting", "aggregate_id", "close_run", "period_end",
           "plan_close", "previous_period", "revenue_entry", "wait_applied"]
