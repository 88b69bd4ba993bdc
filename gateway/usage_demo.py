"""Flow 4 in ``erpgw demo``: a usage run sent through the gateway, judged by the simulator.

The simulator makes ``count`` seeded usage records (``POST /sim/v1/usage-runs``, its ground
truth); they are sent to the gateway's ``POST /usage/v1/records`` in requests of ``CHUNK``
(the first request twice, as a sender retrying would), then the audit's ``usage`` section is
polled until every record is recorded at the revenue platform or nothing moves for
``stall_timeout`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import msgspec

from actors.infra.http import HttpClient

from .stack import Stack

__all__ = ["CHUNK", "USAGE_RECORDS", "run_usage"]

CHUNK = 250
USAGE_RECORDS = 1000  # the demo's usage run
_dec = msgspec.json.Decoder()


DEMO_TOKEN = "usage_demo_token"  # noqa: S105 - the public default of usage.api_tokens


async def run_usage(stack: Stack, count: int, *, seed: int, token: str = DEMO_TOKEN,
                    stall_timeout: float = 60.0) -> dict[str, Any]:
    """``flows.usage`` of the demo: ``{"completed", "expected", "lost", "duplicates",
    "drained", "amount_ok"}``. Raises ``GatewayError`` when the simulator or the gateway
    refuses a request (a bad token, a stopped process)."""
    async with HttpClient(stack.sim_url, timeout=30.0, platform="simulator",
                          ca_file=stack.ca_file) as sim, \
            HttpClient(stack.gateway_url, timeout=30.0, platform="gateway",
                       ca_file=stack.ca_file) as gw:
        run = _dec.decode((await sim.post("/sim/v1/usage-runs", msgspec.json.encode(
            {"count": count, "seed": seed}))).body)
        records = run["records"]
        chunks = [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]
        auth = {"Authorization": f"Bearer {token}"}
        for chunk in [*chunks, *chunks[:1]]:  # the first request again: counted once
            await gw.post("/usage/v1/records", msgspec.json.encode(chunk), headers=auth)
        last, moved = -1, time.monotonic()
        usage: dict[str, Any] = {}
        while True:
            usage = _dec.decode((await sim.get("/sim/v1/audit")).body).get("usage") or {}
            done = int(usage.get("revenue_recorded", 0))
            if done >= count:
                # Count at rest: a record doubled by a late redelivery is in the audit then.
                rest = await stack.wait_quiet(timeout=stall_timeout)
                usage = rest.audit.get("usage") or usage
                break
            if done != last:
                last, moved = done, time.monotonic()
            elif time.monotonic() - moved > stall_timeout:
                break
            await anyio.sleep(0.25)
    lost = int(usage.get("billing_missing", 0)) + int(usage.get("revenue_missing", 0))
    dups = int(usage.get("billing_duplicates", 0)) + int(usage.get("revenue_duplicates", 0))
    return {"completed": int(usage.get("revenue_recorded", 0)), "expected": count,
            "lost": lost, "duplicates": dups,
            "drained": int(usage.get("revenue_recorded", 0)) >= count,
            "amount_ok": usage.get("amount_billed") == usage.get("amount_revenue")}
