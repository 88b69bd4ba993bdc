"""``StripeReader`` and the reconciler's Stripe read against the simulator in Stripe's dialect:
bearer key, ``Stripe-Version``, ``starting_after``/``has_more`` paging, 429 + Retry-After."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web

from actors.infra.http import HttpClient, PlatformRejected
from actors.platforms import PlatformGuard
from actors.platforms.auth import AuthSettings, load_auth
from actors.platforms.billing.stripe import StripeReader
from actors.reconcile.stripe import read_billing_stripe
from sim import SimConfig
from tests.sim.conftest import HOST, free_port, running_app, running_sim

KEY = "sk_test_reader_51Qx"


async def test_reader_pages_honours_429_and_feeds_the_reconciler() -> None:
    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_port = free_port()
    # A tight billing API budget: paging through the lists draws 429s with Retry-After.
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       seed=9, billing_dialect="stripe", stripe_secret_key=KEY,
                       billing_rate_limit=4.0, billing_rate_burst=2)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await anyio.sleep(seconds)

    async with running_app(app, hook_port), running_sim(config) as sim:
        await sim.post("/billing/v1/bill-runs", json={
            "invoices": 30, "credit_memo_rate": 0.4, "payment_rate": 0.5})
        with anyio.fail_after(30):
            while True:
                audit = (await sim.get("/sim/v1/audit")).body
                if audit["accepted"] == 30 and audit["payments"]["issued"] == \
                        audit["payments"]["accepted"] and audit["credit_memos"]["issued"] == \
                        audit["credit_memos"]["accepted"]:
                    break
                await anyio.sleep(0.05)
        def key(token: str) -> HttpClient:
            signer = load_auth(AuthSettings(type="bearer", token=token), environ={})
            return HttpClient(sim.base, platform="billing", signer=signer)

        async with key(KEY) as http, key("sk_test_wrong") as wrong:
            reader = StripeReader(PlatformGuard("billing.reads", http, open_code="x"),
                                  page_size=7, sleep=sleep)
            events = await reader.events()
            invoices = await reader.invoices()
            read = await read_billing_stripe(reader, None)
            with pytest.raises(PlatformRejected) as info:
                await StripeReader(PlatformGuard("billing.reads", wrong, open_code="x"),
                                   sleep=sleep).invoices()
            assert info.value.status == 401
    assert waits and all(w >= 1 for w in waits)  # every 429 waited its Retry-After
    assert len(events) == len({e.id for e in events})  # paged without gaps or repeats
    assert [i.id for i in invoices] == [f"in_{i:06d}" for i in range(30, 0, -1)]
    notes, payments = audit["credit_memos"]["accepted"], audit["payments"]["accepted"]
    assert len(events) == 30 + notes + payments
    assert len(read.docs) == len(events)
    issued = {d.key: d for d in read.docs if d.key.startswith("in_")}
    assert sorted(issued) == sorted(f"in_{i:06d}" for i in range(1, 31))
    by_currency: dict[str, int] = {}
    for d in issued.values():
        by_currency[d.currency] = by_currency.get(d.currency, 0) + d.amount
    assert by_currency == audit["amount_issued"]  # the sim's ground truth, per currency
