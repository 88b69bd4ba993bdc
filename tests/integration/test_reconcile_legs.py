"""The reconciler's revenue, GL and payables legs against the whole stack (real nats-server,
simulator and gateway processes): it reports exactly the revenue lines doubled at the platform
and the lines lost in the upload crash window, never re-sends a line in doubt, and re-drives
only what the ledger proves was never sent — once a person released it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from actors.infra.ledger import Ledger
from actors.revenue import PLATFORM
from gateway.stack import Stack

from .test_reconcile import reconcile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

INVOICES = 60


def nonzero(doc: dict[str, Any]) -> dict[str, int]:
    return {k: n for k, n in doc["breaks"].items() if n}


def keys(doc: dict[str, Any], kind: str) -> set[str]:
    return {b["key"] for b in doc["breaks_detail"] if b["kind"] == kind}


async def in_doubt(stack: Stack) -> dict[str, list[str]]:
    """Invoice id -> its line ids held in doubt by the gateway's ledger."""
    ledger = await Ledger.open(stack.workdir / "gateway" / "ledger.db")
    try:
        out: dict[str, list[str]] = {}
        for row in await ledger.find_uploads(PLATFORM, status="in_doubt"):
            out.setdefault(row.invoice_id, []).append(row.line_id)
        return out
    finally:
        await ledger.close()


async def post(stack: Stack, path: str, body: dict[str, Any], key: str | None = None) -> None:
    headers = {"Idempotency-Key": key} if key else None
    async with aiohttp.ClientSession() as s, s.post(f"{stack.sim_url}{path}", json=body,
                                                    headers=headers) as r:
        assert r.status == 201, await r.text()


def day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


async def revenue_lines(stack: Stack) -> int:
    return int((await stack.audit())["revenue"]["lines"])


async def test_revenue_leg_reports_doubled_and_lost_lines_and_repairs_only_the_proven(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=64,
                  gateway_env={"GW_CRASH_AT": "revenue.before_upload:2"},
                  gateway_toml="[revenue]\nbatch = 10\n[reconcile]\ninterval_s = 0\n")
    await stack.start()
    try:
        # The gateway dies between claiming its 2nd upload's lines and sending them: those
        # lines are in doubt in the ledger and absent from the platform (the crash window).
        await stack.bill_run(INVOICES)
        assert await stack.wait_gateway_exit(timeout=60) == 137
        stack.gateway_env = {}
        await stack.start_gateway()
        assert (await stack.wait_drained(INVOICES, stall_timeout=45)).drained
        rev = await stack.wait_revenue(stall_timeout=45)
        doubted = await in_doubt(stack)
        assert doubted, "the interrupted upload's lines must be held in doubt"
        assert rev.audit["lines"] == rev.expected_lines - sum(map(len, doubted.values()))
        # A line doubled at the platform (uploaded directly), and a vendor bill nobody settled.
        inv = next(i for i in await stack.issued_invoices() if i["id"] not in doubted)
        line = inv["lines"]["data"][0]
        await post(stack, "/revenue/v1/batches", {"lines": [{
            "lineId": f"{inv['id']}:{line['id']}", "invoiceId": inv["id"],
            "product": line["product"], "currency": inv["currency"].upper(),
            "amount": line["amount"], "periodStart": day(inv["period_start"]),
            "periodEnd": day(inv["period_end"])}]})
        await post(stack, "/erp/v1/vendor-bills", {
            "externalId": "st_nobody", "vendor": "pt_0001", "currency": "USD",
            "tranDate": "2026-11-27", "memo": "injected", "lines": [
                {"account": "6100", "amount": 700}]}, key="manual-bill-1")

        seqs = await stack.lane_last_seqs()
        code, doc = reconcile(stack, "--repair")
        assert code == 1
        assert nonzero(doc) == {"in_doubt": len(doubted), "revenue_duplicate": 1,
                                "payable_orphan": 1}
        assert keys(doc, "in_doubt") == set(doubted)
        assert keys(doc, "revenue_duplicate") == {inv["id"]}
        assert keys(doc, "payable_orphan") == {"st_nobody"}
        assert doc["legs"]["revenue"]["checked"] == INVOICES
        assert doc["revenue_event_accuracy"] == round(
            (INVOICES - len(doubted) - 1) / INVOICES, 6)
        assert doc["legs"]["gl"]["checked"] > 0 and not doc["legs"]["gl"]["breaks"]
        proposals = {a["key"]: a["proposal"] for a in doc["actions"] if a["type"] == "flag"}
        assert all("present=False" in proposals[k] for k in doubted)  # absent at the platform
        assert "reverse 1 doubled line(s)" in proposals[inv["id"]]
        # in doubt is never re-sent, not even with --repair: nothing moved at the platform
        assert doc["reuploaded"] == 0 and doc["repaired"] == 0
        assert await stack.lane_last_seqs() == seqs  # no command re-driven on any lane
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        assert rest.audit["revenue"]["lines"] == rev.audit["lines"] + 1

        # A person checks the platform (the report says: absent) and releases the lines.
        assert await stack.stop_gateway() == 0
        ledger = await Ledger.open(stack.workdir / "gateway" / "ledger.db")
        try:
            await ledger.use_audit_key(stack.audit_key(), now=time.time())  # the keyed chain
            lines = [ln for ids in doubted.values() for ln in ids]
            assert await ledger.resolve_in_doubt(PLATFORM, lines, present=False,
                                                 now=time.time(), note="absent") == len(lines)
        finally:
            await ledger.close()
        await stack.start_gateway()

        code, doc = reconcile(stack)
        assert nonzero(doc) == {"revenue_missing": len(doubted), "revenue_duplicate": 1,
                                "payable_orphan": 1}
        assert keys(doc, "revenue_missing") == set(doubted)
        assert {a["key"] for a in doc["actions"] if a["type"] == "reupload"} == set(doubted)

        code, doc = reconcile(stack, "--repair")
        assert sorted(doc["reuploaded_keys"]) == sorted(doubted)
        with anyio.fail_after(45):
            while await revenue_lines(stack) < rev.expected_lines + 1:
                await anyio.sleep(0.2)
        code, doc = reconcile(stack)
        # the lost lines are there now, once; the doubled line and the stray bill are flagged,
        # never "fixed" by the gateway
        assert nonzero(doc) == {"revenue_duplicate": 1, "payable_orphan": 1}
        audit = (await stack.audit())["revenue"]
        assert audit["lines"] == rev.expected_lines + 1 and audit["duplicate_lines"] == 1
        assert code == 1
    finally:
        await stack.close()
