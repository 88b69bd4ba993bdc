"""The ERP records some postings with another amount than the gateway sent (the simulator's
``alter_amount_rate``: a platform bug or a manual edit). The reconciler must report exactly
those as amount breaks, publish them on ``erpgw.mon.recon.*`` with a reversal proposal, and
never repair them itself, not even with ``--repair``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from gateway.stack import Stack

from .test_reconcile import reconcile, settle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_reconciler_reports_exactly_the_altered_postings_and_never_fixes_them(
        tmp_path: Path) -> None:
    import nats

    stack = Stack(tmp_path, ack_wait_s=2.0, seed=63)
    await stack.start()
    nc = await nats.connect(stack.url, **stack.nats_options())
    try:
        published = await nc.subscribe("erpgw.mon.recon.>")
        await stack.set_faults({"erp": {"alter_amount_rate": 0.05}})
        await stack.bill_run(200)
        audit = await settle(stack, 200)
        await stack.set_faults({})
        altered = set(audit["altered_ids"])
        assert altered and audit["altered_count"] == len(altered)
        assert audit["posted"] == 200 and audit["duplicates"] == 0  # nothing else went wrong
        assert audit["amount_posted"] != audit["amount_issued"]  # SUM_OK fails

        seqs = await stack.lane_last_seqs()
        code, doc = reconcile(stack, "--repair")
        assert code == 1
        assert doc["breaks"]["amount"] == len(altered)
        # the GL leg sees the altered amounts too (per account and currency, not per invoice)
        assert {k: n for k, n in doc["breaks"].items() if n and k != "gl"} == {
            "amount": len(altered)}
        assert doc["breaks"]["gl"] > 0
        assert {b["key"] for b in doc["breaks_detail"] if b["kind"] == "amount"} == altered
        proposals = {a["key"]: a["proposal"] for a in doc["actions"]
                     if a["type"] == "flag" and a["kind"] == "amount"}
        assert set(proposals) == altered
        assert all(p.startswith("reverse JE-") and " and repost " in p
                   for p in proposals.values())
        assert doc["repaired"] == 0 and doc["repaired_keys"] == []  # flagged, never fixed

        events: list[tuple[str, dict[str, Any]]] = []
        with anyio.fail_after(10):
            while not any(s.endswith(".report") for s, _ in events):
                msg = await published.next_msg(timeout=10)
                events.append((msg.subject, msgspec.json.decode(msg.data)))
        assert {d["key"] for s, d in events
                if s == "erpgw.mon.recon.break" and d["kind"] == "amount"} == altered
        assert {d["key"] for s, d in events
                if s == "erpgw.mon.recon.proposal" and d["kind"] == "amount"} == altered
        assert not any(s == "erpgw.mon.recon.repair" for s, _ in events)

        # The run is over (its report was seen) and it published no command on any lane;
        # at rest, the ERP's books are as they were: nothing reposted.
        assert await stack.lane_last_seqs() == seqs
        rest = await stack.wait_quiet()
        assert rest.quiet, (rest.busy, rest.moving)
        after = rest.audit
        assert after["postings"] == audit["postings"]
        assert after["altered_ids"] == audit["altered_ids"]
    finally:
        await nc.close()
        await stack.close()


@pytest.mark.timeout(150)
def test_demo_drill_altered_amount_finds_exactly_the_altered_postings() -> None:
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--invoices", "300", "--json",
                        "--flows", "invoices", "--faults", "altered-amount"],
                       capture_output=True, text=True, timeout=140, check=False)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = msgspec.json.decode(r.stdout)
    alt = doc["altered_amount"]
    assert alt["altered"] > 0
    assert alt["exact"] is True
    assert alt["found"] == alt["published"] == alt["altered"]
    assert alt["missed"] == alt["unexplained"] == [] and alt["repaired"] == 0
    assert len(alt["proposals"]) == alt["altered"]
    assert doc["ok"] is True and doc["posted"] == 300 and doc["duplicates"] == 0
    assert "altered-amount" not in doc["recovery_s"]


@pytest.mark.timeout(150)
def test_demo_drill_finds_an_altered_foreign_payment() -> None:
    """With the money flows (two processes: the demo runs payments under faults only when it
    scales out), seed 1 alters the cash application of py_000108, a USD payment of a customer
    of the EUR entity: posted in EUR, so the drill's reconciliation must restate it with the
    gateway's entity map to see an amount break (without it: a currency break, missed)."""
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--gateways", "2",
                        "--invoices", "200", "--seed", "1", "--json", "--flows", "money",
                        "--faults", "altered-amount"],
                       capture_output=True, text=True, timeout=140, check=False)
    assert r.returncode == 0, r.stderr + r.stdout
    alt = msgspec.json.decode(r.stdout)["altered_amount"]
    assert "py_000108" in alt["proposals"]
    assert alt["exact"] is True and alt["missed"] == alt["unexplained"] == []


@pytest.mark.timeout(150)
def test_demo_checks_read_billing_in_stripe_s_dialect() -> None:
    """Billing speaking Stripe: the demo's own checks (the close-blocking figure, the
    altered-amount reconciliation) read Stripe's ``GET /v1/events`` with the simulator's test
    key, as the gateway's reconciler does (they read the simulator's own list and failed with
    ``contract.missing_field``)."""
    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dialects", "stripe",
                        "--invoices", "150", "--json", "--flows", "invoices", "--faults",
                        "altered-amount"],
                       capture_output=True, text=True, timeout=140, check=False)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    doc = msgspec.json.decode(r.stdout)
    alt = doc["altered_amount"]
    assert alt["altered"] > 0 and alt["exact"] is True
    assert doc["close"]["period"] and doc["close"]["by_kind"] == {"recon_break": alt["found"]}
