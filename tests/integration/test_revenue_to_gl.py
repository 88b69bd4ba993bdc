"""Revenue to the GL against the simulator, the whole stack as separate processes: `erpgw close
run` posts what the revenue platform recognises in a month; the ERP's revenue account for the
month then equals the recognition exactly; a re-run posts nothing; a contract amended after the
month was closed is trued up by a reversal and a re-post in the first open period."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from actors.close import previous_period
from gateway.stack import Stack

from .conftest import actor_stats

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PERIOD, NEXT = "2026-01", "2026-02"
REVENUE, DEFERRED = "4000", "2400"


def contract(version: int, seat: int, support: int = 0, currency: str = "USD",
             start: str = "2026-01") -> dict[str, Any]:
    lines = [{"lineId": "l1", "product": "prod_seat", "amount": seat,
              "periodStart": f"{start}-01", "months": 3}]
    if support:
        lines.append({"lineId": "l2", "product": "prod_support", "amount": support,
                      "periodStart": f"{start}-15", "months": 2})
    return {"version": version, "customer": "cus_1", "currency": currency, "lines": lines}


def close_run(stack: Stack, *extra: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "gateway", "close", "run", "--period", PERIOD,
                        "--json", "--nats-url", stack.url, "--data-dir", str(stack.data_dir),
                        "--revenue-url", stack.sim_url, *extra],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout, r.stderr
    doc: dict[str, Any] = msgspec.json.decode(r.stdout)
    return r.returncode, doc


async def net_credit(stack: Stack, period: str, account: str) -> dict[str, int]:
    doc = await stack._sim_call("GET", f"/erp/v1/gl/balances?period={period}")
    return {b["currency"]: b["credit"] - b["debit"] for b in doc["balances"]
            if b["account"] == account}


async def recognised(stack: Stack, period: str) -> dict[str, int]:
    doc = await stack._sim_call("GET", f"/revenue/v1/recognition?period={period}")
    return {c: a for c, a in doc["amount"].items() if a}


async def postings(stack: Stack) -> list[str]:
    doc = await stack._sim_call("GET", "/erp/v1/journal-entries?limit=1000")
    return sorted(p["externalId"] for p in doc["items"])


async def test_close_run_posts_recognition_once_and_trues_up_a_closed_month(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=41)
    await stack.start()
    try:
        await stack._sim_call("PUT", "/revenue/v1/contracts/c1", contract(1, 90_000, 31_001))
        await stack._sim_call("PUT", "/revenue/v1/contracts/c2", contract(1, 60_000))
        await stack._sim_call("PUT", "/revenue/v1/contracts/c3",
                              contract(1, 12_345, currency="EUR"))
        want = await recognised(stack, PERIOD)
        assert set(want) == {"USD", "EUR"}

        code, doc = close_run(stack)
        assert code == 0 and doc["completed"] is True, doc
        assert [(r["currency"], r["run"], r["action"]) for r in doc["runs"]] == [
            ("EUR", 1, "posted"), ("USD", 1, "posted")]
        # The ERP's revenue for the month is the platform's recognition, to the minor unit.
        assert await net_credit(stack, PERIOD, REVENUE) == want
        assert await net_credit(stack, PERIOD, DEFERRED) == {c: -a for c, a in want.items()}
        first = await postings(stack)
        assert first == ["recognition:default:2026-01:EUR", "recognition:default:2026-01:USD"]

        # A re-run posts nothing.
        code, again = close_run(stack)
        assert code == 0 and again["published"] == 0
        assert {r["action"] for r in again["runs"]} == {"unchanged"}
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        assert await postings(stack) == first
        assert await net_credit(stack, PERIOD, REVENUE) == want

        # The month is closed, then a contract is amended: the true-up reverses run 1 and posts
        # run 2, both in the first open period; the closed month is never touched.
        await stack._sim_call("POST", f"/erp/v1/periods/{PERIOD}/close")
        await stack._sim_call("PUT", "/revenue/v1/contracts/c2", contract(2, 75_000))
        changed = await recognised(stack, PERIOD)
        assert changed["USD"] != want["USD"] and changed["EUR"] == want["EUR"]
        code, trued = close_run(stack)
        assert code == 0 and trued["completed"] is True, trued
        assert [(r["currency"], r["run"], r["action"]) for r in trued["runs"]] == [
            ("EUR", 1, "unchanged"), ("USD", 2, "true_up")]
        assert await net_credit(stack, PERIOD, REVENUE) == want  # closed: as it was
        moved = await net_credit(stack, NEXT, REVENUE)
        assert moved == {"USD": changed["USD"] - want["USD"]}  # reversal + re-post, net
        assert await postings(stack) == sorted([
            *first, "recognition:default:2026-01:USD:reversal",
            "recognition:default:2026-01:USD:v2"])

        # And again: nothing more, however often.
        for _ in range(2):
            code, last = close_run(stack)
            assert code == 0 and last["published"] == 0
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        assert len(await postings(stack)) == 4
        assert await stack.dead_letters() == []
    finally:
        await stack.close()


async def test_the_revenue_gl_actor_posts_the_month_just_ended_on_its_schedule(
        tmp_path: Path) -> None:
    last_month = previous_period(datetime.now(UTC).date())
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=42,
                  gateway_env={"ERPGW_CLOSE_INTERVAL_S": "0.5"})
    await stack.start()
    try:
        # One contract per currency: whichever run sees each first posts it once.
        await stack._sim_call("PUT", "/revenue/v1/contracts/c1",
                              contract(1, 90_000, 31_001, start=last_month))
        await stack._sim_call("PUT", "/revenue/v1/contracts/c2",
                              contract(1, 5_000, currency="EUR", start=last_month))
        want = await recognised(stack, last_month)
        with anyio.fail_after(120):  # a guard against a hang, not a speed target
            while await net_credit(stack, last_month, REVENUE) != want:
                await anyio.sleep(0.2)
        posted = await postings(stack)
        assert len(posted) == 2
        # Later runs find nothing changed and post nothing.
        runs = (await actor_stats(stack.admin_url, "revenue-gl"))["runs"]
        with anyio.fail_after(120):
            while (stats := await actor_stats(stack.admin_url, "revenue-gl"))["runs"] < runs + 3:
                await anyio.sleep(0.2)
        assert stats["published"] == 2 and stats["last_period"] == last_month
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        assert await postings(stack) == posted
        assert await net_credit(stack, last_month, REVENUE) == want
    finally:
        await stack.close()
