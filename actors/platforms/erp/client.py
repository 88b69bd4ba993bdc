"""The one interface the ERP poster posts journal entries through, whatever the vendor.

``post_journal_entries(entries)`` answers one ``BulkItemResult`` per entry, in order:
``created`` (the ERP holds it now), ``replayed`` (it held it already: nothing new was posted)
or ``rejected`` (a business rule refused it; ``error.code`` says which, the vendor's code).
Every entry answered ``created``/``replayed`` is durable in the ERP. When any entry could not
be made durable and was not refused (an outage, a timeout, throttling that did not clear, the
breaker opening), the call raises that ``Retryable`` for the whole batch: the poster then acks
nothing and the redelivery posts again under the same idempotency keys (never twice).
A ``Permanent`` error refuses the whole batch (the vendor refused the request itself).

``redelivered`` names the idempotency keys that may have reached the ERP before (their
delivery is not the first): a dialect whose platform cannot say "replayed" looks those up
first. ``before_send`` runs once, after the guard said yes and before the first request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Literal, Protocol

from contracts import PostJournalEntry
from contracts.platforms.erp import BulkItemResult

from ..auth import Auth, NoAuth
from ..guard import PlatformGuard

__all__ = ["DIALECTS", "BeforeSend", "Dialect", "JournalClient", "build_journal_client"]

BeforeSend = Callable[[], Awaitable[None]]
Dialect = Literal["erpgw", "netsuite"]
DIALECTS: tuple[Dialect, ...] = ("erpgw", "netsuite")


class JournalClient(Protocol):
    dialect: str

    @property
    def requests(self) -> int: ...

    async def post_journal_entries(self, entries: Sequence[PostJournalEntry], *,
                                   before_send: BeforeSend | None = None,
                                   redelivered: Collection[str] = ()
                                   ) -> list[BulkItemResult]: ...

    def statistics(self) -> dict[str, object]: ...


def build_journal_client(dialect: Dialect, guard: PlatformGuard, *, auth: Auth | None = None,
                         concurrency: int = 5, subsidiary: str | None = None,
                         currency_ids: Mapping[str, str] | None = None,
                         account_ids: Mapping[str, str] | None = None,
                         subsidiary_ids: Mapping[str, str] | None = None,
                         async_requests: bool = False) -> JournalClient:
    """The journal client of ``dialect`` over ``guard`` (its HTTP client, breaker, budget)."""
    from .erpgw import ErpgwJournalClient
    from .netsuite import NetSuiteJournalClient

    if dialect == "erpgw":
        return ErpgwJournalClient(guard, auth=auth or NoAuth())
    return NetSuiteJournalClient(guard, auth=auth or NoAuth(), concurrency=concurrency,
                                 subsidiary=subsidiary, currency_ids=currency_ids,
                                 account_ids=account_ids, subsidiary_ids=subsidiary_ids,
                                 async_requests=async_requests)
