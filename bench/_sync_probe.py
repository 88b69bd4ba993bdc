"""The synchronous lane under load: pricing requests over NATS request/reply, timed.

One request every ``interval`` seconds to ``<prefix>.sync.pricing.validate`` for a product from
the simulator's CPQ catalog; each latency is the full round trip as a caller sees it (the lane
calls CPQ for every request). Run once on an idle gateway and once during a flood to compare.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec
import nats
import nats.errors

__all__ = ["SyncProbe"]

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()


class SyncProbe:
    def __init__(self, nats_url: str, subject: str, product: str, currency: str = "USD",
                 interval: float = 0.02, timeout: float = 2.0,
                 options: dict[str, Any] | None = None) -> None:
        self.nats_url, self.subject = nats_url, subject
        self.options = options or {}  # nats.connect credentials
        self.interval, self.timeout = interval, timeout
        self.body = _enc.encode({"currency": currency,
                                 "items": [{"product_id": product, "quantity": 1}]})
        self.latencies_ms: list[float] = []
        self.errors = 0

    async def run(self, *, count: int | None = None,
                  until: anyio.Event | None = None) -> list[float]:
        """Send ``count`` requests, or until ``until`` is set; returns this run's latencies."""
        out: list[float] = []
        nc = await nats.connect(self.nats_url, connect_timeout=5, **self.options)
        try:
            n = 0
            while (count is None or n < count) and not (until is not None and until.is_set()):
                t0 = time.perf_counter()
                try:
                    reply = await nc.request(self.subject, self.body, timeout=self.timeout)
                    doc = _dec.decode(reply.data)
                    if isinstance(doc, dict) and doc.get("status") == "accepted":
                        out.append((time.perf_counter() - t0) * 1000.0)
                    else:
                        self.errors += 1
                except (nats.errors.Error, TimeoutError, msgspec.DecodeError):
                    self.errors += 1
                n += 1
                await anyio.sleep(self.interval)
        finally:
            await nc.close()
        self.latencies_ms += out
        return out
