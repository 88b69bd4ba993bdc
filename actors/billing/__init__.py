"""The webhook adapters: signed platform events in (billing, partner portal), canonical
messages out."""

from .ingress import BillingIngress, IngressSettings, WebhookSource
from .mapping import BILLING_ROUTES, EventRoute, Inbound, invoice_from_event

__all__ = ["BILLING_ROUTES", "BillingIngress", "EventRoute", "Inbound", "IngressSettings",
           "WebhookSource", "invoice_from_event"]
