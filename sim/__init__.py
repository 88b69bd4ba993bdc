"""The platform simulator: a billing SaaS and a cloud ERP behind one aiohttp app.

Billing issues invoices in bill runs and delivers them as signed webhooks to the gateway; the
ERP takes journal entries in bulk and keeps an append-only posting record; ``/sim/v1/audit``
compares the two (``compute_audit``) to prove no loss and no duplicates. Fault hooks make the
ERP slow, failing or ambiguous. The sim knows only ``contracts``: it serves the wire shapes in
``contracts.platforms`` exactly as the real platforms would.

Run it with ``serve(SimConfig(...))`` or mount ``create_app(config)`` in an aiohttp runner.
"""

from __future__ import annotations

from ._app import create_app, serve
from ._audit import AuditReport, LatencyMs, compute_audit
from ._billing import generate_invoices
from ._config import SimConfig
from ._records import IssuedInvoice, Posting

__all__ = [
    "AuditReport",
    "IssuedInvoice",
    "LatencyMs",
    "Posting",
    "SimConfig",
    "compute_audit",
    "create_app",
    "generate_invoices",
    "serve",
]
