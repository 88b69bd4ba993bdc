"""``--flame FILE``: a flame graph (SVG) of the gateway process while it takes the legs.

Theory of operation: py-spy (the ``bench`` extra) samples the running gateway from outside,
100 times a second, without changing it: ``py-spy record --pid PID --nonblocking`` starts once
the stack is up and is stopped with SIGINT (which makes it write the SVG) after the last leg,
before the RSS check restarts the gateway. Between the legs the gateway idles while the
baselines run; py-spy leaves idle threads out, so those seconds add few samples. Attaching to
another process needs ptrace rights (root, ``CAP_SYS_PTRACE`` or
``kernel.yama.ptrace_scope = 0``); without them, or without py-spy, the report says why and
the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["Flame", "py_spy"]


def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter (a virtualenv's), else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


class Flame:
    """One py-spy recording of one process into ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._proc: asyncio.subprocess.Process | None = None
        self.result: dict[str, Any] = {"file": str(out), "written": False}

    async def start(self, pid: int | None) -> None:
        if pid is None:
            self.result["reason"] = "no gateway process of the bench's own to sample"
            return
        exe = py_spy()
        if exe is None:
            self.result["reason"] = "py-spy is not installed (pip install -e '.[bench]')"
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        # Started by name from its own directory: py-spy writes its command line into the
        # graph's title, which should not carry this machine's paths.
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(exe).parent),
                                                      os.environ.get("PATH", "")])}
        self._proc = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--rate", "100", "--format", "flamegraph",
            "--output", str(self.out), "--nonblocking", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        self.result["pid"] = pid

    async def stop(self) -> dict[str, Any]:
        proc, self._proc = self._proc, None
        if proc is None:
            return self.result
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes the graph on SIGINT
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 60.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            err = b""
        self.result["written"] = self.out.exists() and self.out.stat().st_size > 0
        if not self.result["written"]:
            lines = err.decode(errors="replace").strip().splitlines()
            self.result["reason"] = (f"py-spy exited {proc.returncode}"
                                     + (f": {lines[-1]}" if lines else ""))
        return self.result
