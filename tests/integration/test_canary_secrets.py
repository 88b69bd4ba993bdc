"""S16: canary secrets never leave the secret settings. Every secret setting of a whole stack
(both webhook secrets, the usage intake's token, each platform's credentials from a file, the
environment and the config file, the audit key, the broker's role seeds) holds a unique canary
value; traffic runs through it, including an ERP outage, refused webhooks, a refused usage
call and a dead letter; then every output is searched: the gateway's log, GET /metrics, the
status tree, every stored dead letter, `--print-config`, the error bodies, and the CLI's
answers. Not one canary may appear."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from actors.infra import NatsBus, OutMsg
from gateway.stack import Stack

from .conftest import signed

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
            outputs["dlq stream"] = "\n".join(
                m.data.decode(errors="replace") for m in await bus.scan(
                    stack.subjects.dlq_stream))
        finally:
            await bus.close()

        cli_env = {**env, "PATH": "/usr/bin:/bin"}
        for name, args in [
            ("print-config", ["up", "--config", str(stack.gateway_config()), "--print-config"]),
            ("dlq ls", ["dlq", "ls", "--all", "--json", "--config", str(stack.gateway_config()),
                        "--data-dir", str(stack.data_dir)]),
            ("audit verify", ["audit", "verify", "--config", str(stack.gateway_config()),
                              "--data-dir", str(stack.data_dir)]),
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
    # Controls: the outputs searched are the real ones (the letter is listed, the secrets
    # configured are shown masked).
    assert "contract" in outputs["cli dlq ls"]
    assert "***" in outputs["cli print-config"]
