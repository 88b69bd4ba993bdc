"""A gateway-like webhook receiver for the simulator tests.

It behaves like a correct gateway by default: verify the signature over the raw body first
(401 mismatch/missing/stale, 400 malformed), decode strictly (400), ignore event types it does
not handle (200), deduplicate by invoice id (a fast 200), and post each new invoice to the
sim's ERP before answering 2xx. Switches break it on purpose so the tests can check that the
audit catches what it does wrong: ``verify=False`` processes anything, ``dedup=False`` posts
every copy, ``skip`` accepts some invoices without posting them (loss), ``versioned`` puts
``:v<n>`` in the external id. Items the ERP answers ``rejected`` go to ``dead_letters``
(their external ids), as a gateway's DLQ would, and are not retried. ``updates=True`` also
posts ``invoice.updated`` events (by version); ``ignore_stale=True`` then skips a version
below one already posted for the invoice, as a per-aggregate version check would.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection
from typing import Any

import aiohttp
import anyio
import msgspec
from aiohttp import web

from contracts import SignatureError
from contracts.platforms.billing import BillingEvent
from contracts.platforms.signing import SIGNATURE_HEADER, verify

EVENT = msgspec.json.Decoder(BillingEvent)


def journal_entry(event: BillingEvent, *, key: str, external_id: str) -> dict[str, Any]:
    inv = event.data.object
    lines = [{"account": "1200", "debit": inv.total}]
    if inv.subtotal:
        lines.append({"account": "2400", "credit": inv.subtotal})
    if inv.tax:
        lines.append({"account": "2200", "credit": inv.tax})
    return {
        "idempotencyKey": key,
        "externalId": external_id,
        "tranDate": "2025-11-27",
        "currency": inv.currency.upper(),
        "memo": f"Invoice {inv.id}",
        "lines": lines,
    }


class GatewayLike:
    def __init__(
        self,
        secret: str,
        *,
        erp_url: str | None = None,
        verify: bool = True,
        dedup: bool = True,
        skip: Collection[str] = (),
        versioned: bool = False,
        delay_s: float = 0.0,
        updates: bool = False,
        ignore_stale: bool = False,
    ) -> None:
        self.secret = secret
        self.erp_url = erp_url
        self.verify = verify
        self.dedup = dedup
        self.skip = set(skip)
        self.versioned = versioned
        self.delay_s = delay_s
        self.updates = updates
        self.ignore_stale = ignore_stale
        self.latest: dict[str, int] = {}
        self.stale: list[str] = []  # event ids skipped as stale
        self.types: list[str] = []  # event types in arrival order
        self.arrivals: list[str] = []  # event ids in arrival order (every request that parsed)
        self.first_seen: list[str] = []  # event ids in order of first arrival
        self.deliveries: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.statuses: list[int] = []
        self.raw: list[tuple[bytes, str | None]] = []  # every request, before verification
        self.headers: dict[str, list[str | None]] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.processed: set[str] = set()
        self.posted = 0
        self.dead_letters: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)
        self.app.cleanup_ctx.append(self._client)

    async def _client(self, app: web.Application) -> Any:
        async with aiohttp.ClientSession() as session:
            self._session = session
            yield
            self._session = None

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._handle(request)
        self.statuses.append(response.status)
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER)
        self.raw.append((body, header))
        if self.verify:
            try:
                verify(header, body, [self.secret], now=time.time())
            except SignatureError as exc:
                return web.json_response({"code": exc.code},
                                         status=400 if exc.code == "signature.malformed" else 401)
        try:
            event = EVENT.decode(body)
        except msgspec.ValidationError as exc:
            return web.json_response({"code": "contract", "message": str(exc)}, status=400)
        except msgspec.DecodeError:
            return web.json_response({"code": "malformed"}, status=400)
        eid = event.id
        self.arrivals.append(eid)
        if eid not in self.deliveries:
            self.first_seen.append(eid)
        self.deliveries[eid] += 1
        self.headers[eid].append(header)
        self.bodies[eid].append(body)
        self.in_flight[eid] += 1
        self.max_in_flight[eid] = max(self.max_in_flight[eid], self.in_flight[eid])
        try:
            if self.delay_s:
                await anyio.sleep(self.delay_s)
            self.types.append(event.type)
            handled = ("invoice.finalized", "invoice.updated") if self.updates else (
                "invoice.finalized",)
            if event.type not in handled:
                return web.json_response({"status": "ignored"})
            inv = event.data.object
            seen_key = inv.id if inv.version == 1 else f"{inv.id}:v{inv.version}"
            if self.dedup and seen_key in self.processed:
                return web.json_response({"status": "duplicate"})
            self.processed.add(seen_key)
            if self.ignore_stale and self.latest.get(inv.id, 0) > inv.version:
                self.stale.append(eid)
                return web.json_response({"status": "stale"})
            self.latest[inv.id] = max(self.latest.get(inv.id, 0), inv.version)
            if inv.id not in self.skip and self.erp_url is not None:
                n = self.deliveries[eid]
                key = f"key-{inv.id}-v{inv.version}" + ("" if self.dedup else f"-{n}")
                external = f"{inv.id}:v{inv.version}" if self.versioned else inv.id
                await self.post_entries([journal_entry(event, key=key, external_id=external)])
            return web.json_response({"status": "accepted"})
        finally:
            self.in_flight[eid] -= 1

    async def post_entries(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._session is not None and self.erp_url is not None
        async with self._session.post(f"{self.erp_url}/erp/v1/journal-entries/bulk",
                                      json={"items": entries}) as resp:
            assert resp.status == 200, await resp.text()
            results: list[dict[str, Any]] = (await resp.json())["results"]
        self.posted += sum(r["status"] == "created" for r in results)
        self.dead_letters.extend(e["externalId"] for e, r in zip(entries, results, strict=True)
                                 if r["status"] == "rejected")
        return results
