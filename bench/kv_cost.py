"""What the shared guards cost per event: ``python -m bench.kv_cost [--events N] [--json]``.

One embedded nats-server (``sync_interval: always``, as the gateway runs it), one connection,
the same machine and run for every leg, batches of ``--batch`` as the ERP poster fetches them:

* ``stream``: each event stored once on a stream as the ingress stores a webhook's canonical
  event (``publish_atomic``: one commit, one fsync, per batch), the baseline;
* ``stream_commit``: the same as one atomic commit per batch whatever its size (``stream``
  publishes a batch smaller than ``ATOMIC_FROM`` message by message: with ``--batch 4`` the
  two legs show why);
* ``stream_each``: the same with one fsync per message (``publish_batch``, pipelined), which is
  what each key/value write below costs, since every key is written on its own;
* ``versions``: what the ERP poster adds per posting of an ordered document (an invoice and its
  amendments) since its guard is shared: read the aggregate, claim it conditionally on that
  revision, apply it conditionally on the claim's revision (``actors.infra.state``); each
  batch's claims and each batch's applies are one atomic batch of conditional writes;
* ``versions_each``: the same with every key written on its own (one conditional write, one
  fsync, per key: how the guard wrote before batching, and how it still writes when a batch is
  refused);
* ``uploads``: what the revenue poster adds per line: read, claim, mark uploaded (batched as
  ``versions``).

Reported per leg: wall µs per event and the ratio to ``stream``. The ratio, not the absolute
figure, is the result (a loaded machine moves both legs alike).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from actors.infra.bus import NatsBus, OutMsg, StreamSettings
from actors.infra.kv import KvBucket, allow_atomic_writes, bucket_config
from actors.infra.ledger import VersionMark
from actors.infra.state import SharedUploads, SharedVersions
from gateway.broker import EmbeddedBroker, free_port


async def _legs(events: int, batch: int, workdir: Path) -> dict[str, float]:
    broker = EmbeddedBroker(workdir / "nats", port=free_port())
    await broker.start()
    bus = await NatsBus.connect(broker.url, name="erpgw-bench-kv")
    try:
        await bus.ensure_stream("BENCH_EVENTS", ["bench.evt.>"], StreamSettings())
        for name in ("bench_versions", "bench_versions_each", "bench_uploads"):
            await bus.ensure_kv(bucket_config(name, replicas=1))
            await allow_atomic_writes(bus.jetstream, name)
        versions = SharedVersions(KvBucket.on(bus, "bench_versions"))
        versions_each = SharedVersions(KvBucket.on(bus, "bench_versions_each", atomic=False))
        uploads = SharedUploads(KvBucket.on(bus, "bench_uploads"), owner="bench")
        out: dict[str, float] = {}

        t0 = time.perf_counter()
        for i in range(0, events, batch):
            await bus.publish_atomic([OutMsg(subject="bench.evt.x", data=b"x" * 300,
                                             msg_id=f"a{n}") for n in range(i, i + batch)])
        out["stream"] = (time.perf_counter() - t0) / events * 1e6

        t0 = time.perf_counter()
        for i in range(0, events, batch):  # an atomic commit whatever the batch's size
            await bus._atomic_once([OutMsg(subject="bench.evt.x", data=b"x" * 300,
                                           msg_id=f"c{n}") for n in range(i, i + batch)],
                                   timeout=None)
        out["stream_commit"] = (time.perf_counter() - t0) / events * 1e6

        t0 = time.perf_counter()
        for i in range(0, events, batch):
            await bus.publish_batch([OutMsg(subject="bench.evt.x", data=b"x" * 300,
                                            msg_id=f"e{n}") for n in range(i, i + batch)])
        out["stream_each"] = (time.perf_counter() - t0) / events * 1e6

        for name, guard in (("versions", versions), ("versions_each", versions_each)):
            t0 = time.perf_counter()
            for i in range(0, events, batch):
                aggs = [("billing", f"in_{n}") for n in range(i, i + batch)]
                seen = await guard.read(aggs)
                marks = [VersionMark(s, o, 1, b"{}" * 100, time.time()) for s, o in aggs]
                lost, claimed = await guard.claim([(m, seen[(m.source, m.object_id)])
                                                   for m in marks])
                assert not lost
                await guard.apply(marks, claimed=claimed)
            out[name] = (time.perf_counter() - t0) / events * 1e6

        t0 = time.perf_counter()
        for i in range(0, events, batch):
            ids = [f"in_{n}:il_1" for n in range(i, i + batch)]
            uploads.forget_seen()
            await uploads.read("revenue", ids)
            assert not await uploads.claim("revenue", ids, f"a{i}", time.time())
            await uploads.mark("revenue", ids, "uploaded", f"a{i}", time.time())
        out["uploads"] = (time.perf_counter() - t0) / events * 1e6
        return out
    finally:
        await bus.close()
        await broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kv_cost", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--events", type=int, default=2000, help="events per leg (2000)")
    ap.add_argument("--batch", type=int, default=100, help="events per batch (100)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    if args.events < args.batch or args.events % args.batch:
        print("bench.kv_cost: --events must be a multiple of --batch", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="erpgw-kv-") as tmp:
        legs = asyncio.run(_legs(args.events, args.batch, Path(tmp)))
    doc = {"events": args.events, "batch": args.batch,
           "us_per_event": {k: round(v, 1) for k, v in legs.items()},
           "ratio_to_stream": {k: round(v / legs["stream"], 2) for k, v in legs.items()}}
    if args.json:
        print(json.dumps(doc))
    else:
        for k, v in legs.items():
            print(f"{k:12s} {v:8.1f} µs/event  {v / legs['stream']:6.2f}x the atomic stream write")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
