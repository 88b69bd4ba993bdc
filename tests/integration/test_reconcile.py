"""The reconciler against the whole stack: it finds exactly the breaks injected into the ERP
(postings lost after a 2xx, a double posting, an orphan) and repairs only the safe ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def settle(stack: Stack, expected_accepted: int) -> dict[str, Any]:
    """Wait until every invoice is accepted and the system is at rest (every consumer idle,
    the ERP's postings stable): what the ERP holds then is all it will ever hold."""
    with anyio.fail_after(60):  # a guard against a hang, not a speed target
        while (await stack.audit())["accepted"] < expected_accepted:
            await anyio.sleep(0.25)
    rest = await stack.wait_quiet()
    assert rest.quiet, (rest.busy, rest.moving)
    return rest.audit


async def erp_post(stack: Stack, key: str, external_id: str, amount: int) -> None:
    body = {"items": [{"idempotencyKey": key, "externalId": external_id,
                       "tranDate": "2026-11-27", "currency": "USD", "memo": "injected",
                       "lines": [{"account": "1200", "debit": amount},
                                 {"account": "2400", "credit": amount}]}]}
    async with aiohttp.ClientSession() as s, s.post(
            f"{stack.sim_url}/erp/v1/journal-entries/bulk", json=body) as r:
        assert r.status == 200
        assert (await r.json())["results"][0]["status"] == "created"


def reconcile(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "gateway", "reconcile", "--nats-url", stack.url,
                        "--billing-url", stack.sim_url, "--erp-url", stack.sim_url,
                        "--revenue-url", stack.sim_url, "--partner-url", stack.sim_url,
                        "--data-dir", str(stack.workdir / "gateway"),
                        "--grace", "0", "--json", *args],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode in (0, 1), r.stderr
    doc: dict[str, Any] = msgspec.json.decode(r.stdout)
    return r.returncode, doc


async def test_reconciler_finds_injected_breaks_and_repairs_only_missing(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=61)
    await stack.start()
    try:
        await stack.set_faults({"erp": {"silent_drop_rate": 0.05}})
        await stack.bill_run(200)
        audit = await settle(stack, 200)
        await stack.set_faults({})
        dropped = audit["unposted_count"]
        assert dropped > 0  # the ERP said "created" and lost them
        lost_ids = set(audit["unposted"])
        # an ERP-side double posting of a posted invoice, and a posting nobody billed
        posted_id = next(f"in_{i:06d}" for i in range(1, 201) if f"in_{i:06d}" not in lost_ids)
        inv_total = None
        async with aiohttp.ClientSession() as s, s.get(
                f"{stack.sim_url}/erp/v1/journal-entries",
                params={"externalId": posted_id}) as r:
            inv_total = (await r.json())["items"][0]["amount"]
        await erp_post(stack, "manual-double-1", posted_id, inv_total)
        await erp_post(stack, "manual-orphan-1", "in_999999", 500)

        before = await stack.stream_last_seq("billing")
        code, doc = reconcile(stack)
        assert code == 1
        assert doc["checked"] == 200
        assert doc["breaks"]["missing"] == dropped
        assert doc["breaks"]["duplicate"] == 1 and doc["breaks"]["orphan"] == 1
        assert doc["breaks"]["amount"] == 0 and doc["breaks"]["currency"] == 0
        assert {b["key"] for b in doc["breaks_detail"] if b["kind"] == "missing"} == lost_ids
        assert doc["repaired"] == 0  # without --repair nothing moves
        proposals = {a["key"]: a["proposal"] for a in doc["actions"] if a["type"] == "flag"}
        assert proposals[posted_id].startswith("reverse JE-")
        # Without --repair nothing moves: no command re-driven on the lane, nothing posted.
        assert await stack.stream_last_seq("billing") == before
        assert (await settle(stack, 200))["unposted_count"] == dropped

        code, doc = reconcile(stack, "--repair")
        assert sorted(doc["repaired_keys"]) == sorted(lost_ids)
        with anyio.fail_after(30):
            while (await stack.audit())["unposted_count"]:
                await anyio.sleep(0.2)
        after = await stack.audit()
        assert after["posted"] == 200
        assert after["amount_issued"] == {
            cur: amt - (500 if cur == "USD" else 0) - (inv_total if cur == "USD" else 0)
            for cur, amt in after["amount_posted"].items()}
        code, doc = reconcile(stack)
        assert doc["breaks"]["missing"] == 0
        # the double posting and the orphan are still there: flagged, never auto-"fixed"
        assert doc["breaks"]["duplicate"] == 1 and doc["breaks"]["orphan"] == 1
        assert code == 1
    finally:
        await stack.close()


async def test_the_reconciler_actor_repairs_on_its_own(tmp_path: Path) -> None:
    """The periodic reconciler inside the gateway finds lost postings and re-drives them, and
    reports each run on erpgw.mon.recon.report."""
    import nats

    # The ERP leg alone: it is what this test is about, and with the other legs on, a run
    # every second keeps re-driving invoice events (see the revenue leg's reuploads), so the
    # system would never be at rest to count.
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=62,
                  gateway_toml="[reconcile]\ninterval_s = 1.0\ngrace_s = 0\nlegs = []\n")
    await stack.start()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        reports = await nc.subscribe("erpgw.mon.recon.report")
        await stack.set_faults({"erp": {"silent_drop_rate": 0.05}})
        await stack.bill_run(200)
        # The ERP lost postings (the event, not a time), and every invoice reached the gateway;
        # the reconciler is already re-driving them (every second), so there is no rest yet.
        await stack.wait_injected("erp", "silent_drop", 1)
        with anyio.fail_after(60):
            while (await stack.audit())["accepted"] < 200:
                await anyio.sleep(0.2)
        await stack.set_faults({})
        with anyio.fail_after(60):
            while (await stack.audit())["unposted_count"]:
                await anyio.sleep(0.2)
        rest = await stack.wait_quiet()  # duplicates counted at rest
        assert rest.quiet, (rest.busy, rest.moving)
        audit = rest.audit
        assert audit["duplicates"] == 0 and audit["posted"] == 200
        assert audit["faults"]["http"]["erp/journal-entries.bulk"]["silent_drop"] > 0
        repaired = [line for line in stack.tail("gateway.log", 5000).splitlines()
                    if "erpgw.reconcile: reconciled" in line and "repaired 0" not in line]
        assert repaired  # the losses were found and re-driven by the gateway itself
        # Reports queue up from the first run on (when billing had issued only part of the
        # run on a slow machine): read them until one covers the whole run.
        with anyio.fail_after(60):
            while (report := msgspec.json.decode((await reports.next_msg(timeout=60)).data)
                   )["checked"] < 200:
                pass
        assert report["checked"] == 200 and "missing" in report["breaks"]
    finally:
        await nc.close()
        await stack.close()


async def test_amendments_credit_notes_and_payments_reconcile_clean(tmp_path: Path) -> None:
    """A run with every billing document kind (amended invoices delivered out of order, credit
    notes, payments): once drained, the reconciler matches every document, with each amended
    invoice's superseded posting cancelled by its reversal, and finds no break at all."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=63)
    await stack.start()
    try:
        await stack.bill_run(150, amend_rate=0.3, reorder_amendments=0.5,
                             credit_memo_rate=0.3, payment_rate=0.5)
        await settle(stack, 150)
        doc: dict[str, Any] = {}
        with anyio.fail_after(90):
            while True:  # credit notes and payments follow the invoices: until all posted
                code, doc = reconcile(stack)
                if code == 0:
                    break
                await anyio.sleep(1.0)
        audit = await stack.audit()
        notes, payments = audit["credit_memo_postings"], audit["payment_postings"]
        assert notes["issued"] > 0 and payments["issued"] > 0
        assert notes["posted"] == notes["issued"] and payments["posted"] == payments["issued"]
        assert audit["reversals"] > 0  # some amendments did reverse a posted version
        assert doc["checked"] == 150 + notes["issued"] + payments["issued"]
        assert doc["matched"] == doc["checked"]
        assert not any(doc["breaks"].values())
    finally:
        await stack.close()
