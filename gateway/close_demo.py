"""Revenue to the GL in ``erpgw demo``: after the deal run, a close run of the month the deals'
contracts start in, judged against the simulator; and after everything drained, what blocks the
close of the bill run's month (``close.blocking``, as ``erpgw close status`` counts it).

The close run is the one ``erpgw close run`` does (``actors.close.close_run``) against the
stack's gateway (its ledger, the operator identity); the flow is ``completed`` per currency
whose run the ERP poster applied, and ``exact`` when the ERP's revenue account for the month
equals what the revenue platform recognises in it, per currency, to the minor unit, and (with
entities) the close's entries of each entity, net of their reversals, equal what the contracts
of that entity's customers recognise, per currency (``by_entity``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from actors.close import close_run, close_status, group_by_entity, wait_applied
from actors.infra import Ledger, NatsBus
from actors.infra.http import HttpClient, HttpResponse
from actors.infra.kv import KvBucket
from actors.infra.state import SharedVersions, bucket_name
from actors.lifecycle.fx import EntityMap
from actors.router.invoices import AccountMap
from contracts import Subjects
from contracts.platforms.revenue import RecognitionDetail

from .drills import billing_client, billing_read_for, erp_entries
from .stack import Stack

__all__ = ["close_blocking", "contract_start_period", "entity_revenue", "recognised_by_entity",
           "revenue_to_gl_ok", "run_revenue_to_gl"]

_dec = msgspec.json.Decoder()
_detail = msgspec.json.Decoder(RecognitionDetail)
_REVERSAL = ":reversal"


def recognised_by_entity(detail: RecognitionDetail, entities: EntityMap
                         ) -> dict[str, dict[str, int]]:
    """What ``detail`` recognises per entity of its contracts' customers and currency (minor
    units; zero totals left out). Pure."""
    out: dict[str, dict[str, int]] = {}
    for entity, items in group_by_entity(detail.items, entities).items():
        for it in items:
            row = out.setdefault(entity, {})
            row[it.currency.upper()] = row.get(it.currency.upper(), 0) + it.amount
    return {e: dict(sorted((c, a) for c, a in row.items() if a))
            for e, row in out.items() if any(row.values())}


def entity_revenue(entries: list[dict[str, Any]], period: str) -> dict[str, dict[str, int]]:
    """The revenue the ERP's close entries of ``period`` (external ids
    ``recognition:<entity>:<period>:<currency>[:v<n>]``) post per entity (the entry's
    ``subsidiary``) and currency, a reversal (``…:reversal``) taking its entry's amount back.
    A close entry's debits are its revenue (one debit: deferred revenue released). Pure."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        key: str = e["externalId"]
        if not key.startswith("recognition:") or key.split(":")[2:3] != [period]:
            continue
        sign = -1 if key.endswith(_REVERSAL) else 1
        row = out.setdefault(e.get("subsidiary") or "(none)", {})
        row[e["currency"]] = row.get(e["currency"], 0) + sign * e["amount"]
    return {k: dict(sorted((c, a) for c, a in v.items() if a))
            for k, v in sorted(out.items()) if any(v.values())}


def contract_start_period(now: datetime) -> str:
    """The month the simulator's deals start in: the one after ``now``'s. Pure."""
    first_next = (now.date().replace(day=1) + timedelta(days=32)).replace(day=1)
    return f"{first_next.year:04d}-{first_next.month:02d}"


class _Reader:
    def __init__(self, http: HttpClient) -> None:
        self.http = http

    async def get(self, path: str) -> HttpResponse:
        return await self.http.request("GET", path, None)


async def run_revenue_to_gl(stack: Stack, *, timeout: float = 60.0,
                            entity: str = "default", entities: EntityMap | None = None
                            ) -> dict[str, Any]:
    """``flows.revenue_to_gl`` of the demo: ``{"period", "completed", "expected", "exact",
    "recognised", "gl_revenue"}`` (amounts per currency in minor units); with ``entities``
    also ``by_entity``: ``{"recognised", "erp"}`` per entity and currency, and ``exact`` only
    when they are equal too. Raises ``GatewayError`` when a platform or the broker
    refuses."""
    period = contract_start_period(datetime.now(UTC))
    accounts = AccountMap()
    subjects = Subjects(prefix=stack.nats_prefix)
    bus = await NatsBus.connect(stack.url, name="erpgw-demo-close", auth=stack.auth("operator"))
    try:
        versions = SharedVersions(KvBucket.on(bus, bucket_name(subjects, "versions")))
        async with HttpClient(stack.sim_url, timeout=30.0, platform="revenue",
                              ca_file=stack.ca_file) as http:
            plan = await close_run(_Reader(http), versions, bus, subjects, entity=entity,
                                   period=period, accounts=accounts, entities=entities)
            applied = await wait_applied(versions, plan, timeout)
            totals = _dec.decode((await http.request(
                "GET", f"/revenue/v1/recognition?period={period}", None)).body)
            detail = _detail.decode((await http.request(
                "GET", f"/revenue/v1/recognition/contracts?period={period}", None)).body)
            gl = _dec.decode((await http.request(
                "GET", f"/erp/v1/gl/balances?period={period}", None)).body)
    finally:
        await bus.close()
    recognised = {c: a for c, a in totals["amount"].items() if a}
    gl_revenue = {b["currency"]: b["credit"] - b["debit"] for b in gl["balances"]
                  if b["account"] == accounts.revenue}
    flow: dict[str, Any] = {"period": period, "completed": len(plan) if applied else 0,
                            "expected": len(recognised), "exact": gl_revenue == recognised,
                            "recognised": recognised, "gl_revenue": gl_revenue}
    if entities is not None and entities.configured:
        want = recognised_by_entity(detail, entities)
        got = entity_revenue(await erp_entries(stack), period)
        flow["expected"] = sum(len(v) for v in want.values())
        flow["by_entity"] = {"recognised": want, "erp": got}
        flow["exact"] = bool(flow["exact"] and want == got)
    return flow


def revenue_to_gl_ok(flow: dict[str, Any]) -> bool:
    """Every currency's run applied and the GL's revenue equal to the recognition."""
    return bool(flow["completed"] == flow["expected"] and flow["exact"])


async def close_blocking(stack: Stack, period: str, *, entity: str | None = None,
                         entities: EntityMap | None = None,
                         billing_dialect: str = "erpgw") -> dict[str, Any]:
    """What blocks the close of ``period`` (``erpgw close status`` against the stack): the
    entity's ``to_builtins`` document (``blocking``, ``by_kind``, ``items``…); ``entity``
    defaults to ``entities.default`` (``"default"`` without entities). Raises
    ``GatewayError`` when a platform, the ledger or the broker refuses."""
    if entity is None:
        entity = entities.default if entities is not None else "default"
    subjects = Subjects(prefix=stack.nats_prefix)
    ledger_path = stack.data_dir / "ledger.db"
    bus = await NatsBus.connect(stack.url, name="erpgw-demo-close-status",
                                auth=stack.auth("operator"))
    ledger = await Ledger.open(ledger_path) if ledger_path.exists() else None
    try:
        versions = SharedVersions(KvBucket.on(bus, bucket_name(subjects, "versions")))
        async with billing_client(stack, billing_dialect) as billing, \
                HttpClient(stack.sim_url, timeout=30.0, platform="erp",
                           ca_file=stack.ca_file) as erp, \
                HttpClient(stack.sim_url, timeout=30.0, platform="revenue",
                           ca_file=stack.ca_file) as revenue:
            status = await close_status(bus, subjects, billing=_Reader(billing),
                                        erp=_Reader(erp), revenue=_Reader(revenue),
                                        versions=versions, entity=entity, period=period,
                                        accounts=AccountMap(), ledger=ledger,
                                        entities=entities,
                                        billing_read=billing_read_for(billing, billing_dialect))
    finally:
        if ledger is not None:
            await ledger.close()
        await bus.close()
    return status.to_builtins()
