"""Flow 3, payment to settlement: cash application (with parking), partner commissions and
their settlements at the partner portal and in the ERP (docs/flows.md)."""

from .attribution import AttributionClient
from .cash import PaymentRouter, plan_cash
from .commissions import CommissionRouter, plan_commissions
from .settlement import SettlementPoster

__all__ = ["AttributionClient", "CommissionRouter", "PaymentRouter", "SettlementPoster",
           "plan_cash", "plan_commissions"]
