"""``erpgw demo``: a short peak-billing run through the real stack, judged by the simulator.

Every figure in the report comes from the simulator's own records (what the billing platform
issued and saw acknowledged, what the ERP and the revenue platform recorded) plus the gateway's
dead-letter stream, never from the gateway's belief about itself.

Flow 2 has two halves, judged separately: ``flows.invoice_to_ledger`` (invoices posted to the
ERP) and ``flows.invoice_to_revenue`` (invoices all of whose billing lines the revenue platform
recorded exactly once), with ``kpi.revenue_event_accuracy`` = lines recorded exactly once ÷
lines issued. The revenue platform reports only totals (lines uploaded, duplicate and unexpected
lines, amounts), so both revenue figures are lower bounds (``revenue_figures``), exact whenever
nothing is doubled or unexpected.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

import sim
from actors.lifecycle.fx import EntityMap
from contracts import format_amount

from .close_demo import close_blocking, revenue_to_gl_ok, run_revenue_to_gl
from .deal_demo import changes_ok, deals_ok, run_changes, run_deals
from .drills import Driller, erp_entries, settle_period_close
from .money_demo import money_figures, money_ok, wait_money
from .stack import DrainResult, RevenueResult, Stack
from .usage_demo import USAGE_RECORDS, run_usage

# The amendments a scale-out run with faults adds to its bill run (v2 of 20 % of the invoices,
# half of those delivered before their v1), so invoice versions cross processes and faults.
SCALE_OUT_BILL_RUN = {"amend_rate": 0.2, "reorder_amendments": 0.5}

__all__ = ["DEMO_ENTITIES", "DEMO_ENTITY_MAP", "DIALECTS", "FLOWS", "DemoOptions",
           "build_report", "by_entity", "netsuite_figures", "parse_dialects", "parse_flows",
           "revenue_figures", "run_demo"]

# Two legal entities (docs/configuration.md, ``[entities]``): the bill run's customers
# cus_00001..cus_00999 post for "eu" (functional currency EUR), the others for the default "us"
# (USD). A document in another currency (the bill run has USD, EUR, GBP and JPY) is posted with
# the ERP's rate of its day, a payment in another currency in the functional one with its
# realized FX gain or loss; the report says what the ERP holds per entity and currency
# (``by_entity``).
DEMO_ENTITIES = ('\n[entities]\ndefault = "us"\ncustomers = { "cus_00*" = "eu" }\n'
                 'functional_currency = { eu = "EUR", us = "USD" }\n')
# The same map, for the demo's own close run (it posts revenue per entity of the contracts'
# customers: the deals' cus_00001..cus_02000 fall on both entities) and close status.
DEMO_ENTITY_MAP = EntityMap(default="us", customers={"cus_00*": "eu"},
                            functional_currency={"eu": "EUR", "us": "USD"})
_NO_ENTITY = "(none)"


def by_entity(entries: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """What the ERP's journal entries (``JournalEntryRecord`` documents) hold per entity
    (``subsidiary``; ``(none)`` for an entry naming none, such as a close's revenue posting)
    and currency: ``{"postings": n, "debits": sum of the entries' debits in minor units}``.
    Raises nothing for well-formed records."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for e in entries:
        row = out.setdefault(e.get("subsidiary") or _NO_ENTITY, {}).setdefault(
            e["currency"], {"postings": 0, "debits": 0})
        row["postings"] += 1
        row["debits"] += e["amount"]
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


# The flows a demo can run besides the bill run (flow 2, always): credit memos and payments to
# settlements (flows 2-3), usage (flow 4), deals (flow 1) and subscription changes (flow 5,
# which changes the deals' subscriptions, so it needs "deals").
FLOWS = ("money", "usage", "deals", "changes")


def parse_flows(text: str) -> frozenset[str]:
    """``all``, ``invoices`` (the bill run alone) or a comma-separated subset of ``FLOWS``.
    Raises ``ValueError`` naming an unknown flow, or ``changes`` without ``deals``."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return frozenset(FLOWS)
    names.discard("invoices")
    unknown = sorted(names - set(FLOWS))
    if unknown:
        raise ValueError(f"unknown flow(s) {', '.join(unknown)}; choose from all, invoices, "
                         f"{', '.join(FLOWS)}")
    if "changes" in names and "deals" not in names:
        raise ValueError("flow 'changes' amends the deals' subscriptions: add 'deals'")
    return frozenset(names)


# The vendors' wire formats a demo can speak, by platform; ``erpgw`` (the default) is the
# simulator's own. Shorthands name the vendor alone.
DIALECTS: dict[str, tuple[str, ...]] = {"billing": ("erpgw", "stripe"),
                                        "erp": ("erpgw", "netsuite")}
_SHORTHANDS = {"stripe": ("billing", "stripe"), "netsuite": ("erp", "netsuite")}


def parse_dialects(text: str) -> dict[str, str]:
    """``stripe,netsuite`` or ``billing=stripe,erp=netsuite`` (any mix) → {platform: dialect}
    for every platform in ``DIALECTS`` (``erpgw`` unless named). Raises ``ValueError`` naming
    an unknown item or a platform named twice."""
    out = {platform: "erpgw" for platform in DIALECTS}
    seen: set[str] = set()
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        platform, sep, dialect = item.partition("=")
        if not sep:
            if item not in _SHORTHANDS:
                raise ValueError(f"unknown dialect {item!r}; choose from "
                                 f"{', '.join(sorted(_SHORTHANDS))} or PLATFORM=DIALECT")
            platform, dialect = _SHORTHANDS[item]
        platform, dialect = platform.strip(), dialect.strip()
        if dialect not in DIALECTS.get(platform, ()):
            raise ValueError(f"unknown dialect {item!r}; "
                             + "; ".join(f"{p}: {', '.join(d)}" for p, d in DIALECTS.items()))
        if platform in seen:
            raise ValueError(f"platform {platform!r} named twice in {text!r}")
        seen.add(platform)
        out[platform] = dialect
    return out


@dataclass(frozen=True)
class DemoOptions:
    invoices: int = 2000
    rate: float = 0.0
    nats_url: str = ""
    json: bool = False
    workdir: Path | None = None
    seed: int = 7
    stall_timeout: float = 60.0
    fsync: str = "always"
    faults: tuple[str, ...] = ()
    # Credit memos and flow 3 (payment to settlement) in a run without injected faults.
    credit_memo_rate: float = 0.1
    payment_rate: float = 0.25
    # With them, billing changes: a v2 of this share of the invoices (half of them delivered
    # before their v1), so both halves of flow 2 apply amendments (docs/flows.md, Flow 6).
    amend_rate: float = 0.1
    flows: frozenset[str] = frozenset(FLOWS)
    # The platforms' wire formats (``parse_dialects``): billing "erpgw" | "stripe".
    billing_dialect: str = "erpgw"
    erp_dialect: str = "erpgw"
    # Scale-out (docs/scale-out.md): nats-server nodes in one cluster (0: one embedded broker)
    # and gateway processes behind one round-robin webhook address.
    cluster: int = 0
    gateways: int = 1
    # Process roles per gateway process, gateway 1 first (docs/scale-out.md, "Process roles";
    # empty: each process runs every role).
    roles: tuple[str, ...] = ()
    # erp.closed_period of the demo's gateway ("": its default, dead_letter); what the
    # period-close drill exercises.
    closed_period: str = ""
    # Every hop over TLS (``Stack(tls=True)``): a CA made into the work directory signs the
    # broker's (mutual TLS), the gateway's and the simulator's certificates.
    tls: bool = False


async def netsuite_figures(stack: Stack, audit: dict[str, Any]) -> dict[str, Any]:
    """What the NetSuite-speaking ERP holds, read back the way an accountant would: SuiteQL
    (signed with TBA, paged) over the journal entries, their decimal amounts summed per
    currency for each invoice's latest version, against the billed (accepted) totals. Also
    the account's governance figures: requests, 429s, unauthenticated requests."""
    from decimal import Decimal

    from actors.infra.http import HttpClient
    from actors.platforms import PlatformGuard
    from actors.platforms.auth import AuthSettings, load_auth
    from actors.platforms.erp import NetSuiteQuery
    from contracts import CURRENCY_EXPONENTS, to_decimal
    from sim._netsuite_tba import DEMO_TBA

    auth = load_auth(AuthSettings(
        type="oauth1_tba", account=DEMO_TBA.account, consumer_key=DEMO_TBA.consumer_key,
        consumer_secret=DEMO_TBA.consumer_secret, token_id=DEMO_TBA.token_id,
        token_secret=DEMO_TBA.token_secret), environ={})
    latest: dict[str, tuple[int, str, Decimal]] = {}
    async with HttpClient(stack.sim_url, platform="erp", signer=auth,
                          ca_file=stack.ca_file) as http:
        query = NetSuiteQuery(PlatformGuard("ERP", http, open_code="erp.breaker_open"))
        q = ("SELECT t.externalid AS externalid, c.symbol AS currency, "
             "SUM(tl.debitforeignamount) AS debit FROM transaction t "
             "JOIN transactionline tl ON tl.transaction = t.id "
             "JOIN currency c ON c.id = t.currency WHERE t.recordtype = 'journalentry' "
             "GROUP BY t.externalid, c.symbol ORDER BY t.externalid")
        rows = 0
        async for row in query.rows(q):
            rows += 1
            eid, cur = str(row["externalid"]), str(row["currency"])
            if eid.endswith(":reversal") or eid.startswith(("cn_", "py_")):
                continue
            base, _, ver = eid.partition(":v")
            version = int(ver) if ver.isdigit() else 1
            if base not in latest or latest[base][0] < version:
                latest[base] = (version, cur, Decimal(str(row["debit"])))
    erp: dict[str, Decimal] = {}
    for _, cur, amount in latest.values():
        erp[cur] = erp.get(cur, Decimal(0)) + amount
    billed = {cur: to_decimal(int(v), cur) for cur, v in audit.get("amount_issued", {}).items()
              if cur in CURRENCY_EXPONENTS}
    gov = await stack.erp_governance()
    http_faults = (audit.get("faults") or {}).get("http", {})
    unauthorized = sum(int(v.get("unauthorized", 0)) for k, v in http_faults.items()
                       if k.startswith("erp/"))
    injected_429 = sum(int(n) for k, v in http_faults.items() if k.startswith("erp/")
                       for fault, n in v.items() if fault in ("error_429", "rate_limit"))
    return {
        "journal_entries": rows,
        "erp_decimal_amounts": {c: str(v) for c, v in sorted(erp.items())},
        "billed_amounts": {c: str(v) for c, v in sorted(billed.items())},
        "amounts_match": erp == billed,
        "requests": gov.get("requests", 0),
        "throttled_429": gov.get("limitedRequests", 0) + injected_429,
        "unauthorized_401": unauthorized,
    }


def _nonzero(amounts: dict[str, Any]) -> dict[str, int]:
    return {c: int(v) for c, v in amounts.items() if int(v)}


def revenue_figures(rev: RevenueResult) -> dict[str, Any]:
    """Flow 2's revenue half from the revenue platform's totals (pure).

    With ``L`` lines uploaded, ``D`` duplicate and ``U`` unexpected ones, at least
    ``L - U - 2D`` of the ``E`` expected lines were recorded exactly once (each duplicate both
    adds an upload and spoils at most one line), and each line not proven exactly-once spoils
    at most one invoice. Both figures are exact when ``D = U = 0``.
    """
    a = rev.audit
    lines, dups = int(a.get("lines", 0)), int(a.get("duplicate_lines", 0))
    unexpected = int(a.get("unexpected_lines", 0))
    expected = rev.expected_lines
    exact = min(expected, max(0, lines - unexpected - 2 * dups))
    invoices = len(rev.lines_by_invoice)
    return {
        "expected_lines": expected,
        "lines": lines,
        "exactly_once": exact,
        "missing_or_doubled": expected - exact,
        "duplicate_lines": dups,
        "unexpected_lines": unexpected,
        "amount": a.get("amount", {}),
        "expected_amount": rev.expected_amount,
        # Each invoice's latest version less its credit memos, and whether the platform's
        # amounts are exactly that (amendments and credit memos applied, nothing doubled).
        "billed_amount": rev.billed_amount,
        "amount_matches_billed": (None if rev.billed_amount is None else
                                  _nonzero(a.get("amount", {})) == _nonzero(rev.billed_amount)),
        "drained": rev.drained,
        "invoices": invoices,
        "invoices_completed": max(0, invoices - (expected - exact)),
        "accuracy": round(exact / expected, 6) if expected else 1.0,
    }


def build_report(result: DrainResult, opts: DemoOptions, wall_s: float,
                 revenue: RevenueResult | None = None) -> dict[str, Any]:
    a = result.audit
    lost = result.lost
    dups = int(a["duplicates"])
    report = {
        "invoices": opts.invoices,
        "issued": a["issued"],
        "accepted": a["accepted"],
        "posted": a["posted"],
        "lost": lost,
        "duplicates": dups,
        "unexpected": a["unexpected"],
        "dead_lettered": len(result.dead_letters),
        "drained": result.drained,
        "throughput_eps": round(float(a["throughput_eps"]), 1),
        "latency_ms": {k: round(float(v), 2) for k, v in a["latency_ms"].items()},
        "amount_issued": a.get("amount_issued", {}),
        "amount_posted": a.get("amount_posted", {}),
        "wall_s": round(wall_s, 2),
        "fsync": opts.fsync,
        **({"tls": True} if opts.tls else {}),
        "ok": result.drained and lost == 0 and dups == 0 and a["unexpected"] == 0,
    }
    if revenue is None:
        return report
    rev = revenue_figures(revenue)
    report["revenue"] = rev
    report["flows"] = {
        "invoice_to_ledger": {"completed": a["posted"], "expected": a["issued"]},
        "invoice_to_revenue": {"completed": rev["invoices_completed"],
                               "expected": rev["invoices"]},
    }
    report["kpi"] = {"revenue_event_accuracy": rev["accuracy"]}
    # Nothing doubled in revenue, ever. Without injected faults also nothing missing: with a
    # gateway kill, lines of the upload in flight may be held back in doubt (docs/flows.md).
    report["ok"] = bool(report["ok"] and rev["drained"] and rev["duplicate_lines"] == 0
                        and rev["unexpected_lines"] == 0
                        and (bool(opts.faults) or (rev["missing_or_doubled"] == 0
                                                   and rev["amount_matches_billed"]
                                                   is not False)))
    return report


def _drill_lines(r: dict[str, Any]) -> list[str]:
    if "faults" not in r:
        return []
    lines = [f"  faults injected: {', '.join(r['faults'])}"]
    for name, rec in r["recovery_s"].items():
        first = rec["first_posting_s"]
        drained = rec["drained_s"]
        lines.append(f"    {name:<15} healed -> next ERP posting "
                     f"{'-' if first is None else f'{first:.2f} s'}, drained "
                     f"{'-' if drained is None else f'{drained:.2f} s'}")
    lines.append(f"    dead letters exactly the injected poison: {r['dlq_exact']}")
    q = r.get("quorum")
    if q is not None:
        def s(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f} s"
        refused = ", ".join(f"{n} {c}" for c, n in q["webhooks_refused"].items()) or "none"
        lines.append(f"    quorum lost ({', '.join(q['nodes'])} down {q.get('down_s', 0):g} s): "
                     f"webhooks answered 503: {refused}; after the restart the stream had a "
                     f"leader in {s(q.get('stream_leader_s'))}, a webhook was accepted in "
                     f"{s(q.get('webhook_accepted_s'))}, an ERP posting made in "
                     f"{s(q['first_posting_s'])}: T_recover {s(q['t_recover_s'])}")
    alt = r.get("altered_amount")
    if alt is not None:
        lines.append(f"    altered ERP amounts: {alt['altered']} altered, {alt['found']} found by "
                     f"the reconciler ({alt['published']} published), exact: {alt['exact']}, "
                     f"repaired: {alt['repaired']}")
    pc = r.get("period_close")
    if pc is not None and pc.get("period"):
        lines.append(f"    period close: ERP closed {pc['period']} ({pc['policy']}); "
                     f"{pc['late_postings']} late posting(s) {pc['went']}; dead-lettered "
                     f"{pc['dead_lettered']}, replayed {pc['replayed']}; GL of {pc['into']} "
                     f"= those postings: {pc['gl_ok']}")
    order = r.get("order")
    if order is not None:
        lines.append(f"    amendments: {order['amended']} invoices amended, "
                     f"{order['superseded']} earlier versions posted then reversed "
                     f"({order['reversals']} reversals), ORDER_OK: {order['order_ok']}")
    return lines


def _scale_lines(r: dict[str, Any]) -> list[str]:
    so = r.get("scale_out")
    if so is None:
        return []
    lines = [f"  scale-out: {so['gateways']} gateway process(es) on "
             + (f"a {so['cluster_nodes']}-node nats cluster" if so["cluster_nodes"]
                else "one broker")]
    total = sum(w["processed"] for w in so["work_shares"]) or 1
    roles = so.get("roles") or []
    for w in so["work_shares"]:
        hooks = "" if w["webhooks"] is None else f"{w['webhooks']} HTTP requests, "
        runs = f" [{roles[w['gateway'] - 1]}]" if len(roles) >= w["gateway"] else ""
        lines.append(f"    gateway {w['gateway']}{runs}: {hooks}{w['processed']} messages "
                     "processed "
                     f"({100 * w['processed'] / total:.0f} %)"
                     + ("" if w["up"] else " (not answering)"))
    return lines


def _revenue_lines(r: dict[str, Any]) -> list[tuple[str, object]]:
    if "revenue" not in r:
        return []
    rev, flows = r["revenue"], r["flows"]
    ledger, revenue = flows["invoice_to_ledger"], flows["invoice_to_revenue"]
    return [
        ("invoice -> ledger completed", f"{ledger['completed']}/{ledger['expected']}"),
        ("invoice -> revenue completed", f"{revenue['completed']}/{revenue['expected']}"),
        ("revenue lines exactly once", f"{rev['exactly_once']}/{rev['expected_lines']}"
                                       f"  (revenue event accuracy "
                                       f"{r['kpi']['revenue_event_accuracy']:.4f})"),
        ("revenue lines doubled", rev["duplicate_lines"]),
        *([("revenue = latest billed less credit memos", rev["amount_matches_billed"])]
          if rev.get("amount_matches_billed") is not None else []),
    ]


def _money_lines(r: dict[str, Any]) -> list[tuple[str, object]]:
    flows = r.get("flows", {})
    if "payment_to_settlement" not in flows:
        return []
    cm, cash, st = (flows["credit_memo_to_ledger"], flows["payment_to_cash"],
                    flows["payment_to_settlement"])
    cycle = r["kpi"]["partner_settlement_cycle_ms"]
    return [
        ("credit memos reversed once", f"{cm['completed']}/{cm['expected']}"),
        ("payments cash-applied once", f"{cash['completed']}/{cash['expected']}"),
        ("partner settlements once", f"{st['completed']}/{st['expected']}  (portal + ERP "
                                     f"payable; cycle p50 {cycle['p50']} ms, "
                                     f"p99 {cycle['p99']} ms)"),
    ]


def _revenue_failures(r: dict[str, Any]) -> list[str]:
    rev = r.get("revenue")
    if rev is None:
        return []
    out = [f"revenue {k}={rev[k]}" for k in ("duplicate_lines", "unexpected_lines") if rev[k]]
    if rev["missing_or_doubled"] and not r.get("faults"):
        out.append(f"revenue lines not exactly once={rev['missing_or_doubled']}")
    if rev.get("amount_matches_billed") is False and not r.get("faults"):
        out.append(f"revenue amounts {rev['amount']} != billed {rev['billed_amount']}")
    if not rev["drained"]:
        out.append("revenue did not drain")
    return out


def _flow_failures(r: dict[str, Any]) -> list[str]:
    """The other flows that did not complete each item exactly once (the reasons behind a
    FAILED verdict that the bill run's own figures do not show)."""
    out = []
    for name, f in (r.get("flows") or {}).items():
        if name.startswith("invoice_to_") or not isinstance(f, dict):
            continue
        if "completed" in f and "expected" in f and f["completed"] != f["expected"]:
            out.append(f"{name} {f['completed']}/{f['expected']}")
        out += [f"{name} {k}={f[k]}" for k in ("duplicates", "unexpected", "out_of_sync")
                if f.get(k)]
    return out


def _drill_failures(r: dict[str, Any]) -> list[str]:
    """The drills' verdicts that failed (each section's own line above says more)."""
    out = []
    alt = r.get("altered_amount")
    if alt is not None and not alt.get("exact", True):
        out.append(f"altered amounts {alt.get('found')} found of {alt.get('documents')} "
                   f"altered document(s) (missed: {', '.join(alt.get('missed') or []) or '-'}"
                   f"; unexplained: {', '.join(alt.get('unexplained') or []) or '-'})")
    pc = r.get("period_close")
    if pc is not None and pc.get("closed", True) is not None and not (
            pc.get("exact") and pc.get("gl_ok")):
        out.append(f"period close exact={pc.get('exact')} gl_ok={pc.get('gl_ok')}")
    if not r.get("order", {}).get("order_ok", True):
        out.append("amendments out of order (ORDER_OK false)")
    return out


def _human(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    reasons = ([f"{k}={r[k]}" for k in ("lost", "duplicates", "unexpected") if r[k]]
               + _revenue_failures(r)
               + _flow_failures(r)
               + _drill_failures(r)
               + (["ERP decimal amounts differ from the billed amounts"]
                  if r.get("netsuite", {}).get("amounts_match", True) is False else [])
               + ([f"NetSuite refused {r['netsuite']['unauthorized_401']} requests as "
                   "unauthenticated: check erp.auth"]
                  if r.get("netsuite", {}).get("unauthorized_401") else []))
    verdict = ("OK: nothing lost, nothing doubled" if r["ok"] else
               "FAILED: " + (", ".join(reasons) or "see the sections above")
               + ("" if r["drained"] else " (did not drain)")
               + ("" if r.get("dlq_exact", True) else " (dead letters differ from the "
                  "injected poison)"))
    rows = [
        ("issued by billing", r["issued"]),
        ("accepted by the gateway", r["accepted"]),
        ("posted to the ERP", r["posted"]),
        ("lost", r["lost"]),
        ("duplicated", r["duplicates"]),
        ("dead-lettered", r["dead_lettered"]),
        ("throughput", f"{r['throughput_eps']:.1f} invoices/s"),
        ("invoice posting latency",
         f"p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms"),
        *_revenue_lines(r),
        *_money_lines(r),
        *([("usage records counted once", "{completed}/{expected} (lost {lost}, doubled "
            "{duplicates})".format(**r["flows"]["usage"]))] if "usage" in r.get("flows", {})
          else []),
        *([("deals to contracts", "{completed}/{expected} (compensated {compensated}/"
            "{refused}, doubled {duplicates})".format(**r["flows"]["deal_to_contract"]))]
          if "deal_to_contract" in r.get("flows", {}) else []),
        *([("revenue -> GL", "{completed}/{expected} currencies of {period} (GL revenue = "
            "recognition: {exact})".format(**r["flows"]["revenue_to_gl"]))]
          if "revenue_to_gl" in r.get("flows", {}) else []),
        *([("blocking the close", "{blocking} item(s) for {period}".format(**r["close"])
            + (" (erpgw close status --period {period})".format(**r["close"])
               if r["close"]["blocking"] else ""))] if "close" in r else []),
        *([("subscription changes in sync", "{completed}/{expected} ({changes} changes, "
            "{reordered} shuffled)".format(**r["flows"]["subscription_changes"]))]
          if "subscription_changes" in r.get("flows", {}) else []),
    ]
    for entity, currencies in r.get("erp_by_entity", {}).items():
        rows.append((f"ERP entity {entity}", ", ".join(
            f"{format_amount(v['debits'], c)} in {v['postings']} entries"
            for c, v in currencies.items())))
    ns = r.get("netsuite")
    if ns is not None:
        rows += [
            ("NetSuite journal entries", f"{ns['journal_entries']} (SuiteQL, TBA-signed); "
                                         f"{ns['requests']} requests, {ns['throttled_429']} "
                                         f"throttled (429), {ns['unauthorized_401']} refused "
                                         "(401 INVALID_LOGIN)"),
            ("ERP decimals = billed", f"{ns.get('amounts_note') or ns['amounts_match']}  "
             + ", ".join(f"{c} {v}" for c, v in ns["erp_decimal_amounts"].items())),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"erpgw demo: bill run of {r['invoices']} invoices, billing -> gateway -> ERP"
             f"{' + revenue' if 'revenue' in r else ''} "
             f"({r['wall_s']:.1f} s, broker fsync {r['fsync']}"
             f"{', TLS on every hop' if r.get('tls') else ''})"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines += _drill_lines(r)
    lines += _scale_lines(r)
    lines.append(f"  {verdict}")
    return "\n".join(lines)


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, audit: dict[str, Any], dead: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.25 if self.tty else 2.0):
            return
        self.last = now
        line = (f"  issued {audit['issued']}/{self.total}  accepted {audit['accepted']}  "
                f"posted {audit['posted']}  revenue lines "
                f"{(audit.get('revenue') or {}).get('lines', 0)}  dead-lettered {dead}")
        sys.stderr.write(f"\r{line}\033[K" if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


async def run_demo(opts: DemoOptions) -> bool:
    """Run the demo and print its report; True when nothing was lost or doubled."""
    tmp = None
    workdir = opts.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="erpgw-demo-")
        workdir = Path(tmp)
    stack = Stack(workdir, nats_url=opts.nats_url, seed=opts.seed,
                  sync_interval="always" if opts.fsync == "always" else "2m",
                  ack_wait_s=5.0 if opts.faults else 30.0,
                  netsuite=opts.erp_dialect == "netsuite",
                  cluster=opts.cluster, gateways=opts.gateways, roles=opts.roles,
                  tls=opts.tls)
    driller = Driller(stack, list(opts.faults), opts.invoices,
                      entities=DEMO_ENTITY_MAP if opts.erp_dialect == "erpgw" else None,
                      billing_dialect=opts.billing_dialect) if opts.faults else None
    if driller is not None:
        stack.gateway_toml = driller.gateway_toml
        stack.gateway_env.update(driller.gateway_env)

    def say(msg: str) -> None:
        if not opts.json:
            print(msg, file=sys.stderr)

    if opts.erp_dialect == "erpgw":
        stack.gateway_toml += DEMO_ENTITIES
    if opts.closed_period:
        stack.gateway_env["ERPGW_ERP_CLOSED_PERIOD"] = opts.closed_period
    if opts.billing_dialect == "stripe":
        # The simulator sends Stripe's webhooks (Stripe-Signature) and the gateway reads them.
        stack.sim_args = (*stack.sim_args, "--billing-dialect", "stripe")
        stack.gateway_env["ERPGW_BILLING_DIALECT"] = "stripe"
        # The reconciler reads Stripe's lists with the simulator's test key (loopback only).
        stack.gateway_env["ERPGW_DEMO_STRIPE_KEY"] = sim.SimConfig().stripe_secret_key
        stack.gateway_toml += ('\n[billing.auth]\ntype = "bearer"\n'
                               'token_env = "ERPGW_DEMO_STRIPE_KEY"\n')
    period_close: dict[str, Any] | None = None
    try:
        t0 = time.monotonic()
        bill_period = time.strftime("%Y-%m", time.gmtime())
        nodes = f", {opts.cluster}-node cluster" if opts.cluster else ""
        say(f"starting nats-server (JetStream{nodes}), simulator and {opts.gateways} gateway "
            "process(es) ...")
        await stack.start()
        say(f"  broker {stack.url}  simulator {stack.sim_url}  gateway {stack.gateway_url}"
            f" (admin {stack.admin_url})"
            + (f" (round-robin to {', '.join(stack.gateway_urls())})" if stack.proxy else "")
            + (f"; TLS on every hop, CA {stack.ca_file}" if stack.tls else ""))
        rate = opts.rate or (driller.bill_rate(opts.invoices) if driller else 0.0)
        say(f"bill run: {opts.invoices} invoices"
            + (f" at {rate:g}/s" if rate else " issued at once"))
        progress = _Progress(opts.invoices, enabled=not opts.json)
        with_money = "money" in opts.flows
        scale_out = bool(opts.cluster or opts.gateways > 1)
        if driller is None:
            await stack.bill_run(opts.invoices, opts.rate,
                                 credit_memo_rate=opts.credit_memo_rate if with_money else 0.0,
                                 payment_rate=opts.payment_rate if with_money else 0.0,
                                 **({"amend_rate": opts.amend_rate, "reorder_amendments": 0.5}
                                    if with_money and opts.amend_rate else {}))
            result = await stack.wait_drained(opts.invoices, stall_timeout=opts.stall_timeout,
                                              progress=progress)
        else:
            say(f"faults: {', '.join(opts.faults)}")
            await driller.before_run()
            if scale_out:
                # Every flow under the faults, amendments and money included (docs/scale-out.md:
                # the flows whose guards several processes share).
                driller.bill_options.update(SCALE_OUT_BILL_RUN)
                if with_money:
                    driller.bill_options.update(credit_memo_rate=opts.credit_memo_rate,
                                                payment_rate=opts.payment_rate)
            await stack.bill_run(opts.invoices, rate, **driller.bill_options)

            def watch(audit: dict[str, Any], dead: int) -> None:
                driller.observe(audit)
                progress(audit, dead)

            async with anyio.create_task_group() as tg:
                tg.start_soon(driller.run)
                result = await stack.wait_drained(opts.invoices,
                                                  stall_timeout=opts.stall_timeout,
                                                  progress=watch)
                driller.drained()  # faults the progress never reached fire now
            # Every fault has healed now (the task group waited for the driller); a fault that
            # fired late may have disturbed a drained run, so judge the state after it.
            result = await stack.wait_drained(opts.invoices, stall_timeout=opts.stall_timeout,
                                              progress=watch)
            if "period-close" in opts.faults:
                # Where the late postings went; under dead_letter, re-posted by the demo.
                result, period_close = await settle_period_close(
                    driller, result, opts.closed_period or "dead_letter",
                    stall_timeout=opts.stall_timeout)
        progress.done()
        revenue = await stack.wait_revenue(stall_timeout=opts.stall_timeout)
        report = build_report(result, opts, time.monotonic() - t0, revenue)
        report.setdefault("flows", {})
        if period_close is not None:
            report["period_close"] = period_close
            report["ok"] = bool(report["ok"] and period_close.get("exact")
                                and period_close.get("gl_ok"))
        if opts.erp_dialect == "netsuite":
            ns = await netsuite_figures(stack, result.audit)
            if "altered-amount" in opts.faults:
                # The drill alters ERP amounts on purpose; its own verdict (altered_amount)
                # checks that the reconciler finds exactly those.
                ns["amounts_match"] = None
                ns["amounts_note"] = ("not judged: altered-amount alters ERP amounts on "
                                      "purpose (see altered_amount)")
            report["netsuite"] = ns
            report["ok"] = bool(report["ok"] and ns["amounts_match"] is not False)
        if "usage" in opts.flows:
            # Flow 4: a usage run through the gateway (docs/flows.md, "Flow 4: usage").
            usage = await run_usage(stack, USAGE_RECORDS, seed=opts.seed,
                                    stall_timeout=opts.stall_timeout)
            report["flows"]["usage"] = usage
            report["ok"] = bool(report["ok"] and usage["lost"] == 0
                                and usage["duplicates"] == 0 and usage["amount_ok"])
        if "deals" in opts.flows:
            # Flow 1: a deal run through the gateway's saga (docs/flows.md, "Flow 1").
            deals = await run_deals(stack, stall_timeout=opts.stall_timeout)
            report["flows"]["deal_to_contract"] = deals
            report["ok"] = bool(report["ok"] and deals_ok(deals))
            # Revenue to the GL: the contracts' first month, posted by a close run.
            close = await run_revenue_to_gl(
                stack, timeout=opts.stall_timeout,
                entities=DEMO_ENTITY_MAP if opts.erp_dialect == "erpgw" else None)
            report["flows"]["revenue_to_gl"] = close
            report["ok"] = bool(report["ok"] and revenue_to_gl_ok(close))
        if "changes" in opts.flows:
            changes = await run_changes(stack, stall_timeout=opts.stall_timeout)  # flow 5
            report["flows"]["subscription_changes"] = changes
            report["ok"] = bool(report["ok"] and changes_ok(changes))
        if (driller is None or scale_out) and with_money and (
                opts.credit_memo_rate or opts.payment_rate):
            # Credit memos and flow 3 (docs/flows.md), judged by the simulator's audit.
            audit, settled = await wait_money(stack, opts.invoices, opts.credit_memo_rate,
                                              opts.payment_rate,
                                              stall_timeout=opts.stall_timeout,
                                              billing_dialect=opts.billing_dialect)
            money = money_figures(audit, settled)
            report["flows"].update(money["flows"])
            report.setdefault("kpi", {}).update(money["kpi"])
            report["ok"] = bool(report["ok"] and money_ok(money))
        if opts.cluster or opts.gateways > 1:
            report["scale_out"] = {"cluster_nodes": opts.cluster, "gateways": opts.gateways,
                                   "roles": list(opts.roles),
                                   "gateway_starts_1": stack.gateway_starts,
                                   "work_shares": await stack.work_shares()}
        # What blocks the close of the bill run's month once everything drained (the
        # close.blocking KPI, `erpgw close status`): nothing, after a run without faults.
        close = await close_blocking(
            stack, bill_period,
            entities=DEMO_ENTITY_MAP if opts.erp_dialect == "erpgw" else None,
            billing_dialect=opts.billing_dialect)
        report["close"] = {"period": close["period"], "blocking": close["blocking"],
                           "by_kind": {k: n for k, n in close["by_kind"].items() if n}}
        report["ok"] = bool(report["ok"] and (bool(opts.faults) or close["blocking"] == 0))
        if opts.erp_dialect == "erpgw":
            report["erp_by_entity"] = by_entity(await erp_entries(stack))
        if driller is not None:
            report.update(driller.finish(result))
            report.update(await driller.after_run(result))
            report["ok"] = bool(report["ok"] and report["dlq_exact"]
                                and report.get("altered_amount", {}).get("exact", True)
                                and report.get("order", {}).get("order_ok", True))
    except BaseException:
        if tmp is None:
            say(f"logs kept in {workdir}")
        raise
    finally:
        await stack.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if opts.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(_human(report))
    return bool(report["ok"])
