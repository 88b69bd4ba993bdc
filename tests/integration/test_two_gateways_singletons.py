"""Two gateway processes on one broker (``erpgw up`` each, with its own data directory): the
reconciler runs in the one holding its lease, both name that holder in ``/status``, and each
process's rate limiter counts two members (half of each account's budget). SIGKILL the holder:
the other takes the lease over once its key expired, runs the reconciliations from then on,
and counts one member again (the whole budget)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.stack import Stack

from .conftest import actor_stats

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOML = ("[scale_out]\nlease_ttl_s = 3.0\n"
        "[reconcile]\ninterval_s = 0.5\ngrace_s = 0\nlegs = []\n")


async def stats(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reconciler's and the ERP account budget's statistics of one process."""
    recon = await actor_stats(url, "reconciler")
    limiter = await actor_stats(url, "rate-limiter")
    return recon, limiter["accounts"]["erp"]


async def test_one_reconciler_across_two_gateways_and_a_takeover_after_a_kill(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=33, gateway_toml=TOML)
    await stack.start()
    peer = await stack.start_peer_gateway("gateway-b")
    try:
        urls = [stack.admin_url, peer.admin_url]
        with anyio.fail_after(60):  # a guard against a hang, not a speed target
            while True:
                seen = [await stats(u) for u in urls]
                recon = [r for r, _ in seen]
                holders = {r["lease"]["holder"] for r in recon}
                if (all(erp["members"] == 2 for _, erp in seen)
                        and sum(r["lease"]["held"] for r in recon) == 1 and len(holders) == 1
                        and any(r["runs"] >= 2 for r in recon)
                        and all(r["skipped"] >= 1 for r in recon if not r["lease"]["held"])):
                    break
                await anyio.sleep(0.2)
        for _, erp in seen:  # half of the configured ERP budget (rate 50, burst 20)
            assert (erp["configured_rate"], erp["burst"]) == (25.0, 10)
        first = 0 if recon[0]["lease"]["held"] else 1
        other = 1 - first
        assert recon[first]["lease"]["me"] == holders.pop()
        assert recon[other]["runs"] == 0 and recon[other]["skipped"] >= 1
        # SIGKILL the holder: no release, its key must expire.
        if first == 0:
            stack.kill_gateway()
        else:
            peer.proc.kill()
            peer.proc.wait()
        with anyio.fail_after(60):
            while True:
                r, erp = await stats(urls[other])
                if r["lease"]["held"] and r["runs"] >= 1 and erp["members"] == 1:
                    break
                await anyio.sleep(0.2)
        assert r["lease"]["acquired"] == 1 and r["lease"]["holder"] == r["lease"]["me"]
        assert (erp["configured_rate"], erp["burst"]) == (50.0, 20)
    finally:
        await stack.stop_process(peer.proc)
        await stack.close()
