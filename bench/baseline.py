"""Run one baseline in its own process: ``python -m bench.baseline KIND CONFIG_JSON``.

Each baseline gets a process of its own, as the gateway has, so its CPU time and peak RSS are
its own and nothing of the bench's driver shares its event loop. KIND is ``raw_hop``, ``b1``,
``b2``, ``b1w``, ``b2w``, ``b2wl`` (``bench._webhook``), ``peer`` or ``peerw``; CONFIG_JSON holds
the fields of ``BaselineConfig``. The figures dict is printed as one JSON line on stdout; logs go
to stderr. Exit code 0 when the run completed, 1 when it did not (the figures still say how
far it got), 3 when the kind is unavailable (the JSON then says why, e.g. FastStream not
installed).

The process runs with the gateway daemon's garbage-collector settings (``[runtime]``
defaults, ``gateway.gc_tuning``): a runtime setting any Python service can take, so it is
not part of what a ratio compares. Measured: b2wl's CPU per event is about a tenth lower
with them, as the gateway's is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from gateway import gc_tuning
from gateway.config import RuntimeConfig

from ._raw import BaselineConfig, run_raw_hop, run_raw_path
from ._webhook import WEBHOOK_KINDS, run_webhook_path

__all__ = ["KINDS", "main", "run_kind"]

KINDS = ("raw_hop", "b1", "b2", "b1w", "b2w", "b2wl", "peer", "peerw")


async def run_kind(kind: str, cfg: BaselineConfig) -> dict[str, Any]:
    if kind == "raw_hop":
        return await run_raw_hop(cfg)
    if kind in ("b1", "b2"):
        return await run_raw_path(cfg, kind)
    if kind in WEBHOOK_KINDS:
        return await run_webhook_path(cfg, kind)
    if kind == "peer":
        try:
            from .peers.faststream_path import run_peer
        except ImportError as exc:
            return {"kind": "peer", "available": False,
                    "reason": f"FastStream is not installed ({exc.name or exc}); "
                              "pip install -e '.[peer]'"}
        return await run_peer(cfg)
    if kind == "peerw":
        try:
            from .peers.fastapi_path import run_webhook_peer
        except ImportError as exc:
            return {"kind": "peerw", "available": False,
                    "reason": f"FastAPI, uvicorn or FastStream is not installed "
                              f"({exc.name or exc}); pip install -e '.[peer]'"}
        return await run_webhook_peer(cfg)
    raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(KINDS)}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in KINDS:
        print(f"usage: python -m bench.baseline {{{'|'.join(KINDS)}}} CONFIG_JSON",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = json.loads(args[1])
    doc["box_pids"] = tuple(doc.get("box_pids") or ())
    cfg = BaselineConfig(**doc)
    runtime = RuntimeConfig()  # the gateway's defaults (``erpgw up``)
    gc_tuning.set_thresholds(runtime)
    gc_tuning.freeze_started(runtime)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        out = asyncio.run(run_kind(args[0], cfg))
    else:
        out = uvloop.run(run_kind(args[0], cfg))
    print(json.dumps(out), flush=True)
    if not out.get("available", True):
        return 3
    return 0 if out.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
