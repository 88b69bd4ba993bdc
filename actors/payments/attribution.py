"""Which partner resells a customer: the partner portal's attribution, cached per customer.

``GET /partner/v1/attributions/{customer}`` answers the partner of record (200) or 404 for a
direct customer (no partner, no commission). Answers, a 404 included, are cached for ``ttl_s``
(a deal registered later is seen after that), at most ``max_entries`` customers (the oldest
answer is dropped first). Errors are the platform guard's (``Retryable`` for 429/5xx/timeouts,
``Permanent`` for other 4xx); an answer that does not decode is ``ContractError``.

Runs in the calling actor's task; not thread-safe.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from contracts import JsonCodec
from contracts.platforms.partner import Attribution

from ..platforms import PlatformGuard, PlatformRejected, segment

__all__ = ["ATTRIBUTIONS_PATH", "AttributionClient"]

ATTRIBUTIONS_PATH = "/partner/v1/attributions/"
_decoder: JsonCodec[Attribution] = JsonCodec(Attribution)


class AttributionClient:
    """Attribution lookups through the partner portal's ``portal`` endpoint (its breaker and
    the account's budget), cached."""

    def __init__(self, portal: PlatformGuard, *, ttl_s: float = 300.0, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.portal = portal
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Attribution | None]] = OrderedDict()
        self.lookups = 0
        self.hits = 0

    async def lookup(self, customer: str) -> Attribution | None:
        """The partner of record of ``customer``, or ``None`` for a direct customer.

        Raises ``Retryable`` / ``Permanent`` (``actors.infra.http``) when the portal fails or
        refuses with anything but 404, ``ContractError`` for an answer that does not decode.
        """
        now = self._clock()
        cached = self._cache.get(customer)
        if cached is not None and now - cached[0] < self.ttl_s:
            self.hits += 1
            return cached[1]
        self.lookups += 1
        try:
            resp = await self.portal.get(ATTRIBUTIONS_PATH + segment(customer))
            found: Attribution | None = _decoder.decode(resp.body)
        except PlatformRejected as exc:
            if exc.status != 404:
                raise
            found = None
        self._cache[customer] = (now, found)
        self._cache.move_to_end(customer)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return found

    def statistics(self) -> dict[str, object]:
        return {"cached": len(self._cache), "lookups": self.lookups, "hits": self.hits}
