"""``erpgw sim``: the platform simulator as a standalone service."""

from __future__ import annotations

import argparse
import logging
import signal

import anyio

from ._common import LOG_LEVELS, run_async


def cmd_sim(args: argparse.Namespace) -> int:
    import sim

    from ..logs import setup_logging

    setup_logging(args.log_level, json=args.log_json)
    cfg = sim.SimConfig(host=args.host, port=args.port, webhook_url=args.webhook_url,
                        webhook_secret=args.webhook_secret, seed=args.seed,
                        delivery_concurrency=args.concurrency)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            ready = anyio.Event()

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
                    async for _ in sigs:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            tg.start_soon(lambda: sim.serve(cfg, ready=ready))
            await ready.wait()
            logging.getLogger("erpgw.sim").info(
                "simulator on http://%s:%d (billing, ERP); webhooks to %s", cfg.host, cfg.port,
                cfg.webhook_url)

    run_async(main)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sm = sub.add_parser("sim", help="run the platform simulator (billing and ERP over HTTP)",
                        description="Run the simulated billing platform and ERP as HTTP "
                                    "services on one port. Start a bill run with "
                                    "POST /billing/v1/bill-runs {\"invoices\": N, \"rate\": R}; "
                                    "read the ground truth at GET /sim/v1/audit.")
    sm.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sm.add_argument("--port", type=int, default=8700, help="listen port (default 8700)")
    sm.add_argument("--webhook-url", default="http://127.0.0.1:8600/webhooks/billing",
                    help="where billing webhooks are delivered (default the gateway's)")
    sm.add_argument("--webhook-secret", default="whsec_demo",
                    help="webhook signing secret (default whsec_demo)")
    sm.add_argument("--seed", type=int, default=7, help="seed for invoices and faults (7)")
    sm.add_argument("--concurrency", type=int, default=32,
                    help="concurrent webhook deliveries (default 32)")
    sm.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    sm.add_argument("--log-json", action="store_true", help="JSON log lines")
    sm.set_defaults(func=cmd_sim)
