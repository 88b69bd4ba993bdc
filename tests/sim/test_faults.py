"""Fault hooks of the simulated ERP: the pure plan, then the effects over real HTTP."""

from __future__ import annotations

import random
import time

import pytest

from sim import SimConfig
from sim._faults import BulkPlan, ErpFaults, plan_bulk

from .conftest import HOST, Http, free_port, running_sim
from .test_erp import bulk, entry, lookup

BULK = "/erp/v1/journal-entries/bulk"


# -- the pure plan ---------------------------------------------------------------------------


def test_no_faults_plan_is_clean_and_draws_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert plan_bulk(ErpFaults(), rng) == BulkPlan()
    assert rng.getstate() == state


def test_outage_wins_over_everything() -> None:
    faults = ErpFaults(outage=True, error_rate=1.0, status=429, commit_then_timeout_rate=1.0)
    assert plan_bulk(faults, random.Random(1)) == BulkPlan(fail_status=503, fault="outage")


def test_plan_is_seeded_and_near_the_rate() -> None:
    faults = ErpFaults(error_rate=0.3, status=500, latency_ms=20)
    a = [plan_bulk(faults, r) for r in [random.Random(5)] for _ in range(1000)]
    b = [plan_bulk(faults, r) for r in [random.Random(5)] for _ in range(1000)]
    assert a == b
    failed = sum(p.fail_status == 500 for p in a)
    assert 230 <= failed <= 370
    assert all(p.delay_s == pytest.approx(0.02) for p in a)


# -- over HTTP -------------------------------------------------------------------------------


async def test_error_rate_one_commits_nothing_and_clearing_restores(sim: Http) -> None:
    put = await sim.put("/sim/v1/faults", json={"erp": {"error_rate": 1.0, "status": 503}})
    assert put.status == 200
    assert put.body["erp"]["error_rate"] == 1.0
    assert (await sim.get("/sim/v1/faults")).body == put.body

    for _ in range(3):
        reply = await sim.post(BULK, json={"items": [entry()]})
        assert reply.status == 503
        assert reply.body["code"] == "erp.unavailable"
        assert reply.body["message"]
    assert await lookup(sim, "in_000001") == []
    assert (await sim.get("/sim/v1/audit")).body["postings"] == 0

    cleared = await sim.delete("/sim/v1/faults")
    assert cleared.status == 200
    assert cleared.body["erp"] == {
        "error_rate": 0.0,
        "status": 503,
        "latency_ms": 0,
        "outage": False,
        "commit_then_timeout_rate": 0.0,
        "error_mix": {},
        "latency": None,
        "rate_limit_rate": 0.0,
        "retry_after_s": 1,
        "reset_rate": 0.0,
        "commit_then_reset_rate": 0.0,
        "silent_drop_rate": 0.0,
        "item_reject_rate": 0.0,
        "alter_amount_rate": 0.0,
    }
    assert cleared.body["billing"]["duplicate_rate"] == 0.0
    assert cleared.body["revenue"]["outage"] is False and cleared.body["cpq"]["error_rate"] == 0
    (result,) = await bulk(sim, entry())
    assert result["status"] == "created"


async def test_429_carries_retry_after(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"error_rate": 1.0, "status": 429}})
    reply = await sim.post(BULK, json={"items": [entry()]})
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "1"
    assert reply.body["code"] == "erp.rate_limited"
    assert await lookup(sim, "in_000001") == []


async def test_other_injected_status(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"error_rate": 1.0, "status": 500}})
    reply = await sim.post(BULK, json={"items": [entry()]})
    assert reply.status == 500
    assert reply.body["code"] == "erp.injected_error"
    assert "Retry-After" not in reply.headers


async def test_outage_answers_503_until_cleared(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"outage": True}})
    assert (await sim.post(BULK, json={"items": [entry()]})).status == 503
    await sim.delete("/sim/v1/faults")
    assert (await sim.post(BULK, json={"items": [entry()]})).status == 200


async def test_faults_touch_only_the_bulk_endpoint(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"outage": True}})
    assert (await sim.get("/erp/v1/journal-entries?externalId=x")).status == 200
    assert (await sim.get("/healthz")).status == 200


async def test_latency_delays_the_answer(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"latency_ms": 150}})
    started = time.perf_counter()
    await bulk(sim, entry())
    assert time.perf_counter() - started >= 0.15


async def test_commit_then_timeout_commits_and_the_retry_is_a_replay() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:1/x")
    started = time.perf_counter()
    async with running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"erp": {"commit_then_timeout_rate": 1.0}})
        with pytest.raises(TimeoutError):
            await http.post(BULK, json={"items": [entry()]}, client_timeout=0.3)
        # The caller does not know; the ERP does.
        (posting,) = await lookup(http, "in_000001")
        assert posting["id"] == "JE-1"

        await http.delete("/sim/v1/faults")
        (retry,) = await bulk(http, entry())
        assert retry == {
            "idempotencyKey": "key-00000001",
            "status": "replayed",
            "id": "JE-1",
            "error": None,
        }
        # Leave one request stalled: shutdown must wake it instead of waiting 30 s.
        await http.put("/sim/v1/faults", json={"erp": {"commit_then_timeout_rate": 1.0}})
        with pytest.raises(TimeoutError):
            await http.post(
                BULK, json={"items": [entry(key="key-2", external_id="in_2")]}, client_timeout=0.2
            )
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"erp": {"error_rate": 1.5}}, "$.erp.error_rate"),
        ({"erp": {"status": 200}}, "$.erp.status"),
        ({"erp": {"latency_ms": -1}}, "$.erp.latency_ms"),
        ({"erp": {"eror_rate": 0.5}}, "$.erp"),
        ({"crm": {}}, "$"),
        ({"revenue": {"silent_drop_rate": 0.1}}, "$.revenue"),
        ({"revenue": {"alter_amount_rate": 0.1}}, "$.revenue"),
        ({"cpq": {"item_reject_rate": 0.1}}, "$.cpq"),
        ({"billing": {"mangle_modes": []}}, "$.billing.mangle_modes"),
        ({"billing": {"drift_modes": ["typo"]}}, "$.billing.drift_modes[0]"),
        ({"billing": {"duplicate_max": 1}}, "$.billing.duplicate_max"),
        ({"erp": {"error_mix": {"200": 1}}}, "$.erp.error_mix"),
        ({"erp": {"latency": {"dist": "pareto"}}}, "$.erp.latency.dist"),
    ],
)
async def test_bad_fault_settings_answer_400_and_change_nothing(
    sim: Http, body: dict[str, object], path: str
) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"latency_ms": 5}})
    reply = await sim.put("/sim/v1/faults", json=body)
    assert reply.status == 400
    assert reply.body["path"] == path
    assert (await sim.get("/sim/v1/faults")).body["erp"]["latency_ms"] == 5


async def test_reset_clears_faults(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"outage": True}})
    await sim.post("/sim/v1/reset")
    assert (await sim.get("/sim/v1/faults")).body["erp"]["outage"] is False
