"""The simulated revenue platform's contracts: versioned upsert, ratable schedule, recognition
(per currency, and per contract and product: what the gateway's close run posts to the GL).

Theory of operation: ``ContractBook`` is the pure core. ``put`` upserts a contract by id and
version (each line covering ``months`` calendar months from its start): a new id is created
(201), a higher version replaces the lines and the schedule (200), the same version with the
same body is a replay (200, nothing changes), a lower version is ``STALE_VERSION`` and the same
version with another body ``VERSION_CONFLICT`` (both 409: the caller applies versions in order,
and a late old version must never win). The schedule is the platform's own: every line's amount
spread over the calendar months its period touches, each month weighted by the days of it the
line covers, split by largest remainder (``contracts.allocate``), so a line's entries sum to
its amount exactly.

A business rejection can be injected per contract id (``rejects``: the deal engine's saga
faults): 422 ``CONTRACT_REJECTED``, nothing recorded but the refusal.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from datetime import date, timedelta

import msgspec
from aiohttp import web

from contracts import allocate
from contracts.platforms.revenue import (
    CONTRACT_REJECTED,
    STALE_VERSION,
    VERSION_CONFLICT,
    ContractError,
    ContractLine,
    RecognitionDetail,
    RecognitionItem,
    RecognitionTotals,
    RevenueContract,
    RevenueContractIn,
    ScheduleEntry,
)

from ._control import require
from ._erp import check_period
from ._http import SimHTTPError, decode_body, json_response
from ._subscriptions import end_date

__all__ = ["ContractBook", "RevenueContractService", "monthly_schedule"]

_DECODER = msgspec.json.Decoder(RevenueContractIn)
_ID = re.compile(r"^[A-Za-z0-9_.:~-]{1,200}$")
_CANONICAL = msgspec.json.Encoder()


def monthly_schedule(line: ContractLine, start: date, end: date) -> list[ScheduleEntry]:
    """``line``'s amount over the months ``start``..``end`` touches, weighted by the days
    covered in each (largest remainder: the entries sum to the amount). Pure; raises
    ``ValueError`` when ``start`` is after ``end``."""
    if start > end:
        raise ValueError(f"period {start}..{end} is reversed")
    periods: list[str] = []
    weights: list[int] = []
    first = start
    while first <= end:
        month_end = first.replace(day=calendar.monthrange(first.year, first.month)[1])
        last = min(month_end, end)
        periods.append(f"{first.year:04d}-{first.month:02d}")
        weights.append((last - first).days + 1)
        first = month_end + timedelta(days=1)
    return [ScheduleEntry(line_id=line.line_id, period=p, amount=a)
            for p, a in zip(periods, allocate(line.amount, weights), strict=True)]


class ContractBook:
    """Revenue contracts at their latest version, and the refusals. Pure."""

    def __init__(self) -> None:
        self.contracts: dict[str, RevenueContract] = {}
        self._digests: dict[str, bytes] = {}
        self.created: dict[str, int] = {}  # contract id -> creations (always 1: by id)
        self.refused: list[str] = []
        self.stale = 0  # upserts refused STALE_VERSION
    def put(self, contract_id: str, body: RevenueContractIn, now: float, *,
            reject: bool = False) -> tuple[int, RevenueContract | ContractError]:
        """(HTTP status, contract or error) for one upsert (see the module docstring).
        Raises ``SimHTTPError`` 400 for an invalid body (dates, amounts, currency)."""
        digest = hashlib.sha256(_CANONICAL.encode(body)).digest()
        current = self.contracts.get(contract_id)
        if current is not None:
            if body.version < current.version:
                self.stale += 1
                return 409, ContractError(
                    code=STALE_VERSION,
                    message=f"contract {contract_id} is at version {current.version}; "
                            f"version {body.version} is stale")
            if body.version == current.version:
                if hmac.compare_digest(self._digests[contract_id], digest):
                    return 200, current
                return 409, ContractError(
                    code=VERSION_CONFLICT,
                    message=f"version {body.version} of contract {contract_id} was stored "
                            "with another body")
        if body.version < 1 or not body.lines or len(body.currency) != 3 or \
                not body.currency.isupper():
            raise SimHTTPError(400, "request.invalid",
                               "version must be >= 1, lines not empty, currency upper-case",
                               path="$")
        schedule: list[ScheduleEntry] = []
        lines: list[ContractLine] = []
        for i, given in enumerate(body.lines):
            if given.period_start.year > 9000 or given.amount < 0 or given.months < 1:
                raise SimHTTPError(400, "request.invalid",
                                   "a line needs an amount >= 0, months >= 1 and a start "
                                   "before the year 9000", path=f"$.lines[{i}]")
            line = ContractLine(line_id=given.line_id, product=given.product,
                                amount=given.amount, period_start=given.period_start,
                                period_end=end_date(given.period_start, given.months))
            lines.append(line)
            schedule += monthly_schedule(line, line.period_start, line.period_end)
        if current is None and reject:
            self.refused.append(contract_id)
            return 422, ContractError(code=CONTRACT_REJECTED,
                                      message=f"contract {contract_id} refused "
                                              "(injected business rejection)")
        contract = RevenueContract(
            id=contract_id, version=body.version, customer=body.customer,
            currency=body.currency, total=sum(line.amount for line in lines),
            lines=lines, schedule=schedule, updated_at=now, deal_id=body.deal_id,
            source_id=body.source_id)
        self.contracts[contract_id] = contract
        self._digests[contract_id] = digest
        if current is None:
            self.created[contract_id] = self.created.get(contract_id, 0) + 1
            return 201, contract
        return 200, contract

    def recognition(self, period: str) -> RecognitionTotals:
        """What every contract recognises in ``period`` (``YYYY-MM``), per currency."""
        amount: dict[str, int] = {}
        contracts = 0
        for c in self.contracts.values():
            in_period = [e.amount for e in c.schedule if e.period == period]
            if in_period:
                contracts += 1
                amount[c.currency] = amount.get(c.currency, 0) + sum(in_period)
        return RecognitionTotals(period=period, contracts=contracts,
                                 amount=dict(sorted(amount.items())))


    def recognition_detail(self, period: str) -> RecognitionDetail:
        """What every contract recognises in ``period``, per contract and product. Pure."""
        items: list[RecognitionItem] = []
        for cid in sorted(self.contracts):
            c = self.contracts[cid]
            product_of = {line.line_id: line.product for line in c.lines}
            per_product: dict[str, int] = {}
            for e in c.schedule:
                if e.period == period:
                    product = product_of.get(e.line_id, e.line_id)
                    per_product[product] = per_product.get(product, 0) + e.amount
            items += [RecognitionItem(contract=cid, version=c.version, currency=c.currency,
                                      product=product, amount=amount,
                                      customer=c.customer)
                      for product, amount in sorted(per_product.items())]
        return RecognitionDetail(period=period, items=items)


class RevenueContractService:
    """``PUT|GET /revenue/v1/contracts/{id}`` and ``GET /revenue/v1/recognition``.
    ``rejects(contract_id)`` says whether a new contract is refused (injected saga faults)."""

    def __init__(self, rejects: Callable[[str], bool] = lambda _: False) -> None:
        self.book = ContractBook()
        self._rejects = rejects

    def reset(self) -> None:
        self.book = ContractBook()

    async def put(self, request: web.Request) -> web.Response:
        """201 created, 200 updated or replayed, 409 stale or conflicting version, 422
        refused, 400 for an invalid id or body."""
        contract_id = request.match_info["id"]
        if not _ID.match(contract_id):
            raise SimHTTPError(400, "request.invalid", "a contract id is 1 to 200 of "
                               "A-Z a-z 0-9 _ . : ~ -", path="id")
        body = await decode_body(request, _DECODER)
        status, result = self.book.put(contract_id, body, time.time(),
                                       reject=self._rejects(contract_id))
        return json_response(result, status=status)

    async def get(self, request: web.Request) -> web.Response:
        contract_id = request.match_info["id"]
        contract = self.book.contracts.get(contract_id)
        if contract is None:
            raise SimHTTPError(404, "not_found", f"no contract {contract_id!r}")
        return json_response(contract)

    async def recognition(self, request: web.Request) -> web.Response:
        period = check_period(require(request, "period"))
        return json_response(self.book.recognition(period))

    async def recognition_detail(self, request: web.Request) -> web.Response:
        """``GET /revenue/v1/recognition/contracts?period=YYYY-MM`` → ``RecognitionDetail``
        (400 naming ``period`` when it is missing or malformed)."""
        period = check_period(require(request, "period"))
        return json_response(self.book.recognition_detail(period))
