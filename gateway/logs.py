"""Logging: one line per event to stderr, human by default or JSON.

JSON is chosen by ``log.json = true`` in the config, ``ERPGW_LOG_JSON=1`` or ``--log-json``.
Every line has an ISO-8601 UTC timestamp; the fields of ``FIELDS`` (correlation id, business
key, error code, trace id, platform) come from a call's ``extra=`` or from ``log_fields(...)``
(``actors.logfields``), which binds them for the code it wraps. In human lines they follow the
message as ``key=value``.

Neither format lets a value forge a line or drive a terminal (S25): a CR, LF, ANSI escape or
any other control character (C0, DEL, C1, the Unicode line and paragraph separators) in a
message, its arguments or a field is written escaped — ``\\u001b`` in JSON, ``\\x1b``, ``\\r``,
``\\n`` in human lines, where a traceback's lines are indented under the line they belong to.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import msgspec

from actors.logfields import FIELDS, fields_of, log_fields
from contracts import GatewayError

__all__ = ["FIELDS", "LEVELS", "LogConfig", "check_level", "escape_controls", "log_fields",
           "setup_logging"]

LEVELS = ("debug", "info", "warning", "error")

_enc = msgspec.json.Encoder()
# What a log line never holds raw: C0 controls (CR, LF, ESC...), DEL, C1 controls (8-bit CSI),
# and U+2028/U+2029, which some viewers take for line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# JSON escapes C0 itself; these it leaves raw.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as its escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escaped, text)


class LogConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[log]`` section (the level is the top-level ``log_level``)."""

    # JSON lines instead of human ones (also ERPGW_LOG_JSON=1 or --log-json).
    json: bool = False


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", _enc.encode(doc).decode())


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname:<7} {record.name}: " \
               f"{escape_controls(record.getMessage())}"
        fields = fields_of(record)
        if fields:
            line += " " + " ".join(f"{k}={escape_controls(v)}" for k, v in fields.items())
        if record.exc_info:
            # Indented: no line of it (an exception's text may hold anything) starts a line.
            line += "".join("\n  " + escape_controls(ln) for ln in
                            self.formatException(record.exc_info).splitlines())
        return line


def check_level(level: str) -> str:
    """``level`` normalised (lower case); a ``GatewayError`` (``config.invalid``, exit 2)
    naming the ``log_level`` setting when it is not one of ``LEVELS``."""
    norm = level.strip().lower()
    if norm not in LEVELS:
        raise GatewayError(f"log_level: {level!r} is not a log level; choose one of "
                           f"{', '.join(LEVELS)}", code="config.invalid")
    return norm


def setup_logging(level: str = "info", *, json: bool = False) -> None:
    """Log to stderr at ``level`` (see ``check_level``, which raises), JSON or human."""
    level = check_level(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json else _HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "nats", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
