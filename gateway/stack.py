"""A whole system on one machine: broker, simulator and gateway as separate processes.

``erpgw demo``, the integration tests and the bench drive the product exactly as a user would:
the gateway and the simulator run as their own processes (``python -m gateway up`` / ``sim``)
talking real HTTP and real NATS, so a drill can SIGKILL the gateway or restart the broker and
then count from the simulator's ground truth what was lost or doubled.

Logs of every process go to files under the stack's work directory.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from actors.infra import NatsBus
from actors.infra.bus import (
    BrokerUnavailable,
    ConsumerSettings,
    NatsAuth,
    client_tls,
    server_list,
)
from actors.infra.http import HttpClient
from contracts import LANES, DeadLetter, GatewayError, JsonCodec, Subjects

from .app import REVENUE_CONSUMER
from .broker import BrokerTls, EmbeddedBroker, EmbeddedCluster, free_port
from .rrproxy import RoundRobinProxy
from .stack_tls import StackCerts, quiet_upgraded_tls_eof

__all__ = ["ConsumerState", "DrainResult", "PeerGateway", "Quiescence", "RevenueResult", "Stack",
           "StackError"]

_letters: JsonCodec[DeadLetter] = JsonCodec(DeadLetter)
_dec = msgspec.json.Decoder()


class StackError(GatewayError):
    code = "stack.failed"


@dataclass(frozen=True)
class ConsumerState:
    """One durable consumer as the broker reports it (``consumer info``)."""

    stream: str
    name: str
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    delivered_stream_seq: int
    ack_floor_stream_seq: int
    delivered_consumer_seq: int = 0  # deliveries to this consumer (redeliveries included)

    @property
    def activity(self) -> tuple[str, str, int, int, int, int]:
        """What changes only when this consumer is delivered or acknowledges something (the
        stream sequences also move when other subjects are stored in its stream)."""
        return (self.stream, self.name, self.num_pending, self.num_ack_pending,
                self.num_redelivered, self.delivered_consumer_seq)

    @property
    def idle(self) -> bool:
        """Nothing left to deliver and nothing delivered but unacknowledged: no redelivery
        can be due (a redelivery is always of an ack-pending message)."""
        return self.num_pending == 0 and self.num_ack_pending == 0


@dataclass
class Quiescence:
    """What ``Stack.wait_quiet`` saw last: ``quiet`` when every consumer was idle and the
    simulator's counts and the consumers' states were unchanged across reads ``settle_s``
    apart; otherwise the consumers that were still busy."""

    quiet: bool
    audit: dict[str, Any]
    consumers: list[ConsumerState]
    waited_s: float
    moving: list[str] = field(default_factory=list)  # what changed at the last read

    @property
    def busy(self) -> list[ConsumerState]:
        return [c for c in self.consumers if not c.idle]


def counts_signature(doc: Any) -> Any:
    """The counting part of an audit: every int, str and bool, nested, without floats (which
    are timestamps, latencies and rates, and change with every read) and without the
    ``faults`` section (what the simulator injected, not what the platforms hold)."""
    if isinstance(doc, dict):
        return tuple((k, counts_signature(v)) for k, v in sorted(doc.items())
                     if not isinstance(v, float) and k != "faults")
    if isinstance(doc, list):
        return tuple(counts_signature(v) for v in doc if not isinstance(v, float))
    return doc


@dataclass
class DrainResult:
    """``drained``: nothing is lost, and (when counted after ``Stack.wait_quiet``) ``quiet``:
    every consumer idle and the counts stable, so ``audit`` holds every duplicate there will
    ever be."""

    audit: dict[str, Any]
    dead_letters: list[DeadLetter]
    drained: bool
    elapsed_s: float
    quiet: bool = False

    @property
    def dlq_keys(self) -> set[str]:
        """Invoice ids named by dead letters (``billing:<id>:v<n>`` business keys)."""
        out = set()
        for dl in self.dead_letters:
            if dl.business_key and dl.business_key.count(":") >= 2:
                out.add(dl.business_key.split(":", 2)[1])
        return out

    @property
    def lost(self) -> int:
        """Accepted by the gateway, yet neither posted nor dead-lettered."""
        unposted = set(self.audit.get("unposted", []))
        if len(unposted) < int(self.audit.get("unposted_count", 0)):
            # the audit lists at most 1000 ids; count the rest as lost unless dead-lettered
            return int(self.audit["unposted_count"]) - len(unposted & self.dlq_keys)
        return len(unposted - self.dlq_keys)


@dataclass
class RevenueResult:
    """What the revenue platform should hold and what it does (flow 2's revenue half).

    ``expected_lines`` / ``expected_amount`` (subtotals per upper-case currency) come from the
    invoices billing issued (its events API), ``audit`` is the simulator's ``revenue`` section,
    ``lines_by_invoice`` the number of lines of each issued invoice. ``drained``: the gateway's
    revenue consumer has nothing pending nor unacknowledged. ``billed_amount``: what the
    platform's billings must add up to, per currency: each invoice's latest version less its
    credit memos (amendments and credit memos reach the platform as corrections; docs/flows.md);
    ``None``: not read.
    """

    audit: dict[str, Any]
    expected_lines: int
    expected_amount: dict[str, int]
    lines_by_invoice: dict[str, int]
    drained: bool
    billed_amount: dict[str, int] | None = None


def _revenue_of(inv: dict[str, Any]) -> int:
    """The revenue an issued invoice bills: its subtotal; for a Stripe invoice, its lines net
    of their discounts and of any tax included in their prices."""
    if "total_discount_amounts" not in inv:
        return int(inv["subtotal"])
    return sum(int(ln["amount"]) - sum(int(d["amount"]) for d in ln.get("discount_amounts") or ())
               - sum(int(t["amount"]) for t in ln.get("taxes") or ()
                     if t.get("tax_behavior") == "inclusive")
               for ln in inv["lines"]["data"])


@dataclass(frozen=True)
class PeerGateway:
    """One more gateway process of a stack (``Stack.start_peer_gateway``)."""

    proc: subprocess.Popen[bytes]
    url: str  # its webhook listener
    admin_url: str


@dataclass
class Stack:
    workdir: Path
    nats_url: str = ""  # empty: start an embedded broker for the stack
    seed: int = 7
    ack_wait_s: float = 30.0
    webhook_secret: str = "whsec_demo"  # noqa: S105 - the simulator's demo secret
    gateway_env: dict[str, str] = field(default_factory=dict)
    sync_interval: str = "always"
    # Extra TOML appended to the gateway's config (whole sections, e.g. "[erp]\ntimeout_s = 2").
    gateway_toml: str = ""
    # Extra arguments of `erpgw sim` (e.g. ("--scenario", "faults.toml")).
    sim_args: tuple[str, ...] = ()
    # The ERP speaks NetSuite REST (sim --erp-dialect netsuite, gateway erp.dialect =
    # "netsuite"); with ``netsuite_auth`` the gateway signs with the simulator's loopback-only
    # demo TBA credentials, read from environment variables (never written to the TOML).
    netsuite: bool = False
    netsuite_auth: bool = True
    # The gateway's nats.prefix (its subjects and stream names).
    nats_prefix: str = "erpgw"
    # Scale-out (docs/scale-out.md): ``cluster`` > 0 starts that many nats-server nodes joined
    # into one JetStream cluster (streams with that many replicas, at most 3) instead of one
    # broker; ``gateways`` > 1 starts that many gateway processes, each with a data directory
    # of its own, behind one round-robin proxy that the simulator's webhooks and every HTTP
    # call of the stack go to. Gateway 1 is the one ``kill_gateway`` & co. act on.
    cluster: int = 0
    gateways: int = 1
    # Process roles (docs/scale-out.md, "Process roles"), one comma-separated list per
    # gateway process, gateway 1 first (empty: every process runs every role). The proxy
    # forwards only to the processes that run ``ingress``; with one such process there is no
    # proxy: the webhooks go straight to it.
    roles: tuple[str, ...] = ()
    # Every hop encrypted (docs/security.md, S14): a CA made at start (``certs``, under
    # ``<workdir>/tls``) signs the broker's certificate (TLS only, client certificates
    # required, NKey identities as always), the gateway's HTTPS webhook and admin listeners,
    # the simulator's HTTPS platforms (the gateway verifies them with platforms.ca_file) and
    # the client certificate of every broker connection; the simulator's webhook sender
    # verifies the gateway's certificate. One broker and one gateway process only.
    tls: bool = False
    certs: StackCerts | None = field(default=None, init=False)
    broker: EmbeddedBroker | None = field(default=None, init=False)
    nats_cluster: EmbeddedCluster | None = field(default=None, init=False)
    proxy: RoundRobinProxy | None = field(default=None, init=False)
    _others: list[subprocess.Popen[bytes] | None] = field(default_factory=list, init=False)
    other_ports: list[int] = field(default_factory=list, init=False)
    other_admin_ports: list[int] = field(default_factory=list, init=False)
    _gateway: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _sim: subprocess.Popen[bytes] | None = field(default=None, init=False)
    gateway_port: int = field(default=0, init=False)
    admin_port: int = field(default=0, init=False)
    sim_port: int = field(default=0, init=False)
    gateway_starts: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        if self.nats_url:
            return self.nats_url
        if self.nats_cluster is not None:
            return self.nats_cluster.url
        return self.broker.url if self.broker else ""

    @property
    def data_dir(self) -> Path:
        """The gateway's data directory (pass it as ``--data-dir`` to the CLI tools)."""
        return self.workdir / "gateway"

    def audit_key(self) -> bytes:
        """The gateway's audit key (``<data_dir>/audit.key``, made at its first start), to
        verify its ledger's keyed audit chain."""
        return (self.data_dir / "audit.key").read_text().strip().encode()

    @property
    def identities_dir(self) -> Path:
        return self.data_dir / "identities"

    def auth(self, role: str = "admin") -> NatsAuth | None:
        """Credentials of broker identity ``role``; with an external broker, the seed file
        named by ``ERPGW_NATS_NKEY_SEED_FILE`` (the gateway's own setting), if any. On a TLS
        stack they carry the client certificate too."""
        if self.broker is not None:
            auth = self.broker.auth(role)
            if self.certs is None:
                return auth
            c = self.certs
            return dataclasses.replace(auth or NatsAuth(), tls=client_tls(
                str(c.ca), str(c.nats_client.cert), str(c.nats_client.key)))
        if self.nats_cluster is not None:
            return self.nats_cluster.auth(role)
        seed = os.environ.get("ERPGW_NATS_NKEY_SEED_FILE", "")
        return NatsAuth(seed_file=seed) if seed else None

    def nats_options(self, role: str = "admin") -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` for identity ``role`` (tests, bench)."""
        auth = self.auth(role)
        return auth.options() if auth is not None else {}

    @property
    def scheme(self) -> str:
        """``https`` on a TLS stack (every listener), else ``http``."""
        return "https" if self.tls else "http"

    @property
    def ca_file(self) -> str:
        """The CA that signed every listener's certificate on a TLS stack (pass it as
        ``ca_file`` to ``HttpClient``), else empty."""
        return str(self.certs.ca) if self.certs is not None else ""

    @property
    def sim_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.sim_port}"

    @property
    def gateway_url(self) -> str:
        """Where the gateway serves webhooks: the proxy in front of all gateway processes
        when there are several, else the one process's webhook listener."""
        if self.proxy is not None:
            return self.proxy.url
        return self.ingress_urls()[0]

    def ingress_urls(self) -> list[str]:
        """The webhook listeners of the processes that run process role ``ingress``."""
        return [u for i, u in enumerate(self.gateway_urls(), 1) if self.runs(i, "ingress")]

    def gateway_urls(self) -> list[str]:
        """Every gateway process's own webhook listener, gateway 1 first."""
        return [f"{self.scheme}://127.0.0.1:{p}" for p in (self.gateway_port, *self.other_ports)]

    @property
    def admin_url(self) -> str:
        """Gateway 1's admin listener (``/livez``, ``/readyz``, ``/status``, ``/metrics``, the
        synchronous lane), on loopback."""
        return f"{self.scheme}://127.0.0.1:{self.admin_port}"

    def admin_urls(self) -> list[str]:
        """Every gateway process's admin listener, gateway 1 first."""
        return [f"{self.scheme}://127.0.0.1:{p}"
                for p in (self.admin_port, *self.other_admin_ports)]

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, args: list[str], log_name: str,
               env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("ab")
        try:
            return subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "gateway", *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, **(env or {})},
            )
        finally:
            log.close()

    async def _wait_http(self, base: str, proc: subprocess.Popen[bytes], what: str,
                         log_name: str, timeout: float | None = None,
                         path: str = "/healthz") -> None:
        # A guard against a hang, not a speed target: a TLS stack's processes make a TLS
        # handshake per connection (a gateway opens one per broker role) before they are
        # ready, which takes longer on a loaded machine.
        if timeout is None:
            timeout = 60.0 if self.tls else 30.0
        deadline = time.monotonic() + timeout
        async with HttpClient(base, timeout=2.0, platform=what, ca_file=self.ca_file) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise StackError(f"{what} exited with code {proc.returncode}; see "
                                     f"{self.workdir / log_name}:\n{self.tail(log_name)}")
                try:
                    await http.get(path)
                    return
                except GatewayError:
                    await anyio.sleep(0.1)
        raise StackError(f"{what} not ready within {timeout:.0f} s:\n{self.tail(log_name)}")

    def tail(self, log_name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / log_name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        """Start broker (unless external), simulator and gateway; wait until all are ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            if self.cluster or self.gateways > 1 or self.nats_url:
                raise StackError("a TLS stack has one embedded broker and one gateway process "
                                 "(no cluster, no external broker, gateways = 1)")
            self.certs = StackCerts.make(self.workdir / "tls")
            quiet_upgraded_tls_eof()
        if not self.nats_url and self.cluster:
            self.nats_cluster = EmbeddedCluster(self.workdir / "nats-cluster", size=self.cluster,
                                                sync_interval=self.sync_interval,
                                                identities_dir=self.identities_dir,
                                                prefix=self.nats_prefix)
            await self.nats_cluster.start()
        elif not self.nats_url:
            # Authentication on, as in production: the role seeds go where the gateway (its
            # data dir) and the CLI tools (`--data-dir <workdir>/gateway`) look for them.
            self.broker = EmbeddedBroker(self.workdir / "nats", port=free_port(),
                                         sync_interval=self.sync_interval,
                                         identities_dir=self.identities_dir,
                                         prefix=self.nats_prefix, tls=self._broker_tls())
            await self.broker.start()
        self.gateway_port = free_port()
        self.admin_port = free_port()
        self.sim_port = free_port()
        if self.gateways > 1:
            self.other_ports = [free_port() for _ in range(self.gateways - 1)]
            self.other_admin_ports = [free_port() for _ in range(self.gateways - 1)]
            self._others = [None] * (self.gateways - 1)
            if len(self.ingress_urls()) > 1:  # one ingress process: no proxy in the way
                self.proxy = RoundRobinProxy(self.ingress_urls(), port=free_port())
                await self.proxy.start()
        await self.start_sim()
        await self.start_gateway()
        for i in range(2, self.gateways + 1):
            await self.start_other(i)

    async def start_sim(self) -> None:
        self._sim = self._spawn(
            ["sim", "--port", str(self.sim_port), "--seed", str(self.seed),
             "--webhook-url", f"{self.gateway_url}/webhooks/billing",
             "--webhook-secret", self.webhook_secret,
             "--partner-webhook-url", f"{self.gateway_url}/webhooks/partner",
             *(("--erp-dialect", "netsuite") if self.netsuite else ()),
             *self._sim_tls_args(), *self.sim_args], "sim.log")
        await self._wait_http(self.sim_url, self._sim, "simulator", "sim.log")

    def gateway_config(self, index: int = 1) -> Path:
        """Write gateway ``index``'s config (1: the first; others have a data directory and
        a port of their own and find the broker's identities in the first one's); the ERP
        base URL goes by environment variable so that ``gateway_toml`` may carry its own
        ``[erp]`` section."""
        path = self.workdir / ("gateway.toml" if index == 1 else f"gateway-{index}.toml")
        data = self.data_dir if index == 1 else self.workdir / f"gateway-{index}"
        port = self.gateway_port if index == 1 else self.other_ports[index - 2]
        admin_port = self.admin_port if index == 1 else self.other_admin_ports[index - 2]
        scale = ""
        if self.cluster:
            scale += f"[streams]\nreplicas = {min(self.cluster, 3)}\n"
        # The ack-pending limit is the consumer's, shared by every process fetching from it
        # (with roles, by the processes that run the same role).
        names = {r for x in self.roles for r in x.split(",")} or {"every role"}
        share = max(sum(self.runs(i, r) for i in range(1, self.gateways + 1)) for r in names)
        pending = (f"max_ack_pending = {ConsumerSettings().max_ack_pending * share}\n"
                   if share > 1 else "")
        path.write_text(
            f'data_dir = "{data}"\n'
            f'[nats]\nurl = "{self.url}"\nprefix = "{self.nats_prefix}"\n'
            f'identities_dir = "{self.identities_dir}"\n'
            f"{self._tls_toml('nats.tls')}"
            f"[http]\nport = {port}\n{self._tls_toml('http.tls')}"
            f"[admin]\nport = {admin_port}\n{self._tls_toml('admin.tls')}"
            f"[consumers]\nack_wait_s = {self.ack_wait_s}\n{pending}"
            f"{scale}"
            f"{self.gateway_toml}\n"
            f"{self._netsuite_toml()}"
        )
        return path

    def _broker_tls(self) -> BrokerTls | None:
        c = self.certs
        return None if c is None else BrokerTls(cert=c.broker.cert, key=c.broker.key, ca=c.ca)

    def _sim_tls_args(self) -> tuple[str, ...]:
        c = self.certs
        return () if c is None else ("--tls-cert", str(c.sim.cert), "--tls-key", str(c.sim.key),
                                     "--webhook-ca-file", str(c.ca))

    def _tls_toml(self, table: str) -> str:
        """The ``[nats.tls]`` (the client certificate, the CA verifying the broker),
        ``[http.tls]`` or ``[admin.tls]`` table of a TLS stack's gateway config."""
        c = self.certs
        if c is None:
            return ""
        if table == "nats.tls":
            return (f'[nats.tls]\nca = "{c.ca}"\ncert = "{c.nats_client.cert}"\n'
                    f'key = "{c.nats_client.key}"\n')
        return f'[{table}]\ncert = "{c.gateway.cert}"\nkey = "{c.gateway.key}"\n'

    def _roles_of(self, index: int) -> str:
        """Gateway process ``index``'s comma-separated process roles ("": every role)."""
        return self.roles[index - 1] if index <= len(self.roles) else ""

    def runs(self, index: int, role: str) -> bool:
        """Whether gateway process ``index`` (1 first) runs process role ``role``."""
        roles = self._roles_of(index)
        return not roles or role in roles.split(",")

    def _roles_env(self, index: int) -> dict[str, str]:
        roles = self._roles_of(index)
        return {"ERPGW_SCALE_OUT_ROLES": roles} if roles else {}

    def _gateway_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        # A TLS stack's platforms (the simulator) have certificates of the stack's own CA.
        tls = {"ERPGW_PLATFORMS_CA_FILE": self.ca_file} if self.certs is not None else {}
        return {**self._netsuite_env(), **tls, **self.gateway_env, **(env or {}),
                # Drill mode: GW_FAULT / GW_CRASH_AT act (this stack is all on loopback).
                "ERPGW_DRILLS": "1",
                "ERPGW_BILLING_WEBHOOK_SECRETS": self.webhook_secret,
                "ERPGW_ERP_BASE_URL": self.sim_url,
                "ERPGW_REVENUE_BASE_URL": self.sim_url,
                "ERPGW_CPQ_BASE_URL": self.sim_url,
                "ERPGW_PARTNER_BASE_URL": self.sim_url,
                "ERPGW_RECONCILE_BILLING_URL": self.sim_url}

    async def start_other(self, index: int) -> None:
        """Start (or restart) gateway process ``index`` (2..gateways) and wait until ready.
        Without ``roles`` the reconciler's schedule runs in gateway 1 only (with them, in the
        processes of role ``close``); every process runs the usage aggregator (its guard is
        shared in the cluster, docs/scale-out.md)."""
        log_name = f"gateway-{index}.log"
        env = self._roles_env(index) or {"ERPGW_RECONCILE_INTERVAL_S": "0"}
        proc = self._spawn(["up", "--config", str(self.gateway_config(index))], log_name,
                           self._gateway_env(env))
        self._others[index - 2] = proc
        await self._wait_http(self.admin_urls()[index - 1], proc, f"gateway {index}", log_name,
                              path="/readyz")

    def gateway_pids(self) -> list[int | None]:
        """Every gateway process's pid (None: not running), gateway 1 first."""
        procs = [self._gateway, *self._others]
        return [p.pid if p is not None and p.poll() is None else None for p in procs]

    def _netsuite_toml(self) -> str:
        if not self.netsuite:
            return ""
        # NetSuite governs concurrency, not a rate: a budget well above what 5 upserts in
        # flight can use, so the account's limit is what paces the poster.
        toml = "[erp_limiter]\nrate = 1000.0\nburst = 200\n"
        if self.netsuite_auth:
            toml += ('[erp.auth]\ntype = "oauth1_tba"\n'
                     'consumer_key_env = "NS_CONSUMER_KEY"\n'
                     'consumer_secret_env = "NS_CONSUMER_SECRET"\n'
                     'token_id_env = "NS_TOKEN_ID"\ntoken_secret_env = "NS_TOKEN_SECRET"\n')
        return toml

    def _netsuite_env(self) -> dict[str, str]:
        if not self.netsuite:
            return {}
        from sim._netsuite_tba import DEMO_TBA

        return {"ERPGW_ERP_DIALECT": "netsuite", "ERPGW_ERP_ACCOUNT": DEMO_TBA.account,
                "ERPGW_ERP_SUBSIDIARY": "1", "ERPGW_ERP_CONCURRENCY": "5",
                "NS_CONSUMER_KEY": DEMO_TBA.consumer_key,
                "NS_CONSUMER_SECRET": DEMO_TBA.consumer_secret,
                "NS_TOKEN_ID": DEMO_TBA.token_id, "NS_TOKEN_SECRET": DEMO_TBA.token_secret}

    async def start_gateway(self, env: Mapping[str, str] | None = None) -> None:
        """Start (or restart) the gateway process and wait until it is ready (``/readyz`` on
        its admin listener: broker connected, ledger open, every consumer bound)."""
        self._gateway = self._spawn(["up", "--config", str(self.gateway_config())],
                                    "gateway.log",
                                    self._gateway_env({**self._roles_env(1), **(env or {})}))
        self.gateway_starts += 1
        await self._wait_http(self.admin_url, self._gateway, "gateway", "gateway.log",
                              path="/readyz")

    async def start_peer_gateway(self, name: str) -> PeerGateway:
        """Start one more gateway process on the same broker, with its own data directory
        (``<workdir>/<name>``: its own ledger), webhook and admin ports, the same broker
        identities and settings; the simulator keeps sending to the first one. Stop it with
        ``stop_process(peer.proc)``."""
        port, admin_port = free_port(), free_port()
        env = self._gateway_env({
            "ERPGW_DATA_DIR": str(self.workdir / name), "ERPGW_HTTP_PORT": str(port),
            "ERPGW_ADMIN_PORT": str(admin_port),
            "ERPGW_NATS_IDENTITIES_DIR": str(self.identities_dir)})
        proc = self._spawn(["up", "--config", str(self.gateway_config())], f"{name}.log", env)
        peer = PeerGateway(proc, f"{self.scheme}://127.0.0.1:{port}",
                           f"{self.scheme}://127.0.0.1:{admin_port}")
        await self._wait_http(peer.admin_url, proc, name, f"{name}.log", path="/readyz")
        return peer

    @staticmethod
    async def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
        """SIGTERM ``proc`` and wait (SIGKILL after ``timeout``); its exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen one (freeze drill) must see its SIGTERM
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
        return proc.wait()

    @property
    def gateway_running(self) -> bool:
        return self._gateway is not None and self._gateway.poll() is None

    @property
    def gateway_pid(self) -> int | None:
        """PID of the running gateway process (the bench reads its CPU and RSS), else None."""
        return self._gateway.pid if self.gateway_running and self._gateway else None

    def gateway_exit_code(self) -> int | None:
        return self._gateway.poll() if self._gateway else None

    def kill_gateway(self) -> None:
        """SIGKILL the gateway process (crash drill)."""
        if self._gateway is not None and self._gateway.poll() is None:
            self._gateway.kill()
            self._gateway.wait()

    def signal_gateway(self, signum: int) -> None:
        """Send ``signum`` to the running gateway process (a stop drill: SIGTERM, SIGINT)."""
        if self._gateway is not None and self._gateway.poll() is None:
            self._gateway.send_signal(signum)

    async def stop_gateway(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self._gateway is None:
            return None
        return await self.stop_process(self._gateway, timeout)

    async def wait_gateway_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self._gateway is not None and self._gateway.poll() is None:
            if time.monotonic() > deadline:
                return None
            await anyio.sleep(0.05)
        return self._gateway.poll() if self._gateway else None

    async def close(self) -> None:
        await self.stop_gateway()
        for proc in self._others:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a frozen one must see its SIGTERM
                proc.send_signal(signal.SIGTERM)
        for proc in self._others:
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.proxy is not None:
            await self.proxy.stop()
        if self._sim is not None and self._sim.poll() is None:
            self._sim.send_signal(signal.SIGTERM)
            try:
                self._sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._sim.kill()
                self._sim.wait()
        if self.broker is not None:
            await self.broker.stop()
        if self.nats_cluster is not None:
            await self.nats_cluster.stop()

    async def work_shares(self) -> list[dict[str, Any]]:
        """Each gateway process's share of the work, gateway 1 first: the HTTP requests the
        proxy handed it (``webhooks``; with one process, None) and the messages its durable
        consumers processed and acked since it last started (``processed``, from its
        ``/metrics``: ``erpgw_consumer_processed_total``), per consumer and in all."""
        out: list[dict[str, Any]] = []
        for i, (base, admin) in enumerate(zip(self.gateway_urls(), self.admin_urls(),
                                              strict=True), 1):
            per: dict[str, int] = {}
            try:
                async with HttpClient(admin, timeout=5.0, platform="gateway",
                                      ca_file=self.ca_file) as http:
                    text = (await http.get("/metrics")).body.decode()
            except GatewayError:
                text = ""
            for line in text.splitlines():
                if line.startswith("erpgw_consumer_processed_total{"):
                    labels, _, value = line.rpartition(" ")
                    name = labels.partition('consumer="')[2].partition('"')[0]
                    per[name] = per.get(name, 0) + int(float(value))
            out.append({"gateway": i, "url": base, "up": bool(text),
                        "webhooks": self.proxy.forwarded.get(base) if self.proxy else None,
                        "processed": sum(per.values()), "by_consumer": dict(sorted(per.items()))})
        return out

    # -- simulator and broker views ------------------------------------------------------------

    async def _sim_call(self, method: str, path: str, body: Any = None) -> Any:
        async with HttpClient(self.sim_url, timeout=30.0, platform="simulator",
                              ca_file=self.ca_file) as http:
            raw = None if body is None else msgspec.json.encode(body)
            resp = await http.request(method, path, raw)
            return _dec.decode(resp.body) if resp.body else None

    async def bill_run(self, invoices: int, rate: float = 0.0,
                       **options: float) -> dict[str, Any]:
        """Ask the billing simulator to issue ``invoices`` invoices at ``rate`` per second;
        ``options`` are the bill run's opt-in extras (``amend_rate``, ``reorder_amendments``,
        …; see ``sim._billing.BillRunRequest``)."""
        result: dict[str, Any] = await self._sim_call(
            "POST", "/billing/v1/bill-runs", {"invoices": invoices, "rate": rate, **options})
        return result

    async def deal_run(self, deals: int, **options: float) -> dict[str, Any]:
        """Ask the partner portal to register ``deals`` deals, delivered to the gateway;
        ``options`` are the run's rates in camelCase (``rejectRate``…) or snake_case
        (``reject_rate``…; see ``sim._deals.DealRunRequest``)."""
        body: dict[str, Any] = {"deals": deals}
        for name, value in options.items():
            head, *rest = name.split("_")
            body[head + "".join(w.title() for w in rest)] = value
        result: dict[str, Any] = await self._sim_call("POST", "/partner/v1/deal-runs", body)
        return result

    async def subscription_changes(self, count: int, *, reorder_rate: float = 0.0,
                                   seed: int | None = None) -> dict[str, Any]:
        """Ask billing to amend, renew or cancel up to ``count`` active subscriptions (flow 5),
        their webhooks to the gateway, ``reorder_rate`` of them shuffled."""
        body: dict[str, Any] = {"count": count, "reorderRate": reorder_rate}
        if seed is not None:
            body["seed"] = seed
        result: dict[str, Any] = await self._sim_call(
            "POST", "/billing/v1/subscription-changes", body)
        return result

    async def wait_deals(self, deals: int, *, stall_timeout: float = 60.0,
                         interval: float = 0.25) -> dict[str, Any]:
        """The audit's ``deals`` section once ``deals`` deals were delivered and every
        approved one completed or compensated, read at rest (``wait_quiet``: a late duplicate
        is counted), or when nothing moved for ``stall_timeout`` seconds (check
        ``incomplete_count``)."""
        last: tuple[int, ...] = ()
        last_change = time.monotonic()
        while True:
            section: dict[str, Any] = (await self.audit()).get("deals") or {}
            if section.get("accepted") == deals and section.get("incomplete_count") == 0:
                rest = await self.wait_quiet(timeout=stall_timeout, interval=interval)
                settled: dict[str, Any] = rest.audit.get("deals") or section
                return settled
            sig = tuple(int(v) for v in section.values() if isinstance(v, int))
            now = time.monotonic()
            if sig != last:
                last, last_change = sig, now
            elif now - last_change > stall_timeout:
                return section
            await anyio.sleep(interval)

    async def audit(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._sim_call("GET", "/sim/v1/audit")
        return result

    async def injected(self, service: str, kind: str) -> int:
        """How many times the simulator injected fault ``kind`` (``outage``, ``error_503``,
        ``rate_limit``, ``commit_then_timeout``…) into requests to ``service`` (``erp``…)."""
        http = ((await self.audit()).get("faults") or {}).get("http") or {}
        return sum(int(kinds.get(kind, 0)) for where, kinds in http.items()
                   if where.split("/", 1)[0] == service)

    async def wait_injected(self, service: str, kind: str, at_least: int, *,
                            timeout: float = 60.0) -> int:
        """Wait until the simulator injected fault ``kind`` into ``service`` ``at_least``
        times: the event that proves the gateway met the fault. ``timeout`` guards a hang."""
        with anyio.fail_after(timeout):
            while (n := await self.injected(service, kind)) < at_least:
                await anyio.sleep(0.1)
        return n

    async def erp_governance(self) -> dict[str, Any]:
        """The ERP account's limits and use (``contracts.platforms.erp.Governance`` as JSON),
        e.g. the arrival times of its requests."""
        result: dict[str, Any] = await self._sim_call("GET", "/erp/v1/governance")
        return result

    async def set_faults(self, faults: dict[str, Any]) -> None:
        await self._sim_call("PUT", "/sim/v1/faults", faults)

    @property
    def subjects(self) -> Subjects:
        return Subjects(prefix=self.nats_prefix)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, replayed or purged ones too (not the resolution markers a
        replay stores beside them)."""
        bus = await NatsBus.connect(self.url, name="erpgw-stack", auth=self.auth("operator"))
        try:
            raw = await bus.scan(self.subjects.dlq_stream, subject=self.subjects.dlq_letters)
        finally:
            await bus.close()
        return [_letters.decode(m.data) for m in raw]

    async def _dead_letters_or(self, last: list[DeadLetter]) -> list[DeadLetter]:
        """The dead letters, or ``last`` while the broker cannot answer (a node down, a
        stream leader being elected: a drill, not a verdict)."""
        try:
            return await self.dead_letters()
        except GatewayError:
            return last

    async def _dead_letters_settled(self, timeout: float) -> list[DeadLetter]:
        """The dead letters, waiting up to ``timeout`` for the broker to answer; raises
        ``BrokerUnavailable`` after that."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.dead_letters()
            except GatewayError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.5)

    def _streams(self) -> list[str]:
        """The gateway's streams: one per lane, the DLQ and the advisories."""
        subjects = self.subjects
        return [*(subjects.stream(lane) for lane in LANES), subjects.dlq_stream,
                subjects.advisory_stream]

    async def consumer_states(self) -> list[ConsumerState]:
        """Every durable, explicitly acknowledged consumer on the gateway's streams (whatever
        the configuration enabled), sorted by stream and name. Raises ``BrokerUnavailable``."""
        import nats  # the manager API lists consumers; the bus knows only the gateway's own

        try:
            nc = await nats.connect(server_list(self.url), name="erpgw-stack",
                                    allow_reconnect=False, connect_timeout=2.0,
                                    **self.nats_options("admin"))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot connect to NATS at {self.url}: {exc!r}") from exc
        out: list[ConsumerState] = []
        try:
            jsm = nc.jsm()
            for stream in self._streams():
                try:
                    infos = await jsm.consumers_info(stream)
                except nats.js.errors.NotFoundError:
                    continue
                for ci in infos:
                    if not ci.config.durable_name or (
                            ci.config.ack_policy != nats.js.api.AckPolicy.EXPLICIT):
                        continue
                    out.append(ConsumerState(
                        stream=stream, name=ci.name, num_pending=int(ci.num_pending or 0),
                        num_ack_pending=int(ci.num_ack_pending or 0),
                        num_redelivered=int(ci.num_redelivered or 0),
                        delivered_stream_seq=ci.delivered.stream_seq if ci.delivered else 0,
                        ack_floor_stream_seq=ci.ack_floor.stream_seq if ci.ack_floor else 0,
                        delivered_consumer_seq=(ci.delivered.consumer_seq
                                                if ci.delivered else 0)))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"consumer info on {self.url}: {exc!r}") from exc
        finally:
            await nc.close()
        return sorted(out, key=lambda c: (c.stream, c.name))

    async def stream_last_seq(self, lane: str) -> int:
        """The last sequence of ``lane``'s stream (``dlq`` and ``advisories`` name those
        streams). Raises ``BrokerUnavailable``."""
        import nats

        stream = self.subjects.stream(lane)
        try:
            nc = await nats.connect(server_list(self.url), name="erpgw-stack",
                                    allow_reconnect=False, connect_timeout=2.0,
                                    **self.nats_options("admin"))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"cannot connect to NATS at {self.url}: {exc!r}") from exc
        try:
            info = await nc.jsm().stream_info(stream)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"stream info {stream}: {exc!r}") from exc
        finally:
            await nc.close()
        return int(info.state.last_seq)

    async def lane_last_seqs(self) -> dict[str, int]:
        """The last sequence of every lane's stream: equal before and after a command proves
        the command published nothing. Raises ``BrokerUnavailable``."""
        return {lane: await self.stream_last_seq(lane) for lane in LANES}

    async def wait_consumed(self, lane: str, durable: str, seq: int, *,
                            timeout: float = 60.0, interval: float = 0.1) -> ConsumerState:
        """Wait until ``durable`` on ``lane``'s stream has had every message up to stream
        sequence ``seq`` delivered and acknowledged (its ack floor reached ``seq`` or beyond,
        nothing ack-pending): the event that proves the work published up to ``seq`` ran.
        Raises ``TimeoutError`` after ``timeout`` (a guard against a hang, not a speed
        target)."""
        stream = self.subjects.stream(lane)
        with anyio.fail_after(timeout):
            while True:
                for c in await self.consumer_states():
                    if (c.stream, c.name) == (stream, durable) and c.num_ack_pending == 0 and (
                            c.ack_floor_stream_seq >= seq or (
                                c.num_pending == 0 and c.delivered_stream_seq >= seq)):
                        return c
                await anyio.sleep(interval)

    async def wait_quiet(self, *, timeout: float = 60.0, settle_s: float | None = None,
                         interval: float = 0.25,
                         held: Collection[str] = ()) -> Quiescence:
        """Wait until the whole system is at rest, the moment to count duplicates.

        At rest: every durable consumer has ``num_pending`` and ``num_ack_pending`` at zero
        (so no redelivery is due), and the simulator's counts and every consumer's delivered
        and acknowledged sequences read the same across reads at least ``settle_s`` apart
        (default: ``ack_wait_s``, at most 2 s), so a webhook retry or a late posting between
        two reads is seen. Consumers named in ``held`` (held back on purpose, e.g. behind a
        platform outage the test keeps on) are left out: they need not be idle.
        Returns ``quiet=False`` with the last reads after ``timeout``.
        """
        settle = min(self.ack_wait_s, 2.0) if settle_s is None else settle_s
        t0 = time.monotonic()
        stable_since: float | None = None
        last_sig: Any = None
        audit: dict[str, Any] = {}
        consumers: list[ConsumerState] = []
        moving: list[str] = []
        while True:
            try:
                consumers = await self.consumer_states()
                audit = await self.audit()
            except GatewayError:
                consumers, stable_since, last_sig = [], None, None  # broker down: not at rest
            else:
                sig = (counts_signature(audit),
                       tuple(c.activity for c in consumers if c.name not in held))
                now = time.monotonic()
                idle = bool(consumers) and all(c.idle or c.name in held for c in consumers)
                if last_sig is not None and sig != last_sig:
                    moving = [f"audit.{k}" for (k, v) in set(sig[0]) ^ set(last_sig[0])] + [
                        f"{a[0]}/{a[1]}" for a in sorted(set(sig[1]) ^ set(last_sig[1]))]
                if not idle or sig != last_sig:
                    stable_since = now if idle else None
                    last_sig = sig
                elif stable_since is not None and now - stable_since >= settle:
                    return Quiescence(True, audit, consumers, now - t0)
            if time.monotonic() - t0 > timeout:
                return Quiescence(False, audit, consumers, time.monotonic() - t0, moving)
            await anyio.sleep(interval)

    async def wait_drained(self, expected: int, *, stall_timeout: float = 60.0,
                           progress: Callable[[dict[str, Any], int], None] | None = None,
                           interval: float = 0.25, quiesce: bool = True,
                           held: Collection[str] = ()) -> DrainResult:
        """Wait until every issued invoice is accepted and then posted or dead-lettered, then
        (``quiesce``) until the system is at rest (``wait_quiet``), and count from the audit
        read at rest: a duplicate posted after nothing was missing any more is counted.

        Gives up when nothing moves for ``stall_timeout`` seconds (``drained=False``), or when
        the system is not at rest within ``stall_timeout`` (``quiet=False``). Without
        ``quiesce`` the result is the first instant nothing is missing (for progress views,
        not for counting duplicates). ``held``: see ``wait_quiet``.
        """
        t0 = time.monotonic()
        last_change = t0
        last_sig: tuple[int, ...] = ()
        dead: list[DeadLetter] = []
        while True:
            audit = await self.audit()
            sig = (audit["issued"], audit["accepted"], audit["posted"], audit["postings"])
            outstanding = audit["unposted_count"]
            if outstanding:
                dead = await self._dead_letters_or(dead)
            result = DrainResult(audit, dead, False, time.monotonic() - t0)
            if progress is not None:
                progress(audit, len(dead))
            if audit["issued"] >= expected and audit["accepted"] >= audit["issued"] and (
                    result.lost == 0):
                break
            now = time.monotonic()
            if sig != last_sig:
                last_sig, last_change = sig, now
            elif now - last_change > stall_timeout:
                result.dead_letters = await self._dead_letters_settled(stall_timeout)
                return result
            await anyio.sleep(interval)
        if quiesce:
            rest = await self.wait_quiet(timeout=stall_timeout, interval=interval, held=held)
            result.audit, result.quiet = rest.audit or result.audit, rest.quiet
            if progress is not None:
                progress(result.audit, len(dead))
        result.dead_letters = await self._dead_letters_settled(stall_timeout)
        result.drained = result.lost == 0 and result.audit["issued"] >= expected and (
            result.quiet or not quiesce)
        result.elapsed_s = time.monotonic() - t0
        return result

    # -- flow 2's revenue half -----------------------------------------------------------------

    async def issued_invoices(self) -> list[dict[str, Any]]:
        """Every invoice billing issued, as its ``invoice.finalized`` webhook carried it (the
        events API, in pages; later versions are flow 5's business, not counted here)."""
        out: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = await self._sim_call(
                "GET", "/billing/v1/events?limit=1000" + (f"&after={cursor}" if cursor else ""))
            out += [e["data"]["object"] for e in page["data"]
                    if e["type"] == "invoice.finalized"]
            if not page["has_more"] or not page["data"]:
                return out
            cursor = page["next_cursor"]

    async def revenue_pending(self) -> tuple[int, int]:
        """``(num_pending, num_ack_pending)`` of the gateway's revenue consumer."""
        bus = await NatsBus.connect(self.url, name="erpgw-stack", auth=self.auth("operator"))
        try:
            return await bus.consumer_pending(self.subjects.stream("billing"), REVENUE_CONSUMER)
        finally:
            await bus.close()

    async def billed_revenue(self) -> dict[str, int]:
        """Per upper-case currency, the revenue billing bills once amendments and credit memos
        are applied: every invoice at its latest version (``invoice.finalized`` and
        ``invoice.updated`` events), less its credit notes (Stripe's invoices: as finalized;
        their credit notes do not go to the revenue platform)."""
        latest: dict[str, dict[str, Any]] = {}
        credited: dict[str, int] = {}
        for kind in ("", "type=credit_note.created&"):
            cursor = ""
            while True:
                page = await self._sim_call(
                    "GET", f"/billing/v1/events?{kind}limit=1000"
                    + (f"&after={cursor}" if cursor else ""))
                for e in page["data"]:
                    obj = e["data"]["object"]
                    if e["type"] in ("invoice.finalized", "invoice.updated"):
                        seen = latest.get(obj["id"])
                        if seen is None or int(seen.get("version", 1)) < int(
                                obj.get("version", 1)):
                            latest[obj["id"]] = obj
                    elif (e["type"] == "credit_note.created" and obj.get("invoice") in latest
                          and "total_discount_amounts" not in latest[obj["invoice"]]):
                        credited[obj["invoice"]] = (credited.get(obj["invoice"], 0)
                                                    + int(obj["amount"]))
                if not page["has_more"] or not page["data"]:
                    break
                cursor = page["next_cursor"]
        out: dict[str, int] = {}
        for inv in latest.values():
            cur = str(inv["currency"]).upper()
            out[cur] = out.get(cur, 0) + _revenue_of(inv) - credited.get(str(inv["id"]), 0)
        return dict(sorted(out.items()))

    async def wait_revenue(self, *, stall_timeout: float = 60.0,
                           interval: float = 0.25) -> RevenueResult:
        """Wait until the gateway's revenue consumer has nothing left (call it once the ERP
        side drained, so that every invoice is in the stream), then compare the revenue
        platform's records with what billing issued. Gives up when nothing moves for
        ``stall_timeout`` seconds (``drained=False``)."""
        last_sig: tuple[int, ...] = ()
        last_change = time.monotonic()
        drained = False
        while True:
            pending = await self.revenue_pending()
            revenue = (await self.audit()).get("revenue") or {}
            if pending == (0, 0):
                drained = True
                break
            sig = (*pending, int(revenue.get("lines", 0)))
            now = time.monotonic()
            if sig != last_sig:
                last_sig, last_change = sig, now
            elif now - last_change > stall_timeout:
                break
            await anyio.sleep(interval)
        invoices = await self.issued_invoices()
        amount: dict[str, int] = {}
        for inv in invoices:
            cur = str(inv["currency"]).upper()
            amount[cur] = amount.get(cur, 0) + _revenue_of(inv)
        by_invoice = {str(inv["id"]): len(inv["lines"]["data"]) for inv in invoices}
        audit = (await self.audit()).get("revenue") or {}
        return RevenueResult(audit=audit, expected_lines=sum(by_invoice.values()),
                             expected_amount=dict(sorted(amount.items())),
                             lines_by_invoice=by_invoice, drained=drained,
                             billed_amount=await self.billed_revenue())
