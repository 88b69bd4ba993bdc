"""Ids that the gateway puts into a platform's URL path (S11, S21).

A customer, deal, subscription or sales-order id read from a webhook or a platform's answer
becomes one segment of a later request's path (``/partner/v1/attributions/{customer}``,
``/partner/v1/deals/{id}``, ``/billing/v1/subscriptions/{id}/cancel``,
``/erp/v1/sales-orders/{id}/close``, ``/revenue/v1/contracts/{deal}``). Such an id must be
letters, digits, ``_``, ``-``, ``.`` or ``:``, not start with a dot (so never ``.`` or ``..``),
and at most 200 characters: a ``/``, a ``%`` (``%2e``, ``%2F``), a space, a control character
or an over-long id is refused on decode (``contract.constraint`` naming the field's path), so
the webhook gets a 400 and a platform's answer is dead-lettered before any request is built
from it. ``actors.platforms.guard.segment`` still escapes every id as one segment.

The trailing ``(?!\\n)`` matters: in Python's ``re`` (which msgspec uses) ``$`` also matches
before a final newline.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["PATH_ID_PATTERN", "OptionalPathId", "PathId"]

PATH_ID_PATTERN = r"^[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$(?!\n)"

PathId = Annotated[str, msgspec.Meta(
    min_length=1, max_length=200, pattern=PATH_ID_PATTERN,
    description="an id that goes into a platform URL path (no '/', '%', '..', control chars)")]

# The same, where the platform may send an empty string for "none".
OptionalPathId = Annotated[str, msgspec.Meta(
    max_length=200, pattern=r"^([A-Za-z0-9_:-][A-Za-z0-9_.:-]*)?$(?!\n)",
    description="empty, or an id that goes into a platform URL path")]
