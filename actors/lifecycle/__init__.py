"""The commercial lifecycle: the pure arithmetic its routers use (``arithmetic``).

Revenue recognition, proration, partner commission and credit-memo reversal are plain
functions over minor units and dates (see ``actors.lifecycle.arithmetic``); the routers that
orchestrate deals, subscriptions, invoices and settlements build on them.
"""

from .arithmetic import (
    DEFAULT_TIER_RATES_BP,
    TIER_ORDER,
    Granularity,
    Period,
    Proration,
    ScheduleLine,
    amended_charges,
    check_tier_table,
    commission,
    commission_for_tier,
    commission_increments,
    month_periods,
    plan_value,
    prorate,
    ratable_schedule,
    recognition_lines,
    recognized_to_date,
    reversing_credit_memo,
    segment_value,
    share,
    signed_lines,
    to_minor_units,
)

__all__ = [
    "DEFAULT_TIER_RATES_BP",
    "TIER_ORDER",
    "Granularity",
    "Period",
    "Proration",
    "ScheduleLine",
    "amended_charges",
    "check_tier_table",
    "commission",
    "commission_for_tier",
    "commission_increments",
    "month_periods",
    "plan_value",
    "prorate",
    "ratable_schedule",
    "recognition_lines",
    "recognized_to_date",
    "reversing_credit_memo",
    "segment_value",
    "share",
    "signed_lines",
    "to_minor_units",
]
