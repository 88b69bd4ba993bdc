"""Scenario files: parsing and validation (pure), the schedule over real HTTP, determinism."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from sim import Scenario, ScenarioError, SimConfig, load_scenario, parse_scenario
from sim._faults import LognormalLatency, UniformLatency, draw_latency_ms
from sim._scenario import Schedule

from .conftest import HOST, Http, free_port, running_app, running_sim
from .receiver import GatewayLike
from .test_erp import entry, lookup

MONTH_END = Path(__file__).resolve().parents[2] / "sim" / "scenarios" / "month-end.toml"
BULK = "/erp/v1/journal-entries/bulk"


# -- parsing and validation (pure) -------------------------------------------------------------


def test_month_end_scenario_has_a_peak_and_a_20s_erp_outage() -> None:
    scenario = load_scenario(MONTH_END)
    assert scenario.name == "month-end"
    assert scenario.seed == 2025
    (run,) = scenario.bill_run
    assert run.invoices >= 10_000 and run.rate > 0
    outages = [w for w in scenario.http if w.outage]
    assert len(outages) == 1
    assert (outages[0].service, outages[0].endpoint, outages[0].for_s) == ("erp", "*", 20.0)
    kinds = {(w.rate_limit_rate > 0, bool(w.error_mix), w.commit_then_timeout_rate > 0,
              w.latency is not None) for w in scenario.http}
    assert (True, False, False, False) in kinds  # a 429 storm
    assert (False, True, False, False) in kinds  # an error mix
    assert (False, False, True, False) in kinds  # commit then time out
    assert (False, False, False, True) in kinds  # a latency distribution
    assert scenario.webhooks[0].mangle_rate > 0
    lines = scenario.describe()
    assert lines[0].startswith("scenario month-end: 1 bill run(s), 5 HTTP fault window(s)")
    assert any("erp/*: outage=True" in line and "60.0s..80.0s" in line for line in lines)


def test_empty_scenario_is_valid_and_healthy() -> None:
    assert parse_scenario("") == Scenario()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[http]]\nservice = 'erp'\nat_s = 1\nfor_s = 0\n", "http[0].for_s: Expected `float` > 0"),
        ("[[http]]\nservice = 'erq'\nat_s = 1\nfor_s = 1\n", "http[0].service: Invalid enum"),
        ("[[http]]\nservice = 'erp'\nfor_s = 1\n",
         "http[0]: Object missing required field `at_s`"),
        ("[[http]]\nservice = 'erp'\nendpoint = 'bulk'\nat_s = 0\nfor_s = 1\n",
         "http[0].endpoint: unknown erp endpoint 'bulk'"),
        ("[[http]]\nservice = 'billing'\nendpoint = 'gl.balances'\nat_s = 0\nfor_s = 1\n",
         "http[0].endpoint: unknown billing endpoint"),
        ("[[http]]\nservice = 'erp'\nat_s = 0\nfor_s = 1\noutage = 'yes'\n",
         "http[0].outage: Expected `bool`"),
        ("[[http]]\nservice = 'erp'\nat_s = 0\nfor_s = 1\nerror_mix = { 200 = 1 }\n",
         "http[0].error_mix (a key): Expected `int` >= 400"),
        ("[[http]]\nservice = 'erp'\nat_s = 0\nfor_s = 1\nlatency = { dist = 'pareto' }\n",
         "http[0].latency.dist: Invalid value 'pareto'"),
        ("[[http]]\nservice = 'erp'\nat_s = 0\nfor_s = 1\nouttage = true\n",
         "http[0]: Object contains unknown field `outtage`"),
        ("[[webhooks]]\nat_s = 0\nfor_s = 1\nmangle_modes = ['rot13']\n",
         "webhooks[0].mangle_modes[0]: Invalid enum value 'rot13'"),
        ("[[webhooks]]\nat_s = 0\nfor_s = 1e9\n", "webhooks[0].for_s"),
        ("[[bill_run]]\nat_s = 0\ninvoices = 0\n", "bill_run[0].invoices: Expected `int` >= 1"),
        ("[faults.erp]\nerror_rate = 2\n", "faults.erp.error_rate: Expected `float` <= 1.0"),
        ("servics = 1\n", "(top level): Object contains unknown field `servics`"),
        ("[[http]\n", "not valid TOML"),
    ],
)
def test_invalid_scenarios_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="x.toml")
    assert str(info.value).startswith("x.toml: ")
    assert message in str(info.value)


def test_missing_scenario_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: cannot read"):
        load_scenario(tmp_path / "nope.toml")


def test_schedule_picks_windows_by_service_endpoint_and_time() -> None:
    scenario = parse_scenario("""
        [[http]]
        service = "erp"
        at_s = 10
        for_s = 5
        outage = true
        [[http]]
        service = "erp"
        endpoint = "gl.balances"
        at_s = 0
        for_s = 100
        latency_ms = 7
        [[webhooks]]
        at_s = 3
        for_s = 1
        replay_rate = 1
    """)
    schedule = Schedule(scenario)
    assert schedule.http("erp", "journal-entries.bulk", 9.99) == []
    assert [w.outage for w in schedule.http("erp", "journal-entries.bulk", 10.0)] == [True]
    assert schedule.http("erp", "journal-entries.bulk", 15.0) == []  # the end is exclusive
    assert len(schedule.http("erp", "gl.balances", 12.0)) == 2
    assert schedule.http("billing", "bill-runs", 12.0) == []
    assert schedule.webhooks(2.9) == [] and len(schedule.webhooks(3.5)) == 1
    assert schedule.active(12.0) == ([0, 1], [])


def test_latency_distributions_match_their_parameters() -> None:
    rng = random.Random(1)
    draws = sorted(draw_latency_ms(LognormalLatency(p50_ms=40, p99_ms=600), rng)
                   for _ in range(20_000))
    assert draws[10_000] == pytest.approx(40, rel=0.1)
    assert draws[19_800] == pytest.approx(600, rel=0.2)
    assert draws[-1] <= 6000  # capped at 10 x p99
    uniform = [draw_latency_ms(UniformLatency(min_ms=10, max_ms=20), rng) for _ in range(1000)]
    assert 10 <= min(uniform) and max(uniform) <= 20
    assert math.isclose(sum(uniform) / 1000, 15, rel_tol=0.05)


# -- over real HTTP ----------------------------------------------------------------------------


def scenario_config(text: str, **kw: Any) -> SimConfig:
    return SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x",
                     scenario=parse_scenario(text), **kw)


async def wait_elapsed(http: Http, seconds: float) -> None:
    with anyio.fail_after(10):
        while (await http.get("/sim/v1/scenario")).body["elapsed_s"] < seconds:
            await anyio.sleep(0.02)


async def test_outage_window_opens_and_closes_on_every_erp_endpoint() -> None:
    config = scenario_config("""
        [[http]]
        service = "erp"
        at_s = 0
        for_s = 0.6
        outage = true
    """)
    async with running_sim(config) as http:
        state = (await http.get("/sim/v1/scenario")).body
        assert state["active_http"] == [0]
        assert (await http.post(BULK, json={"items": [entry()]})).status == 503
        assert (await http.get("/erp/v1/journal-entries?externalId=x")).status == 503
        assert (await http.get("/erp/v1/gl/balances?period=2025-11")).status == 503
        assert (await http.get("/billing/v1/events")).status == 200  # billing is unaffected
        await wait_elapsed(http, 0.65)
        assert (await http.post(BULK, json={"items": [entry()]})).status == 200
        audit = (await http.get("/sim/v1/audit")).body
        assert audit["faults"]["http"]["erp/journal-entries.bulk"] == {"outage": 1}
        assert audit["postings"] == 1


async def test_scenario_429_storm_carries_its_retry_after_and_error_mix_its_statuses() -> None:
    config = scenario_config("""
        [[http]]
        service = "erp"
        endpoint = "journal-entries.bulk"
        at_s = 0
        for_s = 60
        rate_limit_rate = 0.5
        retry_after_s = 3
        error_rate = 1.0
        error_mix = { 500 = 1, 502 = 1 }
    """)
    async with running_sim(config) as http:
        statuses = []
        for _ in range(40):
            reply = await http.post(BULK, json={"items": [entry()]})
            statuses.append(reply.status)
            if reply.status == 429:
                assert reply.headers["Retry-After"] == "3"
                assert reply.body["code"] == "erp.rate_limited"
        assert set(statuses) == {429, 500, 502}
        assert await lookup(http, "in_000001") == []
        injected = (await http.get("/sim/v1/audit")).body["faults"]["http"]
        assert sum(injected["erp/journal-entries.bulk"].values()) == 40
        assert injected["erp/journal-entries.bulk"]["rate_limit"] == statuses.count(429)


async def test_same_seed_same_faults_other_seed_other_faults() -> None:
    text = """
        [[http]]
        service = "erp"
        at_s = 0
        for_s = 60
        error_rate = 0.5
    """

    async def statuses(seed: int) -> list[int]:
        async with running_sim(scenario_config(text, seed=seed)) as http:
            return [(await http.get("/erp/v1/journal-entries?externalId=x")).status
                    for _ in range(30)]

    first = await statuses(3)
    assert first == await statuses(3)
    assert first != await statuses(4)
    assert set(first) == {200, 503}


async def test_reset_faults_reset_the_connection_and_commit_nothing() -> None:
    config = scenario_config("""
        [[http]]
        service = "erp"
        endpoint = "journal-entries.bulk"
        at_s = 0
        for_s = 60
        reset_rate = 1.0
    """)
    async with running_sim(config) as http:
        with pytest.raises(aiohttp.ClientOSError):
            await http.post(BULK, json={"items": [entry()]})
        assert await lookup(http, "in_000001") == []
        assert (await http.get("/healthz")).status == 200  # the server is fine


async def test_commit_then_reset_commits_and_the_retry_is_a_replay(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"commit_then_reset_rate": 1.0}})
    with pytest.raises(aiohttp.ClientOSError):
        await sim.post(BULK, json={"items": [entry()]})
    assert [p["id"] for p in await lookup(sim, "in_000001")] == ["JE-1"]
    await sim.delete("/sim/v1/faults")
    reply = await sim.post(BULK, json={"items": [entry()]})
    assert reply.body["results"][0]["status"] == "replayed"


async def test_silent_drop_answers_created_but_records_nothing(sim: Http) -> None:
    await sim.put("/sim/v1/faults", json={"erp": {"silent_drop_rate": 1.0}})
    reply = await sim.post(BULK, json={"items": [entry()]})
    assert reply.body["results"][0]["status"] == "created"
    assert await lookup(sim, "in_000001") == []
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["postings"] == 0
    assert audit["faults"]["http"]["erp/journal-entries.bulk"] == {"silent_drop": 1}
    # The lost write took its idempotency record with it: a repost under the same key (what
    # a reconciler's repair sends) is created, once the drop fault is gone.
    await sim.delete("/sim/v1/faults")
    again = await sim.post(BULK, json={"items": [entry()]})
    assert again.body["results"][0]["status"] == "created"
    assert again.body["results"][0]["id"] != reply.body["results"][0]["id"]
    assert [p["id"] for p in await lookup(sim, "in_000001")] == [again.body["results"][0]["id"]]


async def test_latency_window_delays_only_its_endpoint() -> None:
    config = scenario_config("""
        [[http]]
        service = "billing"
        endpoint = "events"
        at_s = 0
        for_s = 60
        latency = { dist = "fixed", ms = 200 }
    """)
    async with running_sim(config) as http:
        t0 = anyio.current_time()
        await http.get("/billing/v1/events")
        assert anyio.current_time() - t0 >= 0.2
        t0 = anyio.current_time()
        await http.get("/erp/v1/governance")
        assert anyio.current_time() - t0 < 0.2


async def test_scenario_fires_bill_runs_applies_webhook_windows_and_logs_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = GatewayLike("whsec_demo")
    hook_port = free_port()
    scenario = parse_scenario("""
        name = "tiny"
        [faults.billing]
        drift_rate = 1.0
        drift_modes = ["missing_field"]
        [[bill_run]]
        at_s = 0.05
        invoices = 6
        [[webhooks]]
        at_s = 0
        for_s = 60
        mangle_rate = 1.0
        mangle_modes = ["v0_only"]
    """)
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       scenario=scenario)
    with caplog.at_level(logging.INFO, logger="sim"):
        async with running_app(receiver.app, hook_port), running_sim(config) as http:
            with anyio.fail_after(10):
                while True:
                    audit = (await http.get("/sim/v1/audit")).body
                    if audit["accepted"] == 6 and len(receiver.statuses) == 18:
                        break
                    await anyio.sleep(0.02)
            state = (await http.get("/sim/v1/scenario")).body
    assert state["bill_runs_started"] == ["br_000001"]
    assert state["scenario"]["name"] == "tiny"
    deliveries = audit["faults"]["billing"]["deliveries"]
    assert deliveries["v0_only"]["statuses"] == {"400": 6}  # from the window
    assert deliveries["missing_field"]["statuses"] == {"400": 6}  # from [faults]
    text = caplog.text
    assert "scenario tiny: 1 bill run(s), 0 HTTP fault window(s), 1 webhook fault window(s)" in text
    assert "billing/webhooks: mangle_rate=1.0" in text
    assert "bill run: 6 invoices at once" in text
    assert "scenario: bill run br_000001 started" in text


async def test_reset_keeps_the_scenario_but_clears_runtime_faults() -> None:
    config = scenario_config("""
        [faults.erp]
        latency_ms = 1
        [[http]]
        service = "erp"
        endpoint = "governance"
        at_s = 0
        for_s = 60
        outage = true
    """)
    async with running_sim(config) as http:
        assert (await http.get("/sim/v1/faults")).body["erp"]["latency_ms"] == 1
        await http.post("/sim/v1/reset")
        assert (await http.get("/sim/v1/faults")).body["erp"]["latency_ms"] == 0
        assert (await http.get("/erp/v1/governance")).status == 503
