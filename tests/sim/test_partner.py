"""The partner portal (partners, tiers, attribution, idempotent settlements), the ERP's
vendor bills, and the audit's flow-3 ground truth."""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from contracts.platforms.billing import BillingPayment
from contracts.platforms.erp import VendorBillIn, VendorBillLineIn
from contracts.platforms.partner import SettlementIn, SettlementLineIn
from sim._audit import document_postings
from sim._erp_payables import PayablesBook
from sim._http import SimHTTPError
from sim._partner import (
    PARTNERS,
    PartnerPortal,
    commissioned_invoices,
    partner_of,
    settlement_audit,
)
from sim._records import Posting

from .conftest import Http, Reply


async def post_keyed(http: Http, path: str, body: object, key: str | None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.session.post(http.base + path, data=msgspec.json.encode(body),
                                 headers=headers) as resp:
        return Reply(resp.status, msgspec.json.decode(await resp.read()), dict(resp.headers))


def test_partners_and_tiers_are_fixed() -> None:
    assert [p.id for p in PARTNERS] == [f"pt_{n:04d}" for n in range(1, 9)]
    assert [p.tier for p in PARTNERS[:5]] == ["registered", "silver", "gold", "platinum",
                                              "registered"]


def test_partner_of_is_seeded_and_about_seventy_percent() -> None:
    customers = [f"cus_{n:05d}" for n in range(1, 2001)]
    found = [partner_of(c, 7) for c in customers]
    assert found == [partner_of(c, 7) for c in customers]
    share = sum(p is not None for p in found) / len(found)
    assert 0.65 < share < 0.75
    assert set(Counter(p for p in found if p)) == {p.id for p in PARTNERS}
    assert found != [partner_of(c, 8) for c in customers]


def test_a_deal_registration_wins_over_the_default() -> None:
    portal = PartnerPortal(7)
    direct = next(c for c in (f"cus_{n:05d}" for n in range(1, 100))
                  if partner_of(c, 7) is None)
    assert portal.attribution(direct) is None
    portal.attribute(direct, "pt_0004", "deal_1")
    found = portal.attribution(direct)
    assert found is not None
    assert (found.partner, found.tier, found.commission_bp, found.deal_id) == (
        "pt_0004", "platinum", 2500, "deal_1")
    with pytest.raises(KeyError):
        portal.attribute(direct, "pt_9999")
    # A registration counts from its time on: a payment accepted before it stays direct.
    later = PartnerPortal(7)
    later.attribute(direct, "pt_0002", "deal_2", at=100.0)
    assert later.attribution(direct, as_of=99.0) is None
    assert later.attribution(direct, as_of=100.0) is not None
    pay = BillingPayment(id="py_1", invoice="in_1", amount=1000, currency="usd", paid_at=0,
                         customer=direct)
    assert commissioned_invoices(later, [pay], {"py_1": 99.0}) == []
    assert commissioned_invoices(later, [pay], {"py_1": 101.0}) == ["in_1"]


def _settlement(total: int = 300, sid: str = "st_1") -> SettlementIn:
    return SettlementIn(id=sid, partner="pt_0001", currency="usd", period_start="2026-11-01",
                        period_end="2026-11-30",
                        lines=[SettlementLineIn(commission_id="c1", invoice_id="in_1",
                                                amount=100),
                               SettlementLineIn(commission_id="c2", invoice_id="in_2",
                                                amount=total - 100)],
                        total=total)


def test_settlements_are_idempotent_by_key() -> None:
    portal = PartnerPortal(7)
    status, first = portal.record("k1", _settlement(), 1.0)
    assert status == 201
    assert portal.record("k1", _settlement(), 2.0) == (200, first)
    with pytest.raises(SimHTTPError) as reused:
        portal.record("k1", _settlement(total=400), 3.0)
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    assert len(portal.settlements) == 1
    # The portal does not dedupe by id: a second key records it again, the audit counts it.
    portal.record("k2", _settlement(), 4.0)
    audit = settlement_audit(portal, ["st_1"], ["in_1", "in_2", "in_3"])
    assert (audit.recorded, audit.distinct, audit.duplicates) == (2, 1, 1)
    assert (audit.payables, audit.without_payable, audit.expected, audit.missing) == (1, 0, 3, 1)
    with pytest.raises(SimHTTPError) as bad:
        portal.record("k3", msgspec.structs.replace(_settlement(), total=1), 5.0)
    assert bad.value.status == 400


def test_commissioned_invoices_follow_attribution_and_rounding() -> None:
    portal = PartnerPortal(7)
    attributed = next(f"cus_{n:05d}" for n in range(1, 100)
                      if partner_of(f"cus_{n:05d}", 7) is not None)
    pays = [BillingPayment(id="py_1", invoice="in_1", amount=1000, currency="usd", paid_at=0,
                           customer=attributed),
            BillingPayment(id="py_2", invoice="in_2", amount=1, currency="usd", paid_at=0,
                           customer=attributed),  # 1 x 10 % rounds to 0: no commission
            BillingPayment(id="py_3", invoice="in_3", amount=1000, currency="usd", paid_at=0)]
    assert commissioned_invoices(portal, pays) == ["in_1"]


def test_vendor_bills_are_idempotent_by_key() -> None:
    book = PayablesBook()
    bill = VendorBillIn(external_id="st_1", vendor="pt_0001", currency="USD",
                        tran_date="2026-11-27", amount=300, memo="m",
                        lines=[VendorBillLineIn(account="6100", amount=300)])
    status, rec = book.post("k", bill, 1.0)
    assert status == 201 and rec.external_id == "st_1"
    assert book.post("k", bill, 2.0) == (200, rec)
    with pytest.raises(SimHTTPError) as reused:
        book.post("k", msgspec.structs.replace(bill, memo="other"), 3.0)
    assert reused.value.status == 422
    with pytest.raises(SimHTTPError) as invalid:
        book.post("k2", msgspec.structs.replace(bill, amount=1), 3.0)
    assert invalid.value.code == "INVALID"
    assert len(book.bills) == 1


def test_document_postings_count_per_kind() -> None:
    def posting(seq: int, external_id: str) -> Posting:
        return Posting(seq=seq, id=f"JE-{seq}", idempotency_key=f"k{seq}",
                       external_id=external_id, currency="USD", amount=10, accepted_at=0.0)

    report = document_postings(["cn_1", "cn_2", "cn_3"], [
        posting(1, "cn_1"), posting(2, "cn_1"), posting(3, "cn_2"), posting(4, "cn_9")])
    assert (report.issued, report.posted, report.postings, report.duplicates,
            report.unexpected, report.unposted) == (3, 2, 4, 1, 1, 1)
    assert report.amount == {"USD": 40}


async def test_portal_and_payables_over_http(sim: Http) -> None:
    tiers = (await sim.get("/partner/v1/tiers")).body
    assert [t["commissionBp"] for t in tiers["items"]] == [1000, 1500, 2000, 2500]
    assert len((await sim.get("/partner/v1/partners")).body["items"]) == 8
    customers = [f"cus_{n:05d}" for n in range(1, 30)]
    for customer in customers:
        reply = await sim.get(f"/partner/v1/attributions/{customer}")
        expected = partner_of(customer, 11)  # the fixture's seed
        if expected is None:
            assert (reply.status, reply.body["code"]) == (404, "not_found")
        else:
            assert reply.status == 200 and reply.body["partner"] == expected
            assert reply.body["dealId"] is None
    body = {"id": "st_1", "partner": "pt_0002", "currency": "eur", "periodStart": "2026-11-01",
            "periodEnd": "2026-11-30", "total": 5,
            "lines": [{"commissionId": "c", "invoiceId": "in_1", "amount": 5}]}
    first = await post_keyed(sim, "/partner/v1/settlements", body, "a")
    again = await post_keyed(sim, "/partner/v1/settlements", body, "a")
    other = await post_keyed(sim, "/partner/v1/settlements", {**body, "total": 6},
                           "a")
    nokey = await post_keyed(sim, "/partner/v1/settlements", body, None)
    assert (first.status, again.status, other.status, nokey.status) == (201, 200, 422, 400)
    assert again.body == first.body
    listed = (await sim.get("/partner/v1/settlements?partner=pt_0002")).body["items"]
    assert [s["id"] for s in listed] == ["st_1"]
    assert (await sim.get("/partner/v1/settlements?partner=pt_0001")).body["items"] == []
    bill = {"externalId": "st_1", "vendor": "pt_0002", "currency": "EUR",
            "tranDate": "2026-11-27", "amount": 5, "memo": "commission",
            "lines": [{"account": "6100", "amount": 5}]}
    created = await post_keyed(sim, "/erp/v1/vendor-bills", bill, "b")
    replay = await post_keyed(sim, "/erp/v1/vendor-bills", bill, "b")
    assert (created.status, replay.status) == (201, 200)
    assert (await sim.get("/erp/v1/vendor-bills?externalId=st_1")).body["items"] == [
        created.body]
    audit = (await sim.get("/sim/v1/audit")).body
    assert audit["settlements"]["recorded"] == 1 and audit["settlements"]["payables"] == 1
    assert audit["settlements"]["without_payable"] == 0
    await sim.post("/sim/v1/reset")
    assert (await sim.get("/erp/v1/vendor-bills")).body["items"] == []
    assert (await sim.get("/partner/v1/settlements")).body["items"] == []
