"""The revenue adapter: issued invoices' billing lines to the revenue platform, each line
recorded there once (the platform has no idempotency key: the gateway's ledger is the guard)."""

from ..guard import PlatformGuard
from .poster import PLATFORM, UPLOAD_PATH, RevenuePoster

__all__ = ["PLATFORM", "UPLOAD_PATH", "PlatformGuard", "RevenuePoster"]
