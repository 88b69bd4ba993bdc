"""The synchronous lane's rules, as pure functions (no I/O, no clock: ``today`` is passed in).

What a request may ask (its deadline, its discount), how it is put to CPQ, how CPQ's answer
becomes the canonical ``Pricing``, and when an order is refused. The lane actor
(``actors.sync.lane``) is the shell that performs the calls these describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import msgspec

from contracts import (
    DEADLINE_HEADER,
    ContractError,
    DealTerms,
    OrderRequest,
    PricedItem,
    Pricing,
    PricingRequest,
    contract_error,
)
from contracts.platforms.cpq import PriceItem, PriceQuote, PriceRequest

__all__ = [
    "MAX_DEADLINE_MS",
    "Refusal",
    "approved_discount_bp",
    "check_items",
    "check_order",
    "check_terms",
    "cpq_refusal",
    "pricing_from_quote",
    "resolve_deadline_ms",
    "to_price_request",
]

MAX_DEADLINE_MS = 600_000

SyncRequest = PricingRequest | OrderRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: a stable ``code`` (docs/errors.md) and the JSON ``path`` of
    the field to blame."""

    code: str
    message: str
    path: str


def resolve_deadline_ms(header: str | None, field: int | None, default_ms: int) -> int:
    """The caller's budget in milliseconds: the smaller of the ``Erpgw-Deadline-Ms`` header
    and the ``deadline_ms`` field, ``default_ms`` when neither is given.

    Raises ``ContractError`` (``sync.invalid_deadline``, path ``Erpgw-Deadline-Ms``) when the
    header is not a whole number of milliseconds in 1..600,000.
    """
    budgets = [field] if field is not None else []
    if header is not None:
        text = header.strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_DEADLINE_MS:
            raise ContractError(
                f"{DEADLINE_HEADER} is {header[:40]!r}; expected whole milliseconds "
                f"1..{MAX_DEADLINE_MS}", code="sync.invalid_deadline", path=DEADLINE_HEADER)
        budgets.append(int(text))
    return min(budgets) if budgets else default_ms


def check_items(req: SyncRequest) -> None:
    """Raises ``ContractError`` (``sync.duplicate_item``, path of the second occurrence) when
    a product appears twice: CPQ prices lines, the caller means one quantity per product."""
    seen: set[str] = set()
    for i, item in enumerate(req.items):
        if item.product_id in seen:
            raise ContractError(f"product {item.product_id!r} appears twice; give it once "
                                "with the total quantity", code="sync.duplicate_item",
                                path=f"$.items[{i}].product_id")
        seen.add(item.product_id)


def approved_discount_bp(deal: DealTerms | None, max_discount_bp: int) -> int:
    """The largest discount allowed: the deal's approved discount when the request is priced
    under a deal, else the configured maximum. Raises nothing."""
    return deal.approved_discount_bp if deal is not None else max_discount_bp


def check_terms(req: SyncRequest, max_discount_bp: int, today: date) -> Refusal | None:
    """Refuse what no price can fix, before asking CPQ: an expired deal
    (``pricing.deal_expired``) or a discount above the approved one
    (``pricing.discount_not_approved``). ``None`` when the terms are acceptable."""
    if req.deal is not None and req.deal.valid_until is not None and req.deal.valid_until < today:
        return Refusal("pricing.deal_expired",
                       f"deal {req.deal.deal_id} expired on {req.deal.valid_until}",
                       "$.deal.valid_until")
    approved = approved_discount_bp(req.deal, max_discount_bp)
    if req.discount_bp > approved:
        under = f"deal {req.deal.deal_id}" if req.deal is not None else "the gateway's maximum"
        return Refusal("pricing.discount_not_approved",
                       f"requested discount {req.discount_bp} bp exceeds the {approved} bp "
                       f"approved under {under}", "$.discount_bp")
    return None


def to_price_request(req: SyncRequest) -> PriceRequest:
    """The CPQ pricing request (``POST /cpq/v1/price``) for ``req``. Raises nothing."""
    return PriceRequest(currency=req.currency,
                        items=[PriceItem(product=i.product_id, quantity=i.quantity)
                               for i in req.items],
                        discount_bp=req.discount_bp)


def pricing_from_quote(quote: PriceQuote, req: SyncRequest) -> Pricing:
    """CPQ's quote as the canonical ``Pricing`` of ``req``.

    Raises ``ContractError`` (``sync.cpq_bad_response``, or the broken invariant's code)
    when the quote does not answer the request (another currency, other products or
    quantities) or does not add up.
    """
    if quote.currency != req.currency or [(ln.product, ln.quantity) for ln in quote.lines] != [
            (i.product_id, i.quantity) for i in req.items]:
        raise ContractError("CPQ priced something other than the request (currency, products "
                            "or quantities differ)", code="sync.cpq_bad_response", path="$")
    try:
        return Pricing(
            currency=quote.currency,
            lines=tuple(PricedItem(product_id=ln.product, quantity=ln.quantity,
                                   list_unit_amount=ln.unit_price, amount=ln.amount)
                        for ln in quote.lines),
            subtotal=quote.subtotal, discount_bp=req.discount_bp, discount=quote.discount,
            total=quote.total)
    except (ValueError, msgspec.ValidationError) as exc:
        raise contract_error(exc) from exc


def check_order(req: OrderRequest, pricing: Pricing) -> Refusal | None:
    """Refuse an order whose price is not what the customer was quoted
    (``order.price_mismatch``); ``None`` when it may be accepted."""
    if req.expected_total is not None and req.expected_total != pricing.total:
        return Refusal("order.price_mismatch",
                       f"the order prices at {pricing.total}, the customer expects "
                       f"{req.expected_total}", "$.expected_total")
    return None


class _CpqError(msgspec.Struct):
    code: str = ""
    message: str = ""
    path: str | None = None


_cpq_error = msgspec.json.Decoder(_CpqError)


def cpq_refusal(status: int, body: str) -> Refusal:
    """CPQ refused to price the request (4xx): ``pricing.cpq_rejected`` quoting CPQ's code,
    with CPQ's field path translated to the request's (``$.items[0].product`` →
    ``$.items[0].product_id``). Raises nothing."""
    try:
        err = _cpq_error.decode(body)
    except msgspec.MsgspecError:
        err = _CpqError(message=body[:200])
    path = (err.path or "$").replace(".product", ".product_id")
    if not path.startswith("$"):
        path = "$"
    what = f"{err.code}: {err.message}" if err.code else err.message or f"HTTP {status}"
    return Refusal("pricing.cpq_rejected", f"CPQ refused to price the request ({what})", path)
