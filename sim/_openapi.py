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

from contracts.platforms.billing import (
    BillingCustomer,
    BillingCustomerList,
    BillingEventList,
    BillingSubscription,
    CreditNoteEventList,
    PaymentEventList,
    SubscriptionIn,
)
from contracts.platforms.cpq import PriceBookList, PriceQuote, PriceRequest, ProductList
from contracts.platforms.erp import (
    BulkItemResult,
    BulkRequest,
    BulkResponse,
    ErpCustomerList,
    ExchangeRates,
    GlBalances,
    Governance,
    JournalEntryIn,
    JournalEntryList,
    PeriodList,
    PeriodStatus,
    SalesOrderClose,
    SalesOrderIn,
    SalesOrderList,
    SalesOrderRecord,
    SalesOrderRevision,
    VendorBillIn,
    VendorBillList,
    VendorBillRecord,
)
from contracts.platforms.partner import (
    Attribution,
    PartnerDeal,
    PartnerList,
    SettlementIn,
    SettlementList,
    SettlementReceipt,
    TierList,
)
from contracts.platforms.revenue import (
    BillingReport,
    ContractError,
    RecognitionDetail,
    RecognitionItem,
    RecognitionTotals,
    RevenueBatch,
    RevenueBatchResult,
    RevenueContract,
    RevenueContractIn,
)
from contracts.platforms.usage import (
    UsageBulkRequest,
    UsageBulkResponse,
    UsageRunCreated,
    UsageRunRequest,
)

from ._audit import AuditReport
from ._billing import BillRunCreated, BillRunRequest, BillRunStatus, EventStatus
from ._control import ScenarioState
from ._cpq import CATALOG
from ._deals import DealRunCreated, DealRunRequest, DealRunStatus
from ._erp import USD_VALUE
from ._faults import Faults
from ._partner import PARTNERS
from ._sub_changes import ChangeRunRequest, ChangeRunStatus

__all__ = ["SERVICES", "ApiError", "document"]

SERVICES = ("billing", "erp", "revenue", "cpq", "partner", "sim")
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
    BillingEventList, CreditNoteEventList, PaymentEventList, BulkRequest, BulkResponse,
    JournalEntryList, GlBalances, PeriodStatus,
    PeriodList, Governance, ExchangeRates, Faults, ScenarioState, AuditReport, RevenueBatch,
    RevenueBatchResult, ProductList, PriceRequest, PriceQuote, PriceBookList, JournalEntryIn,
    BulkItemResult,
    UsageBulkRequest, UsageBulkResponse, UsageRunRequest, UsageRunCreated,
    VendorBillIn, VendorBillRecord, VendorBillList, PartnerList, TierList, Attribution,
    SettlementIn, SettlementReceipt, SettlementList,
)


def _components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_TYPES, ref_template=_REF)
    # JSON object keys are strings: say which strings an int-keyed map takes.
    for name in ("ErpFaults", "RevenueFaults", "CpqFaults"):
        mix = components[name]["properties"]["error_mix"]
        mix["propertyNames"] = {"pattern": "^[45][0-9][0-9]$"}
    # The item-level faults are the ERP bulk endpoint's (and the revenue upload's rejects).
    for name, erp_only in (("RevenueFaults", ("silent_drop_rate", "alter_amount_rate")),
                           ("CpqFaults", ("silent_drop_rate", "item_reject_rate",
                                          "alter_amount_rate"))):
        for field in erp_only:
            components[name]["properties"][field]["maximum"] = 0.0
    # CPQ prices only what its catalog and price books hold.
    components["PriceItem"]["properties"]["product"]["enum"] = [p.id for p in CATALOG]
    currencies = sorted({c for p in CATALOG for c in p.list_prices})
    components["PriceRequest"]["properties"]["currency"]["enum"] = currencies
    # The partner portal settles only the programme's partners.
    components["SettlementIn"]["properties"]["partner"]["enum"] = [p.id for p in PARTNERS]
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


_IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                               "pattern": "^[\\x21-\\x7e]+$"}}
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
        "/billing/v1/usage-records/bulk": {"post": {
            "operationId": "rateUsage", "summary": "Rate usage aggregates in bulk",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                       "pattern": "^[\\x21-\\x7e]+$"}}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("UsageBulkRequest")}}},
            "responses": {"200": _json("UsageBulkResponse", "one result per item, in order"),
                          **_errors(400, 413, 422, *_FAULTS)},
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
                _query("type", {"type": "string",
                                "enum": ["credit_note.created", "invoice.paid"]}, False,
                       "list these events (delivered, in delivery order) instead of the "
                       "invoice events"),
            ],
            "responses": {"200": {"description": "a page of events", "content": {
                "application/json": {"schema": {"anyOf": [
                    _ref("BillingEventList"), _ref("CreditNoteEventList"),
                    _ref("PaymentEventList")]}}}},
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
        "/erp/v1/journal-entries": {"post": {
            "operationId": "postJournalEntry", "summary": "Post one journal entry",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("JournalEntryIn")}}},
            "responses": {"200": _json("BulkItemResult", "its result, as a bulk item's: "
                                       "created, replayed or rejected"),
                          **_errors(400, *_FAULTS)},
        }, "get": {
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
        "/erp/v1/vendor-bills": {
            "post": {
                "operationId": "postVendorBill",
                "summary": "Record a vendor bill (idempotent by Idempotency-Key)",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("VendorBillIn")}}},
                "responses": {"201": _json("VendorBillRecord", "recorded"),
                              "200": _json("VendorBillRecord", "replayed: already recorded"),
                              **_errors(400, 422, *_FAULTS)},
            },
            "get": {
                "operationId": "listVendorBills", "summary": "Vendor bills in commit order",
                "parameters": [_query("externalId", {"type": "string"}, False,
                                      "only the bills of this business key")],
                "responses": {"200": _json("VendorBillList", "the bills"),
                              **_errors(*_FAULTS)},
            },
        },
        "/erp/v1/exchange-rates": {"get": {
            "operationId": "getExchangeRates", "summary": "The daily exchange rates of a day",
            "parameters": [
                _query("date", {"type": "string", "format": "date"}, True, "YYYY-MM-DD"),
                _query("base", {"type": "string", "enum": sorted(USD_VALUE)}, True,
                       "the currency the rates are quoted in"),
            ],
            "responses": {"200": _json("ExchangeRates", "every currency's rate in base"),
                          **_errors(400, *_FAULTS)},
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
            "summary": "Upload billing lines (all-or-nothing, no duplicate detection; a "
                       "correction, naming what it adjusts, may be negative)",
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
        "/cpq/v1/price-books": {"get": {
            "operationId": "listPriceBooks", "summary": "List prices per currency",
            "parameters": [_query("currency", {"type": "string", "pattern": "^[A-Z]{3}$"},
                                  False, "one currency's book only")],
            "responses": {"200": _json("PriceBookList", "the price books"),
                          **_errors(404, *_FAULTS)},
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


def _partner() -> dict[str, Any]:
    return {
        "/partner/v1/partners": {"get": {
            "operationId": "listPartners", "summary": "The partner programme's partners",
            "responses": {"200": _json("PartnerList", "partners"), **_errors(*_FAULTS)},
        }},
        "/partner/v1/tiers": {"get": {
            "operationId": "listTiers", "summary": "Tiers and their commission rates",
            "responses": {"200": _json("TierList", "tiers"), **_errors(*_FAULTS)},
        }},
        "/partner/v1/attributions/{customer}": {"get": {
            "operationId": "getAttribution", "summary": "Which partner resells a customer",
            "parameters": [_path("customer", _ID)],
            "responses": {"200": _json("Attribution", "the partner of record"),
                          **_errors(400, 404, *_FAULTS)},
        }},
        "/partner/v1/settlements": {
            "post": {
                "operationId": "recordSettlement",
                "summary": "Record a settlement (idempotent by Idempotency-Key)",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("SettlementIn")}}},
                "responses": {"201": _json("SettlementReceipt", "recorded"),
                              "200": _json("SettlementReceipt", "replayed: already recorded"),
                              **_errors(400, 404, 422, *_FAULTS)},
            },
            "get": {
                "operationId": "listSettlements", "summary": "Commission statements",
                "parameters": [_query("partner", {"type": "string"}, False,
                                      "only this partner's settlements")],
                "responses": {"200": _json("SettlementList", "settlements in recording order"),
                              **_errors(*_FAULTS)},
            },
        },
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
        "/sim/v1/usage-runs": {"post": {
            "operationId": "createUsageRun", "summary": "Seeded usage records to send",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("UsageRunRequest")}}},
            "responses": {"201": _json("UsageRunCreated", "the records (ground truth kept)"),
                          **_errors(400)},
        }},
        "/sim/v1/reset": {"post": {"operationId": "reset", "summary": "Forget all state",
                                   "responses": {"200": _json("ResetDone", "done")}}},
    }


# -- flow 1 (deal to contract): deals, subscriptions, sales orders, revenue contracts ----------

_TYPES += (
    DealRunRequest, DealRunCreated, DealRunStatus, PartnerDeal, SubscriptionIn,
    BillingSubscription, SalesOrderIn, SalesOrderRecord, SalesOrderList, SalesOrderClose,
    RevenueContractIn, RevenueContract, RecognitionTotals, ContractError, ChangeRunRequest,
    ChangeRunStatus, SalesOrderRevision, RecognitionDetail, RecognitionItem,
)


def _flow1_billing() -> dict[str, Any]:
    sub = [_path("id", _ID)]
    return {
        "/billing/v1/subscriptions": {"post": {
            "operationId": "createSubscription",
            "summary": "Create a subscription (idempotent by Idempotency-Key)",
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("SubscriptionIn")}}},
            "responses": {"201": _json("BillingSubscription", "created"),
                          "200": _json("BillingSubscription", "replayed: already created"),
                          **_errors(400, 422, *_FAULTS)},
        }},
        "/billing/v1/subscriptions/{id}": {"get": {
            "operationId": "getSubscription", "summary": "One subscription",
            "parameters": sub,
            "responses": {"200": _json("BillingSubscription", "the subscription"),
                          **_errors(404, *_FAULTS)},
        }},
        "/billing/v1/subscription-changes": {"post": {
            "operationId": "createSubscriptionChanges",
            "summary": "Amend, renew or cancel active subscriptions (webhooks, flow 5)",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("ChangeRunRequest")}}},
            "responses": {"202": _json("ChangeRunStatus", "the change run was started"),
                          **_errors(400, *_FAULTS)},
        }},
        "/billing/v1/subscription-changes/{id}": {"get": {
            "operationId": "getSubscriptionChanges", "summary": "A change run's progress",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("ChangeRunStatus", "its progress"),
                          **_errors(404, *_FAULTS)},
        }},
        "/billing/v1/subscriptions/{id}/cancel": {"post": {
            "operationId": "cancelSubscription", "summary": "Cancel a subscription (idempotent)",
            "parameters": sub,
            "responses": {"200": _json("BillingSubscription", "cancelled"),
                          **_errors(404, *_FAULTS)},
        }},
    }


def _flow1_erp() -> dict[str, Any]:
    return {
        "/erp/v1/sales-orders": {
            "post": {
                "operationId": "createSalesOrder",
                "summary": "Create a sales order (idempotent by Idempotency-Key)",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("SalesOrderIn")}}},
                "responses": {"201": _json("SalesOrderRecord", "created"),
                              "200": _json("SalesOrderRecord", "replayed: already created"),
                              "422": _json("ErpError", "refused (INVALID, CREDIT_HOLD, "
                                                       "IDEMPOTENCY_KEY_REUSED)"),
                              **_errors(400, *_FAULTS)},
            },
            "get": {
                "operationId": "findSalesOrders", "summary": "Sales orders by external id",
                "parameters": [_query("externalId", {"type": "string", "minLength": 1}, True,
                                      "the business key (the deal id)")],
                "responses": {"200": _json("SalesOrderList", "orders in creation order"),
                              **_errors(400, *_FAULTS)},
            },
        },
        "/erp/v1/sales-orders/{id}/revise": {"post": {
            "operationId": "reviseSalesOrder",
            "summary": "Restate a sales order's lines at a later version (flow 5)",
            "parameters": [_path("id", _ID)],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("SalesOrderRevision")}}},
            "responses": {"200": _json("SalesOrderRecord", "revised, or replayed"),
                          "409": _json("ErpError", "STALE_VERSION or VERSION_CONFLICT"),
                          "422": _json("ErpError", "ORDER_CLOSED"),
                          **_errors(400, 404, *_FAULTS)},
        }},
        "/erp/v1/sales-orders/{id}/close": {"post": {
            "operationId": "closeSalesOrder",
            "summary": "Close a sales order (a reversal, never a delete; idempotent)",
            "parameters": [_path("id", _ID)],
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": _ref("SalesOrderClose")}}},
            "responses": {"200": _json("SalesOrderRecord", "closed"),
                          **_errors(400, 404, *_FAULTS)},
        }},
    }


def _flow1_revenue() -> dict[str, Any]:
    return {
        "/revenue/v1/contracts/{id}": {
            "put": {
                "operationId": "putRevenueContract",
                "summary": "Create or update a revenue contract by version",
                "parameters": [_path("id", _ID)],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("RevenueContractIn")}}},
                "responses": {"201": _json("RevenueContract", "created"),
                              "200": _json("RevenueContract", "updated, or replayed"),
                              "409": _json("ContractError",
                                           "STALE_VERSION or VERSION_CONFLICT"),
                              "422": _json("ContractError", "CONTRACT_REJECTED"),
                              **_errors(400, *_FAULTS)},
            },
            "get": {
                "operationId": "getRevenueContract", "summary": "A contract and its schedule",
                "parameters": [_path("id", _ID)],
                "responses": {"200": _json("RevenueContract", "the contract"),
                              **_errors(404, *_FAULTS)},
            },
        },
        "/revenue/v1/recognition": {"get": {
            "operationId": "getRecognition", "summary": "What the contracts recognise in a month",
            "parameters": [_query("period", _PERIOD, True, "YYYY-MM")],
            "responses": {"200": _json("RecognitionTotals", "per currency"),
                          **_errors(400, *_FAULTS)},
        }},
        "/revenue/v1/recognition/contracts": {"get": {
            "operationId": "getRecognitionByContract",
            "summary": "What each contract recognises in a month, per product",
            "parameters": [_query("period", _PERIOD, True, "YYYY-MM")],
            "responses": {"200": _json("RecognitionDetail", "per contract and product"),
                          **_errors(400, *_FAULTS)},
        }},
    }


def _flow1_partner() -> dict[str, Any]:
    return {
        "/partner/v1/deal-runs": {"post": {
            "operationId": "createDealRun",
            "summary": "Register and decide seeded deals, delivered as signed webhooks",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("DealRunRequest")}}},
            "responses": {"202": _json("DealRunCreated", "the deal run was started"),
                          **_errors(400, *_FAULTS)},
        }},
        "/partner/v1/deal-runs/{id}": {"get": {
            "operationId": "getDealRun", "summary": "A deal run's progress",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("DealRunStatus", "its progress"),
                          **_errors(404, *_FAULTS)},
        }},
        "/partner/v1/deals/{id}": {"get": {
            "operationId": "getDeal", "summary": "A deal's latest version",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("PartnerDeal", "the deal"), **_errors(404, *_FAULTS)},
        }},
    }


_FLOW1 = {"billing": _flow1_billing, "erp": _flow1_erp, "revenue": _flow1_revenue,
          "partner": _flow1_partner}


# -- customers (billing's records, the ERP's view from its postings) ----------------------------

_TYPES += (BillingCustomer, BillingCustomerList, ErpCustomerList)


def _billing_customers() -> dict[str, Any]:
    return {
        "/billing/v1/customers": {"get": {
            "operationId": "listCustomers", "summary": "Customers by id (seeded)",
            "parameters": [
                _query("starting_after", {"type": "string"}, False,
                       "the id of the last customer of the previous page"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False,
                       "page size (default 10)"),
                _query("invoiced", {"type": "string", "enum": ["true", "false"]}, False,
                       "only customers of invoices issued since start or reset"),
            ],
            "responses": {"200": _json("BillingCustomerList", "a page of customers"),
                          **_errors(400, *_FAULTS)},
        }},
        "/billing/v1/customers/{id}": {"get": {
            "operationId": "getCustomer", "summary": "One customer",
            "parameters": [_path("id", _ID)],
            "responses": {"200": _json("BillingCustomer", "the customer"),
                          **_errors(404, *_FAULTS)},
        }},
    }


def _erp_customers() -> dict[str, Any]:
    return {
        "/erp/v1/customers": {"get": {
            "operationId": "listErpCustomers",
            "summary": "Customers named by the ERP's postings, with their totals",
            "responses": {"200": _json("ErpCustomerList", "customers by id"),
                          **_errors(*_FAULTS)},
        }},
    }


_CUSTOMERS = {"billing": _billing_customers, "erp": _erp_customers}


# -- reconciliation reads: the revenue platform's billings report --------------------------------

_TYPES += (BillingReport,)


def _revenue_reports() -> dict[str, Any]:
    return {
        "/revenue/v1/reports/billings": {"get": {
            "operationId": "getBillingsReport",
            "summary": "What the platform recorded per invoice (amount, lines), in pages",
            "parameters": [
                _query("period", _PERIOD, False,
                       "only invoices with a line recorded in this UTC month"),
                _query("after", {"type": "string", "maxLength": 200}, False,
                       "the last invoice id of the previous page (empty: from the start)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False,
                       "page size (default 100)"),
            ],
            "responses": {"200": _json("BillingReport", "a page, by invoice id"),
                          **_errors(400, *_FAULTS)},
        }},
    }


def _stripe_lists() -> dict[str, Any]:
    """Stripe's list APIs, served with ``--billing-dialect stripe`` (docs/simulator.md)."""
    error = {"description": "Stripe's error body", "content": {"application/json": {
        "schema": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "properties": {k: {"type": "string"} for k in
                                             ("type", "code", "message", "param")}}}}}}}
    auth = {"name": "Authorization", "in": "header", "required": True,
            "schema": {"type": "string", "pattern": "^Bearer sk_(test|live)_"},
            "description": "Bearer <the secret key>"}
    page = [_query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, False,
                   "page size (default 10)"),
            _query("starting_after", {"type": "string"}, False,
                   "the id of the last object of the previous page")]
    listed = {"description": "a page, newest first", "content": {"application/json": {
        "schema": {"type": "object", "required": ["object", "data", "has_more"],
                   "properties": {"object": {"const": "list"},
                                  "data": {"type": "array", "items": {"type": "object"}},
                                  "has_more": {"type": "boolean"},
                                  "url": {"type": "string"}}}}}}

    def op(op_id: str, summary: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"operationId": op_id, "summary": summary,
                        "parameters": [auth, *page, extra],
                        "responses": {"200": listed, "400": error, "401": error,
                                      "404": error, **_errors(*_FAULTS)}}}

    return {
        "/v1/events": op("stripeListEvents", "Stripe's events, newest first",
                         _query("type", {"type": "string"}, False, "only this event type")),
        "/v1/invoices": op("stripeListInvoices", "Stripe's invoices, newest first",
                           _query("status", {"type": "string"}, False, "only this status")),
    }


_REPORTS = {"revenue": _revenue_reports}
_STRIPE = {"billing": _stripe_lists}


_PATHS = {"billing": _billing, "erp": _erp, "revenue": _revenue, "cpq": _cpq,
          "partner": _partner, "sim": _sim}
_TITLES = {
    "billing": "Simulated billing platform",
    "erp": "Simulated ERP",
    "revenue": "Simulated revenue platform",
    "cpq": "Simulated CPQ",
    "partner": "Simulated partner portal",
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
        paths.update(_FLOW1.get(name, dict)())
        paths.update(_CUSTOMERS.get(name, dict)())
        paths.update(_REPORTS.get(name, dict)())
        paths.update(_STRIPE.get(name, dict)())
    return {
        "openapi": "3.1.0",
        "info": {"title": _TITLES[service], "version": "1.0.0",
                 "description": "See docs/simulator.md."},
        "paths": paths,
        "components": {"schemas": _components()},
    }
