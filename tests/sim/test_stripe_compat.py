"""The billing webhooks use Stripe's real signature format: the official ``stripe`` library's
verifier accepts every genuine delivery and refuses every mangled one and every replay."""

from __future__ import annotations

import time

import anyio
import pytest
from aiohttp import web

from contracts.platforms.signing import SIGNATURE_HEADER
from sim import SimConfig
from sim._faults import MANGLE_MODES
from sim._webhooks import mangled_request

from .conftest import HOST, free_port, running_app, running_sim

stripe = pytest.importorskip("stripe")

SECRET = "whsec_stripe_compat"


def stripe_verifies(body: bytes, header: str | None, tolerance: int = 300) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, SECRET, tolerance=tolerance)
    except stripe.SignatureVerificationError:
        return False
    return True


@pytest.mark.parametrize("mode", MANGLE_MODES)
def test_stripe_refuses_every_mangle_mode(mode: str) -> None:
    body = b'{"id":"evt_1","type":"invoice.finalized","data":{"object":{"total":1234}}}'
    now = int(time.time())
    from contracts.platforms.signing import sign

    assert stripe_verifies(body, sign(SECRET, body, now))
    sent, header = mangled_request(mode, body, SECRET, now)
    assert not stripe_verifies(sent, header)


async def test_stripe_verifies_real_deliveries_and_refuses_extras() -> None:
    verdicts: dict[str, list[bool]] = {"genuine": [], "extra": []}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ok = stripe_verifies(body, request.headers.get(SIGNATURE_HEADER))
        # Genuine deliveries and duplicates verify; mangled ones and stale replays must not.
        kind = "genuine" if b"~" not in body and ok else "extra"
        verdicts[kind].append(ok)
        return web.Response(status=204 if ok else 400)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=8)
    async with running_app(app, hook_port), running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"billing": {"mangle_rate": 1.0,
                                                           "replay_rate": 1.0}})
        await http.post("/billing/v1/bill-runs", json={"invoices": 30})
        with anyio.fail_after(15):
            while True:
                audit = (await http.get("/sim/v1/audit")).body
                sent = sum(d["sent"] for d in audit["faults"]["billing"]["deliveries"].values())
                if audit["accepted"] == 30 and sent == 60:
                    break
                await anyio.sleep(0.02)
    assert verdicts["genuine"] == [True] * 30
    assert verdicts["extra"] == [False] * 60  # 30 mangled + 30 replays, all refused
