"""The reconciler: ERP vs billing vs the gateway's ledger, and the safe repairs."""

from .matching import (
    BREAK_KINDS,
    BillingDoc,
    Break,
    ErpPosting,
    Flag,
    ReconReport,
    Repost,
    reconcile,
)
from .runner import Reconciler, RunResult, run_once, summary

__all__ = [
    "BREAK_KINDS",
    "BillingDoc",
    "Break",
    "ErpPosting",
    "Flag",
    "ReconReport",
    "Reconciler",
    "Repost",
    "RunResult",
    "reconcile",
    "run_once",
    "summary",
]
