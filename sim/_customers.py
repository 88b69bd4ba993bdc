"""Customers: the billing platform's customer records and the ERP's view of the customers it
has postings for.

Billing. Bill runs draw each invoice's customer from ``cus_00001`` … ``cus_02000``
(``sim._billing``); this module gives every one of those ids a record (name, e-mail, country,
preferred currency, creation time) derived from the seed and the id alone, so the list is the
same in every run with the same seed and never depends on timing. ``GET
/billing/v1/customers`` pages through them by id (Stripe's ``starting_after`` and ``limit``);
``?invoiced=true`` keeps only the customers of invoices issued since start or the last reset.
``GET /billing/v1/customers/{id}`` answers one, 404 ``not_found`` for any other id.

ERP. A journal entry names its customer in its memo (the gateway writes ``… customer
cus_00042``; ``sim._erp.customer_named``); ``GET /erp/v1/customers`` lists, per customer
named by at least one posting, how many postings and how much per currency, sorted by id.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable

from aiohttp import web

from contracts.platforms.billing import BillingCustomer, BillingCustomerList
from contracts.platforms.erp import ErpCustomer, ErpCustomerList

from ._billing import BillingService, generate_invoices
from ._erp import ErpService
from ._http import SimHTTPError, json_response, query_int

__all__ = ["CUSTOMERS", "CustomerService", "billing_customer", "customer_number",
           "erp_customers", "invoice_customer"]

# How many customers bill runs draw from (``cus_00001`` … ``cus_02000``; see sim._billing).
CUSTOMERS = 2_000
# Customers exist before any bill run: created in the year before this instant (2023-11-14).
_EPOCH = 1_700_000_000
_COUNTRIES = (("US", "usd"), ("CA", "usd"), ("GB", "gbp"), ("DE", "eur"), ("FR", "eur"),
              ("NL", "eur"), ("JP", "jpy"))
_COUNTRY_WEIGHTS = (50, 8, 12, 10, 8, 6, 6)
_FIRST = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
          "Wonka", "Tyrell", "Cyberdyne", "Soylent", "Oscorp", "Aperture", "Monarch", "Nakatomi")
_SECOND = ("Corp", "Ltd", "GmbH", "Labs", "Industries", "Systems", "Holdings", "Group")


def customer_id(number: int) -> str:
    return f"cus_{number:05d}"


def customer_number(cid: str) -> int | None:
    """``"cus_00042"`` → 42; ``None`` for anything that is not one of the ``CUSTOMERS``."""
    digits = cid.removeprefix("cus_")
    if digits == cid or len(digits) != 5 or not digits.isdigit():
        return None
    number = int(digits)
    return number if 1 <= number <= CUSTOMERS else None


def billing_customer(seed: int, number: int) -> BillingCustomer:
    """The record of customer ``number`` (1 … ``CUSTOMERS``). Pure: depends only on the seed
    and the number."""
    rng = random.Random(f"{seed}/customer/{number}")
    country, currency = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
    name = f"{rng.choice(_FIRST)} {rng.choice(_SECOND)} {number}"
    slug = name.lower().replace(" ", "-")
    return BillingCustomer(id=customer_id(number), name=name,
                           email=f"billing@{slug}.example", country=country, currency=currency,
                           created=_EPOCH - rng.randint(0, 365 * 86_400))


@functools.lru_cache(maxsize=65_536)
def invoice_customer(seed: int, index: int) -> str:
    """The customer of invoice number ``index`` (as bill runs issue it). Pure."""
    return generate_invoices(1, seed, index, now=0.0)[0].customer


def erp_customers(postings: Iterable[tuple[str, str, int, float]]) -> list[ErpCustomer]:
    """``(customer, currency, amount, accepted_at)`` per posting → one ``ErpCustomer`` per
    customer, sorted by id. Pure."""
    acc: dict[str, tuple[int, dict[str, int], float, float]] = {}
    for cid, currency, amount, at in postings:
        count, amounts, first, last = acc.get(cid, (0, {}, at, at))
        amounts[currency] = amounts.get(currency, 0) + amount
        acc[cid] = (count + 1, amounts, min(first, at), max(last, at))
    return [ErpCustomer(entity_id=cid, postings=n, amount=dict(sorted(amounts.items())),
                        first_posted_at=first, last_posted_at=last)
            for cid, (n, amounts, first, last) in sorted(acc.items())]


class CustomerService:
    """The customer routes of the billing platform and of the ERP (each behind its
    platform's guard, like every route)."""

    def __init__(self, seed: int, billing: BillingService, erp: ErpService) -> None:
        self._seed = seed
        self._billing = billing
        self._erp = erp

    async def list_billing(self, request: web.Request) -> web.Response:
        """``GET /billing/v1/customers?starting_after=&limit=&invoiced=``: by id, ``limit``
        1..100 (default 10); 400 naming a malformed parameter."""
        limit = query_int(request.query.get("limit"), "limit", 10, 1, 100)
        after = request.query.get("starting_after")
        start = 1
        if after:
            number = customer_number(after)
            if number is None:
                raise SimHTTPError(400, "request.invalid",
                                   f"starting_after must be a customer id, got {after!r}",
                                   path="starting_after")
            start = number + 1
        invoiced = request.query.get("invoiced", "false")
        if invoiced not in ("true", "false"):
            raise SimHTTPError(400, "request.invalid", "invoiced must be true or false",
                               path="invoiced")
        if invoiced == "true":
            used = sorted({n for d in self._billing.deliveries()
                           if (n := customer_number(invoice_customer(self._seed, d.index)))
                           is not None})
            numbers = [n for n in used if n >= start]
        else:
            numbers = list(range(start, CUSTOMERS + 1))
        page = numbers[:limit]
        return json_response(BillingCustomerList(
            data=[billing_customer(self._seed, n) for n in page],
            has_more=len(numbers) > len(page)))

    async def get_billing(self, request: web.Request) -> web.Response:
        """``GET /billing/v1/customers/{id}``: one customer, 404 ``not_found`` otherwise."""
        cid = request.match_info["id"]
        number = customer_number(cid)
        if number is None:
            raise SimHTTPError(404, "not_found", f"no customer {cid!r}")
        return json_response(billing_customer(self._seed, number))

    async def list_erp(self, request: web.Request) -> web.Response:
        """``GET /erp/v1/customers``: the customers the ERP's postings name."""
        ledger = self._erp.ledger
        named = ledger.customers
        return json_response(ErpCustomerList(items=erp_customers(
            (named[p.id], p.currency, p.amount, p.accepted_at)
            for p in ledger.postings if p.id in named)))
