"""Closed ERP periods (``erp.closed_period``): the pure moves as tables, then the ERP poster
over the simulator's pure ERP books and a real ledger — dead-lettered by default, moved into
the first open period under ``next_open`` or a ``--repost-open`` replay, and never posted
twice, however often it is delivered or replayed, even when the ledger lost the first answer."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from actors.erp import ErpPoster
from actors.erp.periods import MAX_PROBES, POLICY_HEADER, first_day_after, moved, probes
from actors.infra.ledger import Ledger
from contracts.platforms.erp import PERIOD_CLOSED

from .test_erp_ordering import AccountMap, FakeErp, command, entry, make_poster


@pytest.mark.parametrize(("day", "months", "expected"), [
    (date(2025, 3, 17), 1, date(2025, 4, 1)),
    (date(2025, 3, 1), 2, date(2025, 5, 1)),
    (date(2025, 12, 31), 1, date(2026, 1, 1)),
    (date(2025, 11, 5), 14, date(2027, 1, 1)),
])
def test_first_day_after(day: date, months: int, expected: date) -> None:
    assert first_day_after(day, months) == expected


def test_first_day_after_refuses_no_move() -> None:
    with pytest.raises(ValueError, match="months must be >= 1"):
        first_day_after(date(2025, 3, 1), 0)


def test_a_moved_entry_keeps_its_key_lines_and_original_date() -> None:
    e = entry(1, 1)
    m = moved(e, 2)
    assert m.posting_date == date(2025, 5, 1)
    assert (m.idempotency_key, m.external_id, m.lines, m.currency) == (
        e.idempotency_key, e.external_id, e.lines, e.currency)
    assert m.memo.endswith("(dated 2025-03-01, period closed)") and m.memo.startswith(e.memo)
    assert moved(e, 2) == m  # every attempt at the same period is the same entry


@pytest.mark.parametrize(("code", "step", "maybe_posted", "expected"), [
    (PERIOD_CLOSED, 0, False, True),
    (PERIOD_CLOSED, MAX_PROBES - 1, False, True),
    (PERIOD_CLOSED, MAX_PROBES, False, False),
    # a reused key on a first delivery is a key-derivation bug, not a moved entry
    ("IDEMPOTENCY_KEY_REUSED", 0, False, False),
    ("IDEMPOTENCY_KEY_REUSED", 0, True, True),
    ("IDEMPOTENCY_KEY_REUSED", 3, False, True),
    ("UNBALANCED", 0, True, False),
    (None, 0, True, False),
])
def test_which_refusals_move_on(code: str | None, step: int, maybe_posted: bool,
                                expected: bool) -> None:
    assert probes(code, step=step, maybe_posted=maybe_posted) is expected


def receivable(erp: FakeErp, period: str) -> int:
    return sum(b.balance for b in erp.books.balances(period).balances
               if b.account == AccountMap().receivable)


def next_open(erp: FakeErp, ledger: Ledger) -> ErpPoster:
    p = make_poster(erp, ledger)
    p.closed_period = "next_open"
    return p


async def test_by_default_a_posting_into_a_closed_period_is_dead_lettered(
        ledger: Ledger) -> None:
    erp = FakeErp()
    erp.books.close_period("2025-03", 0.0)
    p = make_poster(erp, ledger)
    d = command(1, 1, 1)
    await p.handle([d])
    assert d.verdict == "term"
    assert p.dlq.letters == [("erp.period_closed", "billing:in_1:v1")]
    assert erp.books.postings == [] and p.moved_to_open == 0


async def test_next_open_posts_on_the_first_day_of_the_first_open_period(
        ledger: Ledger) -> None:
    erp = FakeErp()
    for period in ("2025-03", "2025-04"):
        erp.books.close_period(period, 0.0)
    p = next_open(erp, ledger)
    d = command(1, 1, 1)
    await p.handle([d])
    assert d.verdict == "ack" and p.dlq.letters == []
    assert [q.external_id for q in erp.books.postings] == ["in_1"]
    assert (receivable(erp, "2025-03"), receivable(erp, "2025-04"),
            receivable(erp, "2025-05")) == (0, 0, 1100)
    assert p.moved_to_open == 1
    # redeliveries change nothing at the ERP
    for n in (2, 3):
        again = command(1, 1, 1)
        again.num_delivered = n
        await p.handle([again])
        assert again.verdict == "ack"
    assert len(erp.books.postings) == 1 and receivable(erp, "2025-05") == 1100


async def test_a_lost_answer_is_found_again_under_the_same_key(tmp_path: Path) -> None:
    """The ERP took the moved entry but the ledger never learnt it (a crash between the two):
    the redelivery is refused as a reused key at its own date and at every closed period after
    it, and answered ``replayed`` at the period the entry went to — one posting."""
    erp = FakeErp()
    for period in ("2025-03", "2025-04"):
        erp.books.close_period(period, 0.0)
    first = await Ledger.open(tmp_path / "a.db")
    try:
        await next_open(erp, first).handle([command(1, 1, 1)])
    finally:
        await first.close()
    assert len(erp.books.postings) == 1
    fresh = await Ledger.open(tmp_path / "b.db")
    try:
        p = next_open(erp, fresh)
        d = command(1, 1, 1)
        d.num_delivered = 2
        await p.handle([d])
        assert d.verdict == "ack" and p.dlq.letters == []
        assert (p.posted, p.replayed) == (0, 1)
    finally:
        await fresh.close()
    assert len(erp.books.postings) == 1 and receivable(erp, "2025-05") == 1100
    assert erp.requests[-3:] == [["in_1"], ["in_1"], ["in_1"]]  # as dated, 2025-04, 2025-05


async def test_a_replay_marked_repost_open_moves_it_once_however_often(
        ledger: Ledger) -> None:
    erp = FakeErp()
    erp.books.close_period("2025-03", 0.0)
    p = make_poster(erp, ledger)  # the configured policy stays dead_letter
    await p.handle([command(1, 1, 1)])
    assert p.dlq.letters == [("erp.period_closed", "billing:in_1:v1")]
    replays = [command(1, 1, 1), command(1, 1, 1)]
    for d in replays:
        d.headers[POLICY_HEADER] = "next_open"
        await p.handle([d])
    assert [d.verdict for d in replays] == ["ack", "ack"]
    assert len(erp.books.postings) == 1 and receivable(erp, "2025-04") == 1100
    # an unmarked replay of another late posting is dead-lettered again
    other = command(2, 1, 1)
    await p.handle([other])
    assert other.verdict == "term" and p.dlq.letters[-1] == ("erp.period_closed", "billing:in_2:v1")


async def test_no_open_period_in_reach_is_dead_lettered_as_closed(ledger: Ledger) -> None:
    erp = FakeErp()
    for i in range(MAX_PROBES + 1):
        erp.books.close_period(first_day_after(date(2025, 2, 1), i + 1).isoformat()[:7], 0.0)
    p = next_open(erp, ledger)
    d = command(1, 1, 1)
    await p.handle([d])
    assert d.verdict == "term" and p.dlq.letters == [("erp.period_closed", "billing:in_1:v1")]
    assert erp.books.postings == []
    assert len(erp.requests) == MAX_PROBES + 1
