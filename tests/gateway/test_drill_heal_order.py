"""Faults that heal together heal the broker before the gateway: a restarted gateway is waited
for until it is ready, which it cannot be while its broker is down (``erpgw demo --faults
erp-outage,...,kill-gateway,broker-restart``: progress jumped past both triggers after the ERP
outage, both fired in one round, and the gateway's restart timed out waiting for the broker)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from gateway.drills import Driller


class _Broker:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.running = True

    def kill(self) -> None:
        self.calls.append("broker.kill")
        self.running = False

    async def start(self) -> None:
        self.calls.append("broker.start")
        self.running = True


class _Stack:
    """What the driller drives: the audit's progress goes through ``posted``, one value per
    round (then stays at the last)."""

    def __init__(self, posted: list[int]) -> None:
        self.calls: list[str] = []
        self.broker = _Broker(self.calls)
        self.nats_cluster = None
        self.posted = posted

    async def audit(self) -> dict[str, Any]:
        n = self.posted.pop(0) if len(self.posted) > 1 else self.posted[0]
        return {"posted": n, "postings": n}

    def kill_gateway(self) -> None:
        self.calls.append("kill_gateway")

    async def start_gateway(self) -> None:
        if not self.broker.running:  # as the real one: not ready without its broker
            raise RuntimeError("gateway not ready: its broker is down")
        self.calls.append("start_gateway")


@pytest.mark.parametrize(("names", "posted"), [
    (["kill-gateway", "broker-restart"], [60]),  # past both triggers in one round
    (["broker-restart", "kill-gateway"], [60]),
    (["kill-gateway", "broker-restart"], [45, 55]),  # the gateway's, then the broker's
])
async def test_the_broker_heals_before_the_gateway_restarts(names: list[str],
                                                            posted: list[int]) -> None:
    stack = _Stack(posted)
    driller = Driller(stack, names, invoices=100)  # type: ignore[arg-type]
    await driller.run()
    assert stack.calls == ["kill_gateway", "broker.kill", "broker.start", "start_gateway"]
    assert all(driller.records[n].healed_at is not None for n in names)


async def test_faults_the_progress_never_reaches_fire_once_the_run_drained() -> None:
    # period-close holds the posted share near 30 % (the rest is dead-lettered): kill-gateway's
    # 40 % trigger is never reached, and the driller waited for it for ever.
    stack = _Stack([30])
    driller = Driller(stack, ["kill-gateway"], invoices=100)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(driller.run)
        await anyio.sleep(0.5)
        assert stack.calls == []  # not fired while the run is under way
        driller.drained()
        with anyio.fail_after(30):  # a liveness bound, not a speed target
            while driller.records["kill-gateway"].healed_at is None:
                await anyio.sleep(0.05)
    assert stack.calls == ["kill_gateway", "start_gateway"]
