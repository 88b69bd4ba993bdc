"""Process roles (``erpgw up --roles``, docs/scale-out.md "Process roles"): two gateway
processes on one broker, one running the webhook ingress and the billing lane, the other the
synchronous lane, the revenue half, usage, the commercial lane and the close. Each runs only
its roles' actors (and the ones every process runs); the webhook port is served only where
``ingress`` runs; and a bill run with amendments, credit memos and payments plus a usage run
through the split ends with every document posted once and every revenue line once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from gateway.app import PROCESS_ROLES
from gateway.commands.up import ROLE_NAMES
from gateway.config import ScaleOutConfig, load_config
from gateway.stack import Stack
from gateway.usage_demo import run_usage
from sim._billing import BillRunOptions

from .test_payment_flow import assert_exactly_once, at_rest, wait_money
from .test_revenue_flow import assert_revenue_billed

FRONT = "ingress,billing"
BACK = "sync,revenue,usage,commercial,close"


def test_the_role_names_agree_everywhere() -> None:
    literal = msgspec.inspect.type_info(ScaleOutConfig).fields  # type: ignore[attr-defined]
    (roles,) = [f for f in literal if f.name == "roles"]
    assert set(roles.type.item_type.values) == set(ROLE_NAMES) == set(PROCESS_ROLES)
    assert ROLE_NAMES == tuple(PROCESS_ROLES)
    assert set(FRONT.split(",")) | set(BACK.split(",")) == set(ROLE_NAMES)


def test_roles_come_from_the_config_file_or_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[scale_out]\nroles = ["ingress", "billing"]\n')
    cfg = load_config(path, env={})
    assert cfg.runs("billing") and not cfg.runs("revenue")
    cfg = load_config(None, env={"ERPGW_SCALE_OUT_ROLES": "revenue,close"})
    assert cfg.runs("close") and not cfg.runs("ingress")
    assert load_config(None, env={}).runs("ingress")  # no roles: every role


async def children(admin_url: str) -> set[str]:
    async with aiohttp.ClientSession() as s, s.get(f"{admin_url}/status") as r:
        doc: dict[str, Any] = msgspec.json.decode(await r.read())
    return {c["name"] for c in doc["actors"]["children"]}


async def refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/webhooks/billing"):
            return False
    except aiohttp.ClientConnectionError:
        return True


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_a_split_deployment_posts_every_document_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path, ack_wait_s=2.0, seed=41, gateways=2, roles=(FRONT, BACK),
                  gateway_toml="[payments]\npark_recheck_s = 0.25\n")
    await stack.start()
    try:
        front, back = await children(stack.admin_urls()[0]), await children(
            stack.admin_urls()[1])
        owned = {c: r for r, cs in PROCESS_ROLES.items() for c in cs}
        everywhere = (front | back) - set(owned)
        assert everywhere and everywhere <= front & back  # audit, limiter, metrics, …
        assert {owned[c] for c in front - everywhere} == set(FRONT.split(","))
        assert {owned[c] for c in back - everywhere} == set(BACK.split(","))
        # the webhook port: served by the front process only
        assert not await refused(stack.gateway_urls()[0])
        assert await refused(stack.gateway_urls()[1])

        opts = BillRunOptions(credit_memo_rate=0.3, payment_rate=0.7)
        await stack.bill_run(160, rate=200, amend_rate=0.4, reorder_amendments=0.5,
                             credit_memo_rate=0.3, payment_rate=0.7)
        await wait_money(stack, 160, opts)
        usage = await run_usage(stack, 240, seed=5, stall_timeout=90)
        assert usage["drained"] and usage["lost"] == 0 and usage["duplicates"] == 0, usage
        assert usage["amount_ok"], usage
        a = await at_rest(stack)
        assert_exactly_once(a)
        assert a["order_violations"] == 0 and a["amended"] > 0
        assert a["amount_posted_latest"] == a["amount_issued"] == a["amount_posted"]
        assert_revenue_billed(await stack.wait_revenue(stall_timeout=45))
        assert await stack.dead_letters() == []
        # one process runs the ingress: the webhooks go straight to it, no proxy between
        assert stack.proxy is None and stack.gateway_url == stack.gateway_urls()[0]
    finally:
        await stack.close()
