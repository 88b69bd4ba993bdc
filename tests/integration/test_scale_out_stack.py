"""The scale-out harness: a 3-node cluster and two gateway processes behind one webhook address.
Checked here: the harness itself (the webhooks reach both processes through the proxy, both
share the consumers' work, the streams have three replicas) and the one flow that needs no
shared state, postings of never-amended invoices, each once. The flows whose guards are still
per process (amendments, parked payments, subscription changes, revenue/usage uploads) are
not claimed here (docs/scale-out.md)."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from actors.infra.bus import server_list
from gateway.stack import Stack

pytestmark = pytest.mark.integration


async def test_two_gateways_on_a_cluster_share_the_work_and_post_each_invoice_once(
        tmp_path: Path) -> None:
    stack = Stack(tmp_path, seed=21, cluster=3, gateways=2)
    try:
        await stack.start()
        assert stack.proxy is not None and len(stack.gateway_urls()) == 2
        await stack.bill_run(300, rate=0)
        result = await stack.wait_drained(300, stall_timeout=90)
        shares = await stack.work_shares()
        nc = await nats.connect(server_list(stack.url), **stack.nats_options("admin"))
        try:
            info = await nc.jetstream().stream_info(stack.subjects.stream("billing"))
        finally:
            await nc.close()
    finally:
        await stack.close()
    a = result.audit
    assert result.drained and result.quiet
    assert a["issued"] == a["accepted"] == a["posted"] == 300
    assert result.lost == 0 and a["duplicates"] == 0 and a["unexpected"] == 0
    assert a["amount_posted"] == a["amount_issued"]
    assert info.config.num_replicas == 3
    assert [w["up"] for w in shares] == [True, True]
    assert all(w["webhooks"] > 0 for w in shares)  # the proxy spread the webhooks
    assert sum(w["webhooks"] for w in shares) >= 300
    assert all(w["processed"] > 0 for w in shares)  # both fetched from the shared consumers
