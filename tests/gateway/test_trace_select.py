"""Which transactions a trace joins (pure): direct matches, then what references them."""

from __future__ import annotations

import msgspec

from contracts import BusinessKey, Envelope, make_envelope
from gateway.trace import references, select_transactions
from tests.contracts.samples import SAMPLES

INVOICE = SAMPLES["invoice.issued.v1"]
PAYMENT = SAMPLES["payment.received.v1"]
COMMISSION = SAMPLES["partner.commission.accrued.v1"]
SETTLEMENT = SAMPLES["partner.settlement.issued.v1"]
replace = msgspec.structs.replace


def env(payload: object, source: str, object_id: str) -> Envelope:
    return make_envelope(payload, source=source,  # type: ignore[arg-type]
                         key=BusinessKey(source=source, object_id=object_id))


def world() -> dict[str, Envelope]:
    """Two invoices; the first paid, commissioned and settled together with the second's
    commission; each envelope its own transaction."""
    other = replace(INVOICE, invoice_id="in_2")
    return {
        "in_1": env(INVOICE, "billing", "in_1"),
        "in_2": env(other, "billing", "in_2"),
        "pay_1": env(PAYMENT, "billing", "pay_1"),
        "com_1": env(COMMISSION, "gateway", "com_1"),
        "com_2": env(replace(COMMISSION, commission_id="com_2", invoice_id="in_2"),
                     "gateway", "com_2"),
        "set_1": env(SETTLEMENT, "partner", "set_1"),
    }


def names(w: dict[str, Envelope], correlations: set[str]) -> set[str]:
    return {k for k, e in w.items() if e.correlation_id in correlations}


def test_references_name_objects_not_parties() -> None:
    assert references(PAYMENT) == {"pay_1", "in_1"}
    assert references(SETTLEMENT) == {"set_1", "com_1", "com_2"}
    assert "cus_1" not in references(COMMISSION) and "ptn_1" not in references(COMMISSION)


def test_an_invoice_pulls_in_its_payment_commission_and_settlement_only() -> None:
    w = world()
    got = names(w, select_transactions(list(w.values()), "in_1"))
    assert got == {"in_1", "pay_1", "com_1", "set_1"}  # not in_2 nor its commission


def test_a_payment_pulls_in_the_invoice_it_settles() -> None:
    w = world()
    assert {"pay_1", "in_1"} <= names(w, select_transactions(list(w.values()), "pay_1"))


def test_by_correlation_id_and_unknown_queries() -> None:
    w = world()
    assert names(w, select_transactions(list(w.values()), w["in_2"].correlation_id)) >= {"in_2"}
    assert select_transactions(list(w.values()), "nothing-like-this") == set()
