"""What the README and docs promise, each shown by a test that fails when the promise is
broken: a webhook gets 503 + ``Retry-After`` while the broker is down; a second SIGTERM stops
at once and is safe; ``reconcile --period`` and ``--legs`` narrow the run; a non-default
``nats.prefix`` works end to end. (``demo --fsync default``, which runs the broker without
fsync on every write, is in ``tests/gateway/test_demo_flow2.py``, on that file's demo run;
``sync.overloaded`` is in ``test_sync_lane.py``.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from gateway.stack import Stack

from .conftest import billing_event, signed
from .test_end_to_end import assert_clean, wait_until_posted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp_path, ack_wait_s=2.0, seed=91)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def post_webhook(stack: Stack, body: bytes) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as http, http.post(
            f"{stack.gateway_url}/webhooks/billing", data=body,
            headers=signed(body, secret=stack.webhook_secret)) as r:
        return r.status, dict(r.headers), msgspec.json.decode(await r.read())


async def test_a_webhook_gets_503_with_retry_after_while_the_broker_is_down(
        stack: Stack) -> None:
    body = msgspec.json.encode(billing_event(900_001))
    assert stack.broker is not None
    stack.broker.kill()
    status, headers, doc = await post_webhook(stack, body)
    assert status == 503, doc
    assert int(headers["Retry-After"]) >= 1
    assert str(doc["code"]).startswith("broker.")
    assert doc["message"]
    # The platform retries once the broker is back: the same delivery is accepted then.
    await stack.broker.start()
    with anyio.fail_after(60):  # a guard against a hang: reconnecting takes what it takes
        while (await post_webhook(stack, body))[0] != 200:
            await anyio.sleep(0.25)


async def test_a_second_sigterm_stops_at_once_and_is_safe(tmp_path: Path) -> None:
    """The first SIGTERM drains: it waits for the ERP call in flight (which the simulator
    holds for 90 s) up to the poster's shutdown timeout. The second stops at once: the
    gateway exits while that call is still in flight at the ERP, without waiting out any
    shutdown timeout. Safe: after a restart nothing is lost or doubled."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=92,
                  gateway_toml="[erp]\ntimeout_s = 120.0\n")
    await stack.start()
    try:
        await stack.bill_run(200, rate=200)
        await wait_until_posted(stack, 20)
        await stack.set_faults({"erp": {"latency_ms": 90_000}})
        # The poster is now waiting on a held ERP call (held 90 s). Each look is a new
        # connection to the simulator: a few per second, not twenty, so that on a loaded box
        # the looks themselves do not fill the simulator's accept queue.
        with anyio.fail_after(85):
            while (await stack.erp_governance())["inFlight"] < 1:
                await anyio.sleep(0.25)
        stack.signal_gateway(signal.SIGTERM)
        with anyio.fail_after(30):
            while "send again to stop at once" not in stack.tail("gateway.log", 200):
                await anyio.sleep(0.05)
        assert stack.gateway_running  # draining: waiting for the held call
        stack.signal_gateway(signal.SIGTERM)
        code = await stack.wait_gateway_exit(timeout=80)
        assert code is not None, "the second SIGTERM did not stop the gateway"
        assert (await stack.erp_governance())["inFlight"] >= 1  # it did not wait
        log = stack.tail("gateway.log", 200)
        assert "second signal: stopping now" in log
        # A drain would cut the held call at the poster's shutdown timeout (and log it); the
        # second signal stopped everything before any shutdown timeout ran out.
        assert "shutdown timeout" not in log, log
        await stack.set_faults({})
        await stack.start_gateway()
        result = await stack.wait_drained(200, stall_timeout=45)
        assert_clean(result, 200)
    finally:
        await stack.close()


def reconcile(stack: Stack, *args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "gateway", "reconcile", "--nats-url", stack.url,
                        "--billing-url", stack.sim_url, "--erp-url", stack.sim_url,
                        "--revenue-url", stack.sim_url, "--partner-url", stack.sim_url,
                        "--data-dir", str(stack.workdir / "gateway"), "--grace", "0", "--json",
                        *args], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode in (0, 1), r.stderr
    doc: dict[str, Any] = msgspec.json.decode(r.stdout)
    return doc


async def test_reconcile_period_and_legs_narrow_the_run(stack: Stack) -> None:
    await stack.bill_run(30)
    assert_clean(await stack.wait_drained(30, stall_timeout=45), 30)
    month = time.strftime("%Y-%m", time.gmtime())
    everything = reconcile(stack)
    assert everything["checked"] == 30
    assert set(everything["legs"]) == {"erp", "revenue", "gl", "payables"}
    this_month = reconcile(stack, "--period", month)
    assert this_month["checked"] == 30
    other_month = reconcile(stack, "--period", "2001-01")
    assert other_month["checked"] == 0
    gl_only = reconcile(stack, "--legs", "gl")
    assert set(gl_only["legs"]) == {"erp", "gl"}  # billing vs ERP always, and the one asked
    assert gl_only["legs"]["gl"]["checked"] > 0
    bad = await anyio.run_process([sys.executable, "-m", "gateway", "reconcile", "--legs",
                                   "ledger"], check=False)
    err = bad.stderr.decode()
    assert bad.returncode == 2 and "ledger" in err and "Traceback" not in err


async def test_a_non_default_prefix_works_end_to_end(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=93, nats_prefix="acme")
    await stack.start()
    try:
        await stack.bill_run(60)
        result = await stack.wait_drained(60, stall_timeout=45)
        assert_clean(result, 60)
        consumers = await stack.consumer_states()
        assert consumers and {c.stream for c in consumers} <= {
            "ACME_BILLING", "ACME_COMMERCIAL", "ACME_USAGE", "ACME_REVPARTNER",
            "ACME_ADVISORIES", "ACME_DLQ"}  # ACME_DLQ: the audit trail's letters consumer
        assert await stack.stream_last_seq("billing") >= 60  # ACME_BILLING holds the run
        default = Stack(tmp_path / "default", nats_url=stack.url)  # erpgw.* names
        default.broker = stack.broker  # the same broker, its identities
        assert await default.consumer_states() == []  # nothing under the default prefix
    finally:
        await stack.close()
