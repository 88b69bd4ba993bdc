"""The simulator's settings: where it listens, where it delivers webhooks, how it behaves."""

from __future__ import annotations

from typing import Literal

import msgspec

from ._scenario import Scenario

__all__ = ["SimConfig"]


class SimConfig(msgspec.Struct, kw_only=True):
    """Settings for one simulator process (all platforms share one port).

    ``seed`` makes the invoices, the retry jitter and the fault rolls reproducible;
    ``delivery_concurrency`` is the number of webhook delivery workers and the size of the HTTP
    connection pool; ``erp_max_bulk`` is the most items the ERP's bulk endpoint accepts at once.
    ``tenant`` names the simulated tenant; the sim reports it but does not partition by it.

    ``scenario`` (optional) is a fault schedule and workload (``sim.load_scenario``).
    ``erp_concurrency_limit`` caps the ERP requests in flight account-wide (0: no cap); one
    more is answered 429 ``SSS_REQUEST_LIMIT_EXCEEDED``. ``billing_rate_limit`` caps billing
    API requests per second (0: no cap) with bursts of ``billing_rate_burst``; above it the
    billing API answers 429 with ``Retry-After``. ``revenue_max_batch`` is the most lines one
    revenue upload takes; ``cpq_latency_ms`` is the base latency of CPQ pricing (scenario
    windows add to it). Deal runs (the partner portal) deliver their webhooks to
    ``partner_webhook_url`` signed with ``partner_webhook_secret`` (header
    ``Partner-Signature``) unless a run names another URL.
    """

    host: str = "127.0.0.1"
    port: int = 8700
    webhook_url: str = "http://127.0.0.1:8600/webhooks/billing"
    webhook_secret: str = "whsec_demo"  # noqa: S105 - the public demo secret, not a credential
    delivery_concurrency: int = 32
    seed: int = 7
    erp_max_bulk: int = 1000
    tenant: str = "default"
    scenario: Scenario | None = None
    erp_concurrency_limit: int = 0
    billing_rate_limit: float = 0.0
    billing_rate_burst: int = 10
    revenue_max_batch: int = 500
    cpq_latency_ms: int = 0
    partner_webhook_url: str = "http://127.0.0.1:8600/webhooks/partner"
    partner_webhook_secret: str = "whsec_partner_demo"  # noqa: S105 - public demo secret
    # The ERP's dialect: "erpgw" (the bulk API) or "netsuite" (SuiteTalk REST with TBA, its
    # concurrency limit and per-request latency; sim/_netsuite.py).
    erp_dialect: Literal["erpgw", "netsuite"] = "erpgw"
    netsuite_concurrency_limit: int = 5
    netsuite_latency_ms: int = 30
    # The billing platform's wire format: "erpgw" (its own) or "stripe" (Stripe-shaped events
    # signed with Stripe-Signature, and Stripe's /v1/events and /v1/invoices lists, which
    # check ``Authorization: Bearer <stripe_secret_key>``).
    billing_dialect: str = "erpgw"
    stripe_secret_key: str = "sk_test_erpgw_demo"  # noqa: S105 - the public demo key
    # HTTPS (sim/_tls.py): every platform served over TLS only with this certificate chain
    # and key (PEM files, both or neither; empty: plain HTTP), and the CA bundle the webhook
    # sender verifies the receiver's certificate with (empty: the system's trust store).
    tls_cert: str = ""
    tls_key: str = ""
    webhook_ca_file: str = ""
