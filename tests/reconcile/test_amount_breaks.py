"""Amount mismatches (the ERP recorded another amount than billing's total: a platform bug or
a manual edit) as a table: classified ``amount``, flagged with a reversal proposal for a
person, never reposted or otherwise repaired by the gateway."""

from __future__ import annotations

import pytest

from actors.reconcile import BillingDoc, ErpPosting, Flag, Repost, reconcile

NOW = 1_000_000.0
OLD = NOW - 3600


def doc(key: str, amount: int, currency: str = "USD") -> BillingDoc:
    return BillingDoc(key, currency, amount, OLD)


def post(key: str, amount: int, currency: str = "USD", n: int = 1) -> ErpPosting:
    return ErpPosting(key, f"JE-{key}-{n}", currency, amount)


@pytest.mark.parametrize(
    ("billed", "posted", "kinds", "proposals"),
    [
        # altered up and down: one amount break each, a reversal and a repost of the billed
        # amount proposed
        ([doc("a", 1000)], [post("a", 1050)], ["amount"],
         ["reverse JE-a-1 and repost 1000 USD"]),
        ([doc("a", 1000)], [post("a", 901)], ["amount"],
         ["reverse JE-a-1 and repost 1000 USD"]),
        # off by one minor unit is still a break
        ([doc("a", 1000, "JPY")], [post("a", 999, "JPY")], ["amount"],
         ["reverse JE-a-1 and repost 1000 JPY"]),
        # the right amount: no break
        ([doc("a", 1000)], [post("a", 1000)], [], []),
        # another currency wins over the amount: one break, not two
        ([doc("a", 1000)], [post("a", 1050, "EUR")], ["currency"], ["reverse JE-a-1 and repost"]),
        # an altered posting that is also doubled: both breaks, both flagged
        ([doc("a", 1000)], [post("a", 1050), post("a", 1000, n=2)], ["duplicate", "amount"],
         ["reverse JE-a-2", "reverse JE-a-1 and repost 1000 USD"]),
        # only the altered one of several documents
        ([doc("a", 1000), doc("b", 2000), doc("c", 3000)],
         [post("a", 1000), post("b", 2100), post("c", 3000)], ["amount"],
         ["reverse JE-b-1 and repost 2000 USD"]),
    ],
)
def test_amount_mismatch_table(billed: list[BillingDoc], posted: list[ErpPosting],
                               kinds: list[str], proposals: list[str]) -> None:
    r = reconcile(billed, posted, now=NOW)
    assert [b.kind for b in r.breaks] == kinds
    assert [a.proposal for a in r.actions if isinstance(a, Flag)] == proposals
    assert not any(isinstance(a, Repost) for a in r.actions)  # never auto-fixed
    assert r.matched == len(billed) - len(kinds and {b.key for b in r.breaks})


def test_amount_break_carries_both_amounts_and_the_entry() -> None:
    r = reconcile([doc("in_1", 1000)], [post("in_1", 1080)], now=NOW)
    (b,) = r.breaks
    assert (b.kind, b.key, b.billing_amount, b.erp_amount, b.currency) == (
        "amount", "in_1", 1000, 1080, "USD")
    assert "JE-in_1-1" in b.detail
    assert r.actions == [Flag("in_1", "amount", "reverse JE-in_1-1 and repost 1000 USD")]
    assert r.auto_repairable_share == 0.0
    assert r.totals == {"billing": {"USD": 1000}, "erp": {"USD": 1080}}
