"""``erpgw sim``: the platform simulator as a standalone service, and ``erpgw sim audit``."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import anyio

from ._common import LOG_LEVELS, run_async

DEFAULT_URL = "http://127.0.0.1:8700"

SCENARIO_HELP = """\
scenario files (--scenario FILE, TOML; every table and key is optional, times are seconds
since the simulator started; validate one with --check):

  name = "month-end"
  description = "what this rehearses"
  billing_dialect = "stripe"   # erpgw (default) | stripe; --billing-dialect wins
  seed = 2025                     # used unless --seed is given

  [faults]                        # applied at start, exactly like PUT /sim/v1/faults
  billing = { duplicate_rate = 0.05 }
  erp = { latency_ms = 20 }       # the journal-entry bulk endpoint
  revenue = { error_rate = 0.05 } # every revenue route; cpq = {...}: every CPQ route

  [[bill_run]]                    # workload: a bill run fired at at_s
  at_s = 1
  invoices = 6000
  rate = 100                      # invoices/s (0 = all at once)
  # amend_rate = 0.1                opt-in: that share gets a v2 (invoice.updated event)
  # reorder_amendments = 0.5        opt-in: that share of the v2 is delivered before v1
  # credit_memo_rate = 0.1          opt-in: credit_note.created webhooks after acceptance
  # payment_rate = 0.5              opt-in: invoice.paid webhooks after acceptance

  [[http]]                        # HTTP faults on an endpoint for a time window
  service = "erp"                 # erp | billing | revenue | cpq
  endpoint = "*"                  # erp: journal-entries.bulk, journal-entries, gl.balances,
                                  #   periods, governance; billing: bill-runs, events;
                                  #   revenue: batches; cpq: products, price; * = all
  at_s = 60
  for_s = 20
  outage = true                   # 503 for every request
  # latency_ms = 50                 fixed delay, plus a distribution:
  # latency = { dist = "lognormal", p50_ms = 40, p99_ms = 600 }   (or fixed ms / uniform
  #                                 min_ms max_ms)
  # error_rate = 0.1                that share fails with `status` (503), or by weights:
  # error_mix = { 500 = 1, 502 = 1, 503 = 2 }
  # rate_limit_rate = 0.3           429 storm, with Retry-After: retry_after_s (1)
  # reset_rate = 0.05               TCP reset before anything is done
  # commit_then_timeout_rate = 0.02 commits, then stalls 30 s (the caller times out)
  # commit_then_reset_rate = 0.02   commits, then resets the connection
  # silent_drop_rate = 0.001        (bulk) answers created, records nothing (an ERP bug)
  # item_reject_rate = 0.01         (bulk) that share of items is rejected VALIDATION;
  #                                 (revenue batches) that share of lines: the batch is 422
  # alter_amount_rate = 0.01        (bulk) that share is recorded with another amount than
  #                                 sent (a platform bug or manual edit; for the reconciler)

  [[webhooks]]                    # billing webhook faults for events issued in a window
  at_s = 0
  for_s = 300
  duplicate_rate = 0.1            # 2..duplicate_max (3) deliveries, a share
                                  #   (duplicate_concurrent_rate, 0.5) at the same moment
  # reorder_window = 16             shuffle delivery order within windows of 16 events
  # replay_rate = 0.01              re-send the captured request signed replay_age_s (600) ago
  # mangle_rate = 0.01              one badly signed extra delivery; mangle_modes =
  #                                 [wrong_secret, body_byte, header_missing, header_garbled,
  #                                  v0_only]
  # drift_rate = 0.01               one schema-drifted extra delivery; drift_modes =
  #                                 [unknown_field, missing_field, int_to_string,
  #                                  renamed_enum, nested_type_change]

The schedule is logged at start and served at GET /sim/v1/scenario; the fault counts appear in
GET /sim/v1/audit under "faults". Shipped scenarios, usable by name (--scenario month-end):
{shipped}. month-end is a month-end peak of 12,000 invoices with a 20 s ERP outage.
Full reference: docs/simulator.md in the source tree."""


def shipped_scenarios() -> dict[str, Traversable]:
    """The scenario files installed with the simulator, by name (file stem)."""
    # Found without importing the simulator (its web app and HTTP stack): building the CLI
    # parser lists these for every command, ``erpgw --version`` included.
    spec = importlib.util.find_spec("sim")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if not places:
        return {}
    folder = Path(places[0]) / "scenarios"
    if not folder.is_dir():
        return {}
    return {f.name.removesuffix(".toml"): f for f in folder.iterdir()
            if f.name.endswith(".toml")}


def _load(sim_mod: Any, ref: Path) -> Any:
    """A scenario from a file path, or else from a shipped scenario of that name."""
    shipped = shipped_scenarios()
    if not ref.exists() and str(ref) in shipped:
        entry = shipped[str(ref)]
        return sim_mod.parse_scenario(entry.read_bytes(), source=f"shipped scenario {ref}")
    return sim_mod.load_scenario(ref)


def cmd_sim(args: argparse.Namespace) -> int:
    import sim

    from ..logs import setup_logging

    scenario = None
    if args.scenario is not None:
        try:
            scenario = _load(sim, args.scenario)
        except sim.ScenarioError as exc:
            print(f"erpgw: error [scenario.invalid]: {exc}", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else (
        scenario.seed if scenario is not None and scenario.seed is not None else 7)
    if args.check:
        if scenario is None:
            print("erpgw: error: --check needs --scenario FILE", file=sys.stderr)
            return 2
        print("\n".join(scenario.describe()))
        print(f"seed {seed}: OK")
        return 0

    setup_logging(args.log_level, json=args.log_json or os.environ.get(
        "ERPGW_LOG_JSON", "").strip().lower() in ("1", "true", "yes"))
    cfg = sim.SimConfig(host=args.host, port=args.port, webhook_url=args.webhook_url,
                        webhook_secret=args.webhook_secret, seed=seed,
                        delivery_concurrency=args.concurrency, scenario=scenario,
                        erp_max_bulk=args.erp_max_bulk,
                        erp_concurrency_limit=args.erp_concurrency_limit,
                        billing_rate_limit=args.billing_rate_limit,
                        revenue_max_batch=args.revenue_max_batch,
                        cpq_latency_ms=args.cpq_latency_ms,
                        partner_webhook_url=args.partner_webhook_url,
                        partner_webhook_secret=args.partner_webhook_secret,
                        erp_dialect=args.erp_dialect or (
                            scenario.erp_dialect if scenario is not None
                            and scenario.erp_dialect else "erpgw"),
                        netsuite_concurrency_limit=args.netsuite_concurrency_limit,
                        netsuite_latency_ms=args.netsuite_latency_ms,
                        billing_dialect=(args.billing_dialect
                                         or (scenario.billing_dialect if scenario else None)
                                         or "erpgw"),
                        stripe_secret_key=args.stripe_secret_key,
                        tls_cert=args.tls_cert, tls_key=args.tls_key,
                        webhook_ca_file=args.webhook_ca_file)
    try:
        sim.create_app(cfg)  # validate the settings before anything listens
    except ValueError as exc:
        print(f"erpgw: error [config.sim]: {exc}", file=sys.stderr)
        return 2

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
                "simulator on %s://%s:%d (billing, ERP, revenue, CPQ); webhooks to %s; seed %d%s",
                "https" if cfg.tls_cert else "http", cfg.host, cfg.port, cfg.webhook_url, seed,
                f"; scenario {args.scenario}" if scenario is not None else "")

    run_async(main)
    return 0


# -- erpgw sim audit ---------------------------------------------------------------------------


def fetch_audit(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET {url}/sim/v1/audit`` decoded. Raises ``OSError`` when the sim cannot be reached
    or answers something else than a JSON object, ``ValueError`` for a non-http(s) URL."""
    import msgspec

    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must be an http(s) URL, got {url!r}")
    target = url.rstrip("/") + "/sim/v1/audit"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"the simulator at {url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"cannot reach the simulator at {url}: {reason}") from exc
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise OSError(f"the simulator at {url} did not answer JSON") from exc
    if not isinstance(doc, dict) or "issued" not in doc:
        raise OSError(f"{url} does not look like the simulator (no audit report)")
    return doc


def problems(audit: dict[str, Any]) -> list[str]:
    """What the audit shows to be wrong (empty when the run is clean)."""
    found = []
    if audit.get("unposted_count", 0):
        found.append(f"{audit['unposted_count']} accepted but not posted "
                     "(LOST unless dead-lettered or still in flight)")
    if audit.get("duplicates", 0):
        found.append(f"{audit['duplicates']} duplicate posting(s)")
    if audit.get("unexpected", 0):
        found.append(f"{audit['unexpected']} posting(s) with no source event")
    if audit.get("order_violations", 0):
        found.append(f"{audit['order_violations']} out-of-order version(s) applied")
    mangled = ((audit.get("faults") or {}).get("billing") or {}).get("mangled") or {}
    if mangled.get("posted"):
        found.append(f"{mangled['posted']} badly signed webhook(s) posted")
    if audit.get("altered_count", 0):
        found.append(f"{audit['altered_count']} posting(s) recorded with another amount than "
                     "sent (SUM_OK fails; for the reconciler)")
    deals = audit.get("deals") or {}
    if deals.get("duplicates", 0) or deals.get("unexpected", 0):
        found.append(f"flow 1: {deals['duplicates']} duplicate and {deals['unexpected']} "
                     "unexpected subscription(s)/order(s)/contract(s)")
    return found


def _money(amounts: dict[str, int]) -> str:
    return ", ".join(f"{cur} {amount}" for cur, amount in amounts.items()) or "-"


def format_audit(audit: dict[str, Any], url: str) -> str:
    """The audit as a human report."""
    lines = [f"simulator audit of {url}"]

    def row(label: str, value: object) -> None:
        lines.append(f"  {label:<30}{value}")

    row("issued by billing", audit["issued"])
    row("accepted (webhook 2xx)", audit["accepted"])
    row("posted to the ERP", audit["posted"])
    unposted = audit["unposted_count"]
    shown = ", ".join(audit["unposted"][:5]) + (" ..." if unposted > 5 else "")
    row("unposted", f"{unposted}" + (f"  ({shown})" if unposted else ""))
    row("duplicates (DUP)", audit["duplicates"])
    row("unexpected (UNEXPECTED)", audit["unexpected"])
    violations = audit.get("order_violations", 0)
    row("ORDER_OK", f"{'yes' if not violations else 'NO'} ({violations} violation(s) over "
        f"{audit.get('order_checked', 0)} versioned aggregate(s))")
    row("amount issued (accepted)", _money(audit["amount_issued"]))
    row("amount posted", _money(audit["amount_posted"]))
    altered = audit.get("altered_count", 0)
    if altered:
        ids = ", ".join(audit["altered_ids"][:5]) + (" ..." if altered > 5 else "")
        row("amounts altered by the ERP", f"{altered}  ({ids}; net "
            f"{_money(audit.get('amount_altered', {}))})")
    lat = audit["latency_ms"]
    row("issue-to-post latency", f"p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
        f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms")
    row("throughput", f"{audit['throughput_eps']:.1f} invoices/s")
    faults = audit.get("faults") or {}
    billing = faults.get("billing") or {}
    deliveries = billing.get("deliveries") or {}
    if deliveries or billing.get("reordered"):
        lines.append("  webhook faults:")
        for mode, d in deliveries.items():
            statuses = " ".join(f"{s}x{n}" for s, n in d["statuses"].items())
            posted = "" if d["posted"] is None else f", posted {d['posted']}"
            lines.append(f"    {mode:<22}sent {d['sent']} ({statuses}){posted}")
        mangled = billing.get("mangled") or {}
        if mangled.get("sent"):
            share = 100.0 * mangled["refused"] / mangled["sent"]
            lines.append(f"    {'mangled (all modes)':<22}{mangled['refused']}/{mangled['sent']} "
                         f"refused with 4xx ({share:.0f} %), posted {mangled['posted']}")
        if billing.get("reordered"):
            lines.append(f"    {'reordered events':<22}{billing['reordered']}")
    http = faults.get("http") or {}
    if http:
        lines.append("  injected HTTP faults:")
        for where, kinds in http.items():
            lines.append(f"    {where:<28}" + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    deals = audit.get("deals") or {}
    if deals.get("deals"):
        row("deals (flow 1)", f"{deals['deals']} ({deals['approved']} approved): "
            f"{deals['completed']} completed, {deals['compensated']} compensated of "
            f"{deals['injected_failures']} refused, {deals['incomplete_count']} incomplete, "
            f"DUP {deals['duplicates']}")
    found = problems(audit)
    lines.append("  " + ("OK: nothing lost, doubled, unexpected or out of order" if not found
                         else "PROBLEMS: " + "; ".join(found)))
    return "\n".join(lines)


def cmd_sim_audit(args: argparse.Namespace) -> int:
    try:
        audit = fetch_audit(args.url, timeout=args.timeout)
    except ValueError as exc:
        print(f"erpgw: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"erpgw: error: {exc}", file=sys.stderr)
        return 3
    if args.json:
        import msgspec

        print(msgspec.json.encode(audit).decode())
    else:
        print(format_audit(audit, args.url))
    return 1 if problems(audit) else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sm = sub.add_parser("sim", help="run the platform simulator (billing, ERP, revenue, CPQ)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Run the simulated billing platform, ERP, revenue "
                                    "platform and CPQ as HTTP services on one port.\n"
                                    "Start a bill run with "
                                    "POST /billing/v1/bill-runs {\"invoices\": N, \"rate\": R}; "
                                    "read the ground truth at GET /sim/v1/audit\n"
                                    "(or with `erpgw sim audit`). Faults: PUT /sim/v1/faults "
                                    "at run time, or a scenario file.",
                        epilog=SCENARIO_HELP.replace("{shipped}",
                            ", ".join(sorted(shipped_scenarios())) or "none"))
    sm.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    sm.add_argument("--port", type=int, default=8700, help="listen port (default 8700)")
    sm.add_argument("--webhook-url", default="http://127.0.0.1:8600/webhooks/billing",
                    help="where billing webhooks are delivered (default the gateway's)")
    sm.add_argument("--webhook-secret", default="whsec_demo",
                    help="webhook signing secret (default whsec_demo)")
    sm.add_argument("--partner-webhook-url", default="http://127.0.0.1:8600/webhooks/partner",
                    help="where the partner portal's deal webhooks are delivered (default "
                         "the gateway's; a deal run may name another)")
    sm.add_argument("--partner-webhook-secret", default="whsec_partner_demo",
                    help="deal webhook signing secret (default whsec_partner_demo)")
    sm.add_argument("--billing-dialect", choices=["erpgw", "stripe"], default=None,
                    help="the billing platform's wire format: erpgw (its own, the default) or "
                         "stripe (Stripe-shaped events signed with Stripe-Signature, and "
                         "Stripe's /v1/events and /v1/invoices lists); default: the "
                         "scenario's, else erpgw")
    sm.add_argument("--stripe-secret-key", default="sk_test_erpgw_demo", metavar="KEY",
                    help="the bearer key Stripe's list APIs accept (default sk_test_erpgw_demo)")
    sm.add_argument("--seed", type=int, default=None,
                    help="seed for invoices and faults (default: the scenario's, else 7)")
    sm.add_argument("--concurrency", type=int, default=32,
                    help="concurrent webhook deliveries (default 32)")
    sm.add_argument("--scenario", type=Path, metavar="FILE",
                    help="TOML fault schedule and workload (format below), or the name of a "
                         "shipped scenario")
    sm.add_argument("--check", action="store_true",
                    help="validate the --scenario file, print its schedule and exit")
    sm.add_argument("--erp-max-bulk", type=int, default=1000, metavar="N",
                    help="most items per ERP bulk request (default 1000)")
    sm.add_argument("--erp-concurrency-limit", type=int, default=0, metavar="N",
                    help="ERP requests in flight account-wide before 429 "
                         "SSS_REQUEST_LIMIT_EXCEEDED (default 0: no limit)")
    sm.add_argument("--billing-rate-limit", type=float, default=0.0, metavar="RPS",
                    help="billing API requests per second before 429 with Retry-After "
                         "(default 0: no limit)")
    sm.add_argument("--revenue-max-batch", type=int, default=500, metavar="N",
                    help="most lines per revenue batch upload (default 500)")
    sm.add_argument("--cpq-latency-ms", type=int, default=0, metavar="MS",
                    help="base latency of CPQ pricing (default 0; scenario windows add to it)")
    sm.add_argument("--erp-dialect", choices=("erpgw", "netsuite"), default=None,
                    help="the ERP's API: erpgw (bulk, the default) or netsuite (SuiteTalk REST "
                         "with TBA; default from the scenario file's erp_dialect)")
    sm.add_argument("--netsuite-concurrency-limit", type=int, default=5, metavar="N",
                    help="netsuite dialect: the account's concurrent requests (default 5; "
                         "0: no cap); one more is answered 429")
    sm.add_argument("--netsuite-latency-ms", type=int, default=30, metavar="MS",
                    help="netsuite dialect: per-request latency, +-50%% (default 30)")
    sm.add_argument("--tls-cert", default="", metavar="PEM",
                    help="serve HTTPS only, with this certificate chain (with --tls-key)")
    sm.add_argument("--tls-key", default="", metavar="PEM",
                    help="the private key of --tls-cert")
    sm.add_argument("--webhook-ca-file", default="", metavar="PEM",
                    help="CA bundle that webhook deliveries to an https:// URL verify the "
                         "receiver's certificate with (default: the system's trust store)")
    sm.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                    help="log level (default: %(default)s)")
    sm.add_argument("--log-json", action="store_true",
                    help="JSON log lines (also: ERPGW_LOG_JSON=1)")
    sm.set_defaults(func=cmd_sim)

    sims = sm.add_subparsers(dest="sim_command", metavar="SUBCOMMAND",
                             title="subcommands (optional; without one the simulator runs)")
    au = sims.add_parser("audit", help="print the ground-truth audit of a running simulator",
                         description="Fetch GET /sim/v1/audit from a running simulator and "
                                     "print it: issued, accepted, posted, unposted (LOST "
                                     "unless dead-lettered), DUP, UNEXPECTED, ORDER_OK, "
                                     "amounts, latency, and the faults it injected. Exits 0 "
                                     "when clean, 1 when the audit shows a problem, 3 when "
                                     "the simulator cannot be reached.")
    au.add_argument("--url", default=DEFAULT_URL,
                    help=f"the simulator's base URL (default {DEFAULT_URL})")
    au.add_argument("--json", action="store_true", help="print the audit as one JSON object")
    au.add_argument("--timeout", type=float, default=10.0, metavar="S",
                    help="HTTP timeout in seconds (default 10)")
    au.set_defaults(func=cmd_sim_audit)
