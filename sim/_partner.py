"""The simulated partner portal: partners, tiers, attribution and settlement statements.

Theory of operation. The programme is fixed and deterministic (docs/simulator.md): eight
partners ``pt_0001`` … ``pt_0008`` whose tier cycles ``registered``, ``silver``, ``gold``,
``platinum``; each tier's commission rate is in ``TIERS``. Which partner resells a customer is
the pure ``partner_of(customer, seed)`` (about 70 % of customers have one, from a seeded hash of
the id), unless a deal registered the customer with a partner (``PartnerPortal.attribute``,
used by the deal runs): the registration wins and names its deal.

Settlements (``POST /partner/v1/settlements``) are idempotent by ``Idempotency-Key`` like the
billing API: the same key and body answer the stored response (200, ``Idempotent-Replayed``),
the same key with another body 422 ``idempotency_key_reused``. The portal does *not* dedupe by
settlement id (a client that sends one settlement under two keys records it twice), so the
audit's ``duplicates`` is the measure of a client's exactly-once.

``PartnerPortal`` is pure state (no clock but the ``now`` passed in, no I/O);
``PartnerService`` is the HTTP shell.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import msgspec
from aiohttp import web

from contracts import apply_rate_bp
from contracts.platforms.billing import BillingPayment
from contracts.platforms.partner import (
    IDEMPOTENCY_KEY_REUSED,
    NOT_FOUND,
    Attribution,
    Partner,
    PartnerList,
    SettlementIn,
    SettlementList,
    SettlementReceipt,
    Tier,
    TierList,
)

from ._http import SimHTTPError, decode_body, json_response

__all__ = [
    "PARTNERS",
    "TIERS",
    "PartnerPortal",
    "PartnerService",
    "SettlementAudit",
    "commissioned_invoices",
    "partner_of",
    "settlement_audit",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_CUSTOMER = re.compile(r"^[A-Za-z0-9_.:~-]{1,200}$")
_ENCODER = msgspec.json.Encoder()
_SETTLEMENT_DECODER = msgspec.json.Decoder(SettlementIn)

# The programme's tiers, lowest first, and their commission rates (basis points).
TIERS: tuple[Tier, ...] = (
    Tier(name="registered", commission_bp=1000),
    Tier(name="silver", commission_bp=1500),
    Tier(name="gold", commission_bp=2000),
    Tier(name="platinum", commission_bp=2500),
)
_TIER_BP: Mapping[str, int] = MappingProxyType({t.name: t.commission_bp for t in TIERS})

# ``pt_000N`` has tier ``TIERS[(N - 1) % 4]``.
PARTNERS: tuple[Partner, ...] = tuple(
    Partner(id=f"pt_{n:04d}", name=f"Partner {n:04d} Ltd", tier=TIERS[(n - 1) % len(TIERS)].name)
    for n in range(1, 9))
_BY_ID: Mapping[str, Partner] = MappingProxyType({p.id: p for p in PARTNERS})

# Share of customers (percent) resold by a partner; the rest buy direct.
ATTRIBUTED_PERCENT = 70


def partner_of(customer_id: str, seed: int) -> str | None:
    """The partner that resells ``customer_id`` by default, or ``None`` for a direct customer.

    Pure: a SHA-256 of the seed and the id picks "has a partner" (about 70 %) and which one, so
    the gateway, the audit and the tests agree without sharing state. Raises nothing.
    """
    digest = hashlib.sha256(f"{seed}/partner/{customer_id}".encode()).digest()
    roll = int.from_bytes(digest[:8], "big")
    if roll % 100 >= ATTRIBUTED_PERCENT:
        return None
    return PARTNERS[(roll // 100) % len(PARTNERS)].id


class SettlementAudit(msgspec.Struct, frozen=True):
    """The ``settlements`` section of the audit (ground truth of flow 3).

    ``recorded`` settlements at the portal (every accepted POST that was not a replay),
    ``distinct`` ids among them, ``duplicates`` = ``recorded - distinct``; ``payables`` vendor
    bills in the ERP whose ``externalId`` names a settlement, ``payable_duplicates`` likewise;
    ``without_payable`` settlement ids with no vendor bill, ``payable_without_settlement``
    vendor bills naming no recorded settlement. ``expected`` counts the accepted payments of
    customers attributed when the payment was accepted, with a commission above zero;
    ``missing`` those whose invoice no settlement line names. ``amount`` sums the distinct
    settlements per currency.
    ``cycle_ms`` (``p50``, ``p99``, ``max``, nearest rank; empty when none): per payable, from
    the 2xx of the payment's webhook to the ERP recording the vendor bill, as the platforms
    saw it (flow 3's settlement cycle time, measured outside the gateway).
    """

    recorded: int = 0
    distinct: int = 0
    duplicates: int = 0
    payables: int = 0
    payable_duplicates: int = 0
    without_payable: int = 0
    payable_without_settlement: int = 0
    expected: int = 0
    missing: int = 0
    amount: dict[str, int] = {}
    cycle_ms: dict[str, float] = {}


class PartnerPortal:
    """Partners, attributions registered by deals, and recorded settlements. Pure state (the
    registration time defaults to the wall clock)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        # customer -> (partner, deal, registered at: unix s)
        self.registered: dict[str, tuple[str, str | None, float]] = {}
        self.settlements: list[SettlementReceipt] = []  # recording order
        self._idempotency: dict[str, tuple[bytes, bytes]] = {}  # key -> (digest, response)

    def reset(self) -> None:
        self.registered = {}
        self.settlements = []
        self._idempotency = {}

    def attribute(self, customer: str, partner: str, deal_id: str | None = None,
                  at: float | None = None) -> None:
        """Register ``customer`` as resold by ``partner`` from ``at`` on (default: now; a deal
        registration; later calls win). Raises ``KeyError`` for a partner the programme does
        not have."""
        if partner not in _BY_ID:
            raise KeyError(f"no partner {partner!r}")
        self.registered[customer] = (partner, deal_id, time.time() if at is None else at)

    def attribution(self, customer: str, as_of: float | None = None) -> Attribution | None:
        """Who resells ``customer`` (a deal's registration, else ``partner_of``), or ``None``
        for a direct customer; ``as_of`` (unix s) ignores registrations made after it."""
        partner_id: str | None = None
        deal_id: str | None = None
        found = self.registered.get(customer)
        if found is not None and (as_of is None or found[2] <= as_of):
            partner_id, deal_id, _ = found
        if partner_id is None:
            partner_id = partner_of(customer, self.seed)
        if partner_id is None:
            return None
        partner = _BY_ID[partner_id]
        return Attribution(customer=customer, partner=partner.id, tier=partner.tier,
                           commission_bp=_TIER_BP[partner.tier], deal_id=deal_id)

    def record(self, key: str, body: SettlementIn, now: float) -> tuple[int, bytes]:
        """Record ``body`` under idempotency ``key``: ``(201, receipt)`` the first time,
        ``(200, stored receipt)`` for the same key and body again.

        Raises ``SimHTTPError``: 422 ``idempotency_key_reused`` for the same key with another
        body, 404 for an unknown partner, 400 when the lines do not sum to the total.
        """
        digest = hashlib.sha256(_ENCODER.encode(body)).digest()
        seen = self._idempotency.get(key)
        if seen is not None:
            if not hmac.compare_digest(seen[0], digest):
                raise SimHTTPError(422, IDEMPOTENCY_KEY_REUSED,
                                   f"{IDEMPOTENCY_HEADER} {key!r} was used with a different "
                                   "request body", path=IDEMPOTENCY_HEADER)
            return 200, seen[1]
        if body.partner not in _BY_ID:
            raise SimHTTPError(404, NOT_FOUND, f"no partner {body.partner!r}", path="$.partner")
        if sum(line.amount for line in body.lines) != body.total:
            raise SimHTTPError(400, "settlement.total_mismatch",
                               "the lines' amounts do not sum to total", path="$.total")
        receipt = SettlementReceipt(id=body.id, partner=body.partner, currency=body.currency,
                                    total=body.total, lines=list(body.lines),
                                    idempotency_key=key, recorded_at=now)
        encoded = _ENCODER.encode(receipt)
        self.settlements.append(receipt)
        self._idempotency[key] = (digest, encoded)
        return 201, encoded


def commissioned_invoices(portal: PartnerPortal, payments: Iterable[BillingPayment],
                          paid_at: Mapping[str, float] | None = None) -> list[str]:
    """The invoices whose payment should earn a commission: the customer had a partner when
    the payment's webhook was accepted (``paid_at`` by payment id; a deal registering the
    customer later does not count) and the paid amount at its tier's rate rounds to more than
    zero. Pure; raises nothing."""
    out: list[str] = []
    for payment in payments:
        as_of = (paid_at or {}).get(payment.id)
        found = portal.attribution(payment.customer, as_of) if payment.customer else None
        if found is not None and apply_rate_bp(payment.amount, found.commission_bp) > 0:
            out.append(payment.invoice)
    return out


def _nearest_rank(ordered: list[float], pct: float) -> float:
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def settlement_audit(portal: PartnerPortal, payable_ids: Iterable[str],
                     expected_invoices: Iterable[str], *,
                     payables_at: Mapping[str, float] | None = None,
                     paid_at: Mapping[str, float] | None = None) -> SettlementAudit:
    """Match the portal's settlements with the ERP's vendor bills (by settlement id) and with
    the invoices that should have earned a commission. ``payables_at``: when the ERP recorded
    the first bill of each settlement id; ``paid_at``: when each invoice's payment webhook got
    its 2xx (for ``cycle_ms``). Pure; raises nothing."""
    ids = [s.id for s in portal.settlements]
    distinct = set(ids)
    payables = list(payable_ids)
    cycles: list[float] = []
    first = {s.id: s for s in reversed(portal.settlements)}  # one per id: the first recorded
    for sid, s in first.items():
        bill_at = (payables_at or {}).get(sid)
        paid = [(paid_at or {}).get(line.invoice_id) for line in s.lines]
        known = [p for p in paid if p is not None]
        if bill_at is not None and known and len(known) == len(paid):
            cycles.append((bill_at - max(known)) * 1000.0)
    cycles.sort()
    cycle_ms = {} if not cycles else {
        "p50": round(_nearest_rank(cycles, 50), 3), "p99": round(_nearest_rank(cycles, 99), 3),
        "max": round(cycles[-1], 3)}
    payable_set = set(payables)
    settled_invoices = {line.invoice_id for s in portal.settlements for line in s.lines}
    expected = set(expected_invoices)
    amount: dict[str, int] = {}
    seen: set[str] = set()
    for s in portal.settlements:
        if s.id not in seen:
            seen.add(s.id)
            cur = s.currency.upper()
            amount[cur] = amount.get(cur, 0) + s.total
    return SettlementAudit(
        recorded=len(ids), distinct=len(distinct), duplicates=len(ids) - len(distinct),
        payables=len(payables), payable_duplicates=len(payables) - len(payable_set),
        without_payable=len(distinct - payable_set),
        payable_without_settlement=len(payable_set - distinct),
        expected=len(expected), missing=len(expected - settled_invoices),
        amount=dict(sorted(amount.items())), cycle_ms=cycle_ms)


class PartnerService:
    """HTTP handlers of the partner portal over one ``PartnerPortal``."""

    def __init__(self, seed: int) -> None:
        self.portal = PartnerPortal(seed)

    def reset(self) -> None:
        self.portal.reset()

    async def partners(self, request: web.Request) -> web.Response:
        """``GET /partner/v1/partners`` → ``PartnerList``."""
        return json_response(PartnerList(items=list(PARTNERS)))

    async def tiers(self, request: web.Request) -> web.Response:
        """``GET /partner/v1/tiers`` → ``TierList``."""
        return json_response(TierList(items=list(TIERS)))

    async def attribution(self, request: web.Request) -> web.Response:
        """``GET /partner/v1/attributions/{customer}`` → ``Attribution``; 404 ``not_found``
        for a direct customer."""
        customer = request.match_info["customer"]
        if not _CUSTOMER.match(customer):
            raise SimHTTPError(400, "request.invalid",
                               "customer must be 1 to 200 of A-Z a-z 0-9 _ . : ~ -",
                               path="customer")
        found = self.portal.attribution(customer)
        if found is None:
            raise SimHTTPError(404, NOT_FOUND, f"customer {customer!r} buys direct")
        return json_response(found)

    async def post_settlement(self, request: web.Request) -> web.Response:
        """``POST /partner/v1/settlements`` (``Idempotency-Key`` required) → 201 receipt, or
        200 with ``Idempotent-Replayed: true`` for a replay. 400 for a missing or malformed
        key or body; see ``PartnerPortal.record`` for the rest."""
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None or not _KEY.match(key):
            raise SimHTTPError(400, "request.invalid",
                               f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters",
                               path=IDEMPOTENCY_HEADER)
        body = await decode_body(request, _SETTLEMENT_DECODER)
        status, encoded = self.portal.record(key, body, time.time())
        headers = {"Idempotent-Replayed": "true"} if status == 200 else None
        return web.Response(body=encoded, status=status, content_type="application/json",
                            headers=headers)

    async def list_settlements(self, request: web.Request) -> web.Response:
        """``GET /partner/v1/settlements?partner=`` → ``SettlementList`` in recording order
        (all partners without the parameter)."""
        partner = request.query.get("partner")
        items = [s for s in self.portal.settlements if partner is None or s.partner == partner]
        return json_response(SettlementList(items=items))
