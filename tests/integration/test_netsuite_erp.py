"""The whole path with the ERP speaking NetSuite REST (broker, NetSuite-speaking simulator and
gateway as separate processes, judged by the simulator's ground truth): every invoice posted
exactly once under a 429 storm, the decimal amounts equal to the billed ones; and a gateway
without credentials posts nothing and says why."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from actors.infra import NatsBus
from actors.platforms import open_platforms
from actors.reconcile import run_once
from contracts import Subjects
from gateway.app import erp_postings_reader, platform_specs
from gateway.config import load_config
from gateway.demo import netsuite_figures
from gateway.stack import Stack
from sim._netsuite_tba import DEMO_TBA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_each_invoice_posts_once_under_a_429_storm(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=3.0, seed=13, netsuite=True)
    await stack.start()
    try:
        # a third of the upserts answered 429 (the older SSS_REQUEST_LIMIT_EXCEEDED body)
        await stack.set_faults({"erp": {"rate_limit_rate": 0.3, "retry_after_s": 0}})
        await stack.bill_run(300)
        result = await stack.wait_drained(300, stall_timeout=60)
        a = result.audit
        assert result.drained and a["issued"] == 300 and a["accepted"] == 300
        assert result.lost == 0 and a["duplicates"] == 0 and a["unexpected"] == 0
        assert a["posted"] == 300 and result.dead_letters == []
        assert a["faults"]["http"]["erp/journalEntry"]["rate_limit"] > 0
        ns = await netsuite_figures(stack, a)
        assert ns["amounts_match"], ns
        assert ns["unauthorized_401"] == 0
        # The reconciler reads the journal entries through SuiteQL (signed): all matched.
        cfg = load_config(env={}, overrides={"erp": {
            "dialect": "netsuite", "base_url": stack.sim_url, "account": DEMO_TBA.account,
            "auth": {"type": "oauth1_tba", "consumer_key": DEMO_TBA.consumer_key,
                     "consumer_secret": DEMO_TBA.consumer_secret,
                     "token_id": DEMO_TBA.token_id, "token_secret": DEMO_TBA.token_secret}}})
        bus = await NatsBus.connect(stack.url, name="test-recon", auth=stack.auth("operator"))
        try:
            specs = platform_specs(cfg, environ={})
            specs["billing"] = dataclasses.replace(specs["billing"], base_url=stack.sim_url)
            async with open_platforms(specs, limiters={}) as p:
                reader = erp_postings_reader(cfg, p.erp)
                assert reader is not None
                assert len(await reader()) == 300
                run = await run_once(bus, Subjects(), p.billing.reader(), p.erp.reader(),
                                     grace_s=0.0, repair=False, postings=reader)
        finally:
            await bus.close()
        assert run.report.matched == 300
        assert [b for b in run.report.breaks if b.kind != "in_flight"] == []
    finally:
        await stack.close()


async def test_without_credentials_nothing_posts_and_the_sim_says_why(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=3.0, seed=13, netsuite=True, netsuite_auth=False)
    await stack.start()
    try:
        await stack.bill_run(20)
        log = ""
        with anyio.fail_after(60):  # wait for the refusals and the gateway's word on them
            while True:
                audit = await stack.audit()
                refused = audit["faults"]["http"].get("erp/journalEntry", {})
                log = (tmp_path / "gateway.log").read_text()
                if refused.get("unauthorized", 0) > 0 and audit["accepted"] == 20 and (
                        "erp.unauthorized" in log or "erp.auth" in log):
                    break
                await anyio.sleep(0.1)
        assert audit["posted"] == 0
    finally:
        await stack.close()


def test_the_demo_runs_every_flow_on_a_netsuite_erp() -> None:
    """Every flow through an ERP that speaks NetSuite: the close's entries
    (``recognition:…``) and every other external id holding ``:`` are TBA-signed over the path
    as sent (they were refused 401 INVALID_LOGIN: revenue to the GL 0/4)."""
    import subprocess
    import sys

    import msgspec

    r = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dialects", "netsuite",
                        "--invoices", "100", "--json"],
                       capture_output=True, text=True, timeout=220, check=False)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    doc = msgspec.json.decode(r.stdout)
    assert doc["netsuite"]["unauthorized_401"] == 0 and doc["netsuite"]["amounts_match"] is True
    gl = doc["flows"]["revenue_to_gl"]
    assert gl["completed"] == gl["expected"] > 0 and gl["exact"] is True
