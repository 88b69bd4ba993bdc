"""Billing webhook faults: the pure plans and payloads, then real deliveries to a receiver.

Every extra delivery is planned per event from the seed (``plan_webhook``), so the tests know
exactly how many of each kind the sim must send and can check the receiver and the audit
against that plan.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import anyio
import msgspec
import pytest

from contracts import SignatureError
from contracts.platforms.billing import BillingEvent, EventData
from contracts.platforms.signing import sign, verify
from sim import SimConfig, generate_invoices
from sim._faults import (
    DRIFT_MODES,
    MANGLE_MODES,
    BillingFaults,
    WebhookPlan,
    plan_webhook,
)
from sim._webhooks import (
    alter_one_byte,
    drift_body,
    mangled_request,
    shadow_event,
    shadow_mode,
    shuffle_window,
)

from .conftest import HOST, Http, free_port, running_app, running_sim
from .receiver import GatewayLike

SECRET = "whsec_faults"
NOW = 1_764_237_600.0
EVENT = msgspec.json.Decoder(BillingEvent)
ENC = msgspec.json.Encoder()


def an_event(n: int = 1) -> BillingEvent:
    (inv,) = generate_invoices(1, 7, n, now=NOW)
    return BillingEvent(id=f"evt_{inv.id}", type="invoice.finalized", created=int(NOW),
                        data=EventData(object=inv))


# -- the plan (pure) ---------------------------------------------------------------------------


def test_healthy_settings_plan_no_extras() -> None:
    assert plan_webhook([BillingFaults(), BillingFaults()], 7, 1) == WebhookPlan()
    assert plan_webhook([], 7, 1).empty


def test_plan_depends_only_on_seed_and_index() -> None:
    faults = [BillingFaults(duplicate_rate=0.5, mangle_rate=0.3, drift_rate=0.3, replay_rate=0.2)]
    forward = [plan_webhook(faults, 9, i) for i in range(1, 200)]
    backward = [plan_webhook(faults, 9, i) for i in range(199, 0, -1)][::-1]
    assert forward == backward
    assert forward != [plan_webhook(faults, 10, i) for i in range(1, 200)]


def test_duplicates_total_2_to_max_deliveries_some_concurrent() -> None:
    faults = [BillingFaults(duplicate_rate=1.0, duplicate_max=5, duplicate_concurrent_rate=0.5)]
    plans = [plan_webhook(faults, 3, i) for i in range(1, 2001)]
    totals = Counter(1 + p.concurrent_copies + p.later_copies for p in plans)
    assert set(totals) == {2, 3, 4, 5}
    assert all(350 <= n <= 650 for n in totals.values()), totals
    concurrent = sum(p.concurrent_copies for p in plans)
    extra = sum(p.concurrent_copies + p.later_copies for p in plans)
    assert 0.45 < concurrent / extra < 0.55


def test_mangle_and_drift_modes_are_drawn_from_the_configured_ones() -> None:
    faults = [BillingFaults(mangle_rate=1.0, mangle_modes=("v0_only", "header_missing"),
                            drift_rate=0.5, drift_modes=("missing_field",))]
    plans = [plan_webhook(faults, 1, i) for i in range(1, 301)]
    assert {m for p in plans for m in p.mangles} == {"v0_only", "header_missing"}
    assert all(len(p.mangles) == 1 for p in plans)
    drifted = sum(bool(p.drifts) for p in plans)
    assert 110 <= drifted <= 190
    assert {d for p in plans for d in p.drifts} == {"missing_field"}


def test_sources_add_up_and_a_mode_is_used_once() -> None:
    one = BillingFaults(mangle_rate=1.0, mangle_modes=("wrong_secret",), replay_rate=1.0,
                        replay_age_s=900)
    plan = plan_webhook([one, one, BillingFaults(drift_rate=1.0)], 5, 42)
    assert plan.mangles == ("wrong_secret",)
    assert len(plan.drifts) == 1
    assert plan.replay and plan.replay_age_s == 900


# -- payloads (pure) ---------------------------------------------------------------------------


def verify_code(body: bytes, header: str | None, *, now: float = NOW) -> str | None:
    try:
        verify(header, body, [SECRET], now=now)
    except SignatureError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("wrong_secret", "signature.mismatch"),
        ("body_byte", "signature.mismatch"),
        ("header_missing", "signature.missing"),
        ("header_garbled", "signature.malformed"),
        ("v0_only", "signature.malformed"),
    ],
)
def test_every_mangle_mode_fails_verification(mode: str, code: str) -> None:
    body = ENC.encode(shadow_event(an_event(), mode))
    assert verify_code(body, sign(SECRET, body, int(NOW))) is None  # the unmangled one passes
    sent_body, header = mangled_request(mode, body, SECRET, int(NOW))
    assert verify_code(sent_body, header) == code
    if mode == "body_byte":
        assert len(sent_body) == len(body)
        assert sum(a != b for a, b in zip(body, sent_body, strict=True)) == 1
        assert EVENT.decode(sent_body).data.object.total != EVENT.decode(body).data.object.total
    else:
        assert sent_body == body


def test_unknown_mangle_mode_raises() -> None:
    with pytest.raises(ValueError, match="mangle mode"):
        mangled_request("rot13", b"{}", SECRET, 1)
    with pytest.raises(ValueError, match="drift mode"):
        drift_body("rot13", an_event())


def test_alter_one_byte_falls_back_without_a_total() -> None:
    assert alter_one_byte(b'{"n":19}') == b'{"n":11}'
    assert alter_one_byte(b"ab") == b"ac"
    assert alter_one_byte(b"") == b" "


def test_shadow_ids_name_their_mode() -> None:
    shadow = shadow_event(an_event(3), "v0_only")
    assert shadow.id == "evt_in_000003~v0_only"
    assert shadow.data.object.id == "in_000003~v0_only"
    assert shadow.data.object.total == an_event(3).data.object.total
    assert shadow_mode("in_000003~v0_only") == "v0_only"
    assert shadow_mode("in_000003") is None
    assert shadow_mode("~x") is None


def drift_error(mode: str) -> str | None:
    try:
        event = EVENT.decode(drift_body(mode, an_event()))
    except msgspec.ValidationError as exc:
        return str(exc)
    return None if event.type == "invoice.finalized" else f"type {event.type}"


def test_drift_modes_break_the_schema_where_they_say() -> None:
    genuine = an_event()
    tolerant = EVENT.decode(drift_body("unknown_field", genuine))
    assert tolerant == genuine  # a tolerant reader sees the genuine event
    assert b"x_loyalty_tier" in drift_body("unknown_field", genuine)
    assert "missing required field `total`" in (drift_error("missing_field") or "")
    assert "$.data.object.total" in (drift_error("int_to_string") or "")
    assert drift_error("renamed_enum") == "type invoice.finalised"
    assert "$.data.object.lines" in (drift_error("nested_type_change") or "")
    for mode in DRIFT_MODES[1:]:  # all but unknown_field drift the shadow copy
        assert f"~{mode}".encode() in drift_body(mode, genuine)


def test_shuffle_window_is_seeded_and_counts_moves() -> None:
    items = list(range(10))
    a, b = list(items), list(items)
    moved = shuffle_window(a, 7, 1)
    assert shuffle_window(b, 7, 1) == moved
    assert a == b != items
    assert sorted(a) == items
    assert moved == sum(x != y for x, y in zip(a, items, strict=True))
    assert shuffle_window([1], 7, 1) == 0


# -- over real HTTP ----------------------------------------------------------------------------


async def run_with_faults(
    receiver: GatewayLike, faults: dict[str, Any], invoices: int, *, seed: int = 5,
    concurrency: int = 8, expect_extras: int, erp: bool = False
) -> dict[str, Any]:
    """Run one bill run with ``faults`` against ``receiver``; the final audit once the
    genuine deliveries are accepted and ``expect_extras`` extra deliveries were sent."""
    hook_port = free_port()
    sim_port = free_port()
    config = SimConfig(port=sim_port, webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, delivery_concurrency=concurrency, seed=seed)
    if erp:
        receiver.erp_url = f"http://{HOST}:{sim_port}"
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        assert (await http.put("/sim/v1/faults", json=faults)).status == 200
        await http.post("/billing/v1/bill-runs", json={"invoices": invoices})
        return await settle(http, invoices, expect_extras)


async def settle(http: Http, invoices: int, extras: int, within: float = 20) -> dict[str, Any]:
    with anyio.fail_after(within):
        while True:
            audit: dict[str, Any] = (await http.get("/sim/v1/audit")).body
            sent = sum(d["sent"] for d in audit["faults"]["billing"]["deliveries"].values())
            if audit["accepted"] == invoices and sent >= extras:
                assert sent == extras
                return audit
            await anyio.sleep(0.02)


def planned(faults: BillingFaults, seed: int, invoices: int) -> list[WebhookPlan]:
    return [plan_webhook([faults], seed, i) for i in range(1, invoices + 1)]


async def test_mangled_deliveries_are_all_refused_and_never_posted() -> None:
    faults = BillingFaults(mangle_rate=1.0)
    plans = planned(faults, 5, 40)
    by_mode = Counter(m for p in plans for m in p.mangles)
    assert set(by_mode) == set(MANGLE_MODES)  # this seed covers every mode
    receiver = GatewayLike(SECRET)
    audit = await run_with_faults(receiver, {"billing": {"mangle_rate": 1.0}}, 40,
                                  expect_extras=40, erp=True)

    mangled = audit["faults"]["billing"]["mangled"]
    assert mangled["sent"] == 40
    assert mangled["refused"] == mangled["sent"]  # 100 % got a 4xx
    assert mangled["posted"] == 0
    deliveries = audit["faults"]["billing"]["deliveries"]
    expected_status = {"wrong_secret": "401", "body_byte": "401", "header_missing": "401",
                       "header_garbled": "400", "v0_only": "400"}
    for mode, n in by_mode.items():
        assert deliveries[mode]["statuses"] == {expected_status[mode]: n}
    # The genuine deliveries all happened, exactly once each, and were posted once.
    assert receiver.deliveries == {f"evt_in_{i:06d}": 1 for i in range(1, 41)}
    assert (audit["posted"], audit["duplicates"], audit["unexpected"]) == (40, 0, 0)
    assert audit["unposted_count"] == 0


async def test_a_receiver_that_skips_verification_is_caught_by_the_audit() -> None:
    receiver = GatewayLike(SECRET, verify=False)
    faults = {"billing": {"mangle_rate": 1.0, "mangle_modes": ["wrong_secret", "header_missing"]}}
    audit = await run_with_faults(receiver, faults, 20, expect_extras=20, erp=True)
    mangled = audit["faults"]["billing"]["mangled"]
    assert mangled["refused"] == 0
    assert mangled["accepted"] == 20
    assert mangled["posted"] == 20  # every forged look-alike was posted ...
    assert audit["unexpected"] == 20  # ... and shows as a posting nothing issued
    assert audit["posted"] == 20


async def test_drifted_deliveries_refused_except_the_tolerated_unknown_field() -> None:
    faults = BillingFaults(drift_rate=1.0)
    plans = planned(faults, 5, 50)
    by_mode = Counter(d for p in plans for d in p.drifts)
    assert set(by_mode) == set(DRIFT_MODES)
    receiver = GatewayLike(SECRET)
    audit = await run_with_faults(receiver, {"billing": {"drift_rate": 1.0}}, 50,
                                  expect_extras=50, erp=True)
    deliveries = audit["faults"]["billing"]["deliveries"]
    for mode in ("missing_field", "int_to_string", "nested_type_change"):
        assert deliveries[mode]["statuses"] == {"400": by_mode[mode]}
        assert deliveries[mode]["posted"] == 0
    # The receiver ignores an event type it does not know (2xx) and posts nothing for it.
    assert deliveries["renamed_enum"]["accepted"] == by_mode["renamed_enum"]
    assert deliveries["renamed_enum"]["posted"] == 0
    # An unknown field is tolerated: it is the genuine event, sent first, and is posted once.
    assert deliveries["unknown_field"]["accepted"] == by_mode["unknown_field"]
    assert deliveries["unknown_field"]["posted"] is None
    assert (audit["posted"], audit["duplicates"], audit["unexpected"]) == (50, 0, 0)


async def test_duplicates_arrive_as_planned_some_concurrently_each_signed() -> None:
    faults = BillingFaults(duplicate_rate=1.0, duplicate_max=4, duplicate_concurrent_rate=0.5)
    plans = planned(faults, 5, 30)
    extras = sum(p.concurrent_copies + p.later_copies for p in plans)
    receiver = GatewayLike(SECRET, delay_s=0.03)
    audit = await run_with_faults(
        receiver, {"billing": {"duplicate_rate": 1.0, "duplicate_max": 4}}, 30,
        expect_extras=extras, erp=True)

    for i, plan in enumerate(plans, start=1):
        assert receiver.deliveries[f"evt_in_{i:06d}"] == 1 + plan.concurrent_copies + \
            plan.later_copies
    overlapped = [i for i, p in enumerate(plans, start=1)
                  if receiver.max_in_flight[f"evt_in_{i:06d}"] > 1]
    assert overlapped  # some copies really were in flight at the same time as another
    assert all(plans[i - 1].concurrent_copies for i in overlapped)
    assert all(h is not None for hs in receiver.headers.values() for h in hs)
    dup = audit["faults"]["billing"]["deliveries"]["duplicate"]
    assert dup["sent"] == dup["accepted"] == extras
    assert dup["posted"] is None
    # The receiver deduplicated, so the ERP has every invoice once.
    assert (audit["posted"], audit["postings"], audit["duplicates"]) == (30, 30, 0)


async def test_a_receiver_without_dedup_doubles_postings_and_the_audit_counts_them() -> None:
    faults = BillingFaults(duplicate_rate=0.5, duplicate_max=3, duplicate_concurrent_rate=0.0)
    extras = sum(p.later_copies for p in planned(faults, 5, 30))
    assert extras > 0
    receiver = GatewayLike(SECRET, dedup=False)
    audit = await run_with_faults(
        receiver,
        {"billing": {"duplicate_rate": 0.5, "duplicate_max": 3, "duplicate_concurrent_rate": 0}},
        30, expect_extras=extras, erp=True)
    assert audit["duplicates"] == extras
    assert audit["postings"] == 30 + extras
    assert audit["amount_posted"] != audit["amount_issued"]


async def test_replays_carry_the_captured_body_with_an_old_timestamp_and_are_refused() -> None:
    receiver = GatewayLike(SECRET)
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, delivery_concurrency=4, seed=5)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"billing": {"replay_rate": 1.0}})
        await http.post("/billing/v1/bill-runs", json={"invoices": 10})
        audit = await settle(http, 10, 10)
    replay = audit["faults"]["billing"]["deliveries"]["replay"]
    assert replay["sent"] == replay["refused"] == 10
    assert replay["statuses"] == {"401": 10}  # stale: outside the 300 s tolerance
    by_body: dict[bytes, list[int]] = {}
    for body, header in receiver.raw:
        assert header is not None
        by_body.setdefault(body, []).append(int(header.split(",")[0].removeprefix("t=")))
    assert len(by_body) == 10  # every replay is byte-identical to its genuine delivery
    now = time.time()
    for stamps in by_body.values():
        fresh, old = sorted(stamps, reverse=True)
        assert abs(now - fresh) < 60
        assert 590 <= fresh - old <= 610
    assert audit["posted"] == 0  # no ERP in this test, and nothing doubled at the receiver


async def test_reordering_shuffles_within_windows_only() -> None:
    receiver = GatewayLike(SECRET)
    audit = await run_with_faults(receiver, {"billing": {"reorder_window": 8}}, 40,
                                  concurrency=4, expect_extras=0)
    order = [int(e.removeprefix("evt_in_")) for e in receiver.first_seen]
    assert sorted(order) == list(range(1, 41))
    assert order != sorted(order)
    for w in range(0, 40, 8):  # each window of 8 arrives whole before the next starts
        assert sorted(order[w:w + 8]) == list(range(w + 1, w + 9))
    assert 0 < audit["faults"]["billing"]["reordered"] <= 40
    expected = 0
    for w in range(0, 40, 8):
        window = list(range(w + 1, w + 9))
        expected += shuffle_window(window, 5, w + 1)
    assert audit["faults"]["billing"]["reordered"] == expected


async def test_reset_clears_the_fault_statistics() -> None:
    receiver = GatewayLike(SECRET)
    hook_port = free_port()
    config = SimConfig(port=free_port(), webhook_url=f"http://{HOST}:{hook_port}/hook",
                       webhook_secret=SECRET, seed=5)
    async with running_app(receiver.app, hook_port), running_sim(config) as http:
        await http.put("/sim/v1/faults", json={"billing": {"mangle_rate": 1.0}})
        await http.post("/billing/v1/bill-runs", json={"invoices": 5})
        await settle(http, 5, 5)
        await http.post("/sim/v1/reset")
        audit = (await http.get("/sim/v1/audit")).body
        assert audit["faults"]["billing"]["deliveries"] == {}
        assert audit["faults"]["billing"]["mangled"]["sent"] == 0
        assert (await http.get("/sim/v1/faults")).body["billing"]["mangle_rate"] == 0.0


def test_random_module_is_not_used_globally() -> None:
    # Plans never touch the global generator (they must not perturb anything else).
    state = random.getstate()
    plan_webhook([BillingFaults(duplicate_rate=1.0)], 1, 1)
    assert random.getstate() == state
