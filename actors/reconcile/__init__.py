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

__all__ = [
    "BREAK_KINDS",
    "BillingDoc",
    "Break",
    "ErpPosting",
    "Flag",
    "ReconReport",
    "Repost",
    "reconcile",
]
