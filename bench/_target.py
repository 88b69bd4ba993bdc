"""What the bench starts and what it targets: ``--nats-url``, ``--gateway``, ``--sim``.

Theory of operation: by default the bench starts everything itself (``gateway.stack.Stack``:
an embedded nats-server, ``erpgw sim`` and ``erpgw up``). Two targeted shapes are allowed:

* ``--nats-url URL`` alone: the bench starts the simulator and the gateway, the gateway uses
  the given broker, and the baselines run against it too. No broker is started.
* ``--nats-url URL --gateway URL --sim URL``: nothing is started. The simulator must deliver
  its webhooks to that gateway and the gateway must post to that simulator and use that
  broker (how ``erpgw sim --webhook-url`` and ``erpgw up`` are configured); the bench checks
  that the simulator answers ``/healthz``, that the gateway's webhook listener answers (its
  probes are on its admin listener, loopback by default, which the bench may not reach) and
  that the broker has JetStream, then drives load through the
  simulator and judges correctness from its audit, exactly as for a started stack.
  ``--gateway-pid PID`` (a gateway on this machine) lets the bench read its CPU and RSS from
  ``/proc``; without it those figures are not reported.

``--gateway`` without ``--sim`` is refused: the correctness audit comes from the simulator, and
a simulator the bench would start could not deliver to a gateway it does not configure.
``--sim`` without ``--gateway`` is refused for the mirror reason. ``TargetStack`` is a
``Stack`` whose processes belong to someone else: it never starts, signals or stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import nats
import nats.errors
from nats.aio.client import Client
from nats.js import api

from gateway.stack import Stack, StackError

if TYPE_CHECKING:
    from ._run import BenchOptions

__all__ = ["TargetStack", "broker_problem", "check_targets", "make_stack", "topology"]

# Faults that need a process the bench owns: it SIGKILLs and restarts them.
_NEEDS_OWN_GATEWAY = ("kill-gateway",)
_NEEDS_OWN_BROKER = ("broker-restart",)


def check_targets(opts: BenchOptions) -> None:
    """Refuse a combination of targeting options the bench cannot honour.

    Raises ``ValueError`` naming the options: ``--gateway`` without ``--sim`` or
    ``--nats-url`` (and the reverse), ``--gateway-pid`` without ``--gateway``, ``--fsync`` with a
    broker the bench does not start, faults that kill a process the bench does not own, and
    ``--rss-check`` against a gateway the bench cannot restart.
    """
    if opts.gateway_url and not (opts.sim_url and opts.nats_url):
        raise ValueError("--gateway needs --sim URL (the simulator that delivers to it, whose "
                         "audit judges the run) and --nats-url URL (the broker it uses)")
    if opts.sim_url and not opts.gateway_url:
        raise ValueError("--sim needs --gateway URL: a simulator the bench did not start "
                         "delivers its webhooks to a gateway the bench does not configure")
    if opts.gateway_pid is not None and not opts.gateway_url:
        raise ValueError("--gateway-pid applies only with --gateway (a gateway the bench "
                         "starts is measured anyway)")
    if opts.nats_url and opts.fsync_given:
        raise ValueError("--fsync applies only to a broker the bench starts; --nats-url's "
                         "broker keeps its own sync_interval")
    if opts.gateway_url:
        bad = [f for f in opts.faults if f in _NEEDS_OWN_GATEWAY]
        if bad:
            raise ValueError(f"--faults {','.join(bad)} needs a gateway the bench starts; "
                             "leave out --gateway or that fault")
        if opts.rss_check:
            raise ValueError("--rss-check restarts the gateway between its two runs; it needs "
                             "a gateway the bench starts (leave out --gateway)")
    if opts.nats_url:
        bad = [f for f in opts.faults if f in _NEEDS_OWN_BROKER]
        if bad:
            raise ValueError(f"--faults {','.join(bad)} needs a broker the bench starts; "
                             "leave out --nats-url or that fault")


def topology(opts: BenchOptions) -> dict[str, str]:
    """What the bench starts and what it targets, one line per component (for the report)."""
    broker = (f"targeted: {opts.nats_url} (its own sync_interval)" if opts.nats_url else
              "started: embedded nats-server, sync_interval "
              + ("always" if opts.fsync == "always" else "2m (server default)"))
    if opts.gateway_url:
        sim = f"targeted: {opts.sim_url}"
        gw = f"targeted: {opts.gateway_url}" + (
            f" (pid {opts.gateway_pid}, CPU and RSS read from /proc)" if opts.gateway_pid
            else " (no --gateway-pid: CPU and RSS not measured)")
    else:
        sim = "started: erpgw sim (separate process)"
        gw = ("started: erpgw up (separate process)" if not opts.roles else
              f"started: {len(opts.roles)} erpgw up processes split by process roles "
              + " | ".join(opts.roles) + " (CPU: all of them; RSS and flame: the first)")
    return {"broker": broker, "simulator": sim, "gateway": gw}


@dataclass
class TargetStack(Stack):
    """A ``Stack`` made of processes the bench did not start (see the module docstring)."""

    target_sim: str = ""
    target_gateway: str = ""
    target_pid: int | None = None

    @property
    def sim_url(self) -> str:
        return self.target_sim.rstrip("/")

    @property
    def gateway_url(self) -> str:
        return self.target_gateway.rstrip("/")

    @property
    def gateway_running(self) -> bool:
        return True

    @property
    def gateway_pid(self) -> int | None:
        """The ``--gateway-pid`` process if it is alive, else None (figures not reported)."""
        pid = self.target_pid
        return pid if pid is not None and Path(f"/proc/{pid}").exists() else None

    async def start(self) -> None:
        """Check that the targets answer; start nothing.

        Raises ``StackError`` when the simulator does not answer ``/healthz``, the gateway's
        webhook listener does not answer, or the broker cannot be reached.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # A GET of the webhook path is answered 405 (it takes POSTs): the listener is up.
            for what, base, path, ok in (
                    ("simulator", self.sim_url, "/healthz", range(200, 300)),
                    ("gateway", self.gateway_url, "/webhooks/billing", range(200, 500))):
                try:
                    async with http.get(f"{base}{path}") as resp:
                        if resp.status not in ok:
                            raise StackError(f"the {what} at {base} answered {path} with "
                                             f"HTTP {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise StackError(f"the {what} at {base} does not answer: {exc}") from exc
        problem = await broker_problem(self.url, self.nats_options("admin"))
        if problem and "JetStream" not in problem:
            raise StackError(f"the broker at {self.url}: {problem}")

    async def start_sim(self) -> None:
        raise StackError("the simulator is targeted (--sim); the bench does not start it")

    async def start_gateway(self, env: Any = None) -> None:
        raise StackError("the gateway is targeted (--gateway); the bench does not start it")

    def kill_gateway(self) -> None:
        raise StackError("the gateway is targeted (--gateway); the bench does not kill it")

    async def stop_gateway(self, timeout: float = 15.0) -> int | None:
        return None  # not ours to stop

    async def close(self) -> None:
        return None  # nothing of ours is running


def make_stack(opts: BenchOptions, workdir: Path) -> Stack:
    """The stack of this run: started, broker-targeted, or fully targeted."""
    sync = "always" if opts.fsync == "always" else "2m"
    if opts.gateway_url:
        return TargetStack(workdir, nats_url=opts.nats_url or "", seed=opts.seed,
                           target_sim=opts.sim_url or "", target_gateway=opts.gateway_url,
                           target_pid=opts.gateway_pid)
    # --roles A/B: one gateway process per list of process roles (gateway 1 first)
    return Stack(workdir, nats_url=opts.nats_url or "", seed=opts.seed, sync_interval=sync,
                 gateways=len(opts.roles) or 1, roles=tuple(opts.roles))


async def broker_problem(url: str, options: dict[str, Any] | None = None) -> str | None:
    """Why the broker at ``url`` cannot carry the baselines, or None when it can.

    The baselines create file-backed streams of their own (``BENCH_*``) and delete them
    afterwards; this connects, reads the JetStream account and creates and deletes one such
    stream. Never raises: every failure becomes the reason.
    """
    async def quiet(_exc: Exception) -> None:  # the reason is returned, not logged
        return None

    try:
        # One attempt (nats-py retries an initial connect forever with 0), bounded in time.
        nc = Client()
        opts: dict[str, Any] = {
            "name": "erpgw-bench-check", "connect_timeout": 5, "max_reconnect_attempts": 1,
            "allow_reconnect": False, "reconnect_time_wait": 0.2, "error_cb": quiet,
            **(options or {})}
        await asyncio.wait_for(nc.connect(url, **opts), 15)
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await nc.close()  # a refused attempt's socket
        return f"cannot connect ({exc or type(exc).__name__})"
    name = f"BENCH_CHECK_{os.getpid()}"
    try:
        js = nc.jetstream(timeout=5.0)
        try:
            await js.account_info()
        except (nats.errors.Error, TimeoutError) as exc:
            return f"no JetStream on this account ({exc or type(exc).__name__})"
        try:
            await js.add_stream(api.StreamConfig(
                name=name, subjects=[f"bench.check.{os.getpid()}"],
                storage=api.StorageType.FILE, max_bytes=1024 * 1024))
        except (nats.errors.Error, TimeoutError) as exc:
            return f"cannot create a file-backed JetStream stream ({exc})"
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await js.delete_stream(name)
        return None
    finally:
        await nc.close()
