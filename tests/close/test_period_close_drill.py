"""The period-close drill's pure parts: it is a known fault with no recovery time to measure,
its replayed ``erp.period_closed`` letters are expected dead letters (and only those), and the
entries it counts as late postings are invoices' alone; a replay is exact when every letter was
replayed and the invoice documents dead-lettered are the ones the ERP took late."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from contracts import DeadLetter
from gateway.drills import FAULTS, Driller, _invoice_entry, parse_faults, repost_exact
from gateway.stack import DrainResult


def letter(code: str, n: int) -> DeadLetter:
    return DeadLetter(id=f"dl{n}", failed_at=datetime(2026, 12, 7, tzinfo=UTC), lane="billing",
                      subject="erpgw.billing.cmd.erp.journal.v1", stream_seq=n, code=code,
                      reason="r", attempts=1, business_key=f"billing:in_{n}:v1",
                      correlation_id=None, data=b"x")


def finish(names: list[str], letters: list[DeadLetter]) -> dict[str, Any]:
    stack: Any = None  # finish reads no stack
    audit = {"issued": 3, "posted": 3, "unposted": [], "unposted_count": 0}
    return Driller(stack, names, 3).finish(DrainResult(audit, letters, True, 1.0))


def test_a_known_fault_without_a_recovery_time() -> None:
    assert parse_faults("period-close") == ["period-close"]
    assert FAULTS["period-close"].trigger == 0.3 and not FAULTS["period-close"].recovers
    assert finish(["period-close"], [])["recovery_s"] == {}


def test_its_period_closed_letters_are_expected_and_nothing_else() -> None:
    closed = [letter("erp.period_closed", n) for n in range(3)]
    assert finish(["period-close"], closed)["dlq_exact"]
    assert not finish(["period-close"], [*closed, letter("erp.invalid", 9)])["dlq_exact"]
    assert not finish(["erp-outage"], closed)["dlq_exact"]  # not expected without the drill


def test_late_postings_are_invoices_only() -> None:
    assert _invoice_entry("in_000001") and _invoice_entry("in_000001:v2")
    for other in ("in_000001:reversal", "cn_1", "py_1", "recognition:default:2026-12:USD"):
        assert not _invoice_entry(other)


def test_a_replay_is_exact_by_documents() -> None:
    letters = ["billing:cn_7", "billing:in_1:v1", "billing:in_2:v1", "billing:in_2:v2",
               "billing:py_3:v1"]
    # in_2's first version, replayed after its second, posts nothing: still exact. Payments'
    # and credit notes' letters are not invoice entries.
    assert repost_exact(letters, 5, ["in_1", "in_2:v2"])
    assert not repost_exact(letters, 4, ["in_1", "in_2:v2"])  # one letter not replayed
    assert not repost_exact(letters, 5, ["in_1"])  # in_2 dead-lettered, never re-posted
    assert not repost_exact(letters, 5, ["in_1", "in_2:v2", "in_9"])  # a late one unexplained
    assert not repost_exact([], 0, ["in_1"])
    assert repost_exact([], 0, [])


class _Stack:
    """What ``settle_period_close`` reads of a stack: nothing unposted, no late entry."""

    url, subjects = "nats://unused", None

    def auth(self, role: str) -> None:
        return None

    async def audit(self) -> dict[str, Any]:
        return {"unposted_count": 0}

    async def wait_drained(self, invoices: int, *, stall_timeout: float) -> DrainResult:
        return DrainResult({}, [], True, 0.0)

    async def _sim_call(self, method: str, path: str) -> dict[str, Any]:
        return {"items": [], "balances": []}


@pytest.mark.parametrize(("new_letters", "rounds", "left", "exact"), [
    ([2, 1, 0], 2, 0, True),  # a second round for the payments that resumed, then quiet
    ([1, 1, 1, 1, 1, 1], 5, 1, False),  # still a new letter after every round: out of rounds
])
async def test_replay_rounds_stop_when_quiet_or_spent(
        monkeypatch: pytest.MonkeyPatch, new_letters: list[int], rounds: int, left: int,
        exact: bool) -> None:
    from gateway import dlq, drills

    class Bus:
        async def close(self) -> None:
            return None

    async def connect(*args: object, **kw: object) -> Bus:
        return Bus()

    n = iter(new_letters)
    open_now: list[Any] = []

    async def list_letters(*args: object, **kw: object) -> list[Any]:
        if not open_now:
            k = next(n, 0)
            open_now.extend(SimpleNamespace(letter=SimpleNamespace(
                business_key=f"billing:py_{i}:v1")) for i in range(k))
        return list(open_now)

    async def resolve_letters(bus: object, subjects: object, records: list[Any],
                              **kw: object) -> int:
        open_now.clear()
        return len(records)

    monkeypatch.setattr(drills.NatsBus, "connect", connect)
    monkeypatch.setattr(dlq, "list_letters", list_letters)
    monkeypatch.setattr(dlq, "resolve_letters", resolve_letters)
    monkeypatch.setattr(drills, "REPOST_QUIET_S", 0.0)
    driller = Driller(_Stack(), ["period-close"], 3)  # type: ignore[arg-type]
    driller.closed_period = ("2026-12", 0.0)
    _, section = await drills.settle_period_close(
        driller, DrainResult({}, [], True, 0.0), "dead_letter", stall_timeout=1.0)
    assert (section["rounds"], section["left_open"], section["exact"]) == (rounds, left, exact)
    assert section["replayed"] == section["dead_lettered"] == sum(new_letters[:rounds])
