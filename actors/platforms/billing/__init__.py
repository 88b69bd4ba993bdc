"""The billing platform: its webhook dialects (``erpgw``: the simulator's own format)."""

from .erpgw import BILLING_ROUTES, billing_source, invoice_from_event

__all__ = ["BILLING_ROUTES", "billing_source", "invoice_from_event"]
