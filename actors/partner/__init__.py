"""The partner portal's webhooks: deal registrations and decisions as canonical messages."""

from .mapping import PARTNER_ROUTES, deal_approved, deal_registered, deal_rejected

__all__ = ["PARTNER_ROUTES", "deal_approved", "deal_registered", "deal_rejected"]
