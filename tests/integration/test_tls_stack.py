"""S14 end to end: the whole stack with every hop encrypted (``Stack(tls=True)``).

One stack for the module: the broker serves mutual TLS only (a client certificate signed by
the stack's CA, and the NKey identities as always), the gateway's webhook and admin listeners
serve HTTPS only, the simulated platforms serve HTTPS and the gateway verifies them
(``platforms.ca_file``), the simulator's webhook sender verifies the gateway's certificate.
Certificates are made at run time by ``trustme`` into the test's directory. On that stack the
main flows run and are judged by the simulator's ground truth with the same assertions as the
plaintext tests: an invoice burst with credit memos and payments (ERP postings, settlements,
revenue lines), a usage batch, and a SIGKILL of the gateway mid-batch (lost 0, duplicated 0);
a plaintext client is refused on every port.

The tests share the stack and run in file order; each counts relative to what the stack held
before it, except the first bill run, whose follow-ups are derived from the simulator's seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
import pytest_asyncio

from actors.infra import NatsBus
from actors.infra.bus import BrokerRejected, BrokerUnavailable, client_tls
from contracts.platforms.signing import SIGNATURE_HEADER, sign
from gateway.stack import Stack
from gateway.usage_demo import run_usage
from sim._billing import BillRunOptions

from .conftest import billing_event
from .test_end_to_end import assert_clean, wait_until_posted
from .test_payment_flow import assert_exactly_once, at_rest, wait_money
from .test_revenue_flow import assert_revenue_billed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180),
              pytest.mark.asyncio(loop_scope="module")]

INVOICES = 100  # the first bill run: with credit memos and payments
DRILL_INVOICES = 300


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("tls-stack")
    s = Stack(workdir, tls=True, ack_wait_s=2.0, seed=73,
              gateway_toml="[payments]\npark_recheck_s = 0.25\n")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def _trusting(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=stack.ca_file)


async def _plaintext_nats(port: int) -> bytes:
    """What the broker's port answers a client that speaks the NATS protocol in plaintext:
    everything it sends until it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        with anyio.fail_after(30):  # a guard against a hang: the server closes at once
            received += await reader.readline()  # INFO: the server asks for TLS first
            writer.write(b'CONNECT {"verbose":true,"pedantic":false}\r\nPING\r\n')
            await writer.drain()
            while chunk := await reader.read(4096):
                received += chunk
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return received


async def test_a_plaintext_client_is_refused_on_every_port(stack: Stack) -> None:
    assert stack.broker is not None and stack.url.startswith("tls://")
    answer = await _plaintext_nats(stack.broker.port)
    info = msgspec.json.decode(answer.split(b"\r\n", 1)[0].removeprefix(b"INFO "))
    assert info["tls_required"] is True and info["auth_required"] is True
    assert b"+OK" not in answer and b"PONG" not in answer  # closed, nothing served
    # TLS that trusts the CA but presents no client certificate: refused (mutual TLS).
    admin = stack.broker.auth("admin")  # the NKey identity alone
    assert admin is not None
    with pytest.raises((BrokerUnavailable, BrokerRejected)):
        await NatsBus.connect(stack.url, auth=dataclasses.replace(
            admin, tls=client_tls(stack.ca_file)), wait_for_server=3)
    # The same identity with the stack's client certificate: in.
    bus = await NatsBus.connect(stack.url, auth=stack.auth("admin"), wait_for_server=30)
    await bus.close()
    body = msgspec.json.encode(billing_event(1))
    headers = {SIGNATURE_HEADER: sign(stack.webhook_secret, body, int(time.time())),
               "Content-Type": "application/json"}
    listeners = [("webhooks", f"{stack.gateway_url}/webhooks/billing"),
                 ("admin", f"{stack.admin_url}/livez"), ("simulator", f"{stack.sim_url}/healthz")]
    async with aiohttp.ClientSession() as s:
        for name, url in listeners:
            assert url.startswith("https://"), name
            with pytest.raises(aiohttp.ClientError):  # no HTTP answer at all
                async with s.post(url.replace("https://", "http://", 1), data=body,
                                  headers=headers) as r:
                    await r.read()
            # The same port speaks HTTP over TLS to a client that trusts the stack's CA.
            async with s.get(url, ssl=_trusting(stack)) as r:
                assert r.status < 500, name


async def test_invoices_payments_and_revenue_over_tls(stack: Stack) -> None:
    opts = BillRunOptions(credit_memo_rate=0.3, payment_rate=0.7)
    await stack.bill_run(INVOICES, credit_memo_rate=0.3, payment_rate=0.7)
    await wait_money(stack, INVOICES, opts)
    assert_exactly_once(await at_rest(stack))
    result = await stack.wait_drained(INVOICES, stall_timeout=45)
    assert_clean(result, INVOICES)
    assert result.dead_letters == []
    assert_revenue_billed(await stack.wait_revenue(stall_timeout=45))


async def test_a_usage_batch_over_tls(stack: Stack) -> None:
    usage = await run_usage(stack, 300, seed=17, stall_timeout=45)
    assert usage["drained"] and usage["amount_ok"], usage
    assert (usage["completed"], usage["lost"], usage["duplicates"]) == (300, 0, 0)


async def test_sigkill_mid_batch_over_tls_loses_and_doubles_nothing(stack: Stack) -> None:
    before = await stack.audit()
    expected = int(before["issued"]) + DRILL_INVOICES
    starts = stack.gateway_starts
    await stack.bill_run(DRILL_INVOICES, rate=400)
    await wait_until_posted(stack, int(before["posted"]) + DRILL_INVOICES // 4)
    stack.kill_gateway()
    await stack.start_gateway()
    result = await stack.wait_drained(expected, stall_timeout=45)
    assert_clean(result, expected)  # lost 0, duplicates 0, amounts equal
    assert stack.gateway_starts == starts + 1
