"""The close: recognised revenue to the general ledger (``erpgw close run`` and, on a schedule,
the ``revenue-gl`` actor), and what blocks a period's close (``erpgw close status``, the
``close-watch`` actor and its ``close.blocking`` KPI)."""

from .readiness import BLOCKER_KINDS, Blocker, CloseStatus, OpenLetter, close_blockers
from .revenue_gl import (
    Latest,
    RunPosting,
    aggregate_id,
    group_by_entity,
    period_end,
    plan_close,
    plan_close_entities,
    revenue_entry,
)
from .runner import RevenueToGl, close_run, plan_run, previous_period, wait_applied
from .status import CloseWatch, close_status, kpi_document, open_letters, period_of

__all__ = ["BLOCKER_KINDS", "Blocker", "CloseStatus", "CloseWatch", "Latest", "OpenLetter",
           "RevenueToGl", "RunPosting", "aggregate_id", "close_blockers", "close_run",
           "close_status", "group_by_entity", "kpi_document", "open_letters", "period_end",
           "period_of", "plan_close", "plan_close_entities", "plan_run", "previous_period",
           "revenue_entry", "wait_applied"]
