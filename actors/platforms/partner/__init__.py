"""The partner portal: its deal webhooks as canonical messages (``erpgw`` dialect)."""

from .erpgw import PARTNER_ROUTES, deal_approved, deal_registered, deal_rejected, partner_source

__all__ = ["PARTNER_ROUTES", "deal_approved", "deal_registered", "deal_rejected",
           "partner_source"]
