"""The reconciler: billing vs the ERP, the revenue platform, the GL, the payables and the
gateway's ledger, and the safe repairs."""

from .books import (
    GlDoc,
    GlRow,
    Payable,
    Settlement,
    expected_balances,
    reconcile_gl,
    reconcile_payables,
)
from .matching import (
    BREAK_KINDS,
    EXPLAINED_KINDS,
    Action,
    BillingDoc,
    Break,
    ErpPosting,
    Flag,
    ReconReport,
    Repost,
    Reupload,
    reconcile,
)
from .overview import Overview, overview
from .revenue import LedgerView, RevenueDoc, RevenueRecord, reconcile_revenue
from .runner import GL_ROLES, Reader, Reconciler, RunResult, run_once, summary

__all__ = [
    "BREAK_KINDS",
    "EXPLAINED_KINDS",
    "GL_ROLES",
    "Action",
    "BillingDoc",
    "Break",
    "ErpPosting",
    "Flag",
    "GlDoc",
    "GlRow",
    "LedgerView",
    "Overview",
    "Payable",
    "Reader",
    "ReconReport",
    "Reconciler",
    "Repost",
    "Reupload",
    "RevenueDoc",
    "RevenueRecord",
    "RunResult",
    "Settlement",
    "expected_balances",
    "overview",
    "reconcile",
    "reconcile_gl",
    "reconcile_payables",
    "reconcile_revenue",
    "run_once",
    "summary",
]
