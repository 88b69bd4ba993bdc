"""The revenue poster's pure core (no event loop): lines, packing, refusals, outcomes."""

from __future__ import annotations

import errno
from datetime import UTC, date, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.infra.http import Ambiguous, PlatformRejected, PlatformUnavailable
from actors.revenue.plan import (
    accepted_batch_id,
    halves,
    never_recorded,
    pack,
    refused_invoices,
    revenue_line_id,
    revenue_lines,
)
from contracts import ContractError, InvoiceIssued, InvoiceLine, Permanent
from contracts.platforms.revenue import RevenueBatchResult, RevenueLineError, RevenueLineIn


def invoice(invoice_id: str = "in_1", amounts: tuple[int, ...] = (300, 200)) -> InvoiceIssued:
    lines = [InvoiceLine(line_id=f"il_{k}", product_id=f"prod_{k}", description="",
                         quantity=1, unit_amount=a, amount=a)
             for k, a in enumerate(amounts, 1)]
    subtotal = sum(amounts)
    return InvoiceIssued(invoice_id=invoice_id, number="INV-1", customer_id="cus_1",
                         currency="EUR", issued_at=datetime(2025, 3, 1, tzinfo=UTC),
                         period_start=date(2025, 3, 1), period_end=date(2025, 3, 31),
                         lines=lines, subtotal=subtotal, tax=0, total=subtotal)


def line(invoice_id: str, n: int) -> RevenueLineIn:
    return RevenueLineIn(line_id=revenue_line_id(invoice_id, f"il_{n}"), invoice_id=invoice_id,
                         product="p", currency="USD", amount=1, period_start="2025-03-01",
                         period_end="2025-03-31")


def test_one_line_per_invoice_line_with_a_stable_id() -> None:
    lines = revenue_lines(invoice())
    assert [ln.line_id for ln in lines] == ["in_1:il_1", "in_1:il_2"]
    assert {(ln.invoice_id, ln.currency, ln.period_start, ln.period_end) for ln in lines} == {
        ("in_1", "EUR", "2025-03-01", "2025-03-31")}
    assert [ln.amount for ln in lines] == [300, 200]
    assert [ln.product for ln in lines] == ["prod_1", "prod_2"]
    assert revenue_lines(invoice()) == lines  # a redelivery names the same lines
    wire = msgspec.json.decode(msgspec.json.encode(lines[0]))
    assert wire["lineId"] == "in_1:il_1" and wire["periodEnd"] == "2025-03-31"


def test_an_invoice_naming_a_line_twice_is_never_sent() -> None:
    inv = invoice()
    twice = msgspec.structs.replace(inv, lines=[inv.lines[0], inv.lines[0]], subtotal=600,
                                    total=600)
    with pytest.raises(ContractError) as info:
        revenue_lines(twice)
    assert info.value.code == "revenue.duplicate_line_id"
    assert info.value.path == "$.payload.lines[1].line_id"


@given(st.lists(st.integers(min_value=0, max_value=12), max_size=40),
       st.integers(min_value=1, max_value=10))
def test_pack_keeps_order_limit_and_invoices_together(sizes: list[int], limit: int) -> None:
    groups = [[line(f"in_{i}", n) for n in range(size)] for i, size in enumerate(sizes)]
    uploads = pack(groups, limit)
    flat = [ln for up in uploads for ln in up]
    assert flat == [ln for g in groups for ln in g]  # nothing lost, doubled or reordered
    assert all(1 <= len(up) <= limit for up in uploads)
    for g in groups:  # an invoice that fits in one upload is in exactly one
        if 0 < len(g) <= limit:
            assert sum(1 for up in uploads if g[0] in up) == 1
            assert any(all(ln in up for ln in g) for up in uploads)


def test_pack_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="max_lines"):
        pack([[line("in_1", 1)]], 0)


def rejection(lines: int, *errors: tuple[int, str]) -> str:
    return msgspec.json.encode(RevenueBatchResult(
        batch_id=None, status="rejected", lines=lines,
        errors=[RevenueLineError(index=i, code=code, message=f"bad {i}")
                for i, code in errors])).decode()


def test_a_422_names_the_invoices_of_its_bad_lines() -> None:
    lines = [line("in_1", 1), line("in_2", 1), line("in_2", 2), line("in_3", 1)]
    got = refused_invoices(lines, rejection(4, (2, "PERIOD_REVERSED"), (1, "INVALID")))
    assert got == {"in_2": [("in_2:il_2", "PERIOD_REVERSED", "bad 2"),
                            ("in_2:il_1", "INVALID", "bad 1")]}


@pytest.mark.parametrize("body", [
    "", "{not json", rejection(3, (0, "INVALID")),  # another upload's answer (3 lines)
    rejection(4, (9, "INVALID")),  # an index outside the upload
    rejection(4),  # rejected without saying what
])
def test_an_unreadable_422_is_none_then_bisected(body: str) -> None:
    lines = [line("in_1", 1), line("in_2", 1), line("in_2", 2), line("in_3", 1)]
    assert refused_invoices(lines, body) is None
    first, second = halves(lines)
    assert first + second == lines
    assert not {ln.invoice_id for ln in first} & {ln.invoice_id for ln in second}
    assert halves([line("in_1", 1), line("in_1", 2)]) == [[line("in_1", 1), line("in_1", 2)]]


def test_accepted_batch_id() -> None:
    ok = msgspec.json.encode(RevenueBatchResult(batch_id="RB-7", status="accepted", lines=2))
    assert accepted_batch_id(ok) == "RB-7"
    assert accepted_batch_id(b"<html>") is None


def _cause(err: Exception, cause: BaseException) -> Exception:
    err.__cause__ = cause
    return err


class _ConnectorError(OSError):
    """Shaped like aiohttp's ClientConnectorError: the failed connect's ``os_error``."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror)
        self.os_error = os_error


@pytest.mark.parametrize(("err", "recorded_nothing"), [
    (PlatformUnavailable("503", code="http.server_error"), True),
    (PlatformUnavailable("429", code="http.rate_limited", retry_after=2), True),
    (_cause(PlatformUnavailable("refused", code="http.connection"),
            _ConnectorError(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))), True),
    # a reset after the request left: the platform may have recorded it
    (_cause(PlatformUnavailable("reset", code="http.connection"),
            ConnectionResetError(errno.ECONNRESET, "reset")), False),
    (Ambiguous("no answer in time"), False),
    (PlatformUnavailable("other", code="http.unavailable"), False),
    (PlatformRejected("400", status=400, body=""), False),  # not retryable: handled apart
    (Permanent("x"), False),
])
def test_only_an_answered_error_or_an_unopened_connection_proves_nothing_recorded(
        err: Exception, recorded_nothing: bool) -> None:
    assert never_recorded(err) is recorded_nothing
