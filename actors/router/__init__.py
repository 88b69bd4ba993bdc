"""Routers: turn canonical events into the commands of the commercial lifecycle."""

from .invoices import AccountMap, InvoiceRouter, journal_for_invoice, plan_invoice

__all__ = ["AccountMap", "InvoiceRouter", "journal_for_invoice", "plan_invoice"]
