"""The platform simulator: billing, ERP, revenue and CPQ platforms behind one aiohttp app.

Billing issues invoices in bill runs and delivers them as signed webhooks to the gateway (and
lists them for pollers); the ERP takes journal entries in bulk, keeps an append-only posting
record, GL balances and closed periods; ``/sim/v1/audit`` compares the two (``compute_audit``)
to prove no loss, no duplicates and no out-of-order versions. Faults are data: runtime settings
(``PUT /sim/v1/faults``) and a scenario file (``load_scenario``) make the platforms slow,
failing, ambiguous or rate limited, and make billing's webhooks duplicated, reordered,
replayed, badly signed or drifted. A revenue platform takes billing lines in all-or-nothing
batches (without duplicate detection) and a CPQ prices quotes slowly. Each service serves an
OpenAPI 3.1 document. The sim knows only ``contracts``: it serves the wire shapes
in ``contracts.platforms`` exactly as the real platforms would. See docs/simulator.md.

Run it with ``serve(SimConfig(...))`` or mount ``create_app(config)`` in an aiohttp runner.
"""

from __future__ import annotations

from ._app import create_app, serve
from ._audit import AuditReport, FaultInputs, LatencyMs, compute_audit
from ._billing import generate_invoices
from ._config import SimConfig
from ._faults import BillingFaults, CpqFaults, ErpFaults, Faults, HttpFaults, RevenueFaults
from ._netsuite_tba import DEMO_TBA
from ._records import IssuedInvoice, Posting
from ._scenario import Scenario, ScenarioError, load_scenario, parse_scenario

__all__ = [
    "DEMO_SECRETS",
    "AuditReport",
    "BillingFaults",
    "CpqFaults",
    "ErpFaults",
    "FaultInputs",
    "Faults",
    "HttpFaults",
    "IssuedInvoice",
    "LatencyMs",
    "Posting",
    "RevenueFaults",
    "Scenario",
    "ScenarioError",
    "SimConfig",
    "compute_audit",
    "create_app",
    "generate_invoices",
    "load_scenario",
    "parse_scenario",
    "serve",
]

# Every credential the simulator accepts or signs with by default: public, for the demo on
# this machine only (the gateway refuses them for anything off loopback).
DEMO_SECRETS: frozenset[str] = frozenset({
    SimConfig().webhook_secret, SimConfig().partner_webhook_secret, SimConfig().stripe_secret_key,
    DEMO_TBA.consumer_key, DEMO_TBA.consumer_secret, DEMO_TBA.token_id, DEMO_TBA.token_secret,
})
