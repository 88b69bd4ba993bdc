"""The whole path as separate processes (broker, simulator, gateway), judged by the
simulator's ground truth: happy path, SIGKILL mid-run, broker restart, crash points, ERP
outage. Every run must end with lost = 0 and duplicates = 0, counted once the system is at rest
(every consumer idle, the counts stable past the short ``ack_wait``): a doubling by a late
redelivery lands before the count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from gateway.stack import DrainResult, Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def assert_clean(result: DrainResult, expected: int) -> None:
    a = result.audit
    assert result.drained, f"did not drain: {a}"
    assert result.quiet, "counted before the system was at rest"
    assert a["issued"] == expected
    assert a["accepted"] == expected
    assert result.lost == 0
    assert a["duplicates"] == 0
    assert a["unexpected"] == 0
    assert a["posted"] + len(result.dlq_keys) == expected
    assert a["amount_posted"] == a["amount_issued"]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # A short ack_wait so redeliveries after a kill arrive within the test's time budget.
    s = Stack(tmp_path, ack_wait_s=2.0, seed=11)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def posted(stack: Stack) -> int:
    return int((await stack.audit())["posted"])


async def wait_until_posted(stack: Stack, at_least: int, timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        while await posted(stack) < at_least:
            await anyio.sleep(0.05)


async def test_happy_path(stack: Stack) -> None:
    await stack.bill_run(500)
    result = await stack.wait_drained(500, stall_timeout=30)
    assert_clean(result, 500)
    assert result.dead_letters == []
    # the gateway drains and exits 0 on SIGTERM
    assert await stack.stop_gateway() == 0


async def test_sigkill_mid_run_loses_and_doubles_nothing(stack: Stack) -> None:
    total = 1500
    await stack.bill_run(total, rate=600)
    for kill_after in (150, 600):
        await wait_until_posted(stack, kill_after)
        stack.kill_gateway()
        await anyio.sleep(0.3)  # webhooks fail meanwhile; the billing platform retries
        await stack.start_gateway()
    result = await stack.wait_drained(total, stall_timeout=45)
    assert_clean(result, total)


async def test_broker_restart_mid_run(stack: Stack) -> None:
    total = 1200
    await stack.bill_run(total, rate=500)
    await wait_until_posted(stack, 200)
    assert stack.broker is not None
    stack.broker.kill()  # SIGKILL the broker: fsync-always means acked messages survive
    await anyio.sleep(1.5)
    await stack.broker.start()
    result = await stack.wait_drained(total, stall_timeout=45)
    assert_clean(result, total)
    assert stack.gateway_running  # the gateway rode it out without a restart
    assert stack.gateway_starts == 1


@pytest.mark.parametrize("point", ["ingress.after_publish", "router.after_publish",
                                   "erp.after_post", "erp.after_commit"])
async def test_crash_points(tmp_path: Path, point: str) -> None:
    s = Stack(tmp_path, ack_wait_s=2.0, seed=5, gateway_env={"GW_CRASH_AT": f"{point}:3"})
    await s.start()
    try:
        await s.bill_run(300)
        assert await s.wait_gateway_exit(timeout=60) == 137
        s.gateway_env = {}
        await s.start_gateway()
        result = await s.wait_drained(300, stall_timeout=30)
        assert_clean(result, 300)
    finally:
        await s.close()


async def test_erp_outage_then_recovery(stack: Stack) -> None:
    await stack.set_faults({"erp": {"outage": True}})
    await stack.bill_run(300)
    # Ingress keeps accepting: the work waits in the stream. Wait for the events that prove
    # it (every webhook accepted, the poster refused by the ERP more than once), not a time.
    await stack.wait_injected("erp", "outage", 2)
    with anyio.fail_after(120):
        while (audit := await stack.audit())["accepted"] < 300:
            await anyio.sleep(0.1)
    assert audit["accepted"] == 300
    assert audit["posted"] == 0
    await stack.set_faults({})
    result = await stack.wait_drained(300, stall_timeout=45)
    assert_clean(result, 300)
    assert result.dead_letters == []
