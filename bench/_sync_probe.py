"""The synchronous lane under load: pricing requests over NATS request/reply, timed.

One request every ``interval`` seconds to ``<prefix>.sync.pricing.validate`` for a product from
the simulator's CPQ catalog; each latency is the full round trip as a caller sees it (the lane
calls CPQ for every request). Run once on an idle gateway and once during a flood to compare.

The caller is a process of its own (``python -m bench._sync_probe``), as a real caller of the
lane would be: the bench process sends the usage flood and polls the simulator's audit during
the same leg, and a probe sharing its event loop would time that loop's delays as the lane's.
The parent talks to it over stdin/stdout, one JSON document per line: the configuration (the
identity's ``nats.connect`` options, so no secret is on a command line), then commands
(``{"cmd": "count", "n": N}``: send N requests; ``{"cmd": "until"}``: send requests until a
``{"cmd": "stop"}`` line arrives), each answered with ``{"latencies_ms": [...], "errors": k}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import anyio
import msgspec
import nats
import nats.errors

__all__ = ["SyncProbe"]

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()
# Longest wait for the probe process to connect or to answer a command beyond its own work.
_ANSWER_TIMEOUT_S = 60.0


class SyncProbe:
    """The parent's handle on the probe process (``start`` / ``run`` / ``close``)."""

    def __init__(self, nats_url: str, subject: str, product: str, currency: str = "USD",
                 interval: float = 0.02, timeout: float = 2.0,
                 options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        if "tls" in options:  # an SSLContext cannot cross the pipe; the bench runs plain NATS
            raise ValueError("the sync probe connects over plain NATS only (no tls option)")
        self.config = {"nats_url": nats_url, "subject": subject, "product": product,
                       "currency": currency, "interval": interval, "timeout": timeout,
                       "options": options}
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the probe process and wait until it is connected. Raises ``RuntimeError``."""
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._sync_probe", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        await self._ask(self.config)

    async def run(self, *, count: int | None = None,
                  until: anyio.Event | None = None) -> list[float]:
        """Send ``count`` requests, or until ``until`` is set; returns this run's latencies."""
        if count is not None:
            answer = await self._ask({"cmd": "count", "n": count})
        else:
            assert until is not None
            await self._send({"cmd": "until"})
            await until.wait()
            answer = await self._ask({"cmd": "stop"})
        out = [float(x) for x in answer.get("latencies_ms", [])]
        self.errors += int(answer.get("errors", 0))
        self.latencies_ms += out
        return out

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _send(self, doc: dict[str, Any]) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("the sync probe process is not running")
        self._proc.stdin.write(json.dumps(doc).encode() + b"\n")
        await self._proc.stdin.drain()

    async def _ask(self, doc: dict[str, Any]) -> dict[str, Any]:
        await self._send(doc)
        assert self._proc is not None and self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), _ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(f"sync probe process: no answer in {_ANSWER_TIMEOUT_S:.0f} s") \
                from None
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "error" in answer:
            raise RuntimeError(f"sync probe process: {answer or 'exited'}")
        return answer


# -- the probe process -----------------------------------------------------------------------

async def _requests(nc: Any, cfg: dict[str, Any], body: bytes, *, count: int | None,
                    stop: asyncio.Event | None) -> dict[str, Any]:
    out: list[float] = []
    errors = n = 0
    while (count is None or n < count) and not (stop is not None and stop.is_set()):
        t0 = time.perf_counter()
        try:
            reply = await nc.request(cfg["subject"], body, timeout=cfg["timeout"])
            doc = _dec.decode(reply.data)
            if isinstance(doc, dict) and doc.get("status") == "accepted":
                out.append(round((time.perf_counter() - t0) * 1000.0, 3))
            else:
                errors += 1
        except (nats.errors.Error, TimeoutError, msgspec.DecodeError):
            errors += 1
        n += 1
        await asyncio.sleep(cfg["interval"])
    return {"latencies_ms": out, "errors": errors}


async def _quiet(exc: Exception) -> None:
    """Connection errors: each failed request is counted instead (no traceback on stderr)."""


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def _serve() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        cfg = json.loads(await reader.readline())
        nc = await nats.connect(cfg["nats_url"], connect_timeout=5, error_cb=_quiet,
                                max_reconnect_attempts=3, reconnect_time_wait=0.5,
                                **cfg["options"])
    except (ValueError, TypeError, KeyError, OSError, nats.errors.Error) as exc:
        _say({"error": f"cannot start: {exc!r}"})
        return 1
    body = _enc.encode({"currency": cfg["currency"],
                        "items": [{"product_id": cfg["product"], "quantity": 1}]})
    _say({"ready": True})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd.get("cmd") == "count":
                _say(await _requests(nc, cfg, body, count=int(cmd["n"]), stop=None))
            elif cmd.get("cmd") == "until":
                stop = asyncio.Event()
                work = asyncio.ensure_future(_requests(nc, cfg, body, count=None, stop=stop))
                await reader.readline()  # {"cmd": "stop"} (or the parent went away)
                stop.set()
                _say(await work)
            else:
                _say({"error": f"unknown command {cmd!r}"})
    finally:
        await nc.close()
    return 0


def main() -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(_serve())
    return uvloop.run(_serve())


if __name__ == "__main__":
    sys.exit(main())
