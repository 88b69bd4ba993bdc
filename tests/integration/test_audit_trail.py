"""S19/S20 against a running gateway and a real broker: the chain's head is anchored on the
audit stream (which denies purge), a dead letter purged by the operator's identity and a
reconciler repair become audit rows naming those identities, and after the gateway stops, a
tail cut off the ledger offline is caught by `erpgw audit verify` through the anchors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest

from actors.audit import decode_anchor
from actors.infra import Ledger, NatsBus, OutMsg
from contracts import DeadLetter
from gateway.audit import audit_key
from gateway.broker import EmbeddedBroker
from gateway.dlq import list_letters, resolve_letters
from gateway.identities import auth_for, public_key, seed_path
from gateway.stack import Stack

from .conftest import running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def verify_cli(data: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--data-dir", str(data),
         "--nats-url", url, *extra],
        capture_output=True, text=True, timeout=60, check=False)


async def wait_for(pred: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(30):  # a guard against a hang, not a speed target
        while not await pred():
            await anyio.sleep(0.1)


async def test_anchors_operator_actions_and_a_truncated_tail(
        broker: EmbeddedBroker, tmp_path: Path, sim_url: str) -> None:
    data = tmp_path / "gw"
    async with running_gateway(broker, tmp_path, sim_url,
                               audit={"anchor_interval_s": 0.2}) as gw:
        s = gw.subjects
        # A dead letter on the DLQ, purged by the operator's identity.
        letter = DeadLetter(
            id="dl-audit-test", failed_at=datetime(2026, 1, 1, tzinfo=UTC), lane="billing",
            subject=s.invoice_issued, stream_seq=1, code="contract.invalid", reason="test",
            attempts=1, business_key="billing:in_audit:v1", correlation_id=None, data=b"{}")
        await gw.bus.publish(OutMsg(s.dlq("billing", letter.code), msgspec.json.encode(letter),
                                    msg_id="audit-test-letter"))
        operator = await NatsBus.connect(broker.url, name="test-operator",
                                         auth=auth_for(gw.cfg, "operator"))
        try:
            recs = await list_letters(operator, s)
            assert [r.letter.business_key for r in recs] == ["billing:in_audit:v1"]
            who = public_key(seed_path(data / "identities", "operator"))
            assert await resolve_letters(operator, s, recs, action="purged", note="poison",
                                         identity=who) == 1
        finally:
            await operator.close()

        ledger_path = data / "ledger.db"

        async def audited() -> bool:
            rows = _rows(ledger_path, "SELECT event FROM audit WHERE event = 'dlq.purged'")
            return bool(rows)

        await wait_for(audited)
        [(key, detail)] = _rows(ledger_path,
                                "SELECT key, detail FROM audit WHERE event = 'dlq.purged'")
        assert key == "billing:in_audit:v1"
        assert detail.startswith(f"by operator {who}: dead letter #")

        # The anchors: only the auditor may write them; nobody may purge them.
        nc = await nats.connect(broker.url, **gw.nats_options("admin"))
        try:
            js = nc.jetstream()
            with pytest.raises(nats.js.errors.APIError):
                await js.purge_stream(s.audit_stream)
        finally:
            await nc.close()
        # Only the auditor identity may write anchors: the operator's publish is refused.
        op = await nats.connect(broker.url, **gw.nats_options("operator"))
        try:
            with pytest.raises(nats.errors.Error):
                await op.jetstream().publish(s.audit_anchor, b"{}", timeout=2)
        finally:
            await op.close()
    # Stopped: the last anchor covers the last row.
    key = audit_key(gw.cfg)
    ledger = await Ledger.open(ledger_path)
    try:
        head_seq, head = await ledger.audit_head()
        assert (await ledger.check_audit(key)).broken is None
    finally:
        await ledger.close()
    admin = await NatsBus.connect(broker.url, auth=broker.auth())
    try:
        anchors = [decode_anchor(m.data) for m in await admin.scan(
            gw.subjects.audit_stream, subject=gw.subjects.audit_anchor)]
    finally:
        await admin.close()
    assert anchors and anchors[-1].seq == head_seq and anchors[-1].hash == head
    assert anchors[0].seq >= 1  # the first start's audit.keyed row, anchored at start

    ok = verify_cli(data, broker.url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("OK")

    # Cut the tail offline (drop the trigger, delete the last rows): the chain that is left
    # verifies on its own, the anchor does not.
    db = sqlite3.connect(ledger_path)
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute("DELETE FROM audit WHERE seq >= ?", (head_seq - 1,))
    db.commit()
    db.close()
    chain_only = verify_cli(data, broker.url, "--no-anchors")
    assert chain_only.returncode == 0, chain_only.stdout
    cut = verify_cli(data, broker.url, "--json")
    assert cut.returncode == 1, cut.stdout + cut.stderr
    doc = msgspec.json.decode(cut.stdout)
    assert doc["bad_row"] is None
    assert any(f"row {head_seq} was anchored" in p and "truncated" in p
               for p in doc["problems"]), doc
    # Reading only the newest anchor is enough to see it.
    newest = verify_cli(data, broker.url, "--json", "--max-anchors", "1")
    assert newest.returncode == 1
    assert msgspec.json.decode(newest.stdout)["anchors"] == 1


def _rows(path: Path, sql: str) -> list[tuple[str, ...]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(r) for r in db.execute(sql).fetchall()]
    finally:
        db.close()


async def test_a_reconciler_repair_is_an_audit_row_naming_its_identity(tmp_path: Path) -> None:
    """The reconciler actor re-drives postings the ERP silently dropped; each repair becomes
    a `recon.repost` audit row naming the reconciler's broker identity."""
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=63,
                  gateway_toml="[reconcile]\ninterval_s = 1.0\ngrace_s = 0\nlegs = []\n")
    await stack.start()
    try:
        await stack.set_faults({"erp": {"silent_drop_rate": 0.3}})
        await stack.bill_run(40)
        await stack.wait_injected("erp", "silent_drop", 1)
        ledger_path = stack.data_dir / "ledger.db"

        async def repaired() -> bool:
            return bool(_rows(ledger_path, "SELECT 1 FROM audit WHERE event = 'recon.repost'"))

        await wait_for(repaired)
        who = public_key(seed_path(stack.identities_dir, "reconciler"))
        rows = _rows(ledger_path, "SELECT key, detail FROM audit WHERE event = 'recon.repost'")
        assert all(detail.startswith(f"by reconciler {who}: ") for _, detail in rows), rows
        assert all(key.startswith("in_") for key, _ in rows), rows
    finally:
        await stack.close()
