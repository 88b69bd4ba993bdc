"""S11, S21 end to end: signed webhooks whose ids would leave their URL path segment (a
payment's customer, a deal's id, a subscription's id — the ids the flows later put into a
platform's path) go through the real listener of a gateway on a real broker with the simulated
platforms over HTTP, between ordinary invoices and a payment. Each hostile webhook gets 400
``contract.constraint`` naming its field, nothing of it is stored, and every request the
gateway sent to a platform (each call of ``HttpClient.request``, recorded on its way through)
went to the platform's host, inside its path: no segment is a dot segment or holds an escape,
a slash or a control character, and the URL library sends the path as given. The ordinary
traffic is posted as usual."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from yarl import URL

from actors.infra.http import HttpClient, HttpResponse
from contracts import LANES
from contracts.platforms.partner import DEAL_SIGNATURE_HEADER
from contracts.platforms.signing import sign
from gateway.broker import EmbeddedBroker
from tests.integration.conftest import SECRET, billing_event, running_gateway, signed
from tests.security.test_path_ids import HOSTILE, deal_event, payment_event, subscription_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Every segment of a path the gateway sends: what the platforms' own ids look like.
SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_:-][A-Za-z0-9_.:-]*")
ROUTES = {  # (webhook path, a signed body of the hostile id, the id's JSON path)
    "payment customer": ("/webhooks/billing", payment_event, "$.data.object.customer"),
    "subscription id": ("/webhooks/billing", subscription_event, "$.data.object.id"),
    "deal id": ("/webhooks/partner", deal_event, "$.data.object.id"),
}


def _fresh(doc: dict[str, Any], n: int) -> bytes:
    """``doc`` with a unique event id and a current time (each webhook is a new event)."""
    doc["id"] = f"evt_hostile_{n}"
    doc["created"] = int(time.time())
    return msgspec.json.encode(doc)


async def test_hostile_ids_get_their_code_and_no_request_leaves_its_path(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []  # the absolute URL of every platform request
    real = HttpClient.request

    async def recording(self: HttpClient, method: str, path: str, body: bytes | None, *,
                        headers: dict[str, str] | None = None) -> HttpResponse:
        sent.append(self.url(path))
        return await real(self, method, path, body, headers=headers)

    monkeypatch.setattr(HttpClient, "request", recording)
    async with running_gateway(
            broker, tmp_path, sim_url,
            partner={"base_url": sim_url, "webhook_secrets": [SECRET]}) as gw:
        base = gw.url.removesuffix("/webhooks/billing")

        async def send(path: str, body: bytes) -> tuple[int, dict[str, Any]]:
            headers = signed(body)
            if path == "/webhooks/partner":
                headers = {DEAL_SIGNATURE_HEADER: sign(SECRET, body, int(time.time())),
                           "Content-Type": "application/json"}
            async with aiohttp.ClientSession() as s, s.post(base + path, data=body,
                                                            headers=headers) as r:
                return r.status, msgspec.json.decode(await r.read())

        first = msgspec.json.encode(billing_event(1))
        assert (await send("/webhooks/billing", first))[0] == 200
        # The first event's own downstream messages (its ERP command) are in before counting.
        await gw.wait_idle()
        before = sum([await gw.bus.stream_messages(gw.subjects.stream(lane)) for lane in LANES])

        n = 0
        for route, (path, build, field) in ROUTES.items():
            for name, value in HOSTILE.items():
                n += 1
                status, doc = await send(path, _fresh(build(value), n))
                assert (status, doc["code"], doc["path"]) == (
                    400, "contract.constraint", field), (route, name, doc)
        stored = sum([await gw.bus.stream_messages(gw.subjects.stream(lane)) for lane in LANES])
        assert stored == before  # not one hostile webhook was stored

        # The rest of the traffic: another invoice, and the first one's payment (whose
        # customer the commission flow looks up at the partner portal, in a path).
        assert (await send("/webhooks/billing", msgspec.json.encode(billing_event(2))))[0] == 200
        paid = payment_event("cus_1")
        paid["data"]["object"] |= {"id": "py_000001", "invoice": "in_000001", "amount": 3300}
        assert (await send("/webhooks/billing", _fresh(paid, 0)))[0] == 200
        await gw.wait_idle()
        for invoice in ("in_000001", "in_000002"):
            assert len(await gw.erp_postings(invoice)) == 1, invoice

    paths = [u.removeprefix(sim_url) for u in sent]
    assert all(u.startswith(sim_url + "/") for u in sent), sent
    assert "/partner/v1/attributions/cus_1" in paths, sorted(set(paths))
    assert any(p.startswith("/erp/") for p in paths), paths
    for url, path in zip(sent, paths, strict=True):
        assert URL(url).raw_path == path.split("?", 1)[0], url  # sent as given
        assert all(SAFE_SEGMENT.fullmatch(seg) for seg in path.split("?", 1)[0][1:].split("/")), url
