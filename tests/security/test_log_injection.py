"""S25: CR/LF, ANSI escape sequences and other control characters in what gets logged (event
ids, reasons, structured fields, an exception's text) never forge a log line or reach a
terminal raw, in JSON lines and in human lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import anyio
import msgspec
import pytest

from actors.logfields import log_fields
from gateway.broker import EmbeddedBroker
from gateway.logs import setup_logging
from tests.integration.abuse_support import raw_exchange, request_bytes, webhook_listener
from tests.integration.conftest import signed

FORGED = "2026-01-01T00:00:00.000Z INFO    erpgw.ingress: forged"
HOSTILE = [f"a\r\n{FORGED}", f"b\n{FORGED}", f"c\r{FORGED}", "\x1b[2J\x1b[31mred\x1b[0m",
           "\x9b31m 8-bit CSI", "\x7f del", f"\u2028{FORGED}", f"\u2029{FORGED}", "\x00nul",
           "\x08\x08\x08backspaced"]
# Nothing a terminal or a line-splitting reader acts on may appear raw in a log line.
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture
def err(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)


def _log_everything() -> int:
    """Each hostile value as a message argument, a bound field, an ``extra`` field and an
    exception's text; how many log records that makes."""
    log = logging.getLogger("erpgw.test")
    for value in HOSTILE:
        with log_fields(correlation_id=value, platform=value):
            log.info("webhook %s of type %s ignored", value, value,
                     extra={"code": value, "business_key": value})
        try:
            raise ValueError(f"bad header {value}")
        except ValueError:
            log.exception("refused %s", value)
    return 2 * len(HOSTILE)


def _lines(text: str) -> list[str]:
    assert not RAW.search(text.replace("\n", "")), [m.group() for m in RAW.finditer(text)]
    return text.split("\n")[:-1]


def test_json_lines_escape_every_control_character(err: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json=True)
    records = _log_everything()
    lines = _lines(err.readouterr().err)
    assert len(lines) == records  # one line per record, whatever the values held
    docs = [msgspec.json.decode(line) for line in lines]
    for value, info, error in zip(HOSTILE, docs[::2], docs[1::2], strict=True):
        # escaped on the line, and exactly the value again once decoded
        assert info["msg"] == f"webhook {value} of type {value} ignored"
        assert [info[k] for k in ("correlation_id", "platform", "code", "business_key")] == \
            [value] * 4
        assert error["msg"] == f"refused {value}" and f"bad header {value}" in error["exc"]


def test_human_lines_escape_every_control_character(err: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    records = _log_everything()
    lines = _lines(err.readouterr().err)
    starts = [line for line in lines if not line.startswith("  ")]
    assert len(starts) == records and all(LINE_START.match(line) for line in starts)
    assert not any(line.startswith(FORGED[:10]) for line in lines)
    info = starts[0]
    assert info.endswith("webhook a\\r\\n" + FORGED + " of type a\\r\\n" + FORGED + " ignored"
                         " correlation_id=a\\r\\n" + FORGED + " business_key=a\\r\\n" + FORGED
                         + " code=a\\r\\n" + FORGED + " platform=a\\r\\n" + FORGED)
    assert "\\x1b[2J\\x1b[31mred\\x1b[0m" in starts[6] and "\\x9b31m" in starts[8]
    assert "\\u2028" + FORGED in starts[12] and "\\u2029" + FORGED in starts[14]
    # the traceback of "refused a..." is indented under its line
    tb = lines[lines.index(starts[1]) + 1:lines.index(starts[2])]
    assert tb and all(line.startswith("  ") for line in tb)
    # (an exception's text breaks lines in a traceback: its lines stay indented)
    assert tb[-2:] == ["  ValueError: bad header a", "  " + FORGED]


@pytest.mark.integration
async def test_a_hostile_event_id_through_the_listener_is_logged_escaped(
        broker: EmbeddedBroker, err: pytest.CaptureFixture[str]) -> None:
    """An event id and type the webhook listener logs (an unsubscribed event is logged with
    both), from a signed request over the real listener, in both formats."""
    for json in (True, False):
        setup_logging("info", json=json)
        event_id = f"evt_1\r\n{FORGED}\x1b[2J"
        body = msgspec.json.encode({"id": event_id, "type": "customer.created\n" + FORGED,
                                    "created": 1, "data": {"object": {}}})
        async with webhook_listener(broker) as front:
            answer = await anyio.to_thread.run_sync(raw_exchange, front.port, request_bytes(
                "/webhooks/billing", body,
                [(b"Billing-Signature", signed(body)["Billing-Signature"].encode())]))
            assert (answer.status, answer.doc["status"]) == (200, "ignored")
        lines = _lines(err.readouterr().err)
        ignored = [line for line in lines if "not subscribed" in line]
        assert len(ignored) == 1
        assert all(LINE_START.match(line) or line.startswith("{") for line in lines)
        if json:
            assert event_id in msgspec.json.decode(ignored[0])["msg"]
        else:
            assert "evt_1\\r\\n" + FORGED + "\\x1b[2J" in ignored[0]
