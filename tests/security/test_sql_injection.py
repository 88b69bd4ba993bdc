"""S18: hostile strings (SQL fragments, quotes, NUL, LIKE wildcards, Unicode) through every
statement of the ledger that takes text, and the static rule that keeps SQL parameterised.

The ledger (``actors/infra/ledger.py``) is the gateway's only SQL. Each hostile string is used
as every text field of every kind of row (postings, versions, uploads, parked payments,
settlements, sagas, audit rows) and every lookup; it must come back exactly as written, match
only itself, leave a canary table and the schema untouched and the audit chain whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors.infra.ledger import (
    Ledger,
    ParkedPayment,
    PostingRow,
    SettlementRow,
    UploadRow,
    VersionMark,
)

ROOT = Path(__file__).resolve().parents[2]
CODE = ("actors", "gateway", "contracts", "sim")

NASTY = ["'; DROP TABLE canary; --", "\"; DROP TABLE postings; --", "' OR '1'='1",
         "') OR 1=1 --", "x\x00y", "\x00", "%", "_", "a%", "\\", "''", "?", ":v1", "a:v",
         "\r\nINSERT INTO canary VALUES ('pwned')", "Ω≈ç√ 🚀 \u202e", "\ufeff", "-- ", "/*", "*/"]
hostile = st.one_of(st.sampled_from(NASTY), st.text(min_size=1, max_size=30),
                    st.tuples(st.sampled_from(NASTY), st.text(max_size=8)).map("".join))


async def _schema(ledger: Ledger) -> list[tuple[str, str]]:
    async with ledger._db.execute("SELECT type, name FROM sqlite_master ORDER BY name") as cur:
        return [(str(t), str(n)) for t, n in await cur.fetchall()]


async def _every_statement(ledger: Ledger, s: str, n: int) -> None:
    """``s`` in every text field of every write, then every read: each finds exactly it."""
    at = 1_700_000_000.0 + n
    await ledger.record(
        [PostingRow(idempotency_key=s, external_id=s, erp_id=s, status="posted", amount=n,
                    currency=s, correlation_id=s, recorded_at=at, audit_event="posted",
                    audit_detail=s)],
        versions=[VersionMark(source=s, object_id=s, version=2, entry=s.encode(),
                              recorded_at=at)],
        notes=[(at, s, s, s)])
    await ledger.claim_versions([VersionMark(source=s, object_id=s, version=3, entry=b"",
                                             recorded_at=at)], notes=[(at, s, s, s)])
    assert await ledger.known([s]) == {s}
    assert await ledger.posting_states([s]) == {s: "posted"}
    assert await ledger.posted_external_ids([s]) == {s}
    [row] = await ledger.find(correlation_id=s, external_id=s, idempotency_key=s)
    assert [row[k] for k in ("idempotency_key", "external_id", "erp_id", "currency",
                             "correlation_id")] == [s] * 5
    assert {a["detail"] for a in row["audit"]} == {s}  # type: ignore[attr-defined]
    version = (await ledger.aggregate_versions([(s, s)]))[(s, s)]
    assert (version.version, version.entry, version.claimed) == (2, s.encode(), 3)

    upload = UploadRow(platform=s, line_id=s, invoice_id=s, status="pending", attempt=s,
                       batch_id=s, amount=n, currency=s, correlation_id=s, recorded_at=at,
                       audit_detail=s)
    await ledger.record_uploads([upload])
    assert await ledger.upload_states(s, [s]) == {s: "pending"}
    assert await ledger.upload_amounts(s, [s]) == {s: (n, s)}
    [found] = await ledger.find_uploads(s, status="pending", invoice_id=s)
    assert (found.platform, found.line_id, found.attempt, found.batch_id) == (s, s, s, s)
    assert await ledger.upload_counts(s) == {"pending": 1}
    await ledger.record_uploads([UploadRow(platform=s, line_id=s, invoice_id=s,
                                           status="in_doubt", attempt=s, batch_id=None,
                                           amount=n, currency=s, correlation_id=s,
                                           recorded_at=at)])
    assert await ledger.resolve_in_doubt(s, [s], present=True, note=s, now=at) == 1

    await ledger.park_payments([ParkedPayment(payment_id=s, invoice_ids=(s, s), envelope=b"e",
                                              subject=s, stream_seq=n, parked_at=at)])
    assert [(p.payment_id, p.invoice_ids, p.subject) for p in await ledger.parked_payments()
            if p.payment_id == s] == [(s, (s, s), s)]
    await ledger.resume_payments([s], at, detail=s)
    assert s not in {p.payment_id for p in await ledger.parked_payments()}

    await ledger.record_settlements([SettlementRow(
        settlement_id=s, commission_id=s, partner_id=s, portal_key=s, erp_key=s, erp_id=s,
        amount=n, currency=s, correlation_id=s, recorded_at=at)])
    assert await ledger.settled([s]) == {s}
    await ledger.save_saga(s, s, s.encode(), correlation_id=s, now=at, event=s, detail=s)
    assert await ledger.saga_state(s) == s.encode()
    assert sorted((system, step, detail) for _, system, step, detail
                  in await ledger.lineage([s])) == [
        ("gateway", f"saga {s}", f"deal saga {s}"),
        ("partner", "settled", f"settlement {s} {n} {s} to partner {s}; ERP payable {s}")]
    assert await ledger.append_audit_once([(at, s, s, s, n)]) == 1
    assert await ledger.append_audit_once([(at, s, s, s, n)]) == 0


async def _run(strings: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        ledger = await Ledger.open(Path(d) / "ledger.db")
        try:
            # This test is about what SQL the ledger runs, not durability: no fsync per write.
            await ledger._db.execute("PRAGMA synchronous=OFF")
            await ledger._db.execute("CREATE TABLE canary (v TEXT)")
            await ledger._db.execute("INSERT INTO canary VALUES ('alive')")
            schema = await _schema(ledger)
            for n, s in enumerate(strings, 1):
                await _every_statement(ledger, s, n)
            async with ledger._db.execute("SELECT v FROM canary") as cur:
                assert [r[0] for r in await cur.fetchall()] == ["alive"]
            assert await _schema(ledger) == schema
            counts = await ledger.counts()
            assert counts == {"posted": len(strings)}, counts
            assert (await ledger.check_audit()).broken is None
            assert await ledger.saga_counts() == {s: 1 for s in strings}
        finally:
            await ledger.close()


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.lists(hostile, min_size=1, max_size=6, unique=True))
@example(NASTY)
def test_hostile_strings_through_every_ledger_statement(strings: list[str]) -> None:
    anyio.run(_run, strings)


def _ruff_s608(*paths: str, cwd: Path) -> list[tuple[str, int]]:
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "S608",
                          "--output-format", "json", *paths],
                         cwd=cwd, capture_output=True, text=True, check=False)
    return [(Path(f["filename"]).name, f["location"]["row"]) for f in json.loads(run.stdout)]


def test_no_sql_is_built_from_strings(tmp_path: Path) -> None:
    """ruff's S608 (bandit's B608: SQL built with an f-string, ``%``, ``+`` or ``format``) is on
    in the project's lint and finds nothing unwaived in the shipped code; planted, it fires."""
    lint = (ROOT / "pyproject.toml").read_text().split("[tool.ruff.lint]", 1)[1]
    select, ignore = lint.split("ignore = [", 1)
    assert '"S"' in select and "S608" not in ignore.split("]", 1)[0]
    assert _ruff_s608(*CODE, cwd=ROOT) == []
    (tmp_path / "bad.py").write_text(
        "def q(db, name):\n"
        "    return db.execute(f\"SELECT * FROM postings WHERE external_id = '{name}'\")\n"
        "def r(db, name):\n"
        "    return db.execute(\"DELETE FROM postings WHERE erp_id = '%s'\" % name)\n")
    assert _ruff_s608("bad.py", cwd=tmp_path) == [("bad.py", 2), ("bad.py", 4)]
