"""OpenAPI 3.1 documents of the simulated services, built from the structs the handlers encode.

The request and response schemas come from ``msgspec.json.schema_components`` over the very
types the handlers decode and encode (``contracts.platforms`` and the sim's own), so a document
cannot drift from the behaviour. ``document(service)`` is pure; the app serves
``/<service>/openapi.json`` for each of ``SERVICES`` and all of them merged at
``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.platforms.billing import BillingEventList
from contracts.platforms.cpq import PriceQuote, PriceRequest, ProductList
from contracts.platforms.erp import (
    BulkRequest,
    BulkResponse,
    GlBalances,
    Governance,
    JournalEntryList,
    PeriodList,
    PeriodStatus,
)
from contracts.platforms.revenue import RevenueBatch, RevenueBatchResult

from ._audit import AuditReport
from ._billing import BillRunCreated, BillRunRequest, BillRunStatus, EventStatus
from ._control import ScenarioState
from ._cpq import CATALOG
from ._faults import Faults

__all__ = ["SERVICES", "ApiError", "document"]

SERVICES = ("billing", "erp", "revenue", "cpq", "sim")
_REF = "#/components/schemas/{name}"


class ApiError(msgspec.Struct, frozen=True):
    """Every error body: a stable ``code``, a ``message``, and the offending field's ``path``
    when there is one."""

    code: str
    message: str
    path: str | None = None


class Health(msgspec.Struct, frozen=True):
    ok: bool


class ResetDone(msgspec.Struct, frozen=True):
    reset: bool = True


_TYPES: tuple[Any, ...] = (
    ApiError, Health, ResetDone, BillRunRequest, BillRunCreated, BillRunStatus, EventStatus,
    BillingEventList, BulkRequest, BulkResponse, JournalEntryList, GlBalances, PeriodStatus,
    PeriodList, Governance, Faults, ScenarioState, AuditReport, RevenueBatch,
    RevenueBatchResult, ProductList, PriceRequest, PriceQuote,
)


def _components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    # JSON object keys are strings: say which strings an int-keyed map takes.
    for name in ("ErpFaults",):
        mix = components[name]["properties"]["error_mix"]
        mix["propertyNames"] = {"pattern": "^[45][0-9][0-9]$"}
    # CPQ prices only what its catalog and price books hold.
    components["PriceItem"]["properties"]["product"]["enum"] = [p.id for p in CATALOG]
    currencies = sorted({c for p in CATALOG for c in p.list_prices})
    components["PriceRequest"]["properties"]["currency"]["enum"] = currencies
    return components


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _json(name: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": _ref(name)}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "invalid request (``path`` names the field)", 404: "not found",
            413: "too large", 422: "idempotency key reused with another body",
            429: "rate limited", 500: "injected fault", 502: "injected fault",
            503: "unavailable (injected fault, or the billing host is not running)"}
    return {str(s): _json("ApiError", text[s], _RETRY_AFTER if s == 429 else None)
            for s in statuses}


# The faults a scenario or the runtime settings may inject into any platform route.
_FAULTS = (429, 500, 502, 503)


def _query(name: str, schema: dict[str, Any], required: bool, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[A-Za-z0-9_.:~-]+$"}
_PERIOD = {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}


def _billing() -> dict[str, Any]:
    return {
        "/billing/v1/bill-runs": {"post": {
            "operationId": "createBillRun", "summary": "Start a bill run",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                       "pattern": "^[\\x21-\\x7e]+$"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("BillRunRequest")}}},
            "responses": {"202": _json("BillRunCreated", "the bill run was started"),
                          **_errors(400, 422, *_FAULTS)},
        }},
        "/billing/v1/bill-runs/{id}": {"get": {
            "operationId": "getBillRun", "summary": "A bill run's progress",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("BillRunStatus", "its progress"),
                          **_errors(404, *_FAULTS)},
        }},
        "/billing/v1/events": {"get": {
            "operationId": "listEvents", "summary": "Events in issue order, after a cursor",
            "parameters": [
                _query("after", {"type": "string", "pattern": "^[0-9]{0,18}$"}, False,
                       "the next_cursor of the previous page (empty: from the start)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False,
                       "page size (default 100)"),
            ],
            "responses": {"200": _json("BillingEventList", "a page of events"),
                          **_errors(400, *_FAULTS)},
        }},
        "/billing/v1/events/{id}": {"get": {
            "operationId": "getEventDelivery", "summary": "One webhook's delivery record",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("EventStatus", "the delivery record"),
                          **_errors(404, *_FAULTS)},
        }},
    }


def _erp() -> dict[str, Any]:
    return {
        "/erp/v1/journal-entries/bulk": {"post": {
            "operationId": "postJournalEntries", "summary": "Post journal entries in bulk",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("BulkRequest")}}},
            "responses": {"200": _json("BulkResponse", "one result per item, in order"),
                          **_errors(400, 413, *_FAULTS)},
        }},
        "/erp/v1/journal-entries": {"get": {
            "operationId": "findJournalEntries",
            "summary": "Postings by external id, or every posting after a seq (paging)",
            "parameters": [
                _query("externalId", {"type": "string", "minLength": 1}, False,
                       "the business key; when given, after and limit are ignored"),
                _query("after", {"type": "string", "pattern": "^[0-9]{0,18}$"}, False,
                       "the seq of the last posting of the previous page (empty: 0)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False,
                       "page size (default 100)"),
            ],
            "responses": {"200": _json("JournalEntryList", "postings in commit order"),
                          **_errors(400, *_FAULTS)},
        }},
        "/erp/v1/gl/balances": {"get": {
            "operationId": "getGlBalances", "summary": "GL totals of a period",
            "parameters": [_query("period", _PERIOD, True, "YYYY-MM")],
            "responses": {"200": _json("GlBalances", "per account and currency"),
                          **_errors(400, *_FAULTS)},
        }},
        "/erp/v1/periods/{period}/close": {"post": {
            "operationId": "closePeriod", "summary": "Close a period (idempotent)",
            "parameters": [_path("period", _PERIOD)],
            "responses": {"200": _json("PeriodStatus", "the period, closed"),
                          **_errors(400, *_FAULTS)},
        }},
        "/erp/v1/periods": {"get": {
            "operationId": "listClosedPeriods", "summary": "The closed periods",
            "responses": {"200": _json("PeriodList", "closed periods, sorted"),
                          **_errors(*_FAULTS)},
        }},
        "/erp/v1/governance": {"get": {
            "operationId": "getGovernance", "summary": "The account's limits and their use",
            "responses": {"200": _json("Governance", "limits"), **_errors(500, 502, 503)},
        }},
    }


def _revenue() -> dict[str, Any]:
    return {
        "/revenue/v1/batches": {"post": {
            "operationId": "uploadBatch",
            "summary": "Upload billing lines (all-or-nothing, no duplicate detection)",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("RevenueBatch")}}},
            "responses": {"201": _json("RevenueBatchResult", "every line recorded"),
                          "422": _json("RevenueBatchResult", "rejected: nothing recorded"),
                          **_errors(400, 413, *_FAULTS)},
        }},
        "/revenue/v1/batches/{id}": {"get": {
            "operationId": "getBatch", "summary": "One uploaded batch",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("RevenueBatchResult", "the batch"),
                          **_errors(404, *_FAULTS)},
        }},
    }


def _cpq() -> dict[str, Any]:
    return {
        "/cpq/v1/products": {"get": {
            "operationId": "listProducts", "summary": "The catalog with list prices",
            "responses": {"200": _json("ProductList", "the catalog"), **_errors(*_FAULTS)},
        }},
        "/cpq/v1/price": {"post": {
            "operationId": "priceQuote", "summary": "Price a quote (slow, like real CPQ)",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("PriceRequest")}}},
            "responses": {"200": _json("PriceQuote", "the priced quote"),
                          "422": _json("ApiError", "unknown product or price book"),
                          **_errors(400, *_FAULTS)},
        }},
    }


def _sim() -> dict[str, Any]:
    faults_body = {"required": True, "content": {"application/json": {"schema": _ref("Faults")}}}
    return {
        "/healthz": {"get": {"operationId": "health", "summary": "Liveness",
                             "responses": {"200": _json("Health", "running"),
                                           "503": _json("Health", "the billing host stopped")}}},
        "/sim/v1/faults": {
            "get": {"operationId": "getFaults", "summary": "The runtime fault settings",
                    "responses": {"200": _json("Faults", "the settings")}},
            "put": {"operationId": "putFaults", "summary": "Replace the runtime fault settings",
                    "requestBody": faults_body,
                    "responses": {"200": _json("Faults", "the new settings"), **_errors(400)}},
            "delete": {"operationId": "clearFaults", "summary": "Clear the runtime faults",
                       "responses": {"200": _json("Faults", "healthy settings")}},
        },
        "/sim/v1/scenario": {"get": {"operationId": "getScenario",
                                     "summary": "The scenario and its clock",
                                     "responses": {"200": _json("ScenarioState", "state")}}},
        "/sim/v1/audit": {"get": {"operationId": "getAudit", "summary": "The ground-truth audit",
                                  "responses": {"200": _json("AuditReport", "the audit")}}},
        "/sim/v1/reset": {"post": {"operationId": "reset", "summary": "Forget all state",
                                   "responses": {"200": _json("ResetDone", "done")}}},
    }


_PATHS = {"billing": _billing, "erp": _erp, "revenue": _revenue, "cpq": _cpq, "sim": _sim}
_TITLES = {
    "billing": "Simulated billing platform",
    "erp": "Simulated ERP",
    "revenue": "Simulated revenue platform",
    "cpq": "Simulated CPQ",
    "sim": "Simulator control and audit",
    "all": "erpgw platform simulator",
}


def document(service: str = "all") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``service`` (one of ``SERVICES``, or ``all``).

    Raises ``KeyError`` for another name.
    """
    names = SERVICES if service == "all" else (service,)
    paths: dict[str, Any] = {}
    for name in names:
        paths.update(_PATHS[name]())
    return {
        "openapi": "3.1.0",
        "info": {"title": _TITLES[service], "version": "1.0.0",
                 "description": "See docs/simulator.md."},
        "paths": paths,
        "components": {"schemas": _components()},
    }
