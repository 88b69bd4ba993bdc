"""Reading another process's CPU time and memory from ``/proc``, and describing the machine.

Linux only (the bench's CPU figures need ``/proc``); on another system the readers return
``None`` and the report says the figure is unavailable rather than inventing one.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "machine", "parse_stat_cpu", "peak_rss_mb", "rss_mb"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu(stat: str, ticks: int = _TICKS) -> float:
    """utime + stime in seconds from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may contain spaces and parentheses, so fields are counted from
    the last ``)``: utime and stime are fields 14 and 15 of the line.
    Raises ``ValueError`` for text that is not a stat line.
    """
    rest = stat[stat.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11], stime rest[12]
    return (int(rest[11]) + int(rest[12])) / ticks


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) the process ``pid`` has used so far; None if unreadable."""
    if pid is None:
        return None
    try:
        return parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _status_kb(pid: int | None, field: str) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb(pid: int | None) -> float | None:
    """Peak resident set size (``VmHWM``) of ``pid`` in MiB, or None."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else round(kb / 1024, 1)


def rss_mb(pid: int | None) -> float | None:
    """Current resident set size (``VmRSS``) of ``pid`` in MiB, or None."""
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else round(kb / 1024, 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _nats_server_version() -> str:
    from gateway.broker import BrokerError, find_nats_server

    try:
        out = subprocess.run([find_nats_server(), "--version"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (BrokerError, OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip().removeprefix("nats-server: ") or "unknown"


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, nats-server and Python versions of this machine."""
    mem = _status_kb_meminfo()
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": None if mem is None else round(mem / 1024 / 1024, 1),
        "nats_server": _nats_server_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _status_kb_meminfo() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
