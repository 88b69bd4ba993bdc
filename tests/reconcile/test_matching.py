"""Reconciliation matching as tables and properties (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.reconcile import BillingDoc, ErpPosting, Flag, Repost, reconcile

NOW = 1_000_000.0
OLD = NOW - 3600


def doc(key: str, amount: int = 100, currency: str = "USD", at: float = OLD) -> BillingDoc:
    return BillingDoc(key, currency, amount, at)


def post(key: str, amount: int = 100, currency: str = "USD", n: int = 1) -> ErpPosting:
    return ErpPosting(key, f"JE-{key}-{n}", currency, amount)


def kinds(report) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(b.kind, b.key) for b in report.breaks]


def test_clean() -> None:
    r = reconcile([doc("a"), doc("b", 250, "EUR")], [post("a"), post("b", 250, "EUR")], now=NOW)
    assert r.breaks == [] and r.actions == []
    assert r.matched == r.checked == 2 and r.accuracy == 1.0
    assert r.totals == {"billing": {"USD": 100, "EUR": 250}, "erp": {"USD": 100, "EUR": 250}}


def test_each_break_kind_and_its_action() -> None:
    billing = [doc("missing"), doc("young", at=NOW - 10), doc("flying"), doc("dead"),
               doc("dup"), doc("amt", 100), doc("cur", 100, "USD")]
    erp = [post("dup", n=1), post("dup", n=2), post("amt", 90), post("cur", 100, "EUR"),
           post("orphan")]
    r = reconcile(billing, erp, now=NOW, in_flight=["flying"], dead_lettered=["dead"])
    assert sorted(kinds(r)) == sorted([
        ("missing", "missing"), ("in_flight", "young"), ("in_flight", "flying"),
        ("dead_lettered", "dead"), ("duplicate", "dup"), ("amount", "amt"),
        ("currency", "cur"), ("orphan", "orphan")])
    assert Repost("missing") in r.actions
    assert [a for a in r.actions if isinstance(a, Repost)] == [Repost("missing")]  # only safe
    assert Flag("dup", "duplicate", "reverse JE-dup-2") in r.actions
    assert any(isinstance(a, Flag) and a.key == "amt" and "reverse JE-amt-1" in a.proposal
               for a in r.actions)
    assert r.by_kind["missing"] == 1 and r.by_kind["orphan"] == 1
    # 5 real breaks (missing, duplicate, amount, currency, orphan); 1 auto-repairable
    assert r.auto_repairable_share == 1 / 5
    assert r.matched == 0


def test_never_auto_repairs_money_it_cannot_prove() -> None:
    r = reconcile([doc("a", 100)], [post("a", 100), post("a", 100, n=2)], now=NOW)
    assert not any(isinstance(a, Repost) for a in r.actions)


keys = st.text("abcdefgh", min_size=1, max_size=3)


@given(st.dictionaries(keys, st.integers(1, 10_000), max_size=30),
       st.dictionaries(keys, st.integers(0, 3), max_size=30))
def test_properties(billed: dict[str, int], posted_counts: dict[str, int]) -> None:
    billing = [doc(k, v) for k, v in billed.items()]
    erp = [post(k, billed.get(k, 1), n=i) for k, c in posted_counts.items() for i in range(c)]
    r = reconcile(billing, erp, now=NOW)
    posted_keys = {p.key for p in erp}
    # every billing document is matched or explained by exactly one presence break
    presence = [b for b in r.breaks if b.kind in ("missing", "in_flight", "dead_lettered")]
    assert {b.key for b in presence} == set(billed) - posted_keys
    assert r.matched + len(presence) + r.by_kind["duplicate"] == len(billed)
    # duplicates are counted per key, orphans per posting
    assert r.by_kind["duplicate"] == sum(1 for k, c in posted_counts.items()
                                         if c > 1 and k in billed)
    assert r.by_kind["orphan"] == sum(c for k, c in posted_counts.items() if k not in billed)
    # only missing documents are reposted
    assert {a.key for a in r.actions if isinstance(a, Repost)} == {
        b.key for b in r.breaks if b.kind == "missing"}
    # totals add up
    assert sum(r.totals["billing"].values()) == sum(billed.values())
    assert sum(r.totals["erp"].values()) == sum(p.amount for p in erp)
