"""HTTP plumbing shared by the simulated platforms: JSON in, JSON out, errors as JSON.

Every error a client can cause becomes ``{"code": ..., "message": ...}`` (plus ``"path"`` for
a body that breaks its schema) with a 4xx status; a bug in the sim becomes a 500 with the same
shape and the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from contracts import contract_error

__all__ = [
    "ENCODER",
    "SimHTTPError",
    "decode_body",
    "error_middleware",
    "json_response",
    "query_int",
]

log = logging.getLogger("sim.http")

ENCODER = msgspec.json.Encoder()
_KEY_PATH = re.compile(r"at `key` in `(\$[^`]*)`")

T = TypeVar("T")

_STATUS_CODES: dict[int, str] = {
    400: "request.invalid",
    404: "not_found",
    405: "method_not_allowed",
    413: "request.too_large",
}


class SimHTTPError(Exception):
    """Raised by a handler to answer ``status`` with a JSON error body.

    ``headers`` are added to the response (``Retry-After``); ``path`` names the offending
    field of the request body, when there is one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        path: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.headers = dict(headers or {})

    def to_response(self) -> web.Response:
        body: dict[str, str] = {"code": self.code, "message": self.message}
        if self.path is not None:
            body["path"] = self.path
        return json_response(body, status=self.status, headers=self.headers)


def json_response(
    obj: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``obj`` encoded with the shared msgspec encoder as an ``application/json`` response."""
    return web.Response(
        body=ENCODER.encode(obj), status=status, headers=headers, content_type="application/json"
    )


async def decode_body(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """Read and decode the request body with ``decoder``.

    Raises ``SimHTTPError`` 400 naming the offending field (``path``, and in the message) when
    the body is not valid JSON or breaks the schema, and lets aiohttp's 413 through when the
    body is over the app's ``client_max_size``.
    """
    raw = await request.read()
    try:
        return decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        err = contract_error(exc)
        path = err.path
        in_key = _KEY_PATH.search(str(exc))  # a bad dict key: "at `key` in `$.erp.error_mix`"
        if in_key is not None:
            path = in_key.group(1)
        raise SimHTTPError(400, err.code, f"{err.message} (at {path})", path=path) from exc


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ``SimHTTPError`` and aiohttp's own HTTP errors (404, 405, 413) into JSON bodies.

    Runs in the request's task. Unexpected exceptions become a JSON 500 and are logged with
    their traceback; cancellation is never caught.
    """
    try:
        return await handler(request)
    except SimHTTPError as exc:
        return exc.to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _DROP_HEADERS}
        code = _STATUS_CODES.get(exc.status, f"http.{exc.status}")
        # aiohttp's text is "404: Not Found" for plain errors but explains a 413; keep that.
        text = exc.text or ""
        message = exc.reason if not text or text.startswith(f"{exc.status}:") else text
        return json_response({"code": code, "message": message}, status=exc.status, headers=headers)
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_response(
            {"code": "sim.internal", "message": f"{type(exc).__name__}: {exc}"}, status=500
        )


_DROP_HEADERS = frozenset({"content-type", "content-length"})


def query_int(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    """A non-negative integer query parameter in ``lo..hi`` (``default`` when absent).

    Raises ``SimHTTPError`` 400 naming the parameter otherwise.
    """
    if value is None or (value == "" and name == "after"):  # "after=" means from the start
        return default
    if not value.isdigit() or len(value) > 18 or not lo <= int(value) <= hi:
        raise SimHTTPError(400, "request.invalid",
                           f"query parameter {name} must be an integer in {lo}..{hi}", path=name)
    return int(value)
