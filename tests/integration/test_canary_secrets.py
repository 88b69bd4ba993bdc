"""S16: canary secrets never leave the secret settings. Every secret setting of a whole stack
(both webhook secrets, the usage intake's token, each platform's credentials from a file, the
environment and the config file, the audit key, the broker's role seeds) holds a unique canary
value; traffic runs through it, including an ERP outage, refused webhooks, a refused usage
call and a dead letter; then every output is searched: the gateway's log, GET /metrics, the
status tree, every stored dead letter, `--print-config`, the error bodies, and the CLI's
answers. Not one canary may appear.

S17 on the same run: canary personal data (a name, an e-mail address, a postal address, a
phone number, a tax id, an IBAN) rides in the personal fields of signed webhooks — an invoice's
customer fields and a deal's prospect, accepted and refused ones — and in two messages that
are dead-lettered (a customer record and a registered deal where the deal saga expects an
approval). The same outputs are searched for it (the dead letters' reasons, paths and keys;
`dlq ls` and `dlq show`, which masks personal fields): nothing. Only the letters' stored
bytes keep it, by design (a replay re-sends what arrived), and `dlq show --reveal` shows it,
which proves the search looks where the data would be."""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest

from actors.infra import NatsBus, OutMsg
from contracts import BusinessKey, CustomerUpserted, DealRegistered, MsgpackCodec, make_envelope
from contracts import Envelope as _Envelope
from contracts.platforms.partner import DEAL_SIGNATURE_HEADER, DealEvent, DealEventData
from contracts.platforms.signing import sign
from gateway.stack import Stack
from sim._deals import generate_deal

from .conftest import billing_event, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CANARY = {
    "billing_webhook": "whsec_CANARY_billing_6f1d2c",
    "partner_webhook": "whsec_CANARY_partner_93ab1e",
    "usage_token": "CANARY-usage-token-51c0aa",
    "erp_token": "CANARY-erp-bearer-from-file-7d22",
    "revenue_password": "CANARY-revenue-basic-env-0e9f",
    "cpq_token": "CANARY-cpq-bearer-in-config-44aa",
    "partner_token": "CANARY-partner-bearer-env-8b1c",
    "audit_key": "CANARY-audit-key-0123456789abcdef0123456789abcdef",
}

# Canary personal data, and the fragments of it that a partial leak would still show
# (a masked value keeps at most its first or last two characters, and an e-mail's domain).
PII = {
    "name": "Philippa Canarywood",
    "email": "philippa.canarywood@example.net",
    "address": "42 Quillfeather Mews, Eastbridge EB4 2QQ",
    "phone": "+44 20 7946 0958",
    "tax_id": "GB-CANARY-981276",
    "iban": "GB94BARC10201530093459",
}
PII_FRAGMENTS = ["canarywood", "quillfeather", "eastbridge", "7946 0958", "981276",
                 "10201530093459"]


def _pii_leaks(text: str) -> list[str]:
    low = text.lower()
    return [f for f in PII_FRAGMENTS if f in low]


def _invoice_with_pii(n: int, *, total_delta: int = 0) -> bytes:
    """A billing webhook whose invoice carries the customer's personal fields (the names a
    billing platform such as Stripe gives them; the gateway's contract does not read them)."""
    doc = msgspec.to_builtins(billing_event(n, total_delta=total_delta))
    doc["data"]["object"] |= {
        "customer_name": PII["name"], "customer_email": PII["email"],
        "customer_address": {"line1": PII["address"], "country": "GB"},
        "customer_phone": PII["phone"], "customer_tax_ids": [{"value": PII["tax_id"]}],
        "payment_settings": {"iban": PII["iban"]}}
    return msgspec.json.encode(doc)


def _deal_with_pii(index: int, deal_id: str | None = None) -> bytes:
    """A registered deal whose prospect is a person, with their contact details."""
    deal = msgspec.structs.replace(generate_deal(71, index, int(time.time())),
                                   prospect_name=PII["name"])
    doc = msgspec.to_builtins(DealEvent(id=f"evt_pii_deal_{index}", type="deal.registered",
                                        created=int(time.time()),
                                        data=DealEventData(object=deal)))
    doc["data"]["object"] |= {"contactEmail": PII["email"], "contactAddress": PII["address"],
                              "contactPhone": PII["phone"], "iban": PII["iban"]}
    if deal_id is not None:
        doc["data"]["object"]["id"] = deal_id
    return msgspec.json.encode(doc)


async def test_no_canary_secret_appears_in_any_output(tmp_path: Path) -> None:
    erp_token_file = tmp_path / "erp.token"
    erp_token_file.write_text(CANARY["erp_token"] + "\n")
    erp_token_file.chmod(0o600)
    toml = (
        f'[erp.auth]\ntype = "bearer"\ntoken_file = "{erp_token_file}"\n'
        '[revenue.auth]\ntype = "basic"\nusername = "gw"\npassword_env = "CANARY_REV_PW"\n'
        f'[cpq.auth]\ntype = "bearer"\ntoken = "{CANARY["cpq_token"]}"\n'
        '[partner.auth]\ntype = "bearer"\ntoken_env = "CANARY_PARTNER_TOKEN"\n'
        '[audit]\nanchor_interval_s = 0.5\n')
    env = {"ERPGW_PARTNER_WEBHOOK_SECRETS": CANARY["partner_webhook"],
           "ERPGW_USAGE_API_TOKENS": CANARY["usage_token"],
           "CANARY_REV_PW": CANARY["revenue_password"],
           "CANARY_PARTNER_TOKEN": CANARY["partner_token"],
           "ERPGW_AUDIT_KEY": CANARY["audit_key"]}
    stack = Stack(tmp_path / "stack", ack_wait_s=2.0, seed=71, gateway_toml=toml,
                  webhook_secret=CANARY["billing_webhook"], gateway_env=env)
    outputs: dict[str, str] = {}
    await stack.start()
    try:
        # The broker's role seeds are secrets too (real ones, not planted).
        seeds = {f"seed:{p.stem}": p.read_text().strip()
                 for p in sorted(stack.identities_dir.glob("*.nk"))}
        assert len(seeds) >= 10
        canaries = {**CANARY, **seeds}

        # Normal traffic, signed with the canary webhook secret.
        await stack.bill_run(20)
        ok = await stack.wait_drained(20, stall_timeout=60)
        assert ok.drained and ok.lost == 0

        # A platform outage: the ERP answers 503 until it is back.
        await stack.set_faults({"erp": {"outage": True}})
        await stack.bill_run(5)
        await stack.wait_injected("erp", "outage", 3)
        await stack.set_faults({})
        back = await stack.wait_drained(25, stall_timeout=60)
        assert back.drained and back.lost == 0

        # Refused input; each error body is an output.
        base = stack.gateway_url
        async with aiohttp.ClientSession() as s:
            body = b'{"id": "evt_canary_1"}'
            for name, url, headers in [
                ("wrong secret", f"{base}/webhooks/billing", signed(body, secret="whsec_wrong")),
                ("no signature", f"{base}/webhooks/billing", {}),
                ("partner wrong secret", f"{base}/webhooks/partner", signed(body, secret="nope")),
                ("usage bad token", f"{base}/usage/v1/records",
                 {"Authorization": "Bearer " + CANARY["usage_token"][:-1] + "X"}),
                ("signed garbage", f"{base}/webhooks/billing",
                 signed(b"not json", secret=CANARY["billing_webhook"])),
            ]:
                async with s.post(url, data=body if "garbage" not in name else b"not json",
                                  headers=headers) as r:
                    assert 400 <= r.status < 500, (name, r.status)
                    outputs[f"error body: {name}"] = await r.text()
            # Personal data in the webhooks' personal fields: accepted, and refused (an
            # invoice whose lines do not sum to its total; a deal whose id could leave its
            # URL path segment).
            for name, pii_body, accepted in [
                ("invoice with PII", _invoice_with_pii(900_001), True),
                ("deal with PII", _deal_with_pii(1), True),
                ("refused invoice with PII", _invoice_with_pii(900_002, total_delta=1), False),
                ("refused deal with PII", _deal_with_pii(2, deal_id="../dl_2"), False),
            ]:
                if "deal" in name:
                    url = f"{base}/webhooks/partner"
                    sig = {DEAL_SIGNATURE_HEADER: sign(CANARY["partner_webhook"], pii_body,
                                                       int(time.time())),
                           "Content-Type": "application/json"}
                else:
                    url = f"{base}/webhooks/billing"
                    sig = signed(pii_body, secret=CANARY["billing_webhook"])
                async with s.post(url, data=pii_body, headers=sig) as r:
                    assert (r.status < 300) == accepted and r.status < 500, (name, r.status)
                    outputs[f"answer: {name}"] = await r.text()
            for path in ("/metrics", "/status"):  # the admin listener's
                async with s.get(stack.admin_url + path) as r:
                    assert r.status == 200, (path, r.status)
                    outputs[path] = await r.text()

        # A dead letter: a message the router cannot read, on the billing lane.
        bus = await NatsBus.connect(stack.url, auth=stack.auth("admin"))
        try:
            await bus.publish(OutMsg(stack.subjects.invoice_issued, b"\x00 not an envelope",
                                     msg_id="canary-poison"))
            with anyio.fail_after(60):  # a guard against a hang, not a speed target
                while not [d for d in await stack.dead_letters()
                           if d.code.startswith("contract")]:
                    await anyio.sleep(0.2)
            # Personal data in dead letters: a customer record and a registered deal where the
            # deal saga expects an approval (route.unexpected_type).
            codec: MsgpackCodec[_Envelope] = MsgpackCodec(_Envelope)
            for n, payload in enumerate([
                    CustomerUpserted(customer_id="cus_pii_1", name=PII["name"], country="GB",
                                     currency="GBP", tax_id=PII["tax_id"],
                                     billing_email=PII["email"]),
                    DealRegistered(deal_id="dl_pii_1", partner_id="pt_0001",
                                   prospect_name=PII["name"], currency="GBP",
                                   estimated_amount=1000, expected_close=date(2030, 1, 1),
                                   registered_at=datetime.now(UTC))]):
                letter = make_envelope(payload, source="partner", key=BusinessKey(
                    source="partner", object_id=f"pii_{n}", version=1))
                await bus.publish(OutMsg(stack.subjects.for_type("deal.approved.v1"),
                                         codec.encode(letter), msg_id=f"canary-pii-{n}"))
            with anyio.fail_after(60):  # a guard against a hang, not a speed target
                while len([d for d in await stack.dead_letters()
                           if d.code == "route.unexpected_type"]) < 2:
                    await anyio.sleep(0.2)
            outputs["dlq stream"] = "\n".join(
                m.data.decode(errors="replace") for m in await bus.scan(
                    stack.subjects.dlq_stream))
            letters = await stack.dead_letters()
            outputs["dlq reasons"] = "\n".join(
                f"{d.code} {d.reason} {d.path} {d.business_key} {d.platform_response}"
                for d in letters)
        finally:
            await bus.close()

        cli_env = {**env, "PATH": "/usr/bin:/bin"}
        for name, args in [
            ("print-config", ["up", "--config", str(stack.gateway_config()), "--print-config"]),
            ("dlq ls", ["dlq", "ls", "--all", "--json", "--config", str(stack.gateway_config()),
                        "--data-dir", str(stack.data_dir)]),
            ("audit verify", ["audit", "verify", "--config", str(stack.gateway_config()),
                              "--data-dir", str(stack.data_dir)]),
            *[(f"dlq show {seq}{' --reveal' * reveal}",
               ["dlq", "show", str(seq), *(["--reveal"] * reveal), "--json", "--config",
                str(stack.gateway_config()), "--data-dir", str(stack.data_dir)])
              for seq in await _pii_letter_seqs(stack) for reveal in (False, True)],
        ]:
            with anyio.fail_after(60):
                run = await anyio.run_process([sys.executable, "-m", "gateway", *args],
                                              env=cli_env, check=False)
            outputs[f"cli {name}"] = (run.stdout + run.stderr).decode(errors="replace")
            assert run.returncode == 0, (name, outputs[f"cli {name}"])
    finally:
        await stack.close()
    outputs["gateway.log"] = (stack.workdir / "gateway.log").read_text()
    assert "breaker" in outputs["gateway.log"] or "503" in outputs["gateway.log"]
    assert "contract" in outputs["dlq stream"]
    leaks = [(what, where) for where, text in outputs.items()
             for what, value in canaries.items() if value in text]
    assert leaks == []
    # S17: no personal data in any output but the letters' own bytes and what --reveal shows.
    pii_leaks = [(where, _pii_leaks(text)) for where, text in outputs.items()
                 if where != "dlq stream" and "--reveal" not in where and _pii_leaks(text)]
    assert pii_leaks == []
    revealed = [text for where, text in outputs.items() if "--reveal" in where]
    assert len(revealed) == 2 and all(PII["name"] in text for text in revealed)
    shown = [text for where, text in outputs.items()
             if where.startswith("cli dlq show") and "--reveal" not in where]
    assert len(shown) == 2 and all("***" in text for text in shown)
    # Controls: the outputs searched are the real ones (the letter is listed, the secrets
    # configured are shown masked).
    assert "contract" in outputs["cli dlq ls"]
    assert "***" in outputs["cli print-config"]


async def _pii_letter_seqs(stack: Stack) -> list[int]:
    """The DLQ sequences of the two letters carrying personal data."""
    bus = await NatsBus.connect(stack.url, auth=stack.auth("operator"))
    try:
        return [m.seq for m in await bus.scan(stack.subjects.dlq_stream,
                                              subject=stack.subjects.dlq_letters)
                if b"route.unexpected_type" in m.data]
    finally:
        await bus.close()
