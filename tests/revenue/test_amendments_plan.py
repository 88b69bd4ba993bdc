"""The revenue poster's pure core for amendments and credit memos (``plan.plan_version``,
``plan.credit_lines``): tables, and a property over any order of versions, credit memos,
redeliveries and upload outcomes — no line id recorded twice, and the platform's sum plus the
in-doubt lines it never got equals the invoice's latest subtotal less its credit memos."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.revenue.plan import (
    Recorded,
    SharedRecorded,
    credit_lines,
    guess_line_ids,
    merge_recorded,
    plan_version,
    revenue_lines,
    version_line_id,
    version_of_line,
)
from contracts import CreditMemoIssued, CreditMemoLine, InvoiceIssued, InvoiceLine
from contracts.platforms.revenue import RevenueLineIn
from sim._revenue import RevenueBook, validate_line


def invoice(amounts: dict[str, int], invoice_id: str = "in_1") -> InvoiceIssued:
    lines = [InvoiceLine(line_id=k, product_id=f"p_{k}", description="", quantity=1,
                         unit_amount=v, amount=v) for k, v in amounts.items()]
    total = sum(amounts.values())
    return InvoiceIssued(invoice_id=invoice_id, number="INV-1", customer_id="cus_1",
                         currency="USD", issued_at=datetime(2025, 3, 1, tzinfo=UTC),
                         period_start=date(2025, 3, 1), period_end=date(2025, 3, 31),
                         lines=lines, subtotal=total, tax=0, total=total)


def memo(cn: str, amounts: list[int], invoice_id: str | None = "in_1") -> CreditMemoIssued:
    lines = tuple(CreditMemoLine(line_id=f"cl_{i}", product_id="p_a", quantity=1,
                                 unit_amount=a, amount=a) for i, a in enumerate(amounts))
    return CreditMemoIssued(credit_memo_id=cn, number=cn.upper(), customer_id="cus_1",
                            invoice_id=invoice_id, currency="USD",
                            issued_at=datetime(2025, 3, 20, tzinfo=UTC), lines=lines,
                            subtotal=sum(amounts), tax=0, total=sum(amounts))


def rows(lines: list[RevenueLineIn], status: str = "uploaded") -> list[Recorded]:
    return [Recorded(ln.line_id, ln.amount, status) for ln in lines]


def test_line_ids_name_their_version() -> None:
    assert version_line_id("in_1", "il_1", 1) == "in_1:il_1"
    assert version_line_id("in_1", "il_1", 3) == "in_1:il_1:v3"
    assert version_of_line("in_1", "in_1:il_1") == ("il_1", 1)
    assert version_of_line("in_1", "in_1:il_1:v3") == ("il_1", 3)
    assert version_of_line("in_1", "cn_1:cl_0") is None  # a credit memo's line
    assert version_of_line("in_1", "in_1:il_1:v03") == ("il_1:v03", 1)  # not one we make


def test_v2_uploads_the_differences_per_line() -> None:
    v1 = revenue_lines(invoice({"a": 100, "b": 50, "c": 30}))
    v2 = plan_version(invoice({"a": 120, "b": 50, "d": 7}), 2, rows(v1))
    assert v2 is not None
    got = {ln.line_id: (ln.amount, ln.product, ln.adjusts) for ln in v2}
    assert got == {"in_1:a:v2": (20, "p_a", "in_1:a"), "in_1:b:v2": (0, "p_b", "in_1:b"),
                   "in_1:d:v2": (7, "p_d", "in_1:d"),
                   "in_1:c:v2": (-30, "", "in_1:c")}  # removed: the corrected line's product
    assert sum(ln.amount for ln in v1 + v2) == 177
    assert all(validate_line(i, ln) is None for i, ln in enumerate(v2))  # the platform takes them


def test_a_version_waits_until_the_one_before_is_applied() -> None:
    v1 = revenue_lines(invoice({"a": 100}))
    assert plan_version(invoice({"a": 120}), 2, []) is None  # v2 before v1
    assert plan_version(invoice({"a": 120}), 2, rows(v1, "released")) is None  # not recorded
    assert plan_version(invoice({"a": 130}), 3, rows(v1)) is None  # v3 needs v2
    assert plan_version(invoice({"a": 120}), 2, rows(v1, "rejected")) is None


def test_lines_in_doubt_are_presumed_recorded() -> None:
    v1 = revenue_lines(invoice({"a": 100, "b": 50}))
    for status in ("in_doubt", "pending"):
        v2 = plan_version(invoice({"a": 120, "b": 50}), 2, rows(v1, status))
        assert v2 is not None and {ln.line_id: ln.amount for ln in v2} == {
            "in_1:a:v2": 20, "in_1:b:v2": 0}


def test_a_redelivery_plans_the_same_lines_whatever_later_versions_hold() -> None:
    v1 = revenue_lines(invoice({"a": 100}))
    v2 = plan_version(invoice({"a": 120}), 2, rows(v1))
    assert v2 is not None
    v3 = plan_version(invoice({"a": 90}), 3, rows(v1 + v2))
    assert v3 is not None and [ln.amount for ln in v3] == [-30]
    assert plan_version(invoice({"a": 120}), 2, rows(v1 + v2 + v3)) == v2
    # a credit memo's lines of the same invoice are not an earlier version's
    credit = credit_lines(memo("cn_1", [40]))
    assert plan_version(invoice({"a": 90}), 3, rows(v1 + v2 + credit)) == v3


def test_a_credit_memo_is_negative_lines_of_its_invoice() -> None:
    lines = credit_lines(memo("cn_1", [40, -5]))
    assert [(ln.line_id, ln.invoice_id, ln.amount, ln.adjusts, ln.period_start)
            for ln in lines] == [("cn_1:cl_0", "in_1", -40, "in_1", "2025-03-20"),
                                 ("cn_1:cl_1", "in_1", 5, "in_1", "2025-03-20")]
    assert all(validate_line(i, ln) is None for i, ln in enumerate(lines))
    assert credit_lines(memo("cn_2", [40], invoice_id=None)) == []


def test_the_platform_takes_negative_amounts_only_on_corrections() -> None:
    line = RevenueLineIn(line_id="x", invoice_id="in_1", product="p", currency="USD",
                         amount=-1, period_start="2025-03-01", period_end="2025-03-01")
    assert validate_line(0, line) is not None
    assert validate_line(0, RevenueLineIn(**{**_fields(line), "adjusts": "in_1:a"})) is None
    assert validate_line(0, RevenueLineIn(**{**_fields(line), "product": ""})) is not None
    assert validate_line(0, RevenueLineIn(**{**_fields(line), "kind": "usage", "quantity": 1,
                                            "usage_ids": ["u"], "adjusts": "x"})) is not None


def _fields(line: RevenueLineIn) -> dict[str, object]:
    return {f: getattr(line, f) for f in line.__struct_fields__}


def test_version_one_is_not_planned_as_a_difference() -> None:
    with pytest.raises(ValueError, match="versions >= 2"):
        plan_version(invoice({"a": 1}), 1, [])


# -- the property: any order, any outcome ------------------------------------------------------

ACCEPT, ERROR, DOUBT_SENT, DOUBT_LOST = "accept", "error", "doubt_sent", "doubt_lost"
PRESUMED = ("uploaded", "in_doubt")


def run(docs: list[tuple[str, object]], rng: random.Random, outcomes: list[str],
        ledger: dict[str, tuple[int, str]], platform: list[RevenueLineIn]) -> int:
    """The poster's loop over ``docs`` (``("v<n>", invoice)`` or ``("cm", memo)``), in their
    order, a waiting or failed one naked to the back of the queue; every upload (one document's
    sendable lines) answered by the next outcome. Returns the amount lost in doubt."""
    queue = list(docs)
    lost = 0
    steps = 0
    while queue:
        steps += 1
        assert steps < 10_000, "the queue never drained"
        kind, doc = queue.pop(0)
        if kind == "cm":
            assert isinstance(doc, CreditMemoIssued)
            lines: list[RevenueLineIn] | None = credit_lines(doc)
        else:
            assert isinstance(doc, InvoiceIssued)
            version = int(kind[1:])
            recorded = [Recorded(k, a, s) for k, (a, s) in ledger.items()]
            lines = (revenue_lines(doc) if version == 1
                     else plan_version(doc, version, recorded))
        if lines is None:  # waits for its earlier version: nak
            queue.append((kind, doc))
            continue
        todo = [ln for ln in lines if ledger.get(ln.line_id, (0, ""))[1] not in PRESUMED]
        if not todo:
            continue  # acked: everything settled
        outcome = outcomes.pop(0) if outcomes and steps < 5_000 else ACCEPT
        if outcome == ERROR:
            for ln in todo:
                ledger[ln.line_id] = (ln.amount, "released")
            queue.append((kind, doc))
            continue
        for ln in todo:
            ledger[ln.line_id] = (ln.amount, "uploaded" if outcome == ACCEPT else "in_doubt")
        if outcome == DOUBT_LOST:
            lost += sum(ln.amount for ln in todo)
        else:
            platform.extend(todo)
        if rng.random() < 0.3:  # redelivered anyway (an ack lost)
            queue.insert(rng.randrange(len(queue) + 1), (kind, doc))
    return lost


line_amounts = st.dictionaries(st.sampled_from("abcde"), st.integers(0, 10_000),
                               min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(versions=st.lists(line_amounts, min_size=1, max_size=5),
       memos=st.lists(st.lists(st.integers(-500, 5_000), min_size=1, max_size=3)
                      .filter(lambda a: sum(a) > 0), max_size=3),
       outcomes=st.lists(st.sampled_from([ACCEPT, ACCEPT, ERROR, DOUBT_SENT, DOUBT_LOST]),
                         max_size=30),
       seed=st.integers(0, 2**32 - 1))
def test_any_order_leaves_the_latest_billed_amount_once(
        versions: list[dict[str, int]], memos: list[list[int]], outcomes: list[str],
        seed: int) -> None:
    rng = random.Random(seed)
    docs: list[tuple[str, object]] = [(f"v{n}", invoice(a)) for n, a in enumerate(versions, 1)]
    docs += [("cm", memo(f"cn_{i}", a)) for i, a in enumerate(memos)]
    docs += [rng.choice(docs) for _ in range(rng.randrange(3))]  # duplicate deliveries
    rng.shuffle(docs)
    ledger: dict[str, tuple[int, str]] = {}
    platform: list[RevenueLineIn] = []
    lost = run(docs, rng, list(outcomes), ledger, platform)
    ids = [ln.line_id for ln in platform]
    assert len(ids) == len(set(ids)), "a line recorded twice"
    billed = sum(versions[-1].values()) - sum(sum(a) for a in memos)
    assert sum(ln.amount for ln in platform) + lost == billed
    # the ledger presumes exactly the billed amount at the platform
    assert sum(a for a, s in ledger.values() if s in PRESUMED) == billed
    # every document delivered once more, in any order: nothing more is sent
    again = list(docs)
    rng.shuffle(again)
    assert run(again, rng, [], ledger, platform) == 0
    assert [ln.line_id for ln in platform] == ids


def test_the_billings_report_nets_corrections_into_their_invoice() -> None:
    book = RevenueBook()
    v1 = revenue_lines(invoice({"a": 100, "b": 50}))
    v2 = plan_version(invoice({"a": 70}), 2, rows(v1))
    assert v2 is not None
    result = book.upload(v1 + v2 + credit_lines(memo("cn_1", [20])))
    assert result.status == "accepted" and result.errors == []
    (row,) = book.billings("", 10).items
    assert (row.invoice_id, row.amount, row.lines, row.distinct_lines) == ("in_1", 50, 5, 5)
    bad = RevenueLineIn(line_id="x", invoice_id="in_1", product="p", currency="USD",
                        amount=-1, period_start="2025-03-01", period_end="2025-03-01")
    refused = book.upload([*v1, bad])  # all-or-nothing: a negative line that corrects nothing
    assert refused.status == "rejected" and [e.index for e in refused.errors] == [2]
    assert book.billings("", 10).items == [row]


# -- planning from the shared uploads: any process plans what one holding every row would ------

def shared(line_id: str, amount: int | None, status: str = "uploaded", *,
           elsewhere: bool = True, lines: int | None = None) -> SharedRecorded:
    return SharedRecorded(line_id, amount, status, elsewhere, lines)


def test_the_ledger_wins_for_its_own_lines_unless_another_process_recorded_one_since() -> None:
    own = [Recorded("in_1:a", 100, "uploaded"), Recorded("in_1:b", 50, "released")]
    got = merge_recorded("in_1", 2, own, [
        shared("in_1:a", 999, elsewhere=False, lines=2),  # lagging its ledger: the ledger's
        shared("in_1:b", 50, "uploaded", lines=2),  # recorded elsewhere after a's 503
        shared("in_1:c", 7, "released", lines=2)])  # nothing of c is presumed recorded
    assert got.plannable and got.previous_found == 3 and got.previous_count == 2
    assert got.rows == [Recorded("in_1:a", 100, "uploaded"), Recorded("in_1:b", 50, "uploaded"),
                        Recorded("in_1:c", 7, "released")]


def test_what_keeps_a_merged_plan_from_being_made() -> None:
    no_amount = merge_recorded("in_1", 2, [], [shared("in_1:a", None)])  # an older value
    assert no_amount.no_amount == ["in_1:a"] and not no_amount.plannable
    # a row this process holds needs no amount from the shared uploads
    assert merge_recorded("in_1", 2, [Recorded("in_1:a", 100, "uploaded")],
                          [shared("in_1:a", None, elsewhere=False)]).plannable
    sending = merge_recorded("in_1", 3, [], [shared("in_1:a", 100, lines=1),
                                             shared("in_1:a:v2", 30, "pending", lines=1)])
    assert sending.sending_elsewhere == ["in_1:a:v2"] and not sending.plannable
    partial = merge_recorded("in_1", 3, [], [shared("in_1:a", 100, lines=2),
                                             shared("in_1:a:v2", 0, lines=2)])
    assert partial.incomplete and (partial.previous_found, partial.previous_count) == (1, 2)
    # rows of the version itself and later ones, and other documents', are not its concern
    later = merge_recorded("in_1", 2, [], [shared("in_1:a", 100, lines=1),
                                           shared("in_1:a:v2", None, "pending"),
                                           shared("cn_1:cl_1", None)])
    assert later.plannable and later.rows == [Recorded("in_1:a", 100, "uploaded")]


@settings(max_examples=60, deadline=None)
@given(versions=st.lists(line_amounts, min_size=2, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_any_split_of_the_rows_between_two_processes_plans_the_same_lines(
        versions: list[dict[str, int]], seed: int) -> None:
    """Every version applied in turn (each line uploaded or in doubt, each by either process);
    then each version is planned by each process from its own rows and the shared rows it can
    name. It plans exactly what one process holding every row plans, or waits because the
    version before wrote a line it cannot name (never when no line was ever dropped)."""
    rng = random.Random(seed)
    invoices = [invoice(a) for a in versions]
    world: list[tuple[Recorded, str, int]] = []  # row, owner, lines its version wrote
    for n, inv in enumerate(invoices, 1):
        everything = [row for row, _, _ in world]
        expected = revenue_lines(inv) if n == 1 else plan_version(inv, n, everything)
        assert expected is not None
        for owner in ("a", "b") if n > 1 else ():
            own = [row for row, o, _ in world if o == owner]
            names = {ln.line_id for ln in inv.lines} | {
                p[0] for row in own if (p := version_of_line("in_1", row.line_id))}
            by_id = {row.line_id: (row, o, c) for row, o, c in world}
            merged = merge_recorded("in_1", n, own, [
                SharedRecorded(row.line_id, row.amount, row.status, o != owner, c)
                for i in guess_line_ids(inv, n, own) if i in by_id
                for row, o, c in [by_id[i]]])
            assert not merged.no_amount and not merged.sending_elsewhere
            unnamed = {p[0] for row, _, _ in world
                       if (p := version_of_line("in_1", row.line_id)) and p[1] == n - 1
                       } - names
            planned = plan_version(inv, n, merged.rows) if merged.plannable else None
            assert (planned is None) == bool(unnamed)  # waits only for a line it cannot name
            assert planned is None or planned == expected
            if all(set(earlier) <= set(versions[n - 1]) for earlier in versions[: n - 1]):
                assert planned is not None  # no line ever dropped: always planned
        world += [(Recorded(ln.line_id, ln.amount, rng.choice(PRESUMED)), rng.choice("ab"),
                   len(expected)) for ln in expected]
