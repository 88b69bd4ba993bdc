"""Customers: billing's seeded customer records (every customer a bill run can invoice) and the
ERP's view of the customers its postings name."""

from __future__ import annotations

from typing import Any

import anyio

from sim import SimConfig, generate_invoices
from sim._customers import CUSTOMERS, billing_customer, customer_number, erp_customers

from .conftest import HOST, Http, free_port, running_sim
from .test_erp import bulk, entry


def test_records_are_seeded_and_every_invoiced_customer_has_one() -> None:
    assert billing_customer(7, 42) == billing_customer(7, 42)
    assert billing_customer(7, 42) != billing_customer(8, 42)
    c = billing_customer(7, 42)
    assert (c.id, c.object) == ("cus_00042", "customer")
    assert c.currency in ("usd", "eur", "gbp", "jpy") and len(c.country) == 2
    assert "@" in c.email and c.created < 1_700_000_001
    for inv in generate_invoices(500, 7, 1, now=1_800_000_000):
        number = customer_number(inv.customer)
        assert number is not None and billing_customer(7, number).id == inv.customer


def test_customer_numbers() -> None:
    assert customer_number("cus_00001") == 1
    assert customer_number(f"cus_{CUSTOMERS:05d}") == CUSTOMERS
    for bad in ("cus_00000", f"cus_{CUSTOMERS + 1:05d}", "cus_1", "in_00001", "cus_0001x", ""):
        assert customer_number(bad) is None


def test_erp_customers_sums_per_customer_and_currency() -> None:
    rows = erp_customers([("cus_2", "USD", 100, 5.0), ("cus_1", "EUR", 7, 3.0),
                          ("cus_2", "USD", 50, 1.0), ("cus_2", "GBP", 9, 9.0)])
    assert [(c.entity_id, c.postings, c.amount, c.first_posted_at, c.last_posted_at)
            for c in rows] == [("cus_1", 1, {"EUR": 7}, 3.0, 3.0),
                               ("cus_2", 3, {"GBP": 9, "USD": 150}, 1.0, 9.0)]


async def test_billing_customers_page_by_id_and_404_otherwise(sim: Http) -> None:
    first = await sim.get("/billing/v1/customers?limit=3")
    assert first.status == 200
    assert [c["id"] for c in first.body["data"]] == ["cus_00001", "cus_00002", "cus_00003"]
    assert first.body["has_more"] is True and first.body["object"] == "list"
    nxt = (await sim.get("/billing/v1/customers?limit=2&starting_after=cus_00003")).body
    assert [c["id"] for c in nxt["data"]] == ["cus_00004", "cus_00005"]
    last = (await sim.get(f"/billing/v1/customers?starting_after=cus_{CUSTOMERS - 1:05d}")).body
    assert [c["id"] for c in last["data"]] == [f"cus_{CUSTOMERS:05d}"]
    assert last["has_more"] is False
    one = await sim.get("/billing/v1/customers/cus_00002")
    assert one.status == 200 and one.body == first.body["data"][1]
    assert (await sim.get("/billing/v1/customers/cus_99999")).status == 404
    bad = await sim.get("/billing/v1/customers?starting_after=nobody")
    assert (bad.status, bad.body["path"]) == (400, "starting_after")
    assert (await sim.get("/billing/v1/customers?limit=0")).status == 400
    assert (await sim.get("/billing/v1/customers?invoiced=yes")).status == 400


async def test_invoiced_customers_are_those_of_the_issued_invoices() -> None:
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{free_port()}/x", seed=5)
    async with running_sim(config) as sim:
        assert (await sim.get("/billing/v1/customers?invoiced=true")).body["data"] == []
        assert (await sim.post("/billing/v1/bill-runs", json={"invoices": 20})).status == 202
        with anyio.fail_after(10):
            while (await sim.get("/sim/v1/audit")).body["issued"] < 20:
                await anyio.sleep(0.02)
        expected = sorted({inv.customer for inv in generate_invoices(20, 5, 1, now=0)})
        got: list[str] = []
        after = ""
        while True:
            page: dict[str, Any] = (await sim.get(
                f"/billing/v1/customers?invoiced=true&limit=7&starting_after={after}")).body
            got += [c["id"] for c in page["data"]]
            if not page["has_more"]:
                break
            after = got[-1]
        assert got == expected


async def test_erp_customers_are_those_named_by_postings(sim: Http) -> None:
    def named(n: int, customer: str, amount: int) -> dict[str, Any]:
        e = entry(key=f"k{n}", external_id=f"in_{n:06d}", amount=amount)
        return e | {"memo": f"Invoice INV-{n:06d} (in_{n:06d}) customer {customer}"}

    assert (await sim.get("/erp/v1/customers")).body == {"items": []}
    await bulk(sim, named(1, "cus_00007", 1200), named(2, "cus_00003", 1300),
               named(3, "cus_00007", 1400), entry(key="k4", external_id="in_000004"))
    await bulk(sim, named(1, "cus_00007", 1200))  # a replay is not a second posting
    items = (await sim.get("/erp/v1/customers")).body["items"]
    assert [(c["entityId"], c["postings"], c["amount"]) for c in items] == [
        ("cus_00003", 1, {"USD": 1300}), ("cus_00007", 2, {"USD": 2600})]
    assert items[1]["firstPostedAt"] <= items[1]["lastPostedAt"]
