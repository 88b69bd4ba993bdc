"""Logging: one line per event to stderr, human by default or JSON.

JSON is chosen by ``log.json = true`` in the config, ``ERPGW_LOG_JSON=1`` or ``--log-json``.
Every line has an ISO-8601 UTC timestamp; the fields of ``FIELDS`` (correlation id, business
key, error code, trace id, platform) come from a call's ``extra=`` or from ``log_fields(...)``
(``actors.logfields``), which binds them for the code it wraps. In human lines they follow the
message as ``key=value``.

JSON lines escape control characters, so a CR/LF or ANSI sequence inside a field can never
forge a log line.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import msgspec

from actors.logfields import FIELDS, fields_of, log_fields
from contracts import GatewayError

__all__ = ["FIELDS", "LEVELS", "LogConfig", "check_level", "log_fields", "setup_logging"]

LEVELS = ("debug", "info", "warning", "error")

_enc = msgspec.json.Encoder()


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
        return _enc.encode(doc).decode()


class _HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {record.levelname:<7} {record.name}: " \
               f"{record.getMessage()}"
        fields = fields_of(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
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
