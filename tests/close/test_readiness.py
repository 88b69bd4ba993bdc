"""Close readiness, the pure core: which reconciliation breaks, dead letters and close-run plans
block a period's close, each with the command that resolves it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.close import (
    BLOCKER_KINDS,
    Latest,
    OpenLetter,
    RunPosting,
    close_blockers,
    kpi_document,
    plan_close,
)
from actors.close.readiness import PERIOD_CLOSED_CODE, letter_period
from actors.reconcile import Break
from actors.router.invoices import AccountMap
from contracts.platforms.revenue import RecognitionItem

P = "2026-11"


def letter(seq: int, *, code: str = PERIOD_CLOSED_CODE, document: str = "in_1",
           period: str | None = P, failed: str = "2026-12") -> OpenLetter:
    return OpenLetter(seq, code, "billing", document, period, failed)


def status(**kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"breaks": [], "letters": [], "documents": [], "revenue": []}
    args.update(kw)
    return close_blockers("default", P, **args)  # type: ignore[arg-type]


def test_nothing_read_nothing_blocks() -> None:
    s = status()
    assert (s.blocking, s.to_builtins()["ready"], s.resolve_all) == (0, True, {})
    assert s.by_kind == dict.fromkeys(BLOCKER_KINDS, 0)


def test_the_period_code_is_the_erp_posters() -> None:
    assert PERIOD_CLOSED_CODE == "erp.period_closed"


def test_a_period_closed_letter_blocks_and_names_its_repost_open_replay() -> None:
    s = status(letters=[letter(7)],
               breaks=[Break("dead_lettered", "in_1", "no posting; dead letter")],
               documents=["in_1"])
    # The break and the letter are one item: the letter, with its replay command.
    assert [(b.kind, b.key, b.resolve) for b in s.blockers] == [
        ("dead_lettered", "dlq:7", "erpgw dlq replay --seq 7 --repost-open")]
    assert s.resolve_all == {
        "dead_lettered": "erpgw dlq replay --code erp.period_closed --repost-open"}


def test_another_letter_says_to_look_before_replaying() -> None:
    s = status(letters=[letter(3, code="contract.invalid", period=None, document="in_9")],
               documents=["in_9"])
    (b,) = s.blockers
    assert b.resolve == "erpgw dlq show 3, fix the cause, then erpgw dlq replay --seq 3"
    assert s.resolve_all["dead_lettered"].startswith("erpgw dlq ls")


def test_a_compensated_deal_is_an_outcome_not_a_blocker() -> None:
    settled = letter(4, code="saga.compensated", period=None, document="deal_1", failed=P)
    assert status(letters=[settled]).blocking == 0
    assert status(letters=[letter(5, code="saga.compensation_failed", period=None,
                                  document="deal_1", failed=P)]).blocking == 1


@pytest.mark.parametrize(("lt", "documents", "blocks"), [
    (letter(1, period=P), [], True),  # dated in the period
    (letter(1, period="2026-10", failed=P), [], False),  # dated elsewhere, failed here
    (letter(1, period=None, document="in_1", failed="2026-12"), ["in_1"], True),  # names a doc
    (letter(1, period=None, document="in_2", failed=P), ["in_1"], True),  # failed here
    (letter(1, period=None, document="", failed="2026-12"), ["in_1"], False),
])
def test_which_letters_belong_to_the_period(lt: OpenLetter, documents: list[str],
                                            blocks: bool) -> None:
    assert (letter_period(lt, set(documents), P) == P) is blocks
    assert status(letters=[lt], documents=documents).blocking == int(blocks)


@pytest.mark.parametrize(("kind", "leg", "blocker", "resolve"), [
    ("missing", "erp", "unposted", f"erpgw reconcile --period {P} --repair"),
    ("in_flight", "erp", "unposted", "wait for the gateway to drain (erpgw monitor), then "
                                     f"erpgw reconcile --period {P}"),
    ("revenue_missing", "revenue", "unposted", f"erpgw reconcile --period {P} --repair"),
    ("dead_lettered", "erp", "unposted", "wait for the gateway to drain (erpgw monitor), "
                                         f"then erpgw reconcile --period {P} --repair"),
    ("in_doubt", "revenue", "in_doubt", f"erpgw reconcile --period {P} --legs revenue (check "
                                        "the revenue platform, then release the lines)"),
    ("duplicate", "erp", "recon_break", f"erpgw reconcile --period {P} (a person approves "
                                        "the proposal)"),
    ("amount", "erp", "recon_break", f"erpgw reconcile --period {P} (a person approves the "
                                     "proposal)"),
    ("orphan", "erp", "recon_break", f"erpgw reconcile --period {P} (a person approves the "
                                     "proposal)"),
    ("revenue_amount", "revenue", "recon_break", f"erpgw reconcile --period {P} (a person "
                                                 "approves the proposal)"),
])
def test_each_break_kind_blocks_as(kind: str, leg: str, blocker: str, resolve: str) -> None:
    s = status(breaks=[Break(kind, "in_1", "detail", leg=leg)])
    (b,) = s.blockers
    assert (b.kind, b.resolve) == (blocker, resolve)
    assert s.by_kind[blocker] == 1 and s.blocking == 1


def test_recognised_revenue_not_in_the_gl_blocks_until_a_run_posts_it() -> None:
    items = [RecognitionItem(contract="c1", version=1, currency="USD", product="prod_seat",
                             amount=1000),
             RecognitionItem(contract="c2", version=1, currency="EUR", product="prod_seat",
                             amount=500)]
    plan = plan_close("default", P, items, AccountMap(), {})
    s = status(revenue=plan)
    assert [(b.kind, b.key, b.resolve) for b in s.blockers] == [
        ("revenue_unposted", f"revenue:default:{P}:{c}",
         f"erpgw close run --period {P} --entity default") for c in ("EUR", "USD")]
    # Once run 1 is applied for both, the same recognition plans "unchanged": nothing blocks.
    unchanged = [RunPosting(rp.currency, rp.run, "unchanged", rp.amount, None, None)
                 for rp in plan]
    assert status(revenue=unchanged).blocking == 0


def test_a_changed_recognition_is_a_true_up_to_post() -> None:
    def seat(amount: int, version: int) -> list[RecognitionItem]:
        return [RecognitionItem(contract="c1", version=version, currency="USD",
                                product="prod_seat", amount=amount)]

    (run1,) = plan_close("default", P, seat(1000, 1), AccountMap(), {})
    latest = {"USD": Latest(1, run1.entry)}
    assert status(revenue=plan_close("default", P, seat(1000, 1), AccountMap(),
                                     latest)).blocking == 0
    (b,) = status(revenue=plan_close("default", P, seat(1500, 2), AccountMap(),
                                     latest)).blockers
    assert (b.kind, b.detail) == ("revenue_unposted", "recognised USD 1500 changed since run 1 "
                                                      "(a true-up)")


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from(["missing", "in_flight", "dead_lettered", "in_doubt",
                                           "amount", "orphan", "revenue_missing"]),
                          st.integers(0, 20)), max_size=30),
       st.lists(st.tuples(st.integers(1, 50), st.integers(0, 20),
                          st.sampled_from([P, "2026-10", None])), max_size=20))
def test_every_break_and_letter_of_the_period_is_counted_once(
        breaks: list[tuple[str, int]], letters: list[tuple[int, int, str | None]]) -> None:
    docs = [f"in_{i}" for i in range(21)]
    open_letters = [OpenLetter(seq, PERIOD_CLOSED_CODE, "billing", f"in_{d}", per, "2026-12")
                    for seq, d, per in {lt[0]: lt for lt in letters}.values()]
    bs = [Break(kind, f"in_{d}", "x") for kind, d in breaks]
    s = status(breaks=bs, letters=open_letters, documents=docs)
    mine = [lt for lt in open_letters if letter_period(lt, set(docs), P) == P]
    lettered = {lt.document for lt in mine}
    covered = sum(1 for b in bs if b.kind == "dead_lettered" and b.key in lettered)
    assert s.blocking == len(mine) + len(bs) - covered
    assert sum(s.by_kind.values()) == s.blocking
    assert all(b.resolve for b in s.blockers)


def test_the_kpi_document_sums_the_watched_periods() -> None:
    a = status(breaks=[Break("missing", "in_1", "x")])
    b = close_blockers("default", "2026-12", breaks=[], letters=[], documents=[], revenue=[])
    doc = kpi_document([a, b], at=1.0)
    assert doc["blocking"] == 1 and doc["entity"] == "default"
    assert doc["periods"] == {P: {"blocking": 1, "by_kind": {"unposted": 1}},
                              "2026-12": {"blocking": 0, "by_kind": {}}}
    assert kpi_document([], at=1.0)["blocking"] == 0


def test_every_blocker_code_has_its_row_in_the_error_doc() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    for kind in BLOCKER_KINDS:
        assert f"| `close.{kind}` |" in doc, kind
