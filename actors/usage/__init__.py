"""Flow 4, usage: metered usage records in (HTTP intake or straight onto the usage stream),
aggregated per subscription, product, meter and month, rated by billing in bulk and recorded at
the revenue platform, each record counted once on both. See docs/flows.md, "Flow 4: usage".

``plan`` is the pure core; ``UsageIntake``/``UsageDoor`` serve ``POST /usage/v1/records``;
``UsageAggregator`` is the batch worker of the usage lane.
"""

from .aggregator import BILLING, BULK_PATH, REVENUE, UsageAggregator
from .intake import RECORDS_PATH, UsageDoor, UsageIntake

__all__ = ["BILLING", "BULK_PATH", "RECORDS_PATH", "REVENUE", "UsageAggregator", "UsageDoor",
           "UsageIntake"]
