"""What the webhook front door needs to know of a source (pure): its routes and signature.

Each event type a platform's dialect subscribes to has an ``EventRoute``: a typed decoder for
its body and a mapping to an ``Inbound`` (the canonical payload, its business key, the
deterministic ``Nats-Msg-Id`` and when it happened). A ``WebhookSource`` bundles one
platform's path, signing secrets, signature header and route table; the dialect modules
(``actors.platforms.<platform>.<dialect>``) build them and the ingress serves them all on one
port. Adding a webhook type is one function in the dialect and one row in its route table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from contracts import BusinessKey, ContractError, JsonCodec, contract_error
from contracts.platforms import signing

__all__ = ["EventHead", "EventRoute", "Inbound", "WebhookSource", "mapped", "timestamp"]

T = TypeVar("T")


class EventHead(msgspec.Struct, frozen=True):
    """What every platform event has: enough to pick its route (the rest is ignored here)."""

    id: str
    type: str


class Inbound(NamedTuple):
    """What one webhook event becomes: a canonical payload to publish on its type's subject."""

    payload: Any  # a canonical payload struct (a member of ``contracts.Payload``)
    key: BusinessKey
    msg_id: str  # the Nats-Msg-Id: derived from the business key, so resends dedupe
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EventRoute(Generic[T]):
    """How one event type is decoded (400 when it fails) and mapped (422 when the decoded
    object breaks a canonical invariant; ``map`` raises ``ContractError``)."""

    decoder: JsonCodec[T]
    map: Callable[[T], Inbound | None]  # None: nothing to publish (answered ``ignored``)

    def decode(self, body: bytes) -> T:
        return self.decoder.decode(body)


def timestamp(value: int) -> datetime:
    """A platform's unix-seconds timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def mapped(build: Callable[[], T]) -> T:
    """``build()`` with an invariant's ``ValueError`` as a ``ContractError`` under
    ``$.data.object``."""
    try:
        return build()
    except (ValueError, OverflowError) as exc:
        err = contract_error(exc)
        raise ContractError(err.message, code=err.code, path="$.data.object") from exc


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """One platform's webhooks: where they arrive, how they are signed, what they carry.

    ``drift_prefixes``: event families the source subscribes to; an unknown type inside one is
    drift (422), not noise (``ignored``).
    """

    name: str  # the platform (``billing``, ``partner``): the envelope's source
    path: str
    secrets: tuple[str, ...]
    routes: Mapping[str, EventRoute[Any]]
    drift_prefixes: tuple[str, ...] = ()
    signature_header: str = signing.SIGNATURE_HEADER
    # Types the source knows and deliberately does not map (answered ``ignored``, never drift).
    acknowledged: frozenset[str] = frozenset()
