"""Runtime faults of the revenue platform and the CPQ (``PUT /sim/v1/faults`` sections
``revenue`` and ``cpq``), over real HTTP: latency, error mixes, 429 storms with Retry-After,
outages, commit-then-timeout, connection resets, partial batch failure (rejected lines)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from sim import SimConfig
from sim._revenue import rejects_line

from .conftest import HOST, Http, free_port, running_sim
from .test_revenue_cpq import BATCHES, line

PRICE = "/cpq/v1/price"
QUOTE = {"currency": "USD", "items": [{"product": "prod_seats", "quantity": 2}]}


async def upload(sim: Http, *ns: int, **kw: Any) -> Any:
    return await sim.post(BATCHES, json={"lines": [line(n) for n in ns]}, **kw)


async def audit(sim: Http) -> dict[str, Any]:
    body: dict[str, Any] = (await sim.get("/sim/v1/audit")).body
    return body


async def test_latency_delays_uploads_and_is_counted(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"latency_ms": 120}})
    started = time.perf_counter()
    assert (await upload(sim, 1)).status == 201
    assert time.perf_counter() - started >= 0.12
    assert (await audit(sim))["faults"]["http"]["revenue/batches"] == {"latency": 1}


async def test_latency_distribution_draws_within_its_bounds(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"latency": {
        "dist": "uniform", "min_ms": 40, "max_ms": 80}}})
    took = []
    for n in range(5):
        started = time.perf_counter()
        assert (await upload(sim, n + 1)).status == 201
        took.append(time.perf_counter() - started)
    assert min(took) >= 0.04
    assert max(took) < 1.0  # well below anything but the drawn delay plus overhead


async def test_error_mix_answers_its_statuses_and_records_nothing(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {
        "error_rate": 1.0, "error_mix": {"500": 1, "502": 1, "503": 1}}})
    statuses = [(await upload(sim, n + 1)).status for n in range(30)]
    assert set(statuses) == {500, 502, 503}
    a = await audit(sim)
    assert a["revenue"]["lines"] == 0
    injected = a["faults"]["http"]["revenue/batches"]
    assert {k: injected[k] for k in ("error_500", "error_502", "error_503")} == {
        f"error_{s}": statuses.count(s) for s in (500, 502, 503)}


async def test_429_storm_carries_retry_after(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"rate_limit_rate": 1.0,
                                                      "retry_after_s": 7}})
    reply = await upload(sim, 1)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "7"
    assert reply.body["code"] == "revenue.rate_limited"
    assert (await audit(sim))["revenue"]["lines"] == 0


async def test_outage_answers_503_on_every_revenue_route_until_cleared(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"outage": True}})
    reply = await upload(sim, 1)
    assert (reply.status, reply.body["code"]) == (503, "revenue.unavailable")
    assert (await sim.get(f"{BATCHES}/RB-1")).status == 503
    assert (await sim.post("/erp/v1/journal-entries/bulk", json={"items": []})).status == 200
    await sim.delete("/sim/v1/faults")
    assert (await upload(sim, 1)).status == 201


async def test_commit_then_timeout_records_the_batch_and_a_resend_doubles_it(
        sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"commit_then_timeout_rate": 1.0}})
    with pytest.raises(TimeoutError):
        await upload(sim, 1, 2, client_timeout=0.3)
    await sim.delete("/sim/v1/faults")
    assert (await audit(sim))["revenue"]["lines"] == 2  # recorded although never answered
    assert (await upload(sim, 1, 2)).status == 201  # no dedupe: the blind resend doubles
    a = await audit(sim)
    assert (a["revenue"]["lines"], a["revenue"]["duplicate_lines"]) == (4, 2)
    assert a["faults"]["http"]["revenue/batches"]["commit_then_timeout"] == 1


async def test_reset_before_commit_records_nothing(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"reset_rate": 1.0}})
    with pytest.raises(aiohttp.ClientOSError):
        await upload(sim, 1)
    assert (await audit(sim))["revenue"]["lines"] == 0


async def test_commit_then_reset_records_the_batch(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"revenue": {"commit_then_reset_rate": 1.0}})
    with pytest.raises(aiohttp.ClientOSError):
        await upload(sim, 1)
    assert (await audit(sim))["revenue"]["lines"] == 1


def test_line_rejection_is_seeded_per_line_id() -> None:
    ids = [f"in_{n:06d}:il_{n:06d}_1" for n in range(2000)]
    picked = [i for i in ids if rejects_line(11, i, 0.1)]
    assert picked == [i for i in ids if rejects_line(11, i, 0.1)]
    assert 140 <= len(picked) <= 260
    assert picked != [i for i in ids if rejects_line(12, i, 0.1)]
    assert not any(rejects_line(11, i, 0.0) for i in ids)


async def test_partial_batch_failure_rejects_the_batch_naming_the_lines(sim: Http) -> None:
    seed = 11  # the sim fixture's seed
    ns = list(range(1, 41))
    bad = [n for n in ns if rejects_line(seed, line(n)["lineId"], 0.2)]
    assert bad and len(bad) < len(ns)
    await sim.put("/sim/v1/faults", json={"revenue": {"item_reject_rate": 0.2}})
    reply = await upload(sim, *ns)
    assert (reply.status, reply.body["status"], reply.body["batchId"]) == (422, "rejected", None)
    assert [(e["index"], e["code"]) for e in reply.body["errors"]] == [
        (ns.index(n), "VALIDATION") for n in bad]
    # the same lines are rejected again when resent; the others go through without them
    again = await upload(sim, *bad)
    assert again.status == 422 and len(again.body["errors"]) == len(bad)
    good = [n for n in ns if n not in bad]
    assert (await upload(sim, *good)).status == 201
    a = await audit(sim)
    assert a["revenue"]["lines"] == len(good)
    assert a["revenue"]["rejected_lines"] == len(bad)
    assert a["faults"]["http"]["revenue/batches"]["item_rejected"] == 2 * len(bad)


async def test_cpq_section_fails_and_delays_pricing() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x", seed=3)
    async with running_sim(config) as sim:
        await sim.put("/sim/v1/faults", json={"cpq": {"outage": True}})
        reply = await sim.post(PRICE, json=QUOTE)
        assert (reply.status, reply.body["code"]) == (503, "cpq.unavailable")
        assert (await sim.get("/cpq/v1/products")).status == 503
        await sim.put("/sim/v1/faults", json={"cpq": {"latency_ms": 100}})
        started = time.perf_counter()
        assert (await sim.post(PRICE, json=QUOTE)).status == 200
        assert time.perf_counter() - started >= 0.1
        assert (await upload(sim, 1)).status == 201  # revenue is not affected


async def test_scenario_faults_section_sets_revenue_faults_from_the_start() -> None:
    from sim import parse_scenario

    scenario = parse_scenario('[faults]\nrevenue = { outage = true }\n')
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x",
                       scenario=scenario)
    async with running_sim(config) as sim:
        assert (await upload(sim, 1)).status == 503
    assert any("revenue [outage=True]" in text for text in scenario.describe())
