"""One gateway process per data directory: a second ``erpgw up`` on the same directory (the
same ledger file) refuses at start, naming the directory; the lock goes with its holder, even
when the holder is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from gateway.broker import EmbeddedBroker, free_port
from gateway.datalock import DataDirLocked, data_dir_lock

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ERPGW_")}


async def _wait_healthy(admin_port: int, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        while proc.poll() is None:
            try:
                async with http.get(f"http://127.0.0.1:{admin_port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await anyio.sleep(0.1)
    raise AssertionError(f"the first gateway exited with {proc.returncode}")


async def test_a_second_gateway_on_the_same_data_dir_refuses_to_start(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    data = tmp_path / "gw"  # where the broker fixture put the role seeds
    port, admin_port = free_port(), free_port()
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waited on below by events
        [sys.executable, "-m", "gateway", "up", "--data-dir", str(data), "--nats-url",
         broker.url, "--http-port", str(port), "--admin-port", str(admin_port)],
        stdout=log, stderr=log, env=_env())
    try:
        await _wait_healthy(admin_port, first)
        second = await anyio.run_process(
            [sys.executable, "-m", "gateway", "up", "--data-dir", str(data), "--nats-url",
             broker.url, "--http-port", str(free_port()), "--admin-port", str(free_port())],
            env=_env(), check=False)
        err = second.stderr.decode()
        assert second.returncode == 3, err
        assert "erpgw: error [data_dir.locked]" in err
        assert f"data directory {data} is in use by another erpgw process (pid {first.pid})" \
            in err
        assert "Traceback" not in err
        assert first.poll() is None  # the holder runs on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        with anyio.fail_after(60):
            while first.poll() is None:
                await anyio.sleep(0.1)
        log.close()
    assert first.returncode == 0
    with data_dir_lock(data):  # a clean stop released it
        pass


async def test_the_lock_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from gateway.datalock import "
            "data_dir_lock\nwith data_dir_lock(Path(sys.argv[1])):\n"
            "    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        line = await anyio.to_thread.run_sync(holder.stdout.readline)
        assert line == b"held\n"
        with pytest.raises(DataDirLocked) as err, data_dir_lock(tmp_path):
            pass
        assert err.value.code == "data_dir.locked"
        assert f"{tmp_path}" in err.value.message and f"pid {holder.pid}" in err.value.message
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with data_dir_lock(tmp_path) as lock:  # no stale lock after a SIGKILL
        assert lock.read_text().strip() == str(os.getpid())
