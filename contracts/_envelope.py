"""The envelope every canonical message travels in.

An envelope names the business transaction (``correlation_id``), the message that caused this
one (``causation_id``) and the business object it is about (``key``: source platform, object id,
object version). The payload is one member of the tagged union in ``contracts.payloads``; its
tag (``invoice.issued.v1``) is the message type, version included.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["BusinessKey", "Platform", "platform_names"]

Platform = Annotated[
    str,
    msgspec.Meta(pattern="^(partner|billing|revenue|erp|cpq|gateway)$", description="platform"),
]


def platform_names() -> tuple[str, ...]:
    return ("partner", "billing", "revenue", "erp", "cpq", "gateway")


class BusinessKey(msgspec.Struct, frozen=True):
    """What a message is about: idempotency and per-aggregate ordering hang off this."""

    source: Platform
    object_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    version: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __str__(self) -> str:
        return f"{self.source}:{self.object_id}:v{self.version}"
