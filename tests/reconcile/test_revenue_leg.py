"""Revenue leg of the reconciler: billing vs the revenue platform's report vs the ledger, as
tables and properties (pure, no I/O)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.reconcile import (
    Flag,
    LedgerView,
    ReconReport,
    Reupload,
    RevenueDoc,
    RevenueRecord,
    overview,
    reconcile_revenue,
)

NOW = 1_000_000.0
OLD = NOW - 3600


def doc(key: str, subtotal: int = 100, lines: int = 2, at: float = OLD,
        versions: tuple[tuple[int, int], ...] = ()) -> RevenueDoc:
    return RevenueDoc(key, "USD", subtotal, lines, at, versions)


def rec(key: str, amount: int = 100, lines: int = 2, distinct: int | None = None,
        currency: str = "USD") -> RevenueRecord:
    return RevenueRecord(key, currency, amount, lines, lines if distinct is None else distinct)


def up(lines: int = 2, amount: int = 100) -> LedgerView:
    return LedgerView(uploaded=lines, amount=amount)


def kinds(r: ReconReport) -> set[tuple[str, str]]:
    return {(b.kind, b.key) for b in r.breaks}


def test_clean_three_ways() -> None:
    r = reconcile_revenue([doc("a"), doc("b", 250, 1)], [rec("a"), rec("b", 250, 1)],
                          ledger={"a": up(), "b": up(1, 250)}, now=NOW)
    assert r.breaks == [] and r.actions == []
    assert r.checked == r.matched == 2 and r.accuracy == 1.0
    assert r.totals == {"billing": {"USD": 350}, "revenue": {"USD": 350},
                        "ledger": {"USD": 350}}


def test_each_break_kind_and_its_action() -> None:
    billing = [doc("never"), doc("gone"), doc("doubted"), doc("young", at=NOW - 5),
               doc("claimed"), doc("refused"), doc("dup"), doc("amt"), doc("cur"),
               doc("partial", 100, 3)]
    platform = [rec("dup", 150, 3, 2), rec("amt", 90), rec("cur", currency="EUR"),
                rec("partial", 70, 2), rec("stranger", 10, 1)]
    ledger = {"gone": LedgerView(released=2), "doubted": LedgerView(in_doubt=2, amount=100),
              "claimed": LedgerView(pending=2), "refused": LedgerView(rejected=2),
              "dup": up(), "amt": up(), "cur": up(), "partial": up(3)}
    r = reconcile_revenue(billing, platform, ledger=ledger, now=NOW)
    assert kinds(r) == {
        ("revenue_missing", "never"), ("revenue_missing", "gone"), ("in_doubt", "doubted"),
        ("in_flight", "young"), ("in_flight", "claimed"), ("dead_lettered", "refused"),
        ("revenue_duplicate", "dup"), ("revenue_amount", "amt"), ("revenue_amount", "cur"),
        ("revenue_missing", "partial"), ("revenue_orphan", "stranger")}
    assert all(b.leg == "revenue" for b in r.breaks)
    # only what the ledger proves never sent is re-driven; everything else is for a person
    assert [a for a in r.actions if isinstance(a, Reupload)] == [Reupload("gone"),
                                                                 Reupload("never")]
    flags = {a.key: a for a in r.actions if isinstance(a, Flag)}
    assert set(flags) == {"doubted", "dup", "amt", "cur", "partial", "stranger"}
    assert "reverse 1 doubled line(s)" in flags["dup"].proposal
    assert "resolve" in flags["doubted"].proposal and "released" in flags["doubted"].proposal
    assert r.matched == 0 and r.checked == 10


def test_in_doubt_evidence_says_whether_the_platform_has_the_lines() -> None:
    led = {"a": LedgerView(in_doubt=2, amount=100)}
    there = reconcile_revenue([doc("a")], [rec("a")], ledger=led, now=NOW)
    absent = reconcile_revenue([doc("a")], [], ledger=led, now=NOW)
    assert [b.kind for b in there.breaks] == [b.kind for b in absent.breaks] == ["in_doubt"]
    assert "present=True" in there.actions[0].proposal  # type: ignore[union-attr]
    assert "present=False" in absent.actions[0].proposal  # type: ignore[union-attr]
    assert not any(isinstance(a, Reupload) for a in there.actions + absent.actions)


def test_without_the_ledger_nothing_is_repaired() -> None:
    r = reconcile_revenue([doc("a"), doc("b")], [rec("b")], ledger=None, now=NOW)
    assert kinds(r) == {("revenue_missing", "a")}
    assert not any(isinstance(a, Reupload) for a in r.actions)
    assert r.totals["ledger"] == {}


def test_uploaded_but_absent_is_flagged_not_resent() -> None:
    r = reconcile_revenue([doc("a")], [], ledger={"a": up()}, now=NOW)
    assert kinds(r) == {("revenue_missing", "a")}
    assert [type(a) for a in r.actions] == [Flag]


def test_only_the_latest_version_less_its_credit_memos_matches() -> None:
    # v1 (100, 2 lines), v2 (120, 2 lines): the platform holds v1's lines and v2's differences
    amended = doc("a", 120, 2, versions=((100, 2), (120, 2)))
    r = reconcile_revenue([amended], [rec("a", 120, 4)], ledger={"a": up(4, 120)}, now=NOW)
    assert r.breaks == [] and r.matched == 1
    # an earlier version's amount is no longer a match: the amendment did not reach revenue
    r = reconcile_revenue([amended], [rec("a", 100)], ledger={"a": up()}, now=NOW)
    assert kinds(r) == {("revenue_amount", "a")}
    assert "adjust at the revenue platform by 20 USD" in r.actions[0].proposal  # type: ignore[union-attr]
    # a credit memo of 30 in one line: billed 90, one more line id allowed
    credited = RevenueDoc("a", "USD", 120, 2, OLD, ((100, 2), (120, 2)), 30, 1)
    r = reconcile_revenue([credited], [rec("a", 90, 5)], ledger={"a": up(5, 90)}, now=NOW)
    assert r.breaks == [] and r.totals["billing"] == {"USD": 90}
    r = reconcile_revenue([credited], [rec("a", 120, 4)], ledger={"a": up(4, 120)}, now=NOW)
    assert kinds(r) == {("revenue_amount", "a")}
    # more line ids than every version and memo can name: something else was recorded
    r = reconcile_revenue([credited], [rec("a", 90, 8)], ledger={"a": up(5, 90)}, now=NOW)
    assert kinds(r) == {("revenue_duplicate", "a")}


def test_dead_letters_and_backlog_explain_absence() -> None:
    r = reconcile_revenue([doc("a"), doc("b")], [], ledger={}, now=NOW, dead_lettered=["a"],
                          in_flight=["b"])
    assert kinds(r) == {("dead_lettered", "a"), ("in_flight", "b")}
    assert r.actions == []


def test_known_invoices_of_other_periods_are_not_orphans() -> None:
    r = reconcile_revenue([doc("a")], [rec("a"), rec("z")], ledger={"a": up()}, now=NOW,
                          known=["a", "z"])
    assert r.breaks == [] and r.totals["revenue"] == {"USD": 100}


def test_invoices_without_lines_are_not_checked() -> None:
    r = reconcile_revenue([doc("a", 0, 0)], [], ledger={}, now=NOW)
    assert r.checked == 0 and r.breaks == []


def test_overview_counts_revenue_accuracy_and_repairable_share() -> None:
    r = reconcile_revenue([doc("ok"), doc("never"), doc("dup")],
                          [rec("ok"), rec("dup", 200, 4, 2)], ledger={"ok": up(), "dup": up()},
                          now=NOW)
    ov = overview({"revenue": r}, repaired=1)
    assert ov.revenue_event_accuracy == 1 / 3
    assert ov.by_kind["revenue_missing"] == 1 and ov.by_kind["revenue_duplicate"] == 1
    assert ov.auto_repairable_share == 1 / 2 and ov.auto_repaired_share == 1 / 2


# -- properties --------------------------------------------------------------------------------

keys = st.text("abcdef", min_size=1, max_size=3)
amounts = st.integers(0, 10_000)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[RevenueDoc], list[RevenueRecord],
                                     dict[str, LedgerView]]:
    billing = {k: doc(k, draw(amounts), draw(st.integers(1, 4)))
               for k in draw(st.sets(keys, max_size=8))}
    platform: list[RevenueRecord] = []
    ledger: dict[str, LedgerView] = {}
    for k in sorted(set(billing) | draw(st.sets(keys, max_size=3))):
        d = billing.get(k)
        status = draw(st.sampled_from(["uploaded", "in_doubt", "released", "none", "doubled"]))
        if status == "none":
            continue
        lines = d.lines if d else 1
        amount = d.subtotal if d else draw(amounts)
        if status in ("uploaded", "doubled"):
            ledger[k] = LedgerView(uploaded=lines, amount=amount)
            extra = 1 if status == "doubled" else 0
            platform.append(rec(k, amount + extra * (amount // lines), lines + extra, lines))
        elif status == "in_doubt":
            ledger[k] = LedgerView(in_doubt=lines, amount=amount)
            if draw(st.booleans()):
                platform.append(rec(k, amount, lines))
        else:
            ledger[k] = LedgerView(released=lines)
    return list(billing.values()), platform, ledger


@given(worlds())
def test_every_invoice_is_matched_or_broken_once_and_only_proven_absence_is_resent(
        world: tuple[list[RevenueDoc], list[RevenueRecord], dict[str, LedgerView]]) -> None:
    billing, platform, ledger = world
    r = reconcile_revenue(billing, platform, ledger=ledger, now=NOW)
    broken = [b.key for b in r.breaks if b.kind != "revenue_orphan"]
    assert len(broken) == len(set(broken))  # at most one break per invoice
    assert r.matched + len(broken) == r.checked == len(billing)
    present = {p.key for p in platform}
    for a in r.actions:
        if isinstance(a, Reupload):  # never twice: nothing at the platform, ledger proves it
            assert a.key not in present
            view = ledger.get(a.key, LedgerView())
            assert not (view.uploaded or view.in_doubt or view.pending)
    doubled = {p.key for p in platform if p.lines > p.distinct_lines}
    assert doubled <= {b.key for b in r.breaks if b.kind in ("revenue_duplicate", "in_doubt",
                                                            "revenue_orphan")}
    assert {k for k, v in ledger.items() if v.in_doubt and k in {d.key for d in billing}} == {
        b.key for b in r.breaks if b.kind == "in_doubt"}


@given(worlds())
def test_matching_is_order_independent(
        world: tuple[list[RevenueDoc], list[RevenueRecord], dict[str, LedgerView]]) -> None:
    billing, platform, ledger = world
    a = reconcile_revenue(billing, platform, ledger=ledger, now=NOW)
    b = reconcile_revenue(billing[::-1], platform[::-1], ledger=ledger, now=NOW)
    assert a == b
