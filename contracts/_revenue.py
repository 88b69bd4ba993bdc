"""Revenue schedules (authority: the revenue platform).

A schedule says when the revenue of one performance obligation (an order line, an invoice
line, a subscription item) is recognised: a total spread over recognition lines, each a
period inside the service period. The revenue platform owns it; the gateway only carries it
to the ERP. Every update restates the whole schedule (lines already recognised included), so
the latest version by business key is the truth.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

from ._fields import Amount, Id, Timestamp
from ._invariants import (
    require_known_currency,
    require_lines_sum,
    require_non_negative,
    require_ordered,
    violation,
)
from ._money import Currency

__all__ = ["RecognitionLine", "RevenueScheduleUpdated"]


class RecognitionLine(msgspec.Struct, frozen=True, kw_only=True):
    """``amount`` recognised over ``[period_start, period_end]`` (dates inclusive)."""

    period_start: date
    period_end: date
    amount: Amount
    status: Literal["planned", "recognized"] = "planned"

    def __post_init__(self) -> None:
        require_non_negative(self, "amount")
        require_ordered(self.period_start, self.period_end, "period_start", "period_end")


class RevenueScheduleUpdated(msgspec.Struct, frozen=True, kw_only=True,
                             tag="revenue.schedule.updated.v1", tag_field="type"):
    """The revenue platform created or changed the schedule of one performance obligation.

    The lines sum to ``total_amount`` and lie within the service period.
    """

    schedule_id: Id
    customer_id: Id
    product_id: Id
    source_type: Literal["order", "invoice", "subscription"]
    source_id: Id
    currency: Currency
    method: Literal["ratable", "point_in_time", "usage"]
    service_start: date
    service_end: date
    total_amount: Amount
    lines: Annotated[tuple[RecognitionLine, ...], msgspec.Meta(min_length=1, max_length=600)]
    updated_at: Timestamp

    def __post_init__(self) -> None:
        require_known_currency(self.currency)
        require_non_negative(self, "total_amount")
        require_ordered(self.service_start, self.service_end, "service_start", "service_end")
        for i, line in enumerate(self.lines):
            if line.period_start < self.service_start or line.period_end > self.service_end:
                raise violation(
                    "revenue.line_outside_service_period",
                    f"lines[{i}] covers {line.period_start}..{line.period_end}, outside the "
                    f"service period {self.service_start}..{self.service_end}",
                    f"lines[{i}].period_start" if line.period_start < self.service_start
                    else f"lines[{i}].period_end")
        require_lines_sum((line.amount for line in self.lines), self.total_amount,
                          "total_amount")
