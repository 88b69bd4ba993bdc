"""The usage aggregator's pure core (no I/O): aggregation, ids, amounts, lines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from actors.usage.plan import (
    aggregate,
    billing_item,
    bulk_key,
    chunks,
    record_amounts,
    revenue_line,
)
from contracts import UsageRecorded
from contracts.platforms.usage import UsageItemResult

T0 = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)


def rec(uid: str, *, sub: str = "sub_1", meter: str = "api_calls", qty: int = 2,
        at: datetime = T0) -> UsageRecorded:
    return UsageRecorded(usage_id=uid, subscription_id=sub, customer_id="cus_1",
                         product_id="prod_api", meter=meter, quantity=qty, window_start=at,
                         window_end=at + timedelta(hours=1), recorded_at=at)


def test_records_are_summed_per_subscription_product_meter_and_month() -> None:
    aggs = aggregate([rec("b", qty=3), rec("a", qty=4), rec("c", sub="sub_2"),
                      rec("d", at=T0 + timedelta(hours=1)), rec("e", meter="sms_sent")])
    got = {(a.subscription, a.meter, a.period): (a.usage_ids, a.quantity) for a in aggs}
    assert got == {("sub_1", "api_calls", "2026-10"): (["a", "b"], 7),
                   ("sub_1", "api_calls", "2026-11"): (["d"], 2),
                   ("sub_1", "sms_sent", "2026-10"): (["e"], 2),
                   ("sub_2", "api_calls", "2026-10"): (["c"], 2)}
    first = aggs[0]
    assert (first.period_start, first.period_end) == ("2026-10-01", "2026-10-31")


def test_aggregate_ids_depend_on_the_records_not_on_their_order() -> None:
    one = aggregate([rec("a"), rec("b")])
    again = aggregate([rec("b"), rec("a")])
    other = aggregate([rec("a"), rec("c")])
    assert one[0].id == again[0].id != other[0].id
    items = [billing_item(a) for a in one]
    assert bulk_key(items) == bulk_key([billing_item(a) for a in again])
    assert bulk_key(items) != bulk_key([billing_item(a) for a in other])


def test_rated_amounts_per_record_and_the_revenue_line() -> None:
    agg = aggregate([rec("a", qty=3), rec("b", qty=5)])[0]
    amounts = record_amounts(agg, UsageItemResult(id=agg.id, status="created", currency="usd",
                                                  unit_amount=2, amount=16))
    assert amounts == {"a": (6, "USD"), "b": (10, "USD")}
    by_currency = aggregate([rec("a", qty=3), rec("b", qty=5)], {"a": "USD", "b": "USD"})[0]
    line = revenue_line(by_currency, amounts)
    assert (line.kind, line.amount, line.quantity, line.usage_ids, line.currency) == (
        "usage", 16, 8, ["a", "b"], "USD")
    assert line.invoice_id == line.line_id == by_currency.id
    with pytest.raises(ValueError, match="unitAmount"):
        record_amounts(agg, UsageItemResult(id=agg.id, status="created"))


def test_chunks() -> None:
    aggs = aggregate([rec(str(i), sub=f"s{i}") for i in range(5)])
    assert [len(c) for c in chunks(aggs, 2)] == [2, 2, 1]
    with pytest.raises(ValueError):
        chunks(aggs, 0)
