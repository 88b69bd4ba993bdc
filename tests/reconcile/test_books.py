"""GL and payables legs of the reconciler as tables and properties (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.reconcile import (
    Flag,
    GlDoc,
    GlRow,
    Payable,
    ReconReport,
    Settlement,
    expected_balances,
    reconcile_gl,
    reconcile_payables,
)

NOW = 1_000_000.0
ACCOUNTS = {"receivable": "1200", "deferred_revenue": "2400", "tax_payable": "2200",
            "cash": "1000"}
P = "2026-11"


def rows(balances: dict[tuple[str, str, str], int]) -> list[GlRow]:
    return [GlRow(p, a, c, b) for (p, a, c), b in balances.items()]


def gl(expected: dict[tuple[str, str, str], int], actual: list[GlRow],
       periods: tuple[str, ...] = (P,)) -> ReconReport:
    return reconcile_gl(expected, actual, accounts=ACCOUNTS.values(), periods=periods,
                        headline="1200")


def test_expected_balances_of_each_document_kind() -> None:
    docs = [GlDoc("in_1", "invoice", P, "USD", 1100, 1000, 100),
            GlDoc("in_0", "invoice", P, "USD", 0, 0, 0),  # a zero invoice is not posted
            GlDoc("cn_1", "credit_note", P, "USD", 200),
            GlDoc("py_1", "payment", P, "USD", 900),
            GlDoc("in_2", "invoice", "2026-10", "EUR", 50, 50, 0)]
    assert expected_balances(docs, ACCOUNTS) == {
        (P, "1200", "USD"): 1100 - 200 - 900, (P, "2400", "USD"): -1000 + 200,
        (P, "2200", "USD"): -100, (P, "1000", "USD"): 900,
        ("2026-10", "1200", "EUR"): 50, ("2026-10", "2400", "EUR"): -50,
        ("2026-10", "2200", "EUR"): 0}


def test_gl_matches_and_breaks_with_the_difference() -> None:
    docs = [GlDoc("in_1", "invoice", P, "USD", 1100, 1000, 100)]
    want = expected_balances(docs, ACCOUNTS)
    clean = gl(want, [*rows(want), GlRow(P, "6100", "USD", 77)])  # other accounts ignored
    assert clean.breaks == [] and clean.matched == clean.checked == 3
    assert clean.totals == {"expected": {"USD": 1100}, "erp": {"USD": 1100}}
    off = dict(want)
    off[(P, "1200", "USD")] += 30  # e.g. an altered or doubled posting
    off[(P, "1000", "USD")] = 5  # cash nobody expected
    r = gl(want, rows(off))
    assert [(b.kind, b.key, b.billing_amount, b.erp_amount) for b in r.breaks] == [
        ("gl", f"{P}/1000/USD", 0, 5), ("gl", f"{P}/1200/USD", 1100, 1130)]
    assert all(b.leg == "gl" for b in r.breaks)
    assert "difference 30" in r.breaks[1].detail
    assert all(isinstance(a, Flag) and a.kind == "gl" for a in r.actions)


def test_gl_only_compares_the_periods_asked() -> None:
    want = {("2026-10", "1200", "USD"): 10}
    r = gl(want, rows({("2026-10", "1200", "USD"): 99}), periods=(P,))
    assert r.checked == 0 and r.breaks == []


def s(key: str, amount: int = 100, at: float = NOW - 3600, currency: str = "USD") -> Settlement:
    return Settlement(key, currency, amount, at)


def b(key: str, amount: int = 100, n: int = 1, currency: str = "USD") -> Payable:
    return Payable(key, f"VB-{key}-{n}", currency, amount)


def test_payables_each_break_kind() -> None:
    settlements = [s("ok"), s("twice"), s("twice"), s("unbilled"), s("young", at=NOW - 1),
                   s("billed2"), s("amt"), s("cur")]
    bills = [b("ok"), b("twice"), b("billed2"), b("billed2", n=2), b("amt", 90),
             b("cur", currency="EUR"), b("stray")]
    r = reconcile_payables(settlements, bills, now=NOW)
    assert sorted((x.kind, x.key) for x in r.breaks) == sorted([
        ("payable_duplicate", "twice"), ("payable_missing", "unbilled"), ("in_flight", "young"),
        ("payable_duplicate", "billed2"), ("payable_amount", "amt"), ("payable_amount", "cur"),
        ("payable_orphan", "stray")])
    assert r.checked == 7 and r.matched == 1
    flags = {a.key: a.proposal for a in r.actions if isinstance(a, Flag)}
    assert flags["billed2"] == "void VB-billed2-2"
    assert r.totals["partner"] == {"USD": 700}  # distinct settlements only


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(1, 500)), max_size=12),
       st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(1, 500)), max_size=12))
def test_payables_property(settled: list[tuple[str, int]], billed: list[tuple[str, int]]) -> None:
    r = reconcile_payables([s(k, a) for k, a in settled],
                           [b(k, a, i) for i, (k, a) in enumerate(billed)], now=NOW)
    ids = {k for k, _ in settled}
    assert r.checked == len(ids)
    broken = {x.key for x in r.breaks if x.kind != "payable_orphan"}
    assert r.matched + len(broken) == r.checked
    first: dict[str, int] = {}
    for k, a in settled:
        first.setdefault(k, a)
    bills: dict[str, list[int]] = {}
    for k, a in billed:
        bills.setdefault(k, []).append(a)
    clean = {k for k in ids if [x for x, _ in settled].count(k) == 1
             and bills.get(k) == [first[k]]}
    assert ids - broken == clean
    assert {x.key for x in r.breaks if x.kind == "payable_orphan"} == set(bills) - ids


@given(st.lists(st.tuples(st.sampled_from(["invoice", "credit_note", "payment"]),
                          st.integers(0, 10_000), st.integers(0, 1_000),
                          st.sampled_from(["USD", "EUR"])), max_size=15))
def test_gl_expectation_is_balanced_and_any_one_off_balance_breaks(
        docs: list[tuple[str, int, int, str]]) -> None:
    gl_docs = [GlDoc(f"d{i}", kind, P, cur, total + tax if kind == "invoice" else total,
                     total, tax if kind == "invoice" else 0)
               for i, (kind, total, tax, cur) in enumerate(docs)]
    want = expected_balances(gl_docs, ACCOUNTS)
    for cur in ("USD", "EUR"):  # double entry: every currency nets to zero
        assert sum(v for (_, _, c), v in want.items() if c == cur) == 0
    r = gl(want, rows(want))
    assert r.breaks == [] and r.matched == r.checked
    # ... and the comparison is not blind: one balance off by one minor unit is a break.
    for key in list(want)[:3]:
        off = rows({**want, key: want[key] + 1})
        broken = gl(want, off)
        assert broken.matched == broken.checked - 1
        assert [b.leg for b in broken.breaks] == ["gl"]
