"""The usage flood: N seeded usage records fired at the gateway's ``POST /usage/v1/records`` at
maximum rate, alongside a leg's invoices, judged by the simulator's audit (``usage`` section).

The simulator makes the records (``POST /sim/v1/usage-runs``, so its audit knows them); the
flood sends them in requests of ``CHUNK`` records from ``SENDERS`` concurrent senders, as fast
as the gateway answers (it answers after the records are stored in the usage stream). The
usage lane's throughput is records recorded at the revenue platform (the last effect) per
second, from the first request to the moment the audit counts them all.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

__all__ = ["TOKEN", "UsageFlood"]

TOKEN = "usage_demo_token"  # the gateway's public demo token, not a credential
CHUNK = 500
SENDERS = 4
MAX_RUN = 100_000  # the simulator's largest usage run


class UsageFlood:
    def __init__(self, gateway_url: str, sim_url: str, count: int, *, seed: int = 7,
                 token: str = TOKEN) -> None:
        self.gateway_url, self.sim_url = gateway_url, sim_url
        self.count, self.seed, self.token = count, seed, token
        self.records: list[Any] = []
        self.errors = 0
        self.t_start = self.t_sent = self.t_done = 0.0
        self.audit: dict[str, Any] = {}

    async def prepare(self, http: aiohttp.ClientSession) -> None:
        """Ask the simulator for the records (before the leg, so making them costs nothing
        during it). Raises ``RuntimeError`` when it refuses."""
        left = self.count
        while left > 0:
            n = min(left, MAX_RUN)
            async with http.post(f"{self.sim_url}/sim/v1/usage-runs",
                                 json={"count": n, "seed": self.seed}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"usage run refused: HTTP {resp.status}")
                self.records += (await resp.json())["records"]
            left -= n

    async def send(self, http: aiohttp.ClientSession) -> None:
        """Fire every record; a refused request is retried a few times, then counted."""
        chunks = [self.records[i:i + CHUNK] for i in range(0, len(self.records), CHUNK)]
        url = f"{self.gateway_url}/usage/v1/records"
        headers = {"Authorization": f"Bearer {self.token}",
                   "Content-Type": "application/json"}
        self.t_start = time.time()

        async def sender() -> None:
            while chunks:
                body = json.dumps(chunks.pop()).encode()
                for _ in range(5):
                    try:
                        async with http.post(url, data=body, headers=headers) as resp:
                            await resp.read()
                            if resp.status == 200:
                                break
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(0.5)
                else:
                    self.errors += 1

        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        self.t_sent = time.time()

    def observe(self, usage: dict[str, Any] | None) -> bool:
        """Take the audit's ``usage`` section; True once every record is recorded at the
        revenue platform (the flood is over)."""
        self.audit = usage or {}
        done = int(self.audit.get("revenue_recorded", 0)) >= self.count
        if done and not self.t_done:
            self.t_done = time.time()
        return done

    def figures(self) -> dict[str, Any]:
        a = self.audit
        span = (self.t_done or time.time()) - self.t_start
        return {
            "records": self.count,
            "complete": bool(self.t_done),
            "throughput_eps": round(int(a.get("revenue_recorded", 0)) / span, 1)
            if span > 0 else None,
            "intake_eps": round(self.count / (self.t_sent - self.t_start), 1)
            if self.t_sent > self.t_start else None,
            "wall_s": round(span, 3),
            "request_errors": self.errors,
            "billed": a.get("billed"), "revenue_recorded": a.get("revenue_recorded"),
            "aggregates": a.get("aggregates"),
            "lost": int(a.get("billing_missing", 0)) + int(a.get("revenue_missing", 0)),
            "duplicates": int(a.get("billing_duplicates", 0))
            + int(a.get("revenue_duplicates", 0)),
            "sum_ok": a.get("amount_billed") == a.get("amount_revenue"),
        }
