"""The revenue adapter: issued invoices' billing lines to the revenue platform, each line
recorded there once (the platform has no idempotency key: the gateway's ledger is the guard)."""

from .poster import BREAKER_OPEN, PLATFORM, UPLOAD_PATH, RevenuePoster

__all__ = ["BREAKER_OPEN", "PLATFORM", "UPLOAD_PATH", "RevenuePoster"]
