"""Partner portal deal webhooks → canonical deal messages (pure).

``deal.registered`` → ``DealRegistered``, ``deal.approved`` → ``DealApproved``,
``deal.rejected`` → ``DealRejected``, each keyed ``partner:<deal id>:v<version>`` (the portal
bumps the deal's version when it decides it) with ``Nats-Msg-Id`` derived from that key, so a
resent webhook is stored once. The portal's dates are ``YYYY-MM-DD`` strings and its times
unix seconds; a date that does not parse, or a decision without the fields it needs, is a
``ContractError`` naming the field under ``$.data.object`` (422 at the ingress).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from types import MappingProxyType
from typing import Any

from contracts import (
    BusinessKey,
    ContractError,
    DealApproved,
    DealRegistered,
    DealRejected,
    JsonCodec,
    contract_error,
    derive_id,
)
from contracts.platforms.partner import DEAL_SIGNATURE_HEADER, DealEvent, PartnerDeal

from ...ingress.routes import EventRoute, Inbound, WebhookSource, timestamp

__all__ = ["PARTNER_ROUTES", "deal_approved", "deal_registered", "deal_rejected",
           "partner_source"]

_OBJECT = "$.data.object"


def _date(value: str | None, field: str) -> date:
    if value is None:
        raise ContractError(f"{field} is required for this event", code="contract.missing_field",
                            path=f"{_OBJECT}.{field}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ContractError(f"{field} must be a YYYY-MM-DD date, got {value!r}",
                            code="contract.invalid_value", path=f"{_OBJECT}.{field}") from None


def _inbound(deal: PartnerDeal, payload: Any, at: int) -> Inbound:
    key = BusinessKey(source="partner", object_id=deal.id, version=deal.version)
    return Inbound(payload, key, derive_id("partner", deal.id, str(deal.version)),
                   timestamp(at))


def _build(cls: type[Any], **fields: Any) -> Any:
    """Construct a canonical payload; an invariant it breaks becomes a ``ContractError``
    under ``$.data.object``."""
    try:
        return cls(**fields)
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        raise ContractError(err.message, code=err.code, path=_OBJECT) from exc


def deal_registered(evt: DealEvent) -> Inbound:
    """``deal.registered`` → ``deal.registered.v1``. Raises ``ContractError``."""
    deal = evt.data.object
    payload = _build(
        DealRegistered, deal_id=deal.id, partner_id=deal.partner,
        prospect_name=deal.prospect_name, customer_id=deal.customer or None,
        currency=deal.currency, estimated_amount=deal.estimated_amount,
        expected_close=_date(deal.expected_close, "expectedClose"),
        registered_at=timestamp(deal.created),
        product_ids=tuple(item.product for item in deal.items))
    return _inbound(deal, payload, deal.created)


def deal_approved(evt: DealEvent) -> Inbound:
    """``deal.approved`` → ``deal.approved.v1``. Raises ``ContractError`` (a missing
    approval field, a reversed validity)."""
    deal = evt.data.object
    at = deal.decided if deal.decided is not None else evt.created
    payload = _build(
        DealApproved, deal_id=deal.id, partner_id=deal.partner, approved_at=timestamp(at),
        approver=deal.approver or "", discount_bp=deal.discount_bp,
        valid_from=_date(deal.valid_from, "validFrom"),
        valid_until=_date(deal.valid_until, "validUntil"))
    return _inbound(deal, payload, at)


def deal_rejected(evt: DealEvent) -> Inbound:
    """``deal.rejected`` → ``deal.rejected.v1``. Raises ``ContractError``."""
    deal = evt.data.object
    at = deal.decided if deal.decided is not None else evt.created
    payload = _build(DealRejected, deal_id=deal.id, partner_id=deal.partner,
                     rejected_at=timestamp(at), reason=deal.rejection_reason)
    return _inbound(deal, payload, at)


_events: JsonCodec[DealEvent] = JsonCodec(DealEvent)

# The partner portal's event types the gateway subscribes to.
PARTNER_ROUTES: Mapping[str, EventRoute[Any]] = MappingProxyType({
    "deal.registered": EventRoute(_events, deal_registered),
    "deal.approved": EventRoute(_events, deal_approved),
    "deal.rejected": EventRoute(_events, deal_rejected),
})


def partner_source(path: str, secrets: Sequence[str]) -> WebhookSource:
    """The partner portal's deal webhooks (flow 1), signed with ``Partner-Signature``; an
    unknown ``deal.*`` type is drift."""
    return WebhookSource("partner", path, tuple(secrets), PARTNER_ROUTES,
                         drift_prefixes=("deal.",), signature_header=DEAL_SIGNATURE_HEADER)
