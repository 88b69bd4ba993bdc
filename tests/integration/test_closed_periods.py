"""Closed ERP periods against the simulator's period close, with the whole stack as separate
processes: under ``erp.closed_period = "next_open"`` every late posting lands on the first day
of the first open period; under the default ``dead_letter`` each is dead-lettered as
``erp.period_closed`` and ``erpgw dlq replay --repost-open`` moves it there. Counted at the
simulated ERP: nothing lost, nothing doubled, and replaying again doubles nothing. Meanwhile
``erpgw close status`` says the dead-lettered postings block the month's close, and nothing
does once they are re-posted."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest

from actors.close import BLOCKER_KINDS
from actors.erp.periods import POLICY_HEADER, first_day_after
from actors.infra import NatsBus, OutMsg
from gateway.dlq import list_letters
from gateway.stack import Stack, StackError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

INVOICES = 12
RECEIVABLE = "1200"  # accounts.receivable: debited with each invoice's total, nothing else


def closing() -> tuple[list[str], str]:
    """This month and the next (closed, so a bill run crossing midnight at a month's end is
    late too), and the first open period after them."""
    today = datetime.now(UTC).date()
    closed = [today.isoformat()[:7], first_day_after(today, 1).isoformat()[:7]]
    return closed, first_day_after(today, 2).isoformat()[:7]


async def close_periods(stack: Stack, periods: list[str]) -> None:
    for period in periods:
        status = await stack._sim_call("POST", f"/erp/v1/periods/{period}/close")
        assert status["status"] == "closed"


async def receivable_debits(stack: Stack, period: str) -> dict[str, int]:
    doc = await stack._sim_call("GET", f"/erp/v1/gl/balances?period={period}")
    return {b["currency"]: b["debit"] for b in doc["balances"] if b["account"] == RECEIVABLE}


async def wait_posted(stack: Stack, count: int) -> dict[str, Any]:
    with anyio.fail_after(120):  # a guard against a hang, not a speed target
        while (await stack.audit())["posted"] < count:
            await anyio.sleep(0.2)
    rest = await stack.wait_quiet()
    assert rest.quiet, (rest.busy, rest.moving)
    return rest.audit


def dlq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "dlq", *args, "--nats-url",
                           stack.url, "--data-dir", str(stack.data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)


def close_status(stack: Stack, period: str) -> tuple[int, dict[str, Any]]:
    """``erpgw close status --period <period> --json`` against the stack: (exit, entity doc)."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "close", "status", "--period", period, "--json",
         "--nats-url", stack.url, "--data-dir", str(stack.data_dir),
         *(f"--{p}-url={stack.sim_url}" for p in ("billing", "erp", "revenue"))],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode in (0, 1), done.stderr
    doc = msgspec.json.decode(done.stdout)
    assert doc["period"] == period and len(doc["entities"]) == 1
    return done.returncode, doc["entities"][0]


@pytest.mark.parametrize("netsuite", [False, True], ids=["erpgw", "netsuite"])
async def test_next_open_posts_every_late_posting_in_the_first_open_period(
        tmp_path: Path, netsuite: bool) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=31, netsuite=netsuite,
                  gateway_env={"ERPGW_ERP_CLOSED_PERIOD": "next_open"})
    await stack.start()
    try:
        closed, first_open = closing()
        await close_periods(stack, closed)
        await stack.bill_run(INVOICES)
        audit = await wait_posted(stack, INVOICES)
        assert (audit["posted"], audit["postings"], audit["duplicates"],
                audit["unexpected"], audit["unposted_count"]) == (INVOICES, INVOICES, 0, 0, 0)
        assert await stack.dead_letters() == []
        # Where they went: all of it in the first open period, nothing in the closed ones.
        for period in closed:
            assert await receivable_debits(stack, period) == {}
        assert await receivable_debits(stack, first_open) == audit["amount_issued"]
    finally:
        await stack.close()


async def close_kpi(stack: Stack, month: str, want: dict[str, int]) -> dict[str, Any]:
    """The first ``close`` section of ``<prefix>.mon.kpi`` whose ``month`` counts ``want``
    (by kind), as the dashboard's identity reads it."""
    found: list[dict[str, Any]] = []

    async def on(msg: Any) -> None:
        close = msgspec.json.decode(msg.data).get("close") or {}
        if (close.get("periods") or {}).get(month, {}).get("by_kind") == want:
            found.append(close)

    nc = await nats.connect(stack.url, **stack.nats_options("monitor"))
    try:
        await nc.subscribe(f"{stack.subjects.prefix}.mon.kpi", cb=on)
        with anyio.fail_after(90):  # a guard against a hang, not a speed target
            while not found:
                await anyio.sleep(0.2)
    finally:
        await nc.close()
    return found[0]


async def test_dead_letter_then_repost_open_replay_posts_each_once(tmp_path: Path) -> None:
    # erp.closed_period: the default; the close-watch actor every second, the KPIs too.
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=32,
                  gateway_env={"ERPGW_CLOSE_STATUS_INTERVAL_S": "1",
                               "ERPGW_SLA_KPI_INTERVAL_S": "1"})
    await stack.start()
    try:
        closed, first_open = closing()
        await close_periods(stack, closed)
        await stack.bill_run(INVOICES)
        with anyio.fail_after(120):
            while len(await stack.dead_letters()) < INVOICES:
                await anyio.sleep(0.2)
        rows = msgspec.json.decode(dlq(stack, "ls", "--json").stdout)
        assert len(rows) == INVOICES and {r["code"] for r in rows} == {"erp.period_closed"}
        assert (await stack.audit())["postings"] == 0

        # The month's close is blocked by each dead-lettered posting, with its replay command.
        month = closed[0]
        code, status = close_status(stack, month)
        assert code == 1 and status["entity"] == "default" and not status["ready"]
        assert status["by_kind"]["dead_lettered"] == INVOICES
        assert status["resolve"]["dead_lettered"] == (
            "erpgw dlq replay --code erp.period_closed --repost-open")
        assert {i["resolve"] for i in status["items"] if i["kind"] == "dead_lettered"} == {
            f"erpgw dlq replay --seq {r['seq']} --repost-open" for r in rows}
        # The same count as the close.blocking KPI (once the revenue lines are in too).
        kpi = await close_kpi(stack, month, {"dead_lettered": INVOICES})
        assert kpi["periods"][month]["blocking"] == INVOICES <= kpi["blocking"]

        done = dlq(stack, "replay", "--code", "erp.period_closed", "--repost-open")
        assert done.returncode == 0, done.stderr
        assert f"{INVOICES} letter(s) replayed" in done.stdout
        audit = await wait_posted(stack, INVOICES)
        assert (audit["posted"], audit["postings"], audit["duplicates"],
                audit["unexpected"]) == (INVOICES, INVOICES, 0, 0)
        assert await receivable_debits(stack, first_open) == audit["amount_issued"]
        for period in closed:
            assert await receivable_debits(stack, period) == {}
        # Re-posted in the first open period: nothing blocks the month's close any more.
        assert close_status(stack, month) == (0, {
            "entity": "default", "period": month, "ready": True, "blocking": 0,
            "by_kind": dict.fromkeys(BLOCKER_KINDS, 0), "resolve": {}, "items": []})
        assert (await close_kpi(stack, month, {}))["periods"][month]["blocking"] == 0

        # Replaying again: the CLI has nothing left; the same letters re-sent anyway (a fresh
        # message id, marked repost-open) reach the poster and post nothing more.
        again = dlq(stack, "replay", "--code", "erp.period_closed", "--repost-open")
        assert again.returncode == 0 and "nothing to replay" in again.stdout
        bus = await NatsBus.connect(stack.url, name="test-replay", auth=stack.auth("operator"))
        try:
            letters = await list_letters(bus, stack.subjects, include_resolved=True)
            assert len(letters) == INVOICES
            for rec in letters:
                await bus.publish(OutMsg(subject=rec.letter.subject, data=rec.letter.data,
                                         msg_id=f"second-replay-{rec.seq}",
                                         headers={POLICY_HEADER: "next_open"}))
        finally:
            await bus.close()
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        assert (rest.audit["posted"], rest.audit["postings"], rest.audit["duplicates"]) == (
            INVOICES, INVOICES, 0)
        assert await receivable_debits(stack, first_open) == audit["amount_issued"]
        assert msgspec.json.decode(dlq(stack, "ls", "--json").stdout) == []  # no new letter
    finally:
        await stack.close()


async def test_next_open_across_a_crash_after_the_erp_took_the_moved_entries(
        tmp_path: Path) -> None:
    """SIGKILL the gateway right after the ERP answered the moved postings, before the ledger
    recorded them (crash point ``erp.after_post``): the restarted gateway's redelivery is
    refused as a reused key at its own date, walks on to the period that holds it, is answered
    ``replayed`` there, and nothing is posted twice."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=33,
                  gateway_env={"ERPGW_ERP_CLOSED_PERIOD": "next_open",
                               "GW_CRASH_AT": "erp.after_post"})
    await stack.start()
    try:
        closed, first_open = closing()
        await close_periods(stack, closed)
        await stack.bill_run(INVOICES)
        assert await stack.wait_gateway_exit(60) == 137, stack.tail("gateway.log")
        taken = (await stack.audit())["postings"]
        assert taken > 0  # the ERP holds moved entries the ledger never recorded
        stack.gateway_env = {"ERPGW_ERP_CLOSED_PERIOD": "next_open"}
        with contextlib.suppress(StackError):
            await stack.start_gateway()
        audit = await wait_posted(stack, INVOICES)
        assert (audit["posted"], audit["postings"], audit["duplicates"],
                audit["unexpected"]) == (INVOICES, INVOICES, 0, 0)
        assert await stack.dead_letters() == []
        assert await receivable_debits(stack, first_open) == audit["amount_issued"]
        for period in closed:
            assert await receivable_debits(stack, period) == {}
    finally:
        await stack.close()
