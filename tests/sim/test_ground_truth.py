"""The audit over real HTTP catches what a receiver does wrong on purpose: lost invoices,
double posts, postings nothing issued, and versions applied out of order."""

from __future__ import annotations

from typing import Any

import anyio

from contracts.platforms.billing import BillingEvent
from sim import SimConfig

from .conftest import HOST, Http, free_port, running_app, running_sim
from .receiver import EVENT, GatewayLike, journal_entry
from .test_erp import lookup

SECRET = "whsec_truth"


async def drained(http: Http, invoices: int, receiver: GatewayLike) -> dict[str, Any]:
    with anyio.fail_after(15):
        while True:
            audit: dict[str, Any] = (await http.get("/sim/v1/audit")).body
            if audit["accepted"] == invoices:
                return audit
            await anyio.sleep(0.02)


async def test_audit_catches_seeded_loss_duplicates_unexpected_and_reordering() -> None:
    lost = {"in_000003", "in_000017"}
    receiver = GatewayLike(SECRET, skip=lost, versioned=True)
    hook_port, sim_port = free_port(), free_port()
    receiver.erp_url = f"http://{HOST}:{sim_port}"
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=21, delivery_concurrency=4)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.post("/billing/v1/bill-runs", json={"invoices": 20})
        clean = await drained(http, 20, receiver)
        assert clean["unposted"] == sorted(lost)  # loss: accepted (2xx) but never posted
        assert (clean["posted"], clean["duplicates"], clean["unexpected"]) == (18, 0, 0)
        assert (clean["order_checked"], clean["order_violations"]) == (18, 0)

        def event(n: int) -> BillingEvent:
            return EVENT.decode(receiver.bodies[f"evt_in_{n:06d}"][0])

        results = await receiver.post_entries([
            # a double post of in_000005 v1 under a new key (a ledger bug)
            journal_entry(event(5), key="again-5", external_id="in_000005:v1"),
            # in_000008 v3 then v2: the ERP applied an older version after a newer one
            journal_entry(event(8), key="v3-8", external_id="in_000008:v3"),
            journal_entry(event(8), key="v2-8", external_id="in_000008:v2"),
            # a posting for an invoice nobody issued
            journal_entry(event(9), key="ghost", external_id="in_999999:v1"),
        ])
        assert [r["status"] for r in results] == ["created"] * 4
        audit = (await http.get("/sim/v1/audit")).body
        (v3,) = await lookup(http, "in_000008:v3")
        (plain,) = await lookup(http, "in_000001:v1")
    assert audit["unposted"] == sorted(lost)
    assert audit["duplicates"] == 1
    assert audit["unexpected"] == 1
    assert (audit["order_violations"], audit["order_violating"]) == (1, ["in_000008"])
    assert audit["posted"] == 18
    assert audit["postings"] == 22
    # Versions are recorded on the postings (and only when the external id names one).
    assert v3["version"] == 3
    assert plain["version"] == 1
    extra = event(5).data.object.total + 2 * event(8).data.object.total + event(9).data.object.total
    assert sum(audit["amount_posted"].values()) == sum(clean["amount_posted"].values()) + extra


async def test_lookup_of_an_unversioned_posting_has_no_version_field(sim: Http) -> None:
    from .test_erp import bulk, entry

    await bulk(sim, entry())
    (posting,) = await lookup(sim, "in_000001")
    assert "version" not in posting
