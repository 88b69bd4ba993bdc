"""S19: the keyed audit chain. An offline edit (through raw sqlite3, after dropping the trigger
that forbids it) is named by the verifier; a chain re-hashed without the key is refused; an
unkeyed chain from before keying is verified as is and sealed by the marker row; the key file
is made private on first start and refused when others may read it."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from actors.audit import Anchor, anchor_mac
from actors.infra.ledger import AUDIT_KEYED, Ledger, PostingRow
from contracts import GatewayError
from gateway.audit import AuditError, audit_key, verify
from gateway.cli import main
from gateway.config import load_config

KEY = b"k" * 64


def posting(n: int) -> PostingRow:
    return PostingRow(f"billing:in_{n:04d}:v1", f"in_{n:04d}", f"JE-{n}", "posted", 1000 + n,
                      "USD", f"corr-{n}", 1_700_000_000.0 + n, "posted", f"entry {n}")


async def write(path: Path, key: bytes | None, first: int, count: int) -> None:
    ledger = await Ledger.open(path)
    try:
        if key is not None:
            await ledger.use_audit_key(key, now=time.time())
        for n in range(first, first + count):
            await ledger.record([posting(n)])
    finally:
        await ledger.close()


def offline(path: Path, sql: str, *params: object) -> None:
    """What someone with the file and no key can do: drop the triggers, change rows."""
    db = sqlite3.connect(path)
    try:
        db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


async def check(path: Path, key: bytes | None) -> tuple[int | None, str, str, str]:
    ledger = await Ledger.open(path)
    try:
        c = await ledger.check_audit(key)
    finally:
        await ledger.close()
    b = c.broken
    return (None, "", "", "") if b is None else (b.seq, b.event, b.key, b.reason)


async def test_a_fresh_keyed_chain_verifies_only_with_its_key(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 5)
    assert await check(db, KEY) == (None, "", "", "")
    seq, event, _, reason = await check(db, b"another key that is long enough" * 2)
    assert (seq, event) == (1, AUDIT_KEYED) and "hash" in reason
    seq, event, _, reason = await check(db, None)
    assert (seq, event) == (1, AUDIT_KEYED) and "no audit key" in reason


async def test_an_offline_edit_is_named_by_seq_event_and_key(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 6)
    # Move money: change the detail of the 4th row (the posting of in_0003).
    offline(db, "UPDATE audit SET detail = 'entry 3, amount 1' WHERE seq = 4")
    assert await check(db, KEY) == (4, "posted", "billing:in_0003:v1",
                                    "hash does not match the row")


async def test_a_chain_rehashed_without_the_key_is_refused(tmp_path: Path) -> None:
    """The attacker edits a row and recomputes every later hash with plain SHA-256 (all they
    can do without the key): the first re-hashed keyed row is named."""
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 4)
    offline(db, "UPDATE audit SET detail = 'forged' WHERE seq = 3")
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT seq, at, event, key, detail FROM audit WHERE seq >= 3 "
                        "ORDER BY seq").fetchall()
    prev = conn.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
    conn.close()
    for seq, at, event, key, detail in rows:
        h = hashlib.sha256(f"{prev}|{at!r}|{event}|{key}|{detail}".encode()).hexdigest()
        offline(db, "UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", prev, h, seq)
        prev = h
    assert await check(db, KEY) == (3, "posted", "billing:in_0002:v1",
                                    "hash does not match the row")


async def test_an_unkeyed_chain_is_verified_as_is_then_continued_keyed(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, None, 1, 3)  # a ledger from before keying
    assert await check(db, None) == (None, "", "", "")
    await write(db, KEY, 4, 2)  # the first keyed start appends the marker, then keyed rows
    conn = sqlite3.connect(db)
    events = [e for (e,) in conn.execute("SELECT event FROM audit ORDER BY seq")]
    detail = conn.execute("SELECT detail FROM audit WHERE seq = 4").fetchone()[0]
    conn.close()
    assert events == ["posted"] * 3 + [AUDIT_KEYED] + ["posted"] * 2
    assert "rows 1..3 plain sha-256" in detail
    assert await check(db, KEY) == (None, "", "", "")
    await write(db, KEY, 6, 1)  # a later start adds no second marker
    ledger = await Ledger.open(db)
    try:
        c = await ledger.check_audit(KEY)
    finally:
        await ledger.close()
    assert (c.rows, c.keyed_from, c.broken) == (7, 4, None)
    # An edit in the plain part is still found (the marker seals it with the key).
    offline(db, "UPDATE audit SET key = 'billing:in_9999:v1' WHERE seq = 2")
    assert await check(db, KEY) == (2, "posted", "billing:in_9999:v1",
                                    "hash does not match the row")


async def test_removing_the_marker_does_not_unkey_the_chain(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 2)
    offline(db, "UPDATE audit SET event = 'posted' WHERE seq = 1")
    seq, _, _, _ = await check(db, KEY)
    assert seq is not None


async def test_a_truncated_tail_is_caught_by_an_anchor(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 5)
    ledger = await Ledger.open(db)
    try:
        seq, head = await ledger.audit_head()
    finally:
        await ledger.close()
    at = time.time()
    anchor = Anchor(seq=seq, hash=head, at=at, mac=anchor_mac(KEY, seq, head, at))
    forged = Anchor(seq=seq, hash="0" * 64, at=at, mac="f" * 64)
    anchors = [(1, msgspec.json.encode(anchor))]
    ledger = await Ledger.open(db)
    try:
        assert (await verify(ledger, KEY, anchors)).ok
        report = await verify(ledger, KEY, [*anchors, (2, msgspec.json.encode(forged))])
        assert not report.ok and "not signed with the audit key" in report.problems[0]
    finally:
        await ledger.close()
    offline(db, "DELETE FROM audit WHERE seq > 4")  # the tail goes: the chain itself is fine
    ledger = await Ledger.open(db)
    try:
        report = await verify(ledger, KEY, anchors)
    finally:
        await ledger.close()
    assert report.bad_row is None
    assert not report.ok
    assert report.problems == [f"row {seq} was anchored (anchor #1) but is missing: the audit "
                               "trail was truncated after row 4"]


def test_the_key_file_is_made_private_and_refused_when_open(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"data_dir": str(tmp_path / "data")})
    with pytest.raises(AuditError) as missing:
        audit_key(cfg)
    assert missing.value.code == "audit.key_missing"
    key = audit_key(cfg, create=True)
    path = tmp_path / "data" / "audit.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert audit_key(cfg, create=True) == key  # kept across starts
    os.chmod(path, 0o644)
    with pytest.raises(AuditError) as opened:
        audit_key(cfg)
    assert opened.value.code == "audit.key_mode" and "chmod 600" in opened.value.message


def test_the_key_from_env_is_masked_in_print_config(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    secret = "canary-audit-key-0123456789abcdef0123456789"
    cfg = load_config(env={"ERPGW_AUDIT_KEY": secret}, overrides={"data_dir": str(tmp_path)})
    assert audit_key(cfg) == secret.encode()
    assert secret not in repr(cfg) and secret not in str(cfg.public())


def test_audit_verify_cli_names_the_edited_row(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    cfg = load_config(env={}, overrides={"data_dir": str(data)})
    key = audit_key(cfg, create=True)
    anyio.run(write, data / "ledger.db", key, 1, 4)
    assert main(["audit", "verify", "--data-dir", str(data), "--no-anchors"]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    offline(data / "ledger.db", "UPDATE audit SET at = at + 1 WHERE seq = 3")
    assert main(["audit", "verify", "--data-dir", str(data), "--no-anchors", "--json"]) == 1
    doc = msgspec.json.decode(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["bad_row"] == {"seq": 3, "event": "posted", "key": "billing:in_0002:v1",
                              "reason": "hash does not match the row"}


async def test_the_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 2)
    conn = sqlite3.connect(db)
    try:
        for sql in ("UPDATE audit SET detail = 'x' WHERE seq = 2", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert await check(db, KEY) == (None, "", "", "")


async def test_a_keyed_chain_refuses_rows_written_without_the_key(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await write(db, KEY, 1, 2)
    ledger = await Ledger.open(db)
    try:
        with pytest.raises(GatewayError) as refused:
            await ledger.record([posting(9)])
        assert refused.value.code == "ledger.audit_key_required"
        assert await ledger.known([posting(9).idempotency_key]) == set()
    finally:
        await ledger.close()
    assert await check(db, KEY) == (None, "", "", "")


async def test_an_action_delivered_twice_is_audited_once(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    ledger = await Ledger.open(db)
    try:
        await ledger.use_audit_key(KEY, now=1.0)
        row = (2.0, "dlq.purged", "billing:in_1:v1", "by operator UABC: dead letter #7", 41)
        assert await ledger.append_audit_once([row]) == 1
        assert await ledger.append_audit_once([row]) == 0  # a redelivery of stream seq 41
        assert await ledger.append_audit_once([(*row[:4], 42)]) == 1  # another action
        assert (await ledger.check_audit(KEY)).rows == 3
    finally:
        await ledger.close()
    assert await check(db, KEY) == (None, "", "", "")


async def test_looking_up_a_key_reads_its_rows_not_the_whole_trail(tmp_path: Path) -> None:
    # A dead letter's or an operator action's row is written once: before it, the ledger asks
    # whether it is there, and ``erpgw trace`` reads a key's rows. Both must use the index.
    path = tmp_path / "ledger.sqlite3"
    await write(path, KEY, 0, 3)
    db = sqlite3.connect(path)
    try:
        plans = [" ".join(str(r[-1]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
                 for sql, params in (
                     ("SELECT 1 FROM audit WHERE event = ? AND key = ? AND detail = ? LIMIT 1",
                      ("dlq.dead_lettered", "in_0001", "x")),
                     ("SELECT seq, at, event, detail FROM audit WHERE key = ? ORDER BY seq",
                      ("in_0001",)))]
    finally:
        db.close()
    assert all("USING INDEX audit_key" in plan for plan in plans), plans
