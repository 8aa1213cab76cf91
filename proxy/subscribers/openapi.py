"""The OpenAPI 3.0 document of the subscriber and dispute API, served at
/api/v1/openapi.json and fuzzed with schemathesis in CI.

Besides each operation's own answers, every operation documents what the
admin server answers any request (401/403 for the token, 408 for a body that
does not arrive in time, 413 for a Content-Length over the route's limit),
and every operation that calls the subscriber store documents its 503 with
Retry-After (locked, disk full, unreachable: backend.StoreUnavailable)."""

from __future__ import annotations

from typing import Any

from .backend import RETRY_AFTER
from .model import MAX_LIST_ENTRIES, POLICIES

NUMBER = {
    "type": "string",
    "description": "E.164 (+12125550142) or a NANP form (2125550142)",
    "example": "+12125550142",
}
ENTRY = {
    "type": "string",
    "maxLength": 32,
    "description": "a number, or an E.164 prefix ending in * (+1900*)",
}
LIST = {"type": "array", "items": ENTRY, "maxItems": MAX_LIST_ENTRIES}
SETTINGS = {  # what a subscriber's record holds besides the number
    "opted_in": {"type": "boolean"},
    "policy": {"type": "string", "enum": list(POLICIES)},
    "reject_anonymous": {"type": "boolean"},
    "allow": LIST,
    "block": LIST,
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERR = _json(_ref("Error"), "the request is wrong; `field` names the part at fault")
ANY_REQUEST = {  # from the admin server, before or around the operation
    "401": _json(_ref("Error"), "missing or wrong bearer token"),
    "403": _json(_ref("Error"), "no token configured: the API is disabled"),
    "408": _json(_ref("Error"), "the request's body did not arrive in time"),
    "413": _json(_ref("Error"), "Content-Length over this operation's limit"),
}
UNAVAILABLE = {
    **_json(
        _ref("Error"),
        "the subscriber store cannot take the call now (locked, disk full, database "
        "unreachable); nothing was changed: try again after Retry-After seconds",
    ),
    "headers": {
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "example": int(RETRY_AFTER)},
        }
    },
}
NUMBER_PARAM = {"name": "number", "in": "path", "required": True, "schema": NUMBER}
ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def _object(**types: str) -> dict[str, Any]:
    """A JSON object schema of plain-typed properties."""
    return {"type": "object", "properties": {k: {"type": t} for k, t in types.items()}}


def _op(
    summary: str, responses: dict[str, Any], *, store: bool = True, **extra: Any
) -> dict[str, Any]:
    """``store``: the operation calls the subscriber store, so it may answer
    503 (False: it reads the in-memory index only)."""
    answers = {**responses, **ANY_REQUEST, **({"503": UNAVAILABLE} if store else {})}
    return {"summary": summary, "responses": dict(sorted(answers.items())), **extra}


def openapi_document() -> dict[str, Any]:
    sub = _json(_ref("Subscriber"), "the subscriber")
    changes_body = {"required": True, "content": {"application/json": {"schema": _ref("Changes")}}}
    not_found = _json(_ref("Error"), "no such subscriber")
    list_params = [
        NUMBER_PARAM,
        {"name": "list", "in": "path", "required": True,
         "schema": {"type": "string", "enum": ["allow", "block"]}},
        {"name": "entry", "in": "path", "required": True, "schema": ENTRY},
    ]  # fmt: skip
    dispute = _json(_ref("Dispute"), "the dispute")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "robocall-shield subscriber API",
            "version": "1",
            "description": "Free opt-in robocall blocking: subscribers, their policy and "
            "lists, and redress disputes. No billing: the service is free.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                },
                "Subscriber": {
                    "type": "object",
                    "required": [
                        "number",
                        "opted_in",
                        "policy",
                        "reject_anonymous",
                        "allow",
                        "block",
                    ],
                    "properties": {"number": NUMBER, **SETTINGS},
                },
                "Changes": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": SETTINGS,
                },
                "Audit": {
                    "type": "object",
                    "properties": {
                        "number": NUMBER,
                        "changes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "at": {"type": "number"},
                                    "actor": {"type": "string"},
                                    "field": {"type": "string"},
                                    "old": {"type": "string", "nullable": True},
                                    "new": {"type": "string", "nullable": True},
                                },
                            },
                        },
                    },
                },
                "Dispute": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "filed_at": {"type": "number"},
                        "number": NUMBER,
                        "contact": {"type": "string"},
                        "description": {"type": "string"},
                        "source": {"type": "string"},
                        "status": {"type": "string", "enum": ["open", "allowed", "rejected"]},
                        "resolved_at": {"type": "number", "nullable": True},
                        "resolved_by": {"type": "string", "nullable": True},
                        "scope": {"type": "string", "nullable": True},
                        "note": {"type": "string", "nullable": True},
                    },
                },
                "Resolution": {
                    "type": "object",
                    "required": ["decision"],
                    "additionalProperties": False,
                    "properties": {
                        "decision": {"type": "string", "enum": ["allow", "reject"]},
                        "scope": {
                            "type": "string",
                            "description": "allow only: `global`, or a subscriber number",
                        },
                        "note": {"type": "string", "maxLength": 2000},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/subscribers/{number}": {
                "parameters": [NUMBER_PARAM],
                "get": _op(
                    "Read a subscriber", {"200": sub, "400": ERR, "404": not_found}, store=False
                ),
                "put": _op(
                    "Create or replace a subscriber (absent fields take their defaults)",
                    {"200": sub, "201": sub, "400": ERR, "413": ERR},
                    requestBody=changes_body,
                ),
                "patch": _op(
                    "Change some fields",
                    {"200": sub, "400": ERR, "404": not_found, "413": ERR},
                    requestBody=changes_body,
                ),
                "delete": _op(
                    "Delete a subscriber (the audit trail stays)",
                    {"204": {"description": "deleted"}, "400": ERR, "404": not_found},
                ),
            },
            "/api/v1/subscribers/{number}/audit": {
                "parameters": [NUMBER_PARAM],
                "get": _op(
                    "Every change: who, when, old and new value",
                    {"200": _json(_ref("Audit"), "newest first"), "400": ERR},
                ),
            },
            "/api/v1/subscribers/{number}/lists/{list}/{entry}": {
                "parameters": list_params,
                "put": _op(
                    "Add an entry to the allow or block list",
                    {"200": sub, "400": ERR, "404": not_found, "422": ERR},
                ),
                "delete": _op("Remove an entry", {"200": sub, "400": ERR, "404": not_found}),
            },
            "/api/v1/subscribers/{number}/self-service-link": {
                "parameters": [NUMBER_PARAM],
                "post": _op(
                    "A signed, expiring link to the subscriber's self-service page",
                    {
                        "200": _json(_object(url="string", expires_at="integer"), "the link"),
                        "400": ERR,
                        "404": not_found,
                    },
                    store=False,
                ),
            },
            "/api/v1/subscribers.csv": {
                "get": _op(
                    "Export every subscriber as CSV",
                    {
                        "200": {
                            "description": "CSV with the header number,opted_in,policy,"
                            "reject_anonymous,allow,block; list entries space-separated",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        "400": ERR,
                    },
                    store=False,
                ),
                "post": _op(
                    "Import subscribers from CSV (same columns); all rows or none",
                    {
                        "200": _json(_object(created="integer", updated="integer"), "imported"),
                        "400": ERR,
                        "413": ERR,
                        "415": ERR,
                    },
                    requestBody={
                        "required": True,
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                ),
            },
            "/api/v1/subscribers/stats": {
                "get": _op(
                    "Subscribers per policy",
                    {"200": _json({"type": "object"}, "counts"), "400": ERR},
                    store=False,
                ),
            },
            "/api/v1/disputes": {
                "get": _op(
                    "Redress disputes, oldest open first",
                    {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "disputes": {"type": "array", "items": _ref("Dispute")}
                                },
                            },
                            "disputes",
                        ),
                        "400": ERR,
                    },
                    parameters=[
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["open", "allowed", "rejected"]},
                        }
                    ],
                ),
            },
            "/api/v1/disputes/{id}": {
                "parameters": [ID_PARAM],
                "get": _op("Read a dispute", {"200": dispute, "400": ERR, "404": ERR}),
            },
            "/api/v1/disputes/{id}/resolve": {
                "parameters": [ID_PARAM],
                "post": _op(
                    "Resolve an open dispute: allow the number (globally or for one "
                    "subscriber) or reject",
                    {"200": dispute, "400": ERR, "404": ERR, "409": ERR},
                    requestBody={
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Resolution")}},
                    },
                ),
            },
        },
    }
