"""Usage records (authority: the billing platform, which rates metered usage).

The high-volume message: kept small and flat. ``usage_id`` is the idempotency key of the
measurement (the same measurement sent twice is counted once); the window is half-open,
``[window_start, window_end)``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ._fields import Id, Quantity, Timestamp
from ._invariants import require_non_negative, require_ordered

__all__ = ["UsageRecorded"]


class UsageRecorded(msgspec.Struct, frozen=True, kw_only=True,
                    tag="usage.recorded.v1", tag_field="type"):
    """``quantity`` units of ``meter`` were used on a subscription during the window."""

    usage_id: Id
    subscription_id: Id
    customer_id: Id
    product_id: Id
    meter: Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
    quantity: Quantity
    window_start: Timestamp
    window_end: Timestamp
    recorded_at: Timestamp

    def __post_init__(self) -> None:
        require_non_negative(self, "quantity")
        require_ordered(self.window_start, self.window_end, "window_start", "window_end")
