"""Fault drills for ``erpgw demo --faults`` (and the bench): named faults, injected on schedule
into a running ``Stack``, with their recovery times measured from the simulator's records.

Theory of operation: the ``Driller`` runs beside the demo's drain loop. It polls the
simulator's audit; each fault starts when the share of issued invoices posted to the ERP
reaches its trigger (so a fault always hits a run in progress, whatever the machine's speed),
lasts its window, then heals. For every fault it records when it started and healed, how long
after healing the ERP received its next posting, and how long after healing everything was
drained. Webhook faults (duplicates, reordering) apply from the start of the run.

Faults: ``erp-outage`` (every ERP request 503 for 5 s), ``5xx-burst`` (half of them 503 for
5 s), ``429-storm`` (30 % answered 429 with Retry-After for 8 s), ``commit-timeout`` (20 % of
requests committed, then no answer, for 4 s; the gateway's ERP timeout is lowered to 2 s),
``poison`` (5 undecodable messages on the invoice subject at the start), ``duplicate-webhooks``
(20 % of events delivered 2-3 times, some concurrently), ``out-of-order`` (events shuffled in
windows of 16, and 20 % of invoices amended with an ``invoice.updated`` version 2, half of those
delivered before their version 1; the report's ``order`` section has ORDER_OK),
``kill-gateway`` (SIGKILL the gateway at 40 %, restart it), ``broker-restart`` (SIGKILL the
embedded broker at 50 %, restart it after 1.5 s), ``altered-amount`` (from the start, the ERP
records 2 % of postings with another amount than sent, as a platform bug or a
manual edit would; after the run the reconciler is run once, without repair, and the report's
``altered_amount`` section compares the amount breaks it found and published on
``erpgw.mon.recon.break`` with the postings the simulator altered: ``exact`` when they are the
same set, each flagged with a reversal proposal and none repaired).

``period-close`` (the ERP closes the bill run's month once 30 % of the invoices are posted;
every later posting is refused ``PERIOD_CLOSED``: under ``erp.closed_period = "next_open"``
(``erpgw demo --closed-period next_open``) the gateway posts it on the first day of the next
period, the original date in its memo; under ``dead_letter`` (the default) it is dead-lettered
``erp.period_closed`` and the demo replays those letters with ``--repost-open`` once the run
has drained; the report's ``period_close`` section says where the late postings went and
checks them against the ERP's GL).

Scale-out drills (``erpgw demo --cluster 3``, docs/scale-out.md): ``kill-nats-leader`` (SIGKILL
the nats-server node leading the billing stream at 30 %, restart it 3 s later),
``kill-nats-node`` (the same for a node that leads nothing of the billing stream, at 60 %),
``freeze-gateway`` (SIGSTOP gateway process 1 at 20 % for 8 s, past the consumers' ``ack_wait``
of 5 s, so its unacked messages go to the others, then SIGCONT: the thawed process carries on
with what it held), ``lose-quorum`` (SIGKILL two of the three nodes, the billing stream's
leader among them, at 30 % for 15 s, then restart both: JetStream has no quorum, publishes
fail and the ingress answers webhooks 503 with a JSON code, which the sender retries; the report's
``quorum`` section has T_recover, from the restart until the ingress accepted a webhook and the
ERP received a posting again, and the 503s the ingress answered). ``kill-gateway`` kills
gateway process 1 of N; when it overlaps a broker fault (``broker-restart``, the cluster
drills), the gateway is started again only once the broker is whole.
"""

from __future__ import annotations

import functools
import signal
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import anyio
import msgspec

from actors.infra import NatsBus, OutMsg
from actors.infra.bus import server_list
from actors.infra.http import HttpClient
from actors.lifecycle.fx import EntityMap
from actors.reconcile import Flag, run_once
from actors.reconcile.matching import split_external_id
from actors.reconcile.runner import BillingReadFn
from actors.router.invoices import AccountMap
from contracts import GatewayError, Subjects

from .config import PaymentsConfig
from .stack import DrainResult, Stack

__all__ = ["FAULTS", "Driller", "FaultRecord", "erp_entries", "parse_faults",
           "settle_period_close"]

POISON_COUNT = 5


@dataclass(frozen=True)
class _Fault:
    trigger: float  # share of issued invoices posted when it starts (0: at the start)
    window_s: float = 0.0
    erp: dict[str, Any] = field(default_factory=dict)
    billing: dict[str, Any] = field(default_factory=dict)
    recovers: bool = True  # a fault with a recovery time to measure
    bill_run: dict[str, float] = field(default_factory=dict)  # extras of the demo's bill run


FAULTS: dict[str, _Fault] = {
    "erp-outage": _Fault(0.25, 5.0, erp={"outage": True}),
    "5xx-burst": _Fault(0.20, 5.0, erp={"error_rate": 0.5, "status": 503}),
    "429-storm": _Fault(0.10, 8.0, erp={"error_rate": 0.3, "status": 429}),
    "commit-timeout": _Fault(0.15, 4.0, erp={"commit_then_timeout_rate": 0.2}),
    "poison": _Fault(0.0),
    "duplicate-webhooks": _Fault(0.0, billing={"duplicate_rate": 0.2, "duplicate_max": 3}),
    "out-of-order": _Fault(0.0, billing={"reorder_window": 16},
                           bill_run={"amend_rate": 0.2, "reorder_amendments": 0.5}),
    "kill-gateway": _Fault(0.40),
    "broker-restart": _Fault(0.50),
    # Scale-out drills (``--cluster``; docs/scale-out.md). The node goes down for its window.
    "kill-nats-leader": _Fault(0.30, 3.0),
    "kill-nats-node": _Fault(0.60, 3.0),
    # SIGSTOP for longer than the consumers' ack_wait (5 s under faults), then SIGCONT.
    "freeze-gateway": _Fault(0.20, 8.0),
    # Two of three nodes down (no JetStream quorum) for the window, then both restarted.
    "lose-quorum": _Fault(0.30, 15.0),
    "altered-amount": _Fault(0.0, erp={"alter_amount_rate": 0.02}, recovers=False),
    # The ERP closes the bill run's month at 30 % (docs/flows.md, "Closed periods").
    "period-close": _Fault(0.30, recovers=False),
}

# The faults that act on the nats-server nodes of ``--cluster``.
CLUSTER_FAULTS = frozenset({"kill-nats-leader", "kill-nats-node", "lose-quorum"})
# How long after restarting the nodes ``lose-quorum`` waits for the billing stream's leader
# (a guard against a cluster that never comes back, not a speed target).
QUORUM_BACK_TIMEOUT_S = 60.0
# ``lose-quorum`` issues its bill run over this many seconds (unless a rate is given).
QUORUM_ISSUE_S = 60.0

# How many ids the altered-amount section lists (the counts are always complete).
MAX_LISTED = 100
# period-close under dead_letter: at most this many replay rounds, each followed by a quiet
# window of three of the parked payments' rechecks (the demo's gateway keeps the default).
REPOST_ROUNDS = 5
REPOST_QUIET_S = 3 * PaymentsConfig().park_recheck_s


def parse_faults(text: str) -> list[str]:
    """``"erp-outage,kill-gateway"`` → names; raises ``GatewayError`` naming an unknown one."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise GatewayError(f"unknown fault(s) {', '.join(unknown)}; choose from "
                           f"{', '.join(FAULTS)}", code="cli.bad_fault")
    return list(dict.fromkeys(names))


@dataclass
class FaultRecord:
    name: str
    started_at: float | None = None  # monotonic
    healed_at: float | None = None
    postings_at_heal: int = 0
    first_posting_s: float | None = None
    drained_s: float | None = None

    def summary(self) -> dict[str, float | None]:
        """``first_posting_s`` is null when nothing was left to post once the fault healed."""
        return {"first_posting_s": _r(self.first_posting_s), "drained_s": _r(self.drained_s)}


def _order_section(audit: dict[str, Any]) -> dict[str, Any]:
    """Flow 6 in the drill report: amended invoices, how their older versions ended
    (superseded postings, each reversed), and ORDER_OK (no version applied after a newer one)."""
    return {
        "amended": audit.get("amended", 0),
        "superseded": audit.get("superseded", 0),
        "reversals": audit.get("reversals", 0),
        "order_checked": audit.get("order_checked", 0),
        "order_violations": audit.get("order_violations", 0),
        "order_ok": audit.get("order_violations", 0) == 0,
        "sum_ok": audit.get("amount_posted_latest") == audit.get("amount_issued"),
    }


def _actor_stats(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Every actor's statistics in a ``/status`` supervision tree whose name ends in
    ``ingress`` (each webhook source's intake)."""
    out: list[dict[str, Any]] = []
    for child in tree.get("children", ()):
        actor = child.get("actor") or {}
        if str(child.get("name", "")).endswith("ingress"):
            out.append(actor)
        out.extend(_actor_stats(actor))
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _heal_order(name: str) -> int:
    """Faults due to heal together heal the broker first, the gateway last: a restarted gateway
    is waited for until it is ready, which it cannot be while its broker is still down (say
    ``kill-gateway`` and ``broker-restart`` fired within a round or two of each other, after
    progress jumped past both triggers). 0: a fault of the broker. Pure."""
    if name == "broker-restart" or name in CLUSTER_FAULTS:
        return 0
    return 2 if name == "kill-gateway" else 1


class Driller:
    def __init__(self, stack: Stack, names: list[str], invoices: int, *,
                 entities: EntityMap | None = None, billing_dialect: str = "erpgw") -> None:
        self.stack = stack
        self.billing_dialect = billing_dialect  # how the checks read billing (Stripe's API)
        # The gateway's entity map (a foreign payment's posting is in its entity's functional
        # currency: the altered-amount check's reconciliation restates it the same way).
        self.entities = entities
        self.names = names
        self.invoices = invoices
        self.records = {n: FaultRecord(n) for n in names}
        self.killed_nodes: dict[str, list[str]] = {}  # fault -> the nats-server nodes it killed
        self.leaders_at_kill: dict[str, str] = {}  # fault -> the billing leader at that moment
        # lose-quorum: its figures (T_recover) and the webhooks accepted when quorum returned.
        self.quorum: dict[str, Any] = {}
        self._accepted = 0
        self._accepted_at_heal: int | None = None
        self._erp_active: dict[str, dict[str, Any]] = {}
        self._drained = False
        # period-close: the month the ERP closed and when (the simulator's clock).
        self.closed_period: tuple[str, float] | None = None
        self._billing: dict[str, Any] = {}
        # The bill run's opt-in extras the chosen faults need (amendments for out-of-order).
        self.bill_options: dict[str, float] = {}
        for n in names:
            self._billing.update(FAULTS[n].billing)
            self.bill_options.update(FAULTS[n].bill_run)

    def bill_rate(self, invoices: int) -> float:
        """The pace the chosen faults want the bill run issued at (0: all at once).
        ``lose-quorum``: over 60 s, so the webhooks are still arriving when quorum is lost
        (they would all be in before the fault otherwise) and the sender's retries are seen."""
        return invoices / QUORUM_ISSUE_S if "lose-quorum" in self.names else 0.0

    @property
    def gateway_env(self) -> dict[str, str]:
        """Extra gateway environment the chosen faults need. ``lose-quorum``: a publish is
        sent again for 3 s (not 10) before the ingress answers 503, so a webhook sender that
        waits 10 s for an answer gets the 503 rather than its own timeout."""
        return {"ERPGW_NATS_ELECTION_RETRY_S": "3"} if "lose-quorum" in self.names else {}

    @property
    def gateway_toml(self) -> str:
        """Extra gateway config the chosen faults need (a short ERP timeout for commit-timeout,
        so an unanswered request becomes an ambiguous outcome quickly)."""
        return "[erp]\ntimeout_s = 2.0\n" if "commit-timeout" in self.names else ""

    async def _apply(self) -> None:
        erp: dict[str, Any] = {}
        for settings in self._erp_active.values():
            erp.update(settings)
        await self.stack.set_faults({"erp": erp, "billing": self._billing})

    async def before_run(self) -> None:
        """Faults that apply from the start: webhook misbehaviour and poison messages."""
        now = time.monotonic()
        for n in self.names:
            if FAULTS[n].trigger == 0.0 and FAULTS[n].erp:
                self._erp_active[n] = FAULTS[n].erp  # for the whole run
        if self._billing or self._erp_active:
            await self._apply()
        for n in self.names:
            if FAULTS[n].trigger == 0.0:
                self.records[n].started_at = now
        if "poison" in self.names:
            # What a compromised or buggy webhook intake could publish: the ingress identity.
            bus = await NatsBus.connect(self.stack.url, name="erpgw-drill",
                                        auth=self.stack.auth("ingress"))
            try:
                for i in range(POISON_COUNT):
                    await bus.publish(OutMsg(Subjects().invoice_issued,
                                             b"\xc1poison-" + str(i).encode(), f"poison-{i}"))
            finally:
                await bus.close()

    async def run(self) -> None:
        """Inject and heal the triggered faults; returns once all have healed."""
        pending = sorted((n for n in self.names if FAULTS[n].trigger > 0),
                         key=lambda n: FAULTS[n].trigger)
        active: list[str] = []
        while pending or active:
            audit = await self.stack.audit()
            share = audit["posted"] / max(1, self.invoices)
            now = time.monotonic()
            while pending and share >= FAULTS[pending[0]].trigger:
                name = pending.pop(0)
                await self.inject(name)
                active.append(name)
            due = [n for n in active
                   if now - (self.records[n].started_at or now) >= FAULTS[n].window_s]
            # A killed gateway is started again only once the broker is whole: not while a
            # broker fault that is not due yet is still on (it would wait for a broker that
            # cannot answer, and the restart times out).
            broker_down = any(_heal_order(n) == 0 for n in active if n not in due)
            for name in sorted(due, key=_heal_order):
                if name == "kill-gateway" and broker_down:
                    continue
                await self.heal(name, audit["postings"])
                active.remove(name)
            if (share >= 1.0 or self._drained) and pending:
                # Finished before the trigger (or drained short of it: the period closed and
                # the rest was dead-lettered): fire what is left now.
                for name in pending:
                    await self.inject(name)
                    active.append(name)
                pending.clear()
            await anyio.sleep(0.1)

    def drained(self) -> None:
        """The run has drained (everything posted or dead-lettered): faults whose trigger the
        progress never reached fire now, as when the run finished before them; ``run`` would
        wait for them for ever otherwise (``period-close`` holds the posted share at about its
        own trigger under the ``dead_letter`` policy)."""
        self._drained = True

    async def inject(self, name: str) -> None:
        """Start fault ``name`` now (``run`` calls it at the fault's trigger)."""
        rec = self.records[name]
        rec.started_at = time.monotonic()
        if name == "lose-quorum":
            self.quorum["down_s"] = FAULTS[name].window_s
        fault = FAULTS[name]
        if fault.erp:
            self._erp_active[name] = fault.erp
            await self._apply()
        elif name == "kill-gateway":
            self.stack.kill_gateway()
        elif name == "broker-restart" and self.stack.broker is not None:
            self.stack.broker.kill()
        elif name in CLUSTER_FAULTS and self.stack.nats_cluster is not None:
            # Just after an earlier fault the stream may be electing: wait for its leader, so
            # the victim is the leader (or certainly not the leader) as the fault says.
            leader = ""
            with anyio.move_on_after(15.0):
                while not (leader := await self._billing_leader()):
                    await anyio.sleep(0.2)
            running = [n for n in self.stack.nats_cluster.nodes if n.running]
            if name == "lose-quorum":
                # The leader first, then the next running node: a majority of three down.
                victims = sorted(running, key=lambda n: n.server_name != leader)[:2]
            else:
                victims = [n for n in running if (n.server_name == leader)
                           == (name == "kill-nats-leader")][:1]
            if victims:
                self.killed_nodes[name] = [v.server_name for v in victims]
                self.leaders_at_kill[name] = leader
                for v in victims:
                    v.kill()
        elif name == "freeze-gateway":
            self.stack.signal_gateway(signal.SIGSTOP)
        elif name == "period-close":
            period = time.strftime("%Y-%m", time.gmtime())
            status = await self.stack._sim_call("POST", f"/erp/v1/periods/{period}/close")
            self.closed_period = (period, float(status["closedAt"]))

    async def heal(self, name: str, postings: int) -> None:
        """End fault ``name`` (``postings``: the ERP's postings so far, to time the next)."""
        rec = self.records[name]
        if name in self._erp_active:
            del self._erp_active[name]
            await self._apply()
        elif name == "kill-gateway":
            await anyio.sleep(0.5)
            await self.stack.start_gateway()
        elif name == "broker-restart" and self.stack.broker is not None:
            await anyio.sleep(1.5)
            await self.stack.broker.start()
        elif name in self.killed_nodes and self.stack.nats_cluster is not None:
            cluster = self.stack.nats_cluster
            async with anyio.create_task_group() as tg:  # at once: each waits for its routes
                for node in self.killed_nodes[name]:
                    tg.start_soon(cluster.node(node).start)
        elif name == "freeze-gateway":
            self.stack.signal_gateway(signal.SIGCONT)
        rec.healed_at = time.monotonic()
        rec.postings_at_heal = postings
        if name == "lose-quorum":
            await self._quorum_back(rec)

    async def _quorum_back(self, rec: FaultRecord) -> None:
        """After the restart: how long until the billing stream has a leader again."""
        assert rec.healed_at is not None
        self._accepted_at_heal = self._accepted
        with anyio.move_on_after(QUORUM_BACK_TIMEOUT_S):
            while not await self._billing_leader():
                await anyio.sleep(0.1)
            self.quorum["stream_leader_s"] = _r(time.monotonic() - rec.healed_at)

    async def _billing_leader(self) -> str:
        """The server name of the billing stream's leader ("" when none is known now)."""
        import nats

        try:
            nc = await nats.connect(server_list(self.stack.url), name="erpgw-drill-leader",
                                    allow_reconnect=False, connect_timeout=2.0,
                                    **self.stack.nats_options("admin"))
        except (nats.errors.Error, OSError, TimeoutError):
            return ""
        try:
            info = await nc.jsm().stream_info(self.stack.subjects.stream("billing"))
        except (nats.errors.Error, OSError, TimeoutError):
            return ""
        finally:
            await nc.close()
        return str(info.cluster.leader or "") if info.cluster else ""

    def observe(self, audit: dict[str, Any]) -> None:
        """Called with each audit the drain loop reads: the first posting after a heal."""
        now = time.monotonic()
        self._accepted = int(audit.get("accepted", 0))
        healed = self.records.get("lose-quorum")
        if (healed is not None and healed.healed_at is not None
                and self._accepted_at_heal is not None and "webhook_accepted_s" not in self.quorum
                and self._accepted > self._accepted_at_heal):
            self.quorum["webhook_accepted_s"] = _r(now - healed.healed_at)
        for rec in self.records.values():
            if rec.healed_at is not None and rec.first_posting_s is None and (
                    audit["postings"] > rec.postings_at_heal
                    or audit["posted"] >= self.invoices):
                rec.first_posting_s = now - rec.healed_at

    def finish(self, result: DrainResult) -> dict[str, Any]:
        """The report's drill section: faults, recovery times, and DLQ_EXACT."""
        end = time.monotonic()
        for rec in self.records.values():
            if rec.healed_at is None and rec.started_at is not None:
                rec.healed_at = rec.started_at  # faults that apply from the start
            if rec.healed_at is not None and result.drained:
                rec.drained_s = end - rec.healed_at
        poison = [dl for dl in result.dead_letters if dl.data.startswith(b"\xc1poison-")]
        expected = POISON_COUNT if "poison" in self.names else 0
        # period-close under dead_letter: its letters, replayed (``settle_period_close``).
        expected_other = sum(1 for dl in result.dead_letters
                             if "period-close" in self.names and dl.code == "erp.period_closed")
        return {
            "faults": self.names,
            "recovery_s": {n: r.summary() for n, r in self.records.items()
                           if FAULTS[n].recovers and (FAULTS[n].trigger > 0 or FAULTS[n].erp)},
            "dlq_exact": len(poison) == expected == len(result.dead_letters) - expected_other,
            "webhook_faults": result.audit.get("faults", {}).get("billing"),
            **({"order": _order_section(result.audit)} if self.bill_options else {}),
            **({"killed_nats_nodes": {
                n: {"node": nodes[0], "nodes": nodes,
                    "billing_leader": self.leaders_at_kill.get(n, "")}
                for n, nodes in self.killed_nodes.items()}} if self.killed_nodes else {}),
        }

    def _quorum_section(self, refused: dict[str, int]) -> dict[str, Any]:
        """``lose-quorum``'s figures. T_recover: from the restart of the two nodes until the
        ingress accepted a webhook again and the ERP received a posting again (the later of
        the two; a side with nothing left to do by then does not count)."""
        rec = self.records["lose-quorum"]
        parts = [x for x in (self.quorum.get("webhook_accepted_s"), _r(rec.first_posting_s))
                 if x is not None]
        return {"nodes": self.killed_nodes.get("lose-quorum", []), **self.quorum,
                "first_posting_s": _r(rec.first_posting_s),
                "t_recover_s": max(parts) if parts else None,
                "webhooks_refused": refused,
                "gateway_running": self.stack.gateway_running}

    async def after_run(self, result: DrainResult) -> dict[str, Any]:
        """Checks that need the drained run: for ``altered-amount``, one reconciliation (no
        repair) compared with the postings the simulator altered. Returns the report section
        (empty without such a drill). Raises ``GatewayError`` when the broker or a platform
        cannot be read."""
        out: dict[str, Any] = {}
        if "lose-quorum" in self.names:
            out["quorum"] = self._quorum_section(await self.broker_refusals())
        if "altered-amount" in self.names:
            out["altered_amount"] = await self._reconcile_altered(result.audit)
        return out

    async def broker_refusals(self) -> dict[str, int]:
        """The webhooks the ingress of every gateway process answered 503 because JetStream
        did not store them (``broker.*``), by code, from each process's ``/status`` (counted
        since it last started); a process that does not answer adds nothing."""
        refused: dict[str, int] = {}
        for admin in self.stack.admin_urls():
            try:
                async with HttpClient(admin, timeout=5.0, platform="gateway",
                                      ca_file=self.stack.ca_file) as http:
                    doc = msgspec.json.decode((await http.get("/status")).body)
            except (GatewayError, msgspec.DecodeError):
                continue
            for stats in _actor_stats(doc.get("actors", {}) if isinstance(doc, dict) else {}):
                for code, n in (stats.get("rejected") or {}).items():
                    if str(code).startswith("broker."):
                        refused[code] = refused.get(code, 0) + int(n)
        return dict(sorted(refused.items()))

    async def _reconcile_altered(self, audit: dict[str, Any]) -> dict[str, Any]:
        import nats  # a core subscription to what the reconciler publishes

        subjects = Subjects()
        published: list[dict[str, Any]] = []
        nc = await nats.connect(server_list(self.stack.url), name="erpgw-drill-recon",
                                **self.stack.nats_options("monitor"))
        try:
            async def collect(msg: Any) -> None:
                doc = msgspec.json.decode(msg.data)
                if isinstance(doc, dict):
                    published.append({"subject": msg.subject, **doc})

            sub = await nc.subscribe(f"{subjects.prefix}.mon.recon.>", cb=collect)
            bus = await NatsBus.connect(self.stack.url, name="erpgw-drill",
                                        auth=self.stack.auth("operator"))
            try:
                ca = self.stack.ca_file
                async with billing_client(self.stack, self.billing_dialect) as billing, \
                        HttpClient(self.stack.sim_url, platform="erp", ca_file=ca) as erp:
                    run = await run_once(
                        bus, subjects, billing, erp, grace_s=0.0, repair=False,
                        entities=self.entities,
                        billing_read=billing_read_for(billing, self.billing_dialect))
            finally:
                await bus.close()
            await nc.flush()
            with anyio.move_on_after(5.0):  # until the report (published last) is seen
                while not any(p["subject"].endswith(".report") for p in published):
                    await anyio.sleep(0.05)
            await sub.unsubscribe()
        finally:
            await nc.close()
        found = {b.key for b in run.report.breaks if b.kind == "amount"}
        proposals = {a.key: a.proposal for a in run.report.actions
                     if isinstance(a, Flag) and a.kind == "amount"}
        on_bus = {p["key"] for p in published
                  if p["subject"].endswith(".break") and p.get("kind") == "amount"}
        proposed_on_bus = {p["key"] for p in published
                           if p["subject"].endswith(".proposal") and p.get("kind") == "amount"}
        return {**altered_section(audit, found, on_bus, proposed_on_bus),
                "repaired": len(run.repaired),
                "amount_altered": audit.get("amount_altered", {}),
                "proposals": dict(sorted(proposals.items())[:MAX_LISTED])}


def altered_section(audit: dict[str, Any], found: set[str], on_bus: set[str],
                    proposed_on_bus: set[str]) -> dict[str, Any]:
    """The ``altered-amount`` drill's verdict: the documents whose postings the simulator
    altered (its audit names postings, an amendment's ``in_1:v2`` among them; the reconciler's
    amount breaks name documents, ``in_1``) against the breaks found, published and proposed.
    Pure."""
    altered_ids = list(audit.get("altered_ids", []))
    altered = {split_external_id(i)[0] for i in altered_ids}
    return {
        "altered": len(altered_ids),
        "documents": len(altered),
        "found": len(found),
        "published": len(on_bus),
        "exact": bool(altered) and found == altered == on_bus == proposed_on_bus
        and len(altered_ids) == int(audit.get("altered_count", 0)),
        "missed": sorted(altered - found)[:MAX_LISTED],
        "unexplained": sorted(found - altered)[:MAX_LISTED],
    }


def billing_client(stack: Stack, dialect: str = "erpgw") -> HttpClient:
    """An HTTP client of the stack's simulated billing platform, as the demo's own checks
    read it: with the simulator's loopback-only Stripe test key when billing speaks Stripe."""
    signer = None
    if dialect == "stripe":
        from actors.platforms.auth import AuthSettings, load_auth
        from sim import SimConfig

        var = "ERPGW_DEMO_STRIPE_KEY"  # the demo's (gateway.demo), given here, not read
        signer = load_auth(AuthSettings(type="bearer", token_env=var),
                           environ={var: SimConfig().stripe_secret_key})
    return HttpClient(stack.sim_url, platform="billing", signer=signer, ca_file=stack.ca_file)


def billing_read_for(http: HttpClient, dialect: str = "erpgw") -> BillingReadFn | None:
    """How the demo's checks read billing's documents in its dialect (as the gateway's
    reconciler does, ``gateway.app.stripe_billing_read``): Stripe's ``GET /v1/events``; None
    for the simulator's own event list."""
    if dialect != "stripe":
        return None
    from actors.platforms import PlatformGuard
    from actors.platforms.billing.stripe import StripeReader
    from actors.reconcile.stripe import read_billing_stripe

    return functools.partial(read_billing_stripe, StripeReader(
        PlatformGuard("billing", http, open_code="billing.breaker_open")))


async def erp_entries(stack: Stack) -> list[dict[str, Any]]:
    """Every journal entry the simulated ERP holds, in commit order (its paged lookup)."""
    out: list[dict[str, Any]] = []
    while True:
        after = out[-1]["seq"] if out else 0
        page = await stack._sim_call("GET", f"/erp/v1/journal-entries?after={after}&limit=1000")
        out += page["items"]
        if len(page["items"]) < 1000:
            return out


def _invoice_entry(external_id: str) -> bool:
    return not (external_id.endswith(":reversal") or external_id.startswith(
        ("cn_", "py_", "recognition:")))


async def settle_period_close(driller: Driller, result: DrainResult, policy: str,
                              *, stall_timeout: float) -> tuple[DrainResult, dict[str, Any]]:
    """After a drained ``period-close`` run: under ``dead_letter``, replay the
    ``erp.period_closed`` letters with ``--repost-open`` (as an operator would) and wait until
    every invoice is posted; then the report's ``period_close`` section: where each posting
    the ERP took after the close went (``next_open``: the period it landed in, the original date
    in its memo; ``dead_letter``: dead-lettered, then re-posted there), checked against the
    ERP's GL (``gl_ok``: the receivable debits of that period are exactly those postings').
    Returns the run's result (read again after a replay) and the section. Raises
    ``GatewayError`` when the broker or the simulator cannot be read."""
    from actors.erp.periods import first_day_after

    from .dlq import list_letters, resolve_letters

    if driller.closed_period is None:
        return result, {"closed": None}
    period, closed_at = driller.closed_period
    replayed = 0
    letters: list[str] = []
    rounds = left = 0
    if policy == "dead_letter":
        # A re-posted invoice lets the payments parked on it resume; their cash applications,
        # dated in the closed period too, are dead-lettered in turn. So replay in rounds, as an
        # operator would, until a round's quiet window brings no new letter.
        bus = await NatsBus.connect(driller.stack.url, name="erpgw-drill-repost",
                                    auth=driller.stack.auth("operator"))
        try:
            while rounds < REPOST_ROUNDS:
                records = await list_letters(bus, driller.stack.subjects,
                                             code="erp.period_closed")
                if not records:
                    break
                rounds += 1
                letters += [r.letter.business_key or "" for r in records]
                replayed += await resolve_letters(bus, driller.stack.subjects, records,
                                                  action="replayed", repost_open=True,
                                                  note="erpgw demo --faults period-close")
                with anyio.fail_after(stall_timeout + 60):  # a guard against a hang
                    while (await driller.stack.audit())["unposted_count"] > 0:
                        await anyio.sleep(0.2)
                result = await driller.stack.wait_drained(driller.invoices,
                                                          stall_timeout=stall_timeout)
                await anyio.sleep(REPOST_QUIET_S)
            if rounds == REPOST_ROUNDS:  # out of rounds: letters still open make it inexact
                left = len(await list_letters(bus, driller.stack.subjects,
                                              code="erp.period_closed"))
        finally:
            await bus.close()
        letters.sort()
    into = first_day_after(_first_day(period), 1).isoformat()[:7]
    late = [e for e in await erp_entries(driller.stack)
            if e["acceptedAt"] >= closed_at and _invoice_entry(e["externalId"])]
    moved: dict[str, int] = {}
    for e in late:
        moved[e["currency"]] = moved.get(e["currency"], 0) + int(e["amount"])
    gl = await driller.stack._sim_call("GET", f"/erp/v1/gl/balances?period={into}")
    account = AccountMap().receivable  # debited with each invoice's total, nothing else
    receivable = {b["currency"]: b["debit"] for b in gl["balances"] if b["account"] == account}
    went = (f"posted on {into}-01 (next_open), its original date in its memo"
            if policy == "next_open" else
            f"dead-lettered erp.period_closed, re-posted on {into}-01 by dlq replay "
            "--repost-open")
    return result, {
        "period": period, "policy": policy, "late_postings": len(late), "into": into,
        "amount_moved": moved, "gl_ok": receivable == moved,
        "dead_lettered": len(letters), "replayed": replayed, "rounds": rounds,
        "left_open": left,
        "exact": left == 0 and repost_exact(letters, replayed, [e["externalId"] for e in late])
        if policy == "dead_letter" else not letters,
        "went": went,
        "where": {e["externalId"]: into for e in late[:MAX_LISTED]},
    }


def repost_exact(letters: list[str], replayed: int, late_ids: list[str]) -> bool:
    """Under ``dead_letter``: every ``erp.period_closed`` letter was replayed, and the invoice
    documents dead-lettered are exactly the documents the ERP took late (pure). Documents, not
    postings: a superseded version's letter, replayed after its successor, posts nothing, and
    payments' and credit notes' letters land as entries ``_invoice_entry`` leaves out."""
    keys = [k.split(":", 1)[1] if k.startswith("billing:") else k for k in letters]
    dead = {split_external_id(k)[0] for k in keys if _invoice_entry(k)}
    took = {split_external_id(i)[0] for i in late_ids}
    return len(letters) == replayed and dead == took


def _first_day(period: str) -> date:
    year, month = (int(x) for x in period.split("-"))
    return date(year, month, 1)
