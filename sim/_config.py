"""The simulator's settings: where it listens, where it delivers webhooks, how it behaves."""

from __future__ import annotations

import msgspec

__all__ = ["SimConfig"]


class SimConfig(msgspec.Struct, kw_only=True):
    """Settings for one simulator process (all platforms share one port).

    ``seed`` makes the invoices, the retry jitter and the fault rolls reproducible;
    ``delivery_concurrency`` is the number of webhook delivery workers and the size of the HTTP
    connection pool; ``erp_max_bulk`` is the most items the ERP's bulk endpoint accepts at once.
    ``tenant`` names the simulated tenant; the sim reports it but does not partition by it.
    """

    host: str = "127.0.0.1"
    port: int = 8700
    webhook_url: str = "http://127.0.0.1:8600/webhooks/billing"
    webhook_secret: str = "whsec_demo"  # noqa: S105 - the public demo secret, not a credential
    delivery_concurrency: int = 32
    seed: int = 7
    erp_max_bulk: int = 1000
    tenant: str = "default"
