"""The ``erpgw`` dialect: the simulator's bulk journal API, one request per batch
(``contracts.platforms.erp``): every entry carries its idempotency key and the ERP answers
``created``/``replayed``/``rejected`` per item."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date
from decimal import Decimal
from urllib.parse import quote

from contracts import JsonCodec, PostJournalEntry, parse_rate
from contracts.platforms import erp as wire

from ...infra.http import PlatformRejected
from ..auth import Auth, NoAuth
from ..guard import PlatformGuard
from .client import BeforeSend

__all__ = ["BULK_PATH", "LIST_PATH", "RATES_PATH", "ErpBookedRates", "ErpRates",
           "ErpgwJournalClient", "entry_to_wire"]

BULK_PATH = "/erp/v1/journal-entries/bulk"
_json: JsonCodec[wire.BulkRequest] = JsonCodec(wire.BulkRequest)
_bulk_dec: JsonCodec[wire.BulkResponse] = JsonCodec(wire.BulkResponse)
RATES_PATH = "/erp/v1/exchange-rates"
_rates_dec: JsonCodec[wire.ExchangeRates] = JsonCodec(wire.ExchangeRates)
LIST_PATH = "/erp/v1/journal-entries"
_list_dec: JsonCodec[wire.JournalEntryList] = JsonCodec(wire.JournalEntryList)


def entry_to_wire(e: PostJournalEntry) -> wire.JournalEntryIn:
    return wire.JournalEntryIn(
        idempotency_key=e.idempotency_key,
        external_id=e.external_id,
        tran_date=e.posting_date.isoformat(),
        currency=e.currency,
        memo=e.memo,
        lines=[wire.JournalLineIn(account=ln.account, debit=ln.debit, credit=ln.credit,
                                  memo=ln.memo) for ln in e.lines],
        subsidiary=e.entity, functional_currency=e.functional_currency,
        exchange_rate=e.exchange_rate,
    )


class _ErpReader:
    """A GET of the ERP's API through ``guard`` (breaker and budget), signed by ``auth``."""

    def __init__(self, guard: PlatformGuard, *, auth: Auth | None = None) -> None:
        self.guard = guard
        self.auth = auth or NoAuth()
        self.requests = 0

    async def _get(self, path: str) -> bytes:
        url_of = getattr(self.guard.http, "url", None)
        headers = await self.auth.headers("GET", url_of(path) if url_of else path, None)
        self.requests += 1
        return (await self.guard.get(path, headers=headers or None)).body


class ErpRates(_ErpReader):
    """The ERP's daily exchange rates (``GET /erp/v1/exchange-rates?date=&base=``): the
    routers' ``RateSource``."""

    async def __call__(self, day: date, base: str) -> dict[str, Decimal]:
        """Every currency's rate in ``base`` on ``day``. Raises the ``HttpClient`` errors,
        ``ContractError`` for a body that is not ``ExchangeRates``, and ``PlatformRejected``
        ``erp.bad_response`` for a rate that is not an exact positive decimal."""
        body = _rates_dec.decode(await self._get(
            f"{RATES_PATH}?date={day.isoformat()}&base={base}"))
        try:
            return {c: parse_rate(r) for c, r in body.rates.items()}
        except ValueError as exc:
            raise PlatformRejected(f"ERP answered a bad rate: {exc}", status=200,
                                   body="", code="erp.bad_response") from None


class ErpBookedRates(_ErpReader):
    """The rate a document was booked at in the ERP (``GET /erp/v1/journal-entries?
    externalId=``): the payment router's ``BookedRateSource``."""

    async def __call__(self, external_id: str) -> str | None:
        """The ``exchangeRate`` of the latest posting of ``external_id``; ``None`` when the
        ERP holds none or it was posted without a rate (in its entity's functional currency).
        Raises the ``HttpClient`` errors and ``ContractError`` for a body that is not
        ``JournalEntryList``."""
        body = _list_dec.decode(await self._get(
            f"{LIST_PATH}?externalId={quote(external_id, safe='')}"))
        return body.items[-1].exchange_rate if body.items else None


class ErpgwJournalClient:
    dialect = "erpgw"

    def __init__(self, guard: PlatformGuard, *, auth: Auth | None = None) -> None:
        self.guard = guard
        self.auth = auth or NoAuth()
        self.requests = 0

    async def post_journal_entries(self, entries: Sequence[PostJournalEntry], *,
                                   before_send: BeforeSend | None = None,
                                   redelivered: Collection[str] = ()
                                   ) -> list[wire.BulkItemResult]:
        """One bulk POST for ``entries``; raises the ``HttpClient`` errors, and
        ``PlatformRejected`` ``erp.bad_response`` for a result count other than the items."""
        body = _json.encode(wire.BulkRequest(items=[entry_to_wire(e) for e in entries]))
        url_of = getattr(self.guard.http, "url", None)
        url = url_of(BULK_PATH) if url_of is not None else BULK_PATH
        headers = await self.auth.headers("POST", url, body)
        self.requests += 1
        resp = await self.guard.post(BULK_PATH, body, before_send=before_send,
                                     headers=headers or None)
        results = _bulk_dec.decode(resp.body).results  # ContractError is Permanent
        if len(results) != len(entries):
            raise PlatformRejected(
                f"ERP answered {len(results)} results for {len(entries)} items",
                status=resp.status, body="", code="erp.bad_response")
        return results

    def statistics(self) -> dict[str, object]:
        return {"dialect": self.dialect, "requests": self.requests}
