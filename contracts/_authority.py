"""The authority map: which platform is the system of record for each data domain.

Two platforms must never both be the truth about the same thing, or a loop of "corrections"
follows. So an *event* about a domain is only believed from the domain's authority: an
``invoice.issued.v1`` whose envelope says it came from the ERP is a ``ContractError``
(``contract.not_authority``, path ``$.source``) and goes to the dead-letter stream like any
other contract violation. *Commands* are exempt: a command asks the authority to act (the
gateway sends ``erp.journal.post.v1`` to the ERP), it does not state a fact.

The table is ``AUTHORITY`` below; docs/contracts.md shows it with each domain's messages
(a test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from ._errors import ContractError
from ._registry import MESSAGE_SPECS

if TYPE_CHECKING:
    from ._message import Envelope

__all__ = ["AUTHORITY", "authority_for", "check_authority", "check_envelope_authority"]

AUTHORITY: Mapping[str, str] = MappingProxyType({
    "customer": "cpq",
    "partner": "partner",
    "product": "cpq",
    "price": "cpq",
    "deal": "partner",
    "order": "cpq",
    "subscription": "billing",
    "invoice": "billing",
    "credit_memo": "billing",
    "payment": "billing",
    "usage": "billing",
    "revenue_schedule": "revenue",
    "ledger": "erp",
    "commission": "partner",
    "settlement": "partner",
})


def authority_for(domain: str) -> str:
    """The platform that is the system of record for ``domain``. Raises ``KeyError``."""
    return AUTHORITY[domain]


def check_authority(message_type: str, source: str,
                    authority: Mapping[str, str] = AUTHORITY) -> None:
    """Raise ``ContractError`` unless ``source`` may state a ``message_type`` event.

    Codes: ``contract.not_authority`` (path ``$.source``) when another platform is the
    authority; ``contract.unknown_type`` (path ``$.payload.type``) for a type not in the
    registry. Commands pass whatever their source. Pure; runs in the caller's task.
    """
    spec = MESSAGE_SPECS.get(message_type)
    if spec is None:
        raise ContractError(f"{message_type!r} is not a canonical message type",
                            code="contract.unknown_type", path="$.payload.type")
    if spec.kind != "evt":
        return
    owner = authority[spec.domain]
    if source != owner:
        raise ContractError(
            f"{message_type} is about {spec.domain}, whose authority is {owner}, "
            f"not {source}", code="contract.not_authority", path="$.source")


def check_envelope_authority(env: Envelope, authority: Mapping[str, str] = AUTHORITY) -> None:
    """``check_authority`` for an envelope's type and source (see there)."""
    check_authority(env.type, env.source, authority)
