"""Pure tests of the ground-truth audit (no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim import IssuedInvoice, Posting, compute_audit
from sim._audit import MAX_UNPOSTED_LISTED, nearest_rank

T0 = 1_700_000_000.0


def inv(n: int, *, total: int = 1000, currency: str = "usd", at: float = T0) -> IssuedInvoice:
    return IssuedInvoice(
        invoice_id=f"in_{n:06d}", currency=currency.upper(), total=total, issued_at=at
    )


class Ledger:
    """Builds postings with increasing ``seq`` as the ERP would."""

    def __init__(self) -> None:
        self.postings: list[Posting] = []

    def post(
        self, external_id: str, *, amount: int = 1000, currency: str = "USD", at: float = T0 + 1
    ) -> Posting:
        seq = len(self.postings) + 1
        p = Posting(
            seq=seq,
            id=f"JE-{seq}",
            idempotency_key=f"key-{seq}",
            external_id=external_id,
            currency=currency,
            amount=amount,
            accepted_at=at,
        )
        self.postings.append(p)
        return p


def ids(invoices: list[IssuedInvoice]) -> set[str]:
    return {i.invoice_id for i in invoices}


def test_clean_run_posts_everything_once() -> None:
    issued = [inv(1, total=100, at=T0), inv(2, total=250, at=T0 + 0.5), inv(3, total=50, at=T0 + 1)]
    ledger = Ledger()
    ledger.post("in_000001", amount=100, at=T0 + 0.2)
    ledger.post("in_000002", amount=250, at=T0 + 0.9)
    ledger.post("in_000003", amount=50, at=T0 + 2.0)

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert (r.issued, r.accepted, r.posted, r.postings) == (3, 3, 3, 3)
    assert (r.duplicates, r.unexpected, r.unposted, r.unposted_count) == (0, 0, [], 0)
    assert r.amount_issued == r.amount_posted == {"USD": 400}
    assert r.first_issued_at == T0
    assert r.last_posted_at == T0 + 2.0
    assert r.throughput_eps == pytest.approx(3 / 2.0)
    assert r.latency_ms.max == pytest.approx(1000.0)
    assert r.generated_at == T0 + 5


def test_injected_duplicate_counts_once_as_posted_once_as_duplicate() -> None:
    issued = [inv(1), inv(2)]
    ledger = Ledger()
    ledger.post("in_000001")
    ledger.post("in_000002")
    ledger.post("in_000001")  # a second key for the same invoice: a double post

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert r.posted == 2
    assert r.postings == 3
    assert r.duplicates == 1
    assert r.unexpected == 0
    assert r.amount_posted == {"USD": 3000}
    assert r.amount_issued == {"USD": 2000}


def test_injected_loss_shows_as_unposted() -> None:
    issued = [inv(1), inv(2), inv(3)]
    ledger = Ledger()
    ledger.post("in_000001")
    ledger.post("in_000003")

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert r.posted == 2
    assert r.unposted == ["in_000002"]
    assert r.unposted_count == 1


def test_issued_but_not_accepted_is_not_unposted() -> None:
    issued = [inv(1), inv(2)]
    r = compute_audit(issued, {"in_000001"}, [], now=T0)
    assert r.accepted == 1
    assert r.unposted == ["in_000001"]
    assert r.amount_issued == {"USD": 1000}


def test_unexpected_posting_is_counted_and_not_posted() -> None:
    issued = [inv(1)]
    ledger = Ledger()
    ledger.post("in_000001")
    ledger.post("in_999999", amount=7, currency="EUR")

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert r.unexpected == 1
    assert r.posted == 1
    assert r.duplicates == 0
    assert r.postings == 2
    assert r.amount_posted == {"EUR": 7, "USD": 1000}


def test_amounts_are_summed_per_currency() -> None:
    issued = [
        inv(1, total=100, currency="usd"),
        inv(2, total=200, currency="eur"),
        inv(3, total=300, currency="usd"),
        inv(4, total=5000, currency="jpy"),
        inv(5, total=999, currency="gbp"),  # accepted, never posted
    ]
    ledger = Ledger()
    ledger.post("in_000001", amount=100, currency="USD")
    ledger.post("in_000002", amount=200, currency="EUR")
    ledger.post("in_000003", amount=300, currency="USD")
    ledger.post("in_000004", amount=5000, currency="JPY")

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert r.amount_issued == {"EUR": 200, "GBP": 999, "JPY": 5000, "USD": 400}
    assert r.amount_posted == {"EUR": 200, "JPY": 5000, "USD": 400}


def test_percentiles_on_a_known_table() -> None:
    # Latencies 10, 20, ..., 200 ms, posted in reverse order to show order does not matter.
    issued = [inv(n, at=T0) for n in range(1, 21)]
    ledger = Ledger()
    for n in range(20, 0, -1):
        ledger.post(f"in_{n:06d}", at=T0 + n * 0.010)

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    # Nearest rank: p50 → rank 10, p95 → rank 19, p99 → rank 20.
    assert r.latency_ms.p50 == pytest.approx(100.0)
    assert r.latency_ms.p95 == pytest.approx(190.0)
    assert r.latency_ms.p99 == pytest.approx(200.0)
    assert r.latency_ms.max == pytest.approx(200.0)


@pytest.mark.parametrize(
    ("pct", "expected"), [(5, 15), (30, 20), (40, 20), (50, 35), (100, 50), (0, 15)]
)
def test_nearest_rank_textbook_example(pct: float, expected: float) -> None:
    assert nearest_rank([15, 20, 35, 40, 50], pct) == expected


def test_nearest_rank_rejects_bad_percentile() -> None:
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1.0], 101)


def test_latency_uses_the_first_posting_by_seq() -> None:
    issued = [inv(1, at=T0)]
    postings = [
        Posting(
            seq=2,
            id="JE-2",
            idempotency_key="b",
            external_id="in_000001",
            currency="USD",
            amount=1000,
            accepted_at=T0 + 9,
        ),
        Posting(
            seq=1,
            id="JE-1",
            idempotency_key="a",
            external_id="in_000001",
            currency="USD",
            amount=1000,
            accepted_at=T0 + 1,
        ),
    ]
    r = compute_audit(issued, ids(issued), postings, now=T0 + 10)
    assert r.latency_ms.max == pytest.approx(1000.0)
    assert r.last_posted_at == T0 + 9
    assert r.duplicates == 1


def test_empty_audit_is_all_zero() -> None:
    r = compute_audit([], set(), [], now=T0)
    assert (r.issued, r.accepted, r.posted, r.postings, r.unposted_count) == (0, 0, 0, 0, 0)
    assert r.latency_ms.p50 == r.latency_ms.max == 0.0
    assert r.first_issued_at is None
    assert r.last_posted_at is None
    assert r.throughput_eps == 0.0


def test_unposted_list_is_sorted_and_capped() -> None:
    issued = [inv(n) for n in range(1500, 0, -1)]
    r = compute_audit(issued, ids(issued), [], now=T0)
    assert r.unposted_count == 1500
    assert len(r.unposted) == MAX_UNPOSTED_LISTED
    assert r.unposted == sorted(r.unposted)
    assert r.unposted[0] == "in_000001"


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[IssuedInvoice], set[str], list[Posting], list[int]]:
    """Issued invoices, an accepted subset, and 0..3 postings per accepted invoice."""
    n = draw(st.integers(min_value=0, max_value=40))
    issued = [inv(i + 1, at=T0 + i) for i in range(n)]
    accepted = {i.invoice_id for i in issued if draw(st.booleans())}
    counts = [draw(st.integers(min_value=0, max_value=3)) for _ in sorted(accepted)]
    pairs = [(key, c) for key, c in zip(sorted(accepted), counts, strict=True)]
    order = draw(st.permutations([key for key, c in pairs for _ in range(c)]))
    postings = [
        Posting(
            seq=s,
            id=f"JE-{s}",
            idempotency_key=f"k{s}",
            external_id=key,
            currency="USD",
            amount=1000,
            accepted_at=T0 + 100 + s,
        )
        for s, key in enumerate(order, start=1)
    ]
    return issued, accepted, postings, counts


@given(runs())
def test_property_duplicates_and_unposted_account_for_everything(
    run: tuple[list[IssuedInvoice], set[str], list[Posting], list[int]],
) -> None:
    issued, accepted, postings, counts = run
    r = compute_audit(issued, accepted, postings, now=T0 + 1000)
    assert r.duplicates == sum(c - 1 for c in counts if c > 1)
    assert r.posted + r.unposted_count == r.accepted == len(accepted)
    assert r.postings == r.posted + r.duplicates + r.unexpected
    assert r.unexpected == 0
    assert set(r.unposted) == {
        key for key, c in zip(sorted(accepted), counts, strict=True) if c == 0
    }


@given(runs(), st.lists(st.sampled_from(["in_x1", "in_x2", "other"]), max_size=5))
def test_property_every_posting_is_first_duplicate_or_unexpected(
    run: tuple[list[IssuedInvoice], set[str], list[Posting], list[int]], strays: list[str]
) -> None:
    issued, accepted, postings, _ = run
    extra = [
        Posting(
            seq=len(postings) + i,
            id=f"JE-x{i}",
            idempotency_key=f"x{i}",
            external_id=e,
            currency="EUR",
            amount=5,
            accepted_at=T0,
        )
        for i, e in enumerate(strays, start=1)
    ]
    r = compute_audit(issued, accepted, postings + extra, now=T0)
    assert r.unexpected == len(strays)
    assert r.postings == r.posted + r.duplicates + r.unexpected
    assert r.amount_posted.get("EUR", 0) == 5 * len(strays)


# -- versions and ORDER_OK -----------------------------------------------------------------------


def test_order_ok_counts_lower_versions_applied_after_higher() -> None:
    issued = [inv(1), inv(2), inv(3)]
    ledger = Ledger()
    ledger.post("in_000001:v1")
    ledger.post("in_000001:v3")
    ledger.post("in_000001:v2")  # applied after v3: a violation
    ledger.post("in_000002:v1")
    ledger.post("in_000002:v2")
    ledger.post("in_000003")  # no version: not checked

    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)

    assert (r.order_checked, r.order_violations, r.order_violating) == (2, 1, ["in_000001"])
    # Versions are different business keys: posted once per invoice, no duplicates.
    assert (r.posted, r.duplicates, r.unexpected, r.unposted_count) == (3, 0, 0, 0)


def test_the_same_version_twice_is_a_duplicate_not_an_order_violation() -> None:
    issued = [inv(1)]
    ledger = Ledger()
    ledger.post("in_000001:v2")
    ledger.post("in_000001:v2")
    r = compute_audit(issued, ids(issued), ledger.postings, now=T0 + 5)
    assert (r.duplicates, r.order_violations, r.order_checked) == (1, 0, 1)


def test_every_violation_is_counted_in_commit_order() -> None:
    ledger = Ledger()
    for v in (5, 1, 2, 6, 3):
        ledger.post(f"agg:v{v}")
    r = compute_audit([], set(), list(reversed(ledger.postings)), now=T0)
    assert r.order_violations == 3  # 1, 2 after 5; 3 after 6
    assert r.unexpected == 5


def test_the_version_field_counts_when_the_external_id_has_none() -> None:
    p = [Posting(seq=s, id=f"JE-{s}", idempotency_key=f"k{s}", external_id="in_000001",
                 currency="USD", amount=1000, accepted_at=T0, version=v)
         for s, v in ((1, 4), (2, 3))]
    r = compute_audit([inv(1)], {"in_000001"}, p, now=T0)
    assert (r.order_checked, r.order_violations) == (1, 1)


# -- the faults section ----------------------------------------------------------------------------


def test_fault_report_sorts_statuses_and_attributes_shadow_postings() -> None:
    from sim import FaultInputs

    ledger = Ledger()
    ledger.post("in_000001~wrong_secret")
    ledger.post("in_000002~wrong_secret:v1")
    ledger.post("in_000003~missing_field")
    ledger.post("in_000004~not_a_mode")
    faults = FaultInputs(
        webhook_statuses={"wrong_secret": {401: 3, 200: 2}, "duplicate": {200: 4, 0: 1},
                          "header_garbled": {400: 2, 503: 1}},
        reordered=7,
        http={"erp/journal-entries.bulk": {"outage": 2}},
    )
    r = compute_audit([], set(), ledger.postings, now=T0, faults=faults)
    assert r.faults is not None
    d = r.faults.billing.deliveries
    assert (d["wrong_secret"].sent, d["wrong_secret"].accepted, d["wrong_secret"].refused) == (
        5, 2, 3)
    assert d["wrong_secret"].posted == 2
    assert d["duplicate"].failed == 1 and d["duplicate"].posted is None
    assert d["missing_field"].sent == 0 and d["missing_field"].posted == 1
    assert "not_a_mode" not in d
    mangled = r.faults.billing.mangled
    assert (mangled.sent, mangled.refused, mangled.failed, mangled.posted) == (8, 5, 1, 2)
    assert list(mangled.statuses) == [200, 400, 401, 503]
    assert r.faults.billing.reordered == 7
    assert r.faults.http == {"erp/journal-entries.bulk": {"outage": 2}}
    assert r.unexpected == 4


def test_no_fault_inputs_no_fault_section() -> None:
    assert compute_audit([], set(), [], now=T0).faults is None
