"""Faults of the gateway process itself (F3 graceful stop under load, F4 an actor that keeps
raising, F5 a restart storm, F31 a full ledger disk), each against the whole stack."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from gateway.stack import Stack

from .test_end_to_end import assert_clean, wait_until_posted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_sigterm_under_load_drains_and_exits_cleanly(tmp_path: Path) -> None:
    """F3: SIGTERM mid-run: the gateway stops on its own with exit 0 (not killed after the
    stop timeout); after a restart nothing is lost or doubled."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=51)
    await stack.start()
    try:
        await stack.bill_run(1200, rate=600)
        await wait_until_posted(stack, 300)
        assert await stack.stop_gateway(timeout=60) == 0  # SIGKILL after 60 s would be -9
        assert "gateway stopped cleanly" in stack.tail("gateway.log", 50)
        await stack.start_gateway()
        result = await stack.wait_drained(1200, stall_timeout=45)
        assert_clean(result, 1200)
    finally:
        await stack.close()


async def test_a_crashing_actor_is_restarted_alone(tmp_path: Path) -> None:
    """F4: the ERP poster raises every 250 messages; the supervisor restarts it alone, the
    ingress keeps accepting, and every invoice is posted exactly once."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=52,
                  gateway_env={"GW_FAULT": "erp.raise_every:250"},
                  gateway_toml="[supervisor]\nintensity = 20\n")
    await stack.start()
    try:
        await stack.bill_run(900)
        result = await stack.wait_drained(900, stall_timeout=60)
        assert_clean(result, 900)
        log = stack.tail("gateway.log", 5000)
        assert log.count("child 'erp-journal' failed") >= 2
        assert "child 'billing-ingress' failed" not in log
        assert stack.gateway_running and stack.gateway_starts == 1
    finally:
        await stack.close()


async def test_restart_storm_escalates_and_exits_nonzero(tmp_path: Path) -> None:
    """F5: an actor that fails at every start exhausts the restart intensity: the gateway
    stops everything and exits non-zero instead of looping hot."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=53,
                  gateway_toml="[supervisor]\nintensity = 3\nperiod_s = 30\n")
    await stack.start()
    try:
        stack.gateway_env = {"GW_FAULT": "erp.fail_start"}
        await stack.stop_gateway()
        with pytest.raises(Exception, match="exited with code 1"):
            await stack.start_gateway()
        log = stack.tail("gateway.log", 200)
        assert log.count("fails at start") >= 4  # intensity 3: the 4th failure escalates
        assert "escalat" in log
    finally:
        await stack.close()


async def test_full_ledger_disk_blocks_acks_then_recovers(tmp_path: Path) -> None:
    """F31: the ledger cannot grow: postings reach the ERP but nothing is acked; once the
    space is back (restart without the limit) every invoice is posted exactly once and the
    ledger is intact."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=54)
    await stack.start()
    try:
        await stack.stop_gateway()
        db = tmp_path / "gateway" / "ledger.db"
        with sqlite3.connect(db) as conn:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
        stack.gateway_env = {"GW_FAULT": f"ledger.max_page_count:{pages + 2}"}
        await stack.start_gateway()
        await stack.bill_run(400)
        with anyio.fail_after(60):
            while "[ledger.unavailable]" not in stack.tail("gateway.log", 2000):
                await anyio.sleep(0.2)
        await stack.stop_gateway()
        stack.gateway_env = {}
        await stack.start_gateway()
        result = await stack.wait_drained(400, stall_timeout=60)
        assert_clean(result, 400)
        assert result.dead_letters == []
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute(
                "SELECT COUNT(*) FROM postings WHERE status = 'posted'").fetchone()[0] == 400
    finally:
        await stack.close()
