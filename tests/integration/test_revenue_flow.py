"""Flow 2's revenue half against the whole stack (broker, simulator, gateway as processes),
judged by the simulator's revenue records: every issued invoice's lines exactly once.

The revenue platform has no idempotency key and no read, so the crash tests also open the
gateway's ledger (after stopping the gateway) to see which lines it holds in doubt: the
crash-point tests prove which part of the upload window is safe and which one the gateway
flags for a person instead of guessing (docs/flows.md, "the crash window").
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest

from actors.infra import NatsBus
from actors.infra.ledger import Ledger
from actors.replay import replay_lane, select_events
from actors.revenue import PLATFORM
from contracts import Subjects
from gateway.app import REVENUE_CONSUMER
from gateway.stack import DrainResult, RevenueResult, Stack

from .test_end_to_end import assert_clean, wait_until_posted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def assert_revenue_exact(rev: RevenueResult) -> None:
    """Every issued invoice's lines recorded exactly once, amounts equal to the subtotals."""
    a = rev.audit
    assert rev.drained, f"revenue did not drain: {a}"
    assert a["duplicate_lines"] == 0
    assert a["unexpected_lines"] == 0
    assert a["lines"] == rev.expected_lines
    assert a["amount"] == rev.expected_amount


def assert_revenue_billed(rev: RevenueResult) -> None:
    """With credit memos or amendments: nothing doubled or unexpected, every issued line there
    (plus the corrections), and the platform's billings at the latest billed amounts less the
    credit memos, per currency."""
    a = rev.audit
    assert rev.drained, f"revenue did not drain: {a}"
    assert a["duplicate_lines"] == 0 and a["unexpected_lines"] == 0, a
    assert a["lines"] >= rev.expected_lines, a
    assert rev.billed_amount is not None
    assert {c: n for c, n in a["amount"].items() if n} == {
        c: n for c, n in rev.billed_amount.items() if n}, rev


async def drain(stack: Stack, expected: int) -> tuple[DrainResult, RevenueResult]:
    """Both halves drained; the dead letters as they stand after both."""
    result = await stack.wait_drained(expected, stall_timeout=45)
    rev = await stack.wait_revenue(stall_timeout=45)
    result.dead_letters = await stack.dead_letters()
    return result, rev


async def uploads(stack: Stack) -> dict[str, list[str]]:
    """Line ids by upload status in the gateway's ledger; the gateway must be stopped. Also
    checks the audit hash chain is intact."""
    ledger = await Ledger.open(stack.workdir / "gateway" / "ledger.db")
    try:
        assert await ledger.verify_audit(stack.audit_key()) is None
        out: dict[str, list[str]] = {}
        for row in await ledger.find_uploads(PLATFORM):
            out.setdefault(row.status, []).append(row.line_id)
        return out
    finally:
        await ledger.close()


async def test_every_line_reaches_revenue_exactly_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=61)
    await stack.start()
    try:
        await stack.bill_run(400)
        result, rev = await drain(stack, 400)
        assert_clean(result, 400)
        assert result.dead_letters == []
        assert_revenue_exact(rev)
        assert len(rev.lines_by_invoice) == 400
        assert rev.audit["batches"] >= 1
        assert await stack.stop_gateway() == 0
        ledger = await uploads(stack)
        assert set(ledger) == {"uploaded"}
        assert len(ledger["uploaded"]) == rev.expected_lines
    finally:
        await stack.close()


async def test_sigkill_mid_run_never_doubles_revenue(tmp_path: Path) -> None:
    """SIGKILL twice at arbitrary moments. Duplicates are impossible by construction (a line is
    sent only from a state proving no earlier send of it was recorded), so the assertion is
    exact: duplicate_lines == 0. A kill inside an upload's window leaves its lines in doubt
    (presumed recorded, flagged, never re-sent): the revenue platform then holds all of them or,
    if the kill fell before the request was written, misses some of them — never more."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=62)
    await stack.start()
    try:
        total = 1200
        await stack.bill_run(total, rate=600)
        for kill_after in (200, 700):
            await wait_until_posted(stack, kill_after)
            stack.kill_gateway()
            await anyio.sleep(0.3)
            await stack.start_gateway()
        result, rev = await drain(stack, total)
        assert_clean(result, total)
        a = rev.audit
        assert rev.drained
        assert a["duplicate_lines"] == 0 and a["unexpected_lines"] == 0
        assert await stack.stop_gateway() == 0
        ledger = await uploads(stack)
        uploaded, doubtful = ledger.get("uploaded", []), ledger.get("in_doubt", [])
        assert set(ledger) <= {"uploaded", "in_doubt"}  # nothing pending, nothing lost
        assert len(uploaded) + len(doubtful) == rev.expected_lines
        assert len(uploaded) <= a["lines"] <= rev.expected_lines
    finally:
        await stack.close()


async def _replay_invoices(stack: Stack, invoice_ids: set[str]) -> None:
    """What `erpgw replay --lane billing --key <invoice>` does, for several invoices."""
    bus = await NatsBus.connect(stack.url, auth=stack.auth(), name="test-replay")
    try:
        subjects = Subjects()
        items = await select_events(bus, subjects, "billing",
                                    since=datetime(2000, 1, 1, tzinfo=UTC),
                                    subject=subjects.invoice_issued)
        chosen = [it for it in items if it.key and it.key.split(":")[1] in invoice_ids]
        assert {it.key.split(":")[1] for it in chosen if it.key} == invoice_ids
        await replay_lane(bus, subjects, "billing", chosen)
    finally:
        await bus.close()


@pytest.mark.parametrize("point", ["revenue.before_upload", "revenue.after_upload",
                                   "revenue.after_commit"])
async def test_crash_points_of_an_upload(tmp_path: Path, point: str) -> None:
    """The gateway dies at a named point of its 2nd upload, then restarts.

    - after_commit: the ledger says uploaded; the redelivery is skipped. Exactly once.
    - after_upload: the platform recorded the lines, the ledger still says pending. The
      restart holds them in doubt and does not send them again: exactly once, flagged.
    - before_upload: the lines are claimed but were never sent. Held in doubt as well, so they
      are missing: the documented window. A person confirms them missing, releases them
      (``Ledger.resolve_in_doubt``) and replays their invoices: then exactly once.
    """
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=63, gateway_env={"GW_CRASH_AT": f"{point}:2"})
    await stack.start()
    try:
        await stack.bill_run(300)
        assert await stack.wait_gateway_exit(timeout=60) == 137
        stack.gateway_env = {}
        await stack.start_gateway()
        result, rev = await drain(stack, 300)
        assert_clean(result, 300)
        assert result.dead_letters == []
        a = rev.audit
        assert rev.drained and a["duplicate_lines"] == 0 and a["unexpected_lines"] == 0
        assert await stack.stop_gateway() == 0
        ledger = await uploads(stack)
        doubtful = ledger.get("in_doubt", [])
        assert set(ledger) <= {"uploaded", "in_doubt"}
        if point == "revenue.after_commit":
            assert doubtful == []
            assert_revenue_exact(rev)
            return
        assert doubtful, "the interrupted upload's lines must be held in doubt"
        if point == "revenue.after_upload":
            assert_revenue_exact(rev)  # recorded once, and never sent again
            return
        # before_upload: never sent, so missing exactly those lines
        assert a["lines"] == rev.expected_lines - len(doubtful)
        ledger_db = await Ledger.open(stack.workdir / "gateway" / "ledger.db")
        try:
            # The person's rows join the gateway's keyed audit chain: with its key.
            await ledger_db.use_audit_key(stack.audit_key(), now=time.time())
            released = await ledger_db.resolve_in_doubt(
                PLATFORM, doubtful, present=False, now=time.time(),
                note="checked at the revenue platform: not there")
        finally:
            await ledger_db.close()
        assert released == len(doubtful)
        await stack.start_gateway()
        await _replay_invoices(stack, {line.split(":")[0] for line in doubtful})
        assert_revenue_exact(await stack.wait_revenue(stall_timeout=45))
        assert await stack.stop_gateway() == 0
        assert set(await uploads(stack)) == {"uploaded"}
    finally:
        await stack.close()


async def test_a_refused_line_dead_letters_only_its_invoice(tmp_path: Path) -> None:
    """The revenue platform refuses one line (422, all-or-nothing): that invoice is
    dead-lettered with the platform's error, the other lines of the same upload are sent
    again and recorded once; the ERP half is untouched."""
    bad = "in_000007"
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=64,
                  gateway_env={"GW_FAULT": f"revenue.corrupt_line:{bad}"})
    await stack.start()
    try:
        await stack.bill_run(200)
        result, rev = await drain(stack, 200)
        a, erp = rev.audit, result.audit
        assert result.lost == 0 and erp["posted"] == 200 and erp["duplicates"] == 0
        (letter,) = result.dead_letters
        assert letter.code == "revenue.period_reversed"
        assert letter.business_key is not None and f":{bad}:" in letter.business_key
        assert letter.platform_response and "PERIOD_REVERSED" in letter.platform_response
        invoices = {inv["id"]: inv for inv in await stack.issued_invoices()}
        refused: dict[str, Any] = invoices[bad]
        assert a["duplicate_lines"] == 0 and a["unexpected_lines"] == 0
        assert a["lines"] == rev.expected_lines - rev.lines_by_invoice[bad]
        expected = dict(rev.expected_amount)
        expected[refused["currency"].upper()] -= refused["subtotal"]
        assert a["amount"] == {k: v for k, v in expected.items() if v}
        assert "sent again" in stack.tail("gateway.log", 2000)
        assert await stack.stop_gateway() == 0
        ledger = await uploads(stack)
        assert sorted(ledger["rejected"]) == sorted(
            f"{bad}:{ln['id']}" for ln in refused["lines"]["data"])
        assert len(ledger["uploaded"]) == a["lines"]
    finally:
        await stack.close()


async def test_revenue_outage_then_recovery(tmp_path: Path) -> None:
    """The revenue platform is down (503) when the run starts: the ERP half goes on, the
    revenue breaker opens and the work waits in the stream; once the platform is back every
    line is recorded exactly once and nothing is dead-lettered."""
    stack = Stack(tmp_path / "run", ack_wait_s=2.0, seed=65,
                  gateway_toml="[revenue_breaker]\nconsecutive_failures = 2\nopen_for = 1.0\n"
                               "open_for_cap = 2.0\n")
    await stack.start()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        events = await nc.subscribe(Subjects().mon_event("breaker"))
        # The outage is switched off by the test, not by a clock: however slow the machine,
        # it covers the whole ERP half of the run.
        await stack.set_faults({"revenue": {"outage": True}})
        await stack.bill_run(300)
        # The ERP half does not wait for revenue (its consumer is held behind the outage).
        result = await stack.wait_drained(300, stall_timeout=45, held=[REVENUE_CONSUMER])
        assert_clean(result, 300)
        seen: list[dict[str, Any]] = []
        with anyio.fail_after(60):  # the revenue breaker opened: the outage was met
            while not any(e["breaker"] == "revenue.batches" and e["target"] == "open"
                          for e in seen):
                seen.append(msgspec.json.decode((await events.next_msg(timeout=60)).data))
        assert (await stack.audit())["revenue"]["lines"] == 0  # nothing got through
        assert await stack.revenue_pending() != (0, 0)  # the work waits in the stream
        await stack.set_faults({})
        rev = await stack.wait_revenue(stall_timeout=45)
        assert_revenue_exact(rev)
        final = await stack.dead_letters()
        assert final == []  # waiting out an outage never dead-letters
        injected = (await stack.audit())["faults"]["http"]["revenue/batches"]["outage"]
        while True:
            try:
                seen.append(msgspec.json.decode((await events.next_msg(timeout=0.5)).data))
            except nats.errors.TimeoutError:
                break
        moves = [(e["source"], e["target"]) for e in seen if e["breaker"] == "revenue.batches"]
        assert ("closed", "open") in moves and ("half_open", "closed") in moves
        # The breaker kept the failing calls few: the two that opened it (and any already in
        # flight) and one probe per half-open, not one per batch and retry. Counted in probes,
        # not seconds, so a slow machine (a longer outage) does not matter.
        probes = moves.count(("open", "half_open"))
        assert 1 <= injected <= 2 * (2 + probes), (injected, moves)
    finally:
        await nc.close()
        await stack.close()
