"""The billing adapter: signed webhooks in, canonical invoice events out."""

from .ingress import BillingIngress, IngressSettings
from .mapping import invoice_from_event

__all__ = ["BillingIngress", "IngressSettings", "invoice_from_event"]
