"""The close: recognised revenue to the general ledger (``erpgw close run``)."""

from .revenue_gl import Latest, RunPosting, aggregate_id, period_end, plan_close, revenue_entry

__all__ = ["Latest", "RunPosting", "aggregate_id", "period_end", "plan_close", "revenue_entry"]
