"""Field types shared by the canonical messages.

Amounts are integers in minor units of the document's currency, bounded by ``MAX_AMOUNT``
(2**53 - 1) so that every reader, JavaScript included, reads them exactly. Their
non-negativity is a business invariant (code ``amount.negative``, checked on construction
*and* decode by ``require_non_negative``), not a decode constraint: that way a negative price
gets the same code and field path whether a mapping bug constructed it or a peer sent it, and
credit memos can use the signed variants. The JSON Schema still says ``minimum: 0``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_AMOUNT",
    "Amount",
    "CountryCode",
    "Id",
    "Interval",
    "Quantity",
    "RateBp",
    "SignedAmount",
    "SignedQuantity",
    "Text",
    "Timestamp",
]

MAX_AMOUNT = 2**53 - 1

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=2000)]

# No ``ge`` on the non-negative types: msgspec would let it override ``minimum: 0`` in the
# schema, and ``require_non_negative`` enforces it with a better code anyway.
Amount = Annotated[
    int,
    msgspec.Meta(le=MAX_AMOUNT, extra_json_schema={"minimum": 0},
                 description="minor units of the document currency, never negative"),
]
SignedAmount = Annotated[
    int,
    msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT,
                 description="minor units of the document currency (signed: credit memos)"),
]
Quantity = Annotated[
    int,
    msgspec.Meta(le=MAX_AMOUNT, extra_json_schema={"minimum": 0},
                 description="whole units of the price's unit, never negative"),
]
SignedQuantity = Annotated[
    int, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="whole units (signed)")
]
RateBp = Annotated[
    int, msgspec.Meta(ge=0, le=10_000, description="a rate in basis points (1/100 of 1 %)")
]
CountryCode = Annotated[
    str, msgspec.Meta(pattern="^[A-Z]{2}$", description="ISO 3166-1 alpha-2 country code")
]
Interval = Literal["month", "quarter", "year"]
Timestamp = Annotated[
    datetime, msgspec.Meta(tz=True, description="an instant, RFC 3339 with a UTC offset")
]
