"""S20: the audit trail holds one row per state transition of each flow's objects, no more
and no fewer, on a gateway running the five flows against the simulated platforms: six deals
(one compensated at an injected refusal), billing's changes to their subscriptions, two
invoices with their ERP postings and revenue uploads, a payment that arrives before its
invoice (parked, then resumed) and is settled with its partner, and twelve usage records.

Each object's rows are compared with the transitions its state machine allows, and their
counts with the platforms' own records (the simulator's ground truth, the ERP's journal
entries, the portal's settlements):

- a deal saga (``saga:<deal>``): each step ``done`` in order, then ``completed``; or the steps
  done up to one ``refused``, the done steps (but ``enrich``) ``reversed`` newest first, then
  ``compensated`` (``actors.commercial.saga.STEPS``), and its approval dead-lettered
  (``dlq.dead_lettered`` under the approval's key, once);
- a subscription (``saga:subscription:<id>``): each applied version once, consecutive from
  the saga's v1, as many past v1 as billing made changes; a compensated deal's: its
  cancellation (v2) alone;
- an invoice or payment version (``billing:<id>:v1``): ``version.claimed`` then
  ``version.applied``; its ERP posting (its idempotency key): ``created``, once;
- a revenue line (``revenue:<invoice>:<line>``): ``upload.pending`` then ``upload.uploaded``;
- a parked payment: ``payment.parked`` then ``payment.resumed``; a settlement:
  ``settlement.recorded``, once;
- a usage record (``usage.billing:<id>``, ``usage.revenue:<id>``): ``upload.pending`` then
  ``upload.uploaded`` at each platform.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest

from actors.commercial.saga import STEPS
from actors.infra import Ledger, NatsBus
from actors.infra.bus import StoredMsg
from actors.infra.ledger import AuditCheck
from contracts import Envelope, MsgpackCodec
from gateway.audit import audit_key
from gateway.broker import EmbeddedBroker
from gateway.dlq import list_letters, resolve_letters
from gateway.identities import auth_for, public_key, seed_path
from tests.integration.conftest import SECRET, billing_event, running_gateway, signed
from tests.integration.test_deal_flow import _call, wait_deals
from tests.integration.test_payment_flow import payment_body
from tests.integration.test_usage_flow import USAGE
from tests.integration.test_usage_flow import _call as usage_call
from tests.integration.test_usage_flow import _drained as usage_drained
from tests.integration.test_usage_flow import _send as usage_send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

_envelopes: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)


def audit_by_key(ledger: Path) -> dict[str, list[str]]:
    """Every audit row's event, by key, in the chain's order (read-only, beside the gateway)."""
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        out: dict[str, list[str]] = defaultdict(list)
        for event, key in db.execute("SELECT event, key FROM audit ORDER BY seq"):
            out[key].append(event)
        return dict(out)
    finally:
        db.close()


def saga_paths() -> dict[str, list[str]]:
    """Every audit sequence a deal saga may leave, by its ending: completed, or compensated
    after the refusal of each step but the first (``enrich`` creates nothing to undo)."""
    done = [f"saga.{s}.done" for s in STEPS]
    paths = {"completed": [*done, "saga.completed"]}
    for i, step in enumerate(STEPS):
        paths[f"compensated at {step}"] = [
            *done[:i], f"saga.{step}.refused",
            *[f"saga.{s}.reversed" for s in reversed(STEPS[1:i])], "saga.compensated"]
    return paths


async def test_every_flow_audits_each_transition_once(broker: EmbeddedBroker, tmp_path: Path,
                                                      sim_url: str) -> None:
    async with running_gateway(broker, tmp_path, sim_url, partner={"base_url": sim_url},
                               payments={"park_recheck_s": 0.2}, usage=USAGE,
                               billing={"webhook_secrets": [SECRET, "whsec_demo"]}) as gw:
        hook = gw.url.replace("/webhooks/billing", "/webhooks/partner")
        ledger = Path(gw.cfg.data_dir) / "ledger.db"

        async def send(body: bytes) -> None:
            async with aiohttp.ClientSession() as s, s.post(gw.url, data=body,
                                                            headers=signed(body)) as r:
                assert r.status == 200, await r.text()

        # The payment first: it waits (parked) for its invoice.
        await send(payment_body(2, 3300))
        with anyio.fail_after(30):  # a guard against a hang, not a speed target
            while "py_000002" not in audit_by_key(ledger):
                await anyio.sleep(0.05)
        for n in (1, 2):
            await send(msgspec.json.encode(billing_event(n)))
        await _call("POST", f"{sim_url}/partner/v1/deal-runs", {
            "deals": 6, "seed": 5, "webhookUrl": hook, "rejectRate": 0.0,
            "orderRejectRate": 0.2, "contractRejectRate": 0.2})
        deals = await wait_deals(sim_url, 6, gw)
        # Flow 5: billing amends, renews or cancels the subscriptions (webhooks possibly
        # out of order).
        run = await _call("POST", f"{sim_url}/billing/v1/subscription-changes", {
            "count": 6, "seed": 4, "reorderRate": 0.5, "webhookUrl": gw.url})
        with anyio.fail_after(60):  # a guard against a hang, not a speed target
            while (subscriptions := (await _call("GET", f"{sim_url}/sim/v1/audit"))[
                    "subscriptions"])["in_sync"] < run["subscriptions"]:
                await anyio.sleep(0.1)
        # Flow 4: usage records through the intake, rated by billing, recorded as revenue.
        status, usage_run = await usage_call("POST", f"{sim_url}/sim/v1/usage-runs", body={
            "count": 12, "seed": 11, "subscriptions": 3, "period": "2026-10"})
        assert status == 201
        status, doc = await usage_send(gw, usage_run["records"])
        assert (status, doc["accepted"]) == (200, 12), doc
        usage = await usage_drained(gw, 12)
        await gw.wait_idle()
        rows = audit_by_key(ledger)
        journal = (await _call("GET", f"{sim_url}/erp/v1/journal-entries"))["items"]
        settlements = (await _call("GET", f"{sim_url}/partner/v1/settlements"))["items"]

    # Flow 1: one path of the saga's state machine per deal, each transition once.
    paths = saga_paths()
    endings = {key: [name for name, path in paths.items() if path == events]
               for key, events in rows.items()
               if key.startswith("saga:") and not key.startswith("saga:subscription:")}
    assert len(endings) == deals["approved"] == 6
    assert all(len(names) == 1 for names in endings.values()), {
        k: rows[k] for k, names in endings.items() if len(names) != 1}
    ended = [names[0] for names in endings.values()]
    assert ended.count("completed") == deals["completed"]
    assert len(ended) - ended.count("completed") == deals["compensated"] >= 1
    # A compensated deal's approval is dead-lettered (saga.compensated): one row, its letter.
    compensated = {k.removeprefix("saga:") for k, names in endings.items()
                   if names != ["completed"]}
    letters = {k: v for k, v in rows.items() if k.startswith("partner:")}
    assert {k.split(":")[1] for k in letters} == compensated
    assert all(v == ["dlq.dead_lettered"] for v in letters.values()), letters
    # Flow 5's baseline: each subscription the saga made, one applied version.
    subs = {k: v for k, v in rows.items() if k.startswith("saga:subscription:")}
    # Flow 5: each subscription's applied versions, consecutive from v1, one row each (a
    # shuffled webhook waits for its predecessor; a stale one adds nothing); as many rows
    # past v1 as billing made changes. A compensated deal's subscription: its cancellation.
    cancelled = [k for k, v in subs.items() if v == ["saga.subscription.v2"]]
    assert len(cancelled) == deals["subscriptions_cancelled"]
    live = {k: v for k, v in subs.items() if k not in cancelled}
    assert all(v == [f"saga.subscription.v{n}" for n in range(1, len(v) + 1)]
               for v in live.values()), live
    assert sum(len(v) - 1 for v in live.values()) == run["changes"] == subscriptions["accepted"]
    assert subscriptions["in_sync"] == subscriptions["changed"] == run["subscriptions"]

    # Flows 2 and 3: each invoice and payment version claimed then applied, posted once.
    versions = {k: v for k, v in rows.items() if k.startswith("billing:")}
    assert versions == {k: ["version.claimed", "version.applied"] for k in (
        "billing:in_000001:v1", "billing:in_000002:v1", "billing:py_000002:v1")}
    created = [k for k, v in rows.items() if v == ["created"]]
    assert len(created) == len(journal) == len(versions)
    # Flow 2's revenue half: each invoice line pending, then uploaded.
    lines = {k: v for k, v in rows.items() if k.startswith("revenue:")}
    assert lines == {k: ["upload.pending", "upload.uploaded"] for k in (
        "revenue:in_000001:il_1", "revenue:in_000002:il_2")}
    # Flow 3: the early payment parked then resumed; each settlement recorded once.
    assert rows["py_000002"] == ["payment.parked", "payment.resumed"]
    recorded = {k: v for k, v in rows.items() if k.startswith("st_")}
    assert len(recorded) == len(settlements) >= 1
    assert all(v == ["settlement.recorded"] for v in recorded.values())
    # Flow 4: each usage record pending then uploaded at billing and at revenue.
    usage_rows = {k: v for k, v in rows.items() if k.startswith("usage.")}
    ids = [r["id"] for r in usage_run["records"]]
    assert usage_rows == {f"usage.{platform}:{i}": ["upload.pending", "upload.uploaded"]
                          for platform in ("billing", "revenue") for i in ids}
    assert usage["billed"] == usage["revenue_recorded"] == len(ids)
    # Nothing else was audited but the chain's keying.
    accounted = {*endings, *letters, *subs, *versions, *created, *lines, "py_000002",
                 *recorded, *usage_rows}
    assert {k: v for k, v in rows.items() if k not in accounted} == {
        "": ["audit.keyed"]}


def stored_by_key(msgs: list[StoredMsg]) -> dict[str, list[StoredMsg]]:
    """Stored lane messages by their envelope's business key."""
    out: dict[str, list[StoredMsg]] = defaultdict(list)
    for m in msgs:
        out[str(_envelopes.decode(m.data).key)].append(m)
    return dict(out)


async def test_failures_and_repairs_audit_each_transition_once(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    """S20's failure and repair transitions, per invoice, and the broker's record of receipt
    and publication beside the ledger's: in_000001's ERP request is refused whole (a dead
    letter, no posting row), in_000002's entry is refused by itself (a ``dead_lettered``
    posting and a dead letter), in_000003 goes through (sent twice by billing); the operator
    replays both letters after the fix. Per invoice: one stored webhook event (received), one
    ERP command (published) and one more per replay, one ``dlq.dead_lettered`` row per letter
    and one ``dlq.replayed`` row per replay (naming the operator's broker identity), the
    version claimed once per ERP attempt and applied once, the ERP's posting ``created`` once
    (after a ``dead_lettered`` row when the ERP refused the entry), the revenue line pending
    then uploaded; nothing else in the ledger, and the chain verifies."""
    async with running_gateway(broker, tmp_path, sim_url) as gw:
        s = gw.subjects
        ledger = Path(gw.cfg.data_dir) / "ledger.db"

        async def send(n: int) -> None:
            body = msgspec.json.encode(billing_event(n))
            assert (await gw.post(body, signed(body)))[0] == 200

        async def audited(event: str, count: int) -> None:
            with anyio.fail_after(60):  # a guard against a hang, not a speed target
                while sum(v.count(event) for v in audit_by_key(ledger).values()) < count:
                    await anyio.sleep(0.05)

        await _call("PUT", f"{sim_url}/sim/v1/faults", {"erp": {"error_rate": 1.0,
                                                                "status": 422}})
        await send(1)
        await audited("dlq.dead_lettered", 1)
        await _call("PUT", f"{sim_url}/sim/v1/faults", {"erp": {"item_reject_rate": 1.0}})
        await send(2)
        await audited("dlq.dead_lettered", 2)
        await _call("DELETE", f"{sim_url}/sim/v1/faults")
        await send(3)
        await send(3)  # billing sends it again: received once (its Nats-Msg-Id)
        operator = await NatsBus.connect(broker.url, name="test-operator",
                                         auth=auth_for(gw.cfg, "operator"))
        try:
            letters = await list_letters(operator, s)
            assert [r.letter.business_key for r in letters] == [
                "billing:in_000001:v1", "billing:in_000002:v1"]
            who = public_key(seed_path(Path(gw.cfg.data_dir) / "identities", "operator"))
            assert await resolve_letters(operator, s, letters, action="replayed",
                                         identity=who) == 2
            # Replaying again is a no-op: the letters are resolved.
            assert await resolve_letters(operator, s, await list_letters(operator, s),
                                         action="replayed", identity=who) == 0
        finally:
            await operator.close()
        await audited("dlq.replayed", 2)
        await audited("version.applied", 3)
        await gw.wait_idle()
        events = stored_by_key(await gw.bus.scan(s.stream("billing"), subject=s.invoice_issued))
        commands = stored_by_key(await gw.bus.scan(s.stream("billing"),
                                                   subject=s.billing_erp_commands))
        dead = await gw.bus.scan(s.dlq_stream, subject=s.dlq_letters)
        journal = (await _call("GET", f"{sim_url}/erp/v1/journal-entries"))["items"]

    rows = audit_by_key(ledger)
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        postings = dict(db.execute("SELECT idempotency_key, external_id FROM postings"))
        replayed_by = [d for (d,) in db.execute(
            "SELECT detail FROM audit WHERE event = 'dlq.replayed' ORDER BY seq")]
    finally:
        db.close()
    invoices = ("in_000001", "in_000002", "in_000003")
    keys = {i: f"billing:{i}:v1" for i in invoices}
    posting = {i: [k for k, ext in postings.items() if ext.startswith(i)] for i in invoices}
    assert all(len(ks) == 1 for ks in posting.values()), postings

    # Received and published: the broker's streams, one message per event and hop.
    assert {k: len(v) for k, v in events.items()} == {keys[i]: 1 for i in invoices}
    assert all(m.headers.get("Nats-Msg-Id") for v in events.values() for m in v)
    replays = {k: [m for m in v if "Erpgw-Replay-Of" in m.headers] for k, v in commands.items()}
    assert {k: len(v) - len(replays[k]) for k, v in commands.items()} == {
        keys[i]: 1 for i in invoices}
    assert {k: len(v) for k, v in replays.items()} == {
        keys["in_000001"]: 1, keys["in_000002"]: 1, keys["in_000003"]: 0}
    assert len(dead) == 2
    # Posted: once each at the ERP and in the ledger.
    assert sorted(e["externalId"] for e in journal) == sorted(postings.values())

    # The ledger: each transition once per event, no gap, nothing more.
    def ledger_rows(i: str) -> list[str]:
        return sorted([*rows[keys[i]], *rows[posting[i][0]]])

    refused_whole = ["version.claimed", "dlq.dead_lettered", "dlq.replayed",
                     "version.claimed", "version.applied", "created"]
    assert ledger_rows("in_000001") == sorted(refused_whole)
    assert ledger_rows("in_000002") == sorted([*refused_whole, "dead_lettered"])
    assert ledger_rows("in_000003") == sorted(["version.claimed", "version.applied",
                                               "created"])
    # In the order they happened: the first attempt's claim, its letter (written before the
    # replay); then the replay's record and the second attempt, which race each other.
    for i in ("in_000001", "in_000002"):
        events = rows[keys[i]]
        assert events[:2] == ["version.claimed", "dlq.dead_lettered"], events
        assert [e for e in events[2:] if e.startswith("version.")] == [
            "version.claimed", "version.applied"], events
    assert rows[posting["in_000002"][0]] == ["dead_lettered", "created"]
    assert all(d.startswith(f"by operator {who}: dead letter #") for d in replayed_by)
    lines = {k: v for k, v in rows.items() if k.startswith("revenue:")}
    assert lines == {f"revenue:{i}:il_{i[-1]}": ["upload.pending", "upload.uploaded"]
                     for i in invoices}
    accounted = {*keys.values(), *postings, *lines}
    assert {k: v for k, v in rows.items() if k not in accounted} == {"": ["audit.keyed"]}
    check = await _check(ledger, audit_key(gw.cfg))
    assert check.broken is None and check.rows == sum(len(v) for v in rows.values())


async def _check(path: Path, key: bytes) -> AuditCheck:
    ledger = await Ledger.open(path)
    try:
        return await ledger.check_audit(key)
    finally:
        await ledger.close()
