"""OpenAPI 3.1 documents of the gateway's own HTTP faces, built from the config and the types
the handlers decode and encode.

The gateway listens on two ports, so there are two documents (``LISTENERS``):

- ``webhooks``: the webhook listener (``http.host:http.port``): each platform's signed
  webhooks at its configured path, in its configured dialect, and the usage intake;
- ``admin``: the admin listener (``admin.host:admin.port``): the probes, the status tree, the
  metrics, the synchronous lane and these documents.

Request and response schemas come from ``msgspec.json.schema_components`` over the very
structs the handlers use (the synchronous lane's requests and replies, the usage records), and
the paths, signature headers and routed event types from the same ``WebhookSource`` objects
the gateway serves, so a document follows the code and the config. ``document`` is pure; the
admin listener serves both at ``/openapi/<listener>.json`` and ``erpgw schema openapi`` prints
them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.ingress.routes import WebhookSource
from actors.platforms.billing import billing_source
from actors.platforms.billing.stripe import stripe_source
from actors.platforms.partner import partner_source
from actors.sync.lane import HTTP_ROUTES
from actors.sync.rules import MAX_DEADLINE_MS
from actors.usage.intake import RECORDS_PATH
from contracts import (
    DEADLINE_HEADER,
    OrderDecision,
    OrderRequest,
    PricingDecision,
    PricingRequest,
    SyncError,
)
from contracts.platforms.usage import UsageRecordIn
from contracts.schema import dumps

from . import __version__
from .config import Config

__all__ = ["LISTENERS", "OPENAPI_PATH", "document", "openapi_documents", "webhook_sources"]

LISTENERS = ("webhooks", "admin")
# Where the admin listener serves the document of ``listener``.
OPENAPI_PATH = "/openapi/{listener}.json"
_REF = "#/components/schemas/{name}"
# Whole milliseconds in 1..MAX_DEADLINE_MS (600,000), as the lane reads the header.
_DEADLINE_PATTERN = "^([1-9][0-9]{0,4}|[1-5][0-9]{5}|600000)$"
_JSON = "application/json"


class ApiError(msgspec.Struct, frozen=True):
    """Every error body of the webhook listener and the admin listener's own errors: a
    stable ``code`` (docs/errors.md), a ``message``, and the offending field's or header's
    ``path`` when there is one. Never an echo of the request."""

    code: str
    message: str
    path: str | None = None


class WebhookAnswer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A webhook the gateway took: ``accepted`` (stored in JetStream before this answer),
    ``duplicate`` (stored before, under the same ``id``), or ``ignored`` (a type the gateway
    does not route, named in ``type``)."""

    status: str
    id: str | None = None
    type: str | None = None


class UsageAnswer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Usage records stored in JetStream before this answer: ``accepted`` new ones,
    ``duplicate`` ones stored before under the same id."""

    status: str
    records: int
    accepted: int
    duplicate: int


class Live(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ok: bool


class Ready(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Every readiness check passes; ``checks`` names each with its result."""

    ready: bool
    checks: dict[str, bool]


class NotReady(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``admin.not_ready``: ``not_ready`` names the checks that fail."""

    code: str
    message: str
    not_ready: list[str]
    checks: dict[str, bool]


_TYPES: tuple[Any, ...] = (ApiError, WebhookAnswer, UsageAnswer, Live, Ready, NotReady,
                           PricingRequest, OrderRequest, PricingDecision, OrderDecision,
                           SyncError, list[UsageRecordIn])


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json_body(schema: dict[str, Any], description: str,
               headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _errors(statuses: dict[int, str], schema: str = "ApiError") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, why in statuses.items():
        out[str(status)] = _json_body(_ref(schema), why,
                                      _RETRY_AFTER if status == 503 else None)
    return out


def webhook_sources(cfg: Config) -> tuple[WebhookSource, ...]:
    """The webhook sources the gateway of ``cfg`` serves (the same builders it uses; the
    secrets play no part in a document)."""
    billing = stripe_source if cfg.billing.dialect == "stripe" else billing_source
    return (billing(cfg.http.path, cfg.billing.webhook_secrets),
            partner_source(cfg.partner.webhook_path, cfg.partner.webhook_secrets))


def _webhook_operation(source: WebhookSource, max_body: int) -> dict[str, Any]:
    routed = sorted(source.routes)
    return {
        "operationId": f"{source.name}Webhook",
        "summary": f"A {source.name} platform event, signed",
        "description": (
            f"One {source.name} event. The signature header is checked over the raw body "
            "before anything else (400 malformed, 401 missing, stale or not matching); then "
            "the event's `type` picks its route, the body is decoded as that type (400 naming "
            "the field) and mapped to its canonical message (422 naming the broken "
            "invariant). A 2xx is sent only after the message is stored in JetStream; a "
            "broker outage answers 503 with Retry-After. A type the gateway does not route "
            "is answered `ignored`, unless it belongs to a routed family (schema drift: 422 "
            f"`webhook.unknown_event_type`). Bodies above {max_body} bytes: 413."),
        "parameters": [{
            "name": source.signature_header, "in": "header", "required": True,
            "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>`, one "
                           "`v1` per signing secret being rotated in",
            "schema": {"type": "string", "minLength": 1}}],
        "requestBody": {"required": True, "content": {_JSON: {"schema": {
            "type": "object", "required": ["id", "type"],
            "properties": {"id": {"type": "string"}, "type": {"type": "string"}},
            "x-erpgw-routed-types": routed,
            "description": "The platform's event; its shape depends on `type` (one of "
                           f"{', '.join(routed)})."}}}},
        "responses": {
            "200": _json_body(_ref("WebhookAnswer"), "stored (or stored before), or ignored"),
            **_errors({400: "the signature header or the body is malformed",
                       401: "the signature is missing, stale or matches no secret",
                       413: "the body exceeds http.max_body_bytes",
                       415: "a compressed body",
                       422: "the event breaks a canonical invariant, or drifted",
                       500: "the broker refused the message for good",
                       503: "the broker is unavailable: retry later"}),
        },
    }


def _usage_operation(cfg: Config) -> dict[str, Any]:
    return {
        "operationId": "recordUsage",
        "summary": "Usage records, stored once each",
        "description": (
            f"Up to {cfg.usage.max_records} usage records (413 `usage.too_many_records` "
            "above); each becomes a `usage.recorded.v1` message, deduplicated by its id. "
            "Needs one of `usage.api_tokens` as a bearer token."),
        "security": [{"usageToken": []}],
        "requestBody": {"required": True, "content": {_JSON: {
            "schema": {"type": "array", "items": _ref("UsageRecordIn")}}}},
        "responses": {
            "200": _json_body(_ref("UsageAnswer"), "every record stored (or stored before)"),
            **_errors({400: "the body is not a list of usage records (the path names the "
                            "field)",
                       401: "no valid bearer token",
                       413: "too many records, or the body exceeds http.max_body_bytes",
                       422: "a record breaks a canonical invariant",
                       500: "the broker refused the records for good",
                       503: "the intake or the broker is unavailable: retry later"}),
        },
    }


def _sync_operation(path: str, op: str) -> dict[str, Any]:
    request, decision = (("PricingRequest", "PricingDecision") if op == "pricing.validate"
                         else ("OrderRequest", "OrderDecision"))
    name = "validatePricing" if op == "pricing.validate" else "acceptOrder"
    sync_errors = {400: "the request is malformed (the path names the field or header)",
                   500: "an internal error (logged)",
                   502: "CPQ answered something the gateway cannot read",
                   503: "overloaded, the lane is restarting, or CPQ is unavailable: retry"}
    return {
        "operationId": name,
        "summary": f"Synchronous {op}",
        "description": (
            f"Decide a {request} within its deadline (the `{DEADLINE_HEADER}` header, else "
            "`deadline_ms`, else `cpq.default_deadline_ms`): 200 with the final decision "
            "(`accepted` or `rejected`, a refusal's code and path), or 202 "
            "`accepted_pending_validation` when CPQ was not in time; the final decision then "
            "follows on the subject named in `follow_up_subject`."),
        "parameters": [{"name": DEADLINE_HEADER, "in": "header", "required": False,
                        "description": "the caller's budget in whole milliseconds, "
                                       f"1..{MAX_DEADLINE_MS} (else 400 "
                                       "`sync.invalid_deadline`)",
                        "schema": {"type": "string", "pattern": _DEADLINE_PATTERN}},
                       {"name": "traceparent", "in": "header", "required": False,
                        "description": "W3C trace context, continued by the gateway",
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref(request)}}},
        "responses": {
            "200": _json_body(_ref(decision), "decided"),
            "202": _json_body(_ref(decision), "pending: the final decision follows on NATS"),
            **_errors(sync_errors, "SyncError"),
            "413": _json_body(_ref("ApiError"), "the body exceeds http.max_body_bytes"),
        },
    }


def _get(op_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": op_id, "summary": summary, "responses": responses}}


def _admin_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/livez": _get("livez", "The event loop answers",
                       {"200": _json_body(_ref("Live"), "alive")}),
        "/readyz": _get("readyz", "Broker connected, ledger open, consumers bound, not draining",
                        {"200": _json_body(_ref("Ready"), "ready"),
                         "503": _json_body(_ref("NotReady"), "not ready", _RETRY_AFTER)}),
        "/status": _get("status", "The status tree: readiness checks and every actor's "
                                  "statistics",
                        {"200": _json_body({"type": "object", "required": ["ready", "checks"],
                                            "properties": {"ready": {"type": "boolean"},
                                                           "checks": {"type": "object"}}},
                                           "the tree")}),
        "/metrics": _get("metrics", "Prometheus text exposition", {
            "200": {"description": "every metric of docs/monitoring.md",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors({503: "the gateway is still starting"})}),
    }
    for listener in LISTENERS:
        paths[OPENAPI_PATH.format(listener=listener)] = _get(
            f"openapi{listener.capitalize()}", f"This OpenAPI document of the {listener} "
                                               "listener",
            {"200": _json_body({"type": "object", "required": ["openapi", "paths"]},
                               "an OpenAPI 3.1 document")})
    for path, op in HTTP_ROUTES.items():
        paths[path] = {"post": _sync_operation(path, op)}
    return paths


def _admin_token_configured(cfg: Config) -> bool:
    a = cfg.admin
    return any(v is not None for v in (a.token, a.token_env, a.token_file))


def document(listener: str, cfg: Config) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``listener`` (one of ``LISTENERS``) of the gateway run
    with ``cfg``. Raises ``KeyError`` for another listener."""
    if listener not in LISTENERS:
        raise KeyError(listener)
    _, schemas = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"version": __version__}}
    if listener == "webhooks":
        s = cfg.http
        scheme = "https" if s.tls.enabled else "http"
        doc["info"]["title"] = "erpgw webhook listener"
        doc["info"]["description"] = ("The platforms' signed webhooks and the usage intake. "
                                      "Every error body is ApiError.")
        doc["servers"] = [{"url": f"{scheme}://{s.host}:{s.port}"}]
        paths: dict[str, Any] = {src.path: {"post": _webhook_operation(src, s.max_body_bytes)}
                                 for src in webhook_sources(cfg)}
        paths[RECORDS_PATH] = {"post": _usage_operation(cfg)}
        doc["paths"] = paths
        doc["components"] = {"schemas": schemas, "securitySchemes": {
            "usageToken": {"type": "http", "scheme": "bearer",
                           "description": "one of usage.api_tokens"}}}
        return doc
    a = cfg.admin
    scheme = "https" if a.tls.enabled else "http"
    doc["info"]["title"] = "erpgw admin listener"
    doc["info"]["description"] = ("Probes, status, metrics, the synchronous lane and these "
                                  "documents. Unknown routes answer 404 `admin.not_found`, "
                                  "other methods 405 `admin.method_not_allowed`.")
    doc["servers"] = [{"url": f"{scheme}://{a.host}:{a.port}"}]
    doc["paths"] = _admin_paths()
    doc["components"] = {"schemas": schemas}
    if _admin_token_configured(cfg):
        doc["components"]["securitySchemes"] = {"adminToken": {
            "type": "http", "scheme": "bearer", "description": "the admin token "
                                                               "(admin.token*)"}}
        doc["security"] = [{"adminToken": []}]
        for ops in doc["paths"].values():
            for op in ops.values():
                op["responses"]["401"] = _json_body(_ref("ApiError"),
                                                    "`admin.unauthorized`: no or a wrong token")
    return doc


def openapi_documents(cfg: Config) -> dict[str, bytes]:
    """``{path: JSON}`` of every listener's document, for the admin listener to serve."""
    return {OPENAPI_PATH.format(listener=name): dumps(document(name, cfg))
            for name in LISTENERS}
