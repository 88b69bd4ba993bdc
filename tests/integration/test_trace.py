"""``erpgw trace`` against a drained run: the path of one invoice, in order, with its outcome
(the ERP posting and the revenue platform's lines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_trace_follows_an_invoice_to_the_ledger(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=41)
    await stack.start()
    try:
        await stack.bill_run(30)
        assert (await stack.wait_drained(30, stall_timeout=30)).lost == 0

        def trace(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "gateway", "trace", "--nats-url", stack.url,
                 "--data-dir", str(tmp_path / "gateway"), *args],
                capture_output=True, text=True, timeout=60, check=False)

        r = trace("in_000007", "--json")
        assert r.returncode == 0, r.stderr
        t = msgspec.json.decode(r.stdout)
        assert t["outcome"] == "posted"
        assert t["keys"] == ["billing:in_000007:v1"]
        steps = [(h["system"], h["step"]) for h in t["hops"]]
        assert steps[0] == ("billing", "occurred")
        stored = [h for h in t["hops"] if h["step"] == "stored"]
        assert [h["subject"].split(".")[2] for h in stored] == ["evt", "cmd"]
        assert stored[1]["caused_by"] == stored[0]["message_id"]  # causation chain
        # both halves of flow 2: the ERP posting and each line at the revenue platform
        assert ("erp", "created") in steps
        revenue = [h for h in t["hops"] if h["system"] == "revenue"]
        assert revenue and all(h["step"] == "uploaded" for h in revenue)
        assert all(h["detail"].startswith("line in_000007:") for h in revenue)
        times = [h["at"] for h in t["hops"]]
        assert times == sorted(times)
        # the same transaction found by its correlation id, and printed for people
        by_corr = trace(t["correlation_ids"][0])
        assert by_corr.returncode == 0 and "outcome: posted" in by_corr.stdout
        assert "in_000007" in by_corr.stdout
        unknown = trace("in_999999")
        assert unknown.returncode == 1 and "nothing known" in unknown.stdout
        # W3C trace context travels in the NATS headers too, one trace per transaction
        from actors.infra import NatsBus
        from contracts import Envelope, MsgpackCodec, Subjects

        codec: MsgpackCodec[Envelope] = MsgpackCodec(Envelope)
        bus = await NatsBus.connect(stack.url, auth=stack.auth())
        try:
            stored = await bus.scan(Subjects().stream("billing"))
        finally:
            await bus.close()
        assert len(stored) == 60  # 30 invoice events + 30 journal commands
        traces: dict[str, set[str]] = {}
        for m in stored:
            env = codec.decode(m.data)
            assert m.headers["traceparent"] == env.traceparent
            traces.setdefault(env.correlation_id, set()).add(env.traceparent.split("-")[1])
        assert len(traces) == 30 and all(len(t) == 1 for t in traces.values())
    finally:
        await stack.close()


async def test_trace_of_a_paid_invoice_follows_payment_commission_and_settlement(
        tmp_path: Path) -> None:
    """Tracing an invoice pulls in the transactions that reference it: its payment (cash
    application), the partner's commission and the settlement (portal + ERP payable)."""
    import anyio

    stack = Stack(tmp_path, ack_wait_s=2.0, seed=42)
    await stack.start()
    try:
        await stack.bill_run(30, payment_rate=1.0)
        assert (await stack.wait_drained(30, stall_timeout=30)).lost == 0
        with anyio.fail_after(60):
            while True:
                audit = await stack.audit()
                s, paid = audit["settlements"], audit["payment_postings"]
                if (s["expected"] and s["payables"] == s["expected"]
                        and paid["issued"] and paid["posted"] == paid["issued"]):
                    break
                await anyio.sleep(0.3)
        settled = None
        for i in range(1, 31):
            r = await anyio.run_process(
                [sys.executable, "-m", "gateway", "trace", "--nats-url", stack.url,
                 "--data-dir", str(tmp_path / "gateway"), f"in_{i:06d}", "--json"],
                check=False)
            assert r.returncode == 0, r.stderr.decode()
            t = msgspec.json.decode(r.stdout)
            if any(h["step"] == "settled" for h in t["hops"]):
                settled = t
                break
        assert settled is not None, "no traced invoice shows its settlement"
        details = [h["detail"] for h in settled["hops"]]
        assert any(d.startswith("payment.received.v1") for d in details)
        assert any(d.startswith("partner.commission.accrued.v1") for d in details)
        assert any(d.startswith("partner.settlement.issued.v1") for d in details)
        erp = [h["detail"] for h in settled["hops"] if h["system"] == "erp"]
        assert any("external id in_" in d for d in erp)  # the AR posting
        assert any("external id py_" in d for d in erp)  # the cash application
        (line,) = [h for h in settled["hops"] if h["step"] == "settled"]
        assert line["system"] == "partner" and "ERP payable" in line["detail"]
        assert len(settled["correlation_ids"]) >= 2  # several transactions, one trace
    finally:
        await stack.close()
