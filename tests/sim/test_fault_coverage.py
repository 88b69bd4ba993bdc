"""Every fault the simulator can inject is exercised by a test, and latency distributions
delay real HTTP answers by exactly what they draw.

Where each fault kind is tested (over real HTTP unless noted):

=============================  ===========================================================
latency (fixed, distributions)  test_faults (fixed), test_scenario (pure draws, windows),
                                this file (lognormal over HTTP), test_revenue_faults (uniform)
error mixes 500/502/503         test_scenario, test_revenue_faults
429 storms with Retry-After     test_faults, test_scenario, test_revenue_faults
outage windows                  test_faults, test_scenario, test_revenue_faults
commit-then-timeout / -reset    test_faults, test_scenario, test_revenue_faults
connection resets               test_scenario, test_revenue_faults
silent drops                    test_scenario
partial batch failure           test_partial_failure (ERP items), test_revenue_faults (lines)
altered amounts                 test_altered_amount
duplicate / out-of-order /      test_webhook_faults (duplicates, reordering, replays)
replayed webhooks
schema drift                    test_webhook_faults (unknown field, missing field, int to
                                string, renamed enum, nested type change)
signature mangling              test_webhook_faults
=============================  ===========================================================
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import msgspec
import pytest

from sim import SimConfig
from sim._faults import (
    DRIFT_MODES,
    MANGLE_MODES,
    BillingFaults,
    ErpFaults,
    HttpFaults,
    LognormalLatency,
    plan_request,
)

from .conftest import HOST, free_port, running_sim
from .test_erp import entry

BULK = "/erp/v1/journal-entries/bulk"
HERE = Path(__file__).parent


def _knobs() -> list[str]:
    names = [f.name for f in msgspec.structs.fields(HttpFaults)]
    names += [f.name for f in msgspec.structs.fields(BillingFaults)]
    return names + list(DRIFT_MODES) + list(MANGLE_MODES)


@pytest.mark.parametrize("knob", _knobs())
def test_every_fault_setting_and_mode_is_exercised_by_a_sim_test(knob: str) -> None:
    """A new fault setting or mode needs a test here (this file and the helpers aside)."""
    sources = [p.read_text() for p in HERE.glob("test_*.py") if p.name != Path(__file__).name]
    assert any(knob in text for text in sources), f"no sim test mentions {knob}"


async def test_lognormal_latency_delays_each_request_by_its_seeded_draw() -> None:
    seed = 5
    latency = {"dist": "lognormal", "p50_ms": 30, "p99_ms": 120}
    # The delays the sim will draw: the bulk endpoint's generator, in request order.
    rng = random.Random(f"{seed}/http/erp/journal-entries.bulk")
    faults = ErpFaults(latency=LognormalLatency(p50_ms=30, p99_ms=120))
    expected = [plan_request(faults, rng).delay_s for _ in range(12)]
    assert len(set(expected)) == 12 and all(0 < d <= 1.2 for d in expected)
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x",
                       seed=seed)
    async with running_sim(config) as sim:
        await sim.put("/sim/v1/faults", json={"erp": {"latency": latency}})
        for i, delay in enumerate(expected):
            started = time.perf_counter()
            reply = await sim.post(BULK, json={"items": [entry(key=f"k{i}",
                                                               external_id=f"in_{i}")]})
            took = time.perf_counter() - started
            assert reply.status == 200
            assert took >= delay - 0.002  # the drawn delay, whatever the machine's speed
        injected = (await sim.get("/sim/v1/audit")).body["faults"]["http"]
        assert injected["erp/journal-entries.bulk"] == {"latency": 12}


def test_sim_help_documents_the_revenue_section_and_the_amount_fault() -> None:
    from .test_cli import sim_help

    text = sim_help()
    for needle in ("revenue = {", "cpq = {", "alter_amount_rate", "item_reject_rate",
                   "sim/scenarios/month-end.toml", "ERP outage"):
        assert needle in text, needle
