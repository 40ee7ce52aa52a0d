"""The OpenAPI 3.1 document of the service, written by hand (served at ``/openapi.json``).

It describes the contract API and the Open Inference Protocol routes as this server answers
them: paths, parameters, the bearer scheme and the error body. Starlette does not derive one,
and the routes are few enough that a hand-written document stays exact.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "an error: {\"error\": message, \"kind\": error kind}",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
_BINARY_HEADER = {"name": "Inference-Header-Content-Length", "in": "header",
                  "schema": {"type": "integer", "minimum": 0},
                  "description": "the JSON's size in bytes; binary tensor data follows it"}


_DEPLOY_FORM = {
    "type": "object", "required": ["code", "type"], "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "format": "binary", "description": "the resource's bytes "
                 "(a file part)"},
        "type": {"type": "string", "description": "wasm or onnx"},
        "name": {"type": "string", "description": "a readable name"},
        "capabilities": {"type": "string", "description": "comma-separated"},
        "format": {"type": "string", "enum": ["binary", "wat"], "description": "binary "
                   "(default) or wat"},
    },
}


def _op(summary: str, scope: str | None, *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, ok: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": "success", **_JSON}, "4XX": _ERROR, "5XX": _ERROR},
    }
    if scope is None:
        op["security"] = []
    else:
        op["description"] = f"Needs a key with scope {scope} (or above)."
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": kind}, "description": text}


def _ui(summary: str, scope: str | None, **kw: Any) -> dict[str, Any]:
    op = _op(summary, None, **kw)
    if scope is not None:  # a bearer header, or the cookie of POST /ui/login
        del op["security"]
        op["description"] = (f"Needs a key with scope {scope}" +
                             (" or admin" if scope == "view" else "") +
                             ", as a bearer token or the cookie that POST /ui/login sets.")
    return op


def _dashboard() -> dict[str, Any]:
    """The dashboard's pages and JSON (docs/dashboard.md)."""
    filters = [_query(n, "string", t) for n, t in (
        ("caller", "the caller's name"), ("resource", "a resource's name or id"),
        ("engine", "an engine's name"), ("status", "an execution status"))]
    filters += [_query("since", "number", "seconds since the epoch"),
                _query("until", "number", "seconds since the epoch"),
                _query("limit", "integer", "at most 500 (default 100)")]
    return {
        "/ui": {"get": _ui("the dashboard page (401: the sign-in form)", "view")},
        "/ui/login": {
            "get": _ui("the sign-in form", None),
            "post": _ui("sign in: form field token; 303 to /ui with the cookie", None,
                        ok="303")},
        "/ui/logout": {"post": _ui("sign out: clears the cookie", None, ok="303")},
        "/ui/static/{name}": {"get": _ui("the dashboard's scripts and styles", None,
                                         params=[_path("name")])},
        "/ui/api/overview": {"get": _ui("tiles, series, engines, quota, audit chain",
                                        "view")},
        "/ui/api/executions": {"get": _ui("recent executions, newest first", "view",
                                          params=filters)},
        "/ui/api/executions/{execution_id}": {"get": _ui(
            "one execution: request, fee, effects, events, error, audit record, parent and "
            "children", "view", params=[_path("execution_id")])},
        "/ui/api/audit/verify": {"post": _ui("verify the audit chain now", "admin")},
    }


def document(version: str) -> dict[str, Any]:
    model, mv = [_path("name")], [_path("name"), _path("version")]
    execution = [_path("execution_id")]
    infer = {"required": True, "content": {
        **_JSON["content"],
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": _op("the server is up", None)},
        "/v2/health/ready": {"get": _op("the coordinator is open, engines healthy", None)},
        "/v2": {"get": _op("server metadata", "execute")},
        "/v1/resources": {
            "post": _op("deploy a resource owned by the key: the raw body with query "
                        "parameters, or a multipart form with the same fields and a code file",
                        "deploy", ok="201",
                        params=[_query("type", "string", "wasm or onnx (raw body)"),
                                _query("name", "string", "a readable name (raw body)"),
                                _query("capabilities", "string", "comma-separated (raw body)"),
                                _query("format", "string", "binary (default) or wat (raw body)")],
                        body={"required": True, "content": {
                            "application/octet-stream": {"schema": {"type": "string",
                                                                    "format": "binary"}},
                            "multipart/form-data": {"schema": _DEPLOY_FORM}}}),
            "get": _op("list resources", "execute")},
        "/v1/resources/{rid}": {"get": _op("show a resource", "execute",
                                           params=[_path("rid")])},
        "/v1/resources/{rid}/state/{key}": {"get": _op(
            "a committed state value (base64)", "execute", params=[_path("rid"), _path("key")])},
        "/v1/resources/{rid}/events": {"get": _op(
            "the resource's newest events", "execute",
            params=[_path("rid"), _query("limit", "integer", "at most 1000 (default 100)")])},
        "/v1/audit": {"get": _op(
            "audit records from seq start, paged", "admin",
            params=[_query("start", "integer", "first seq (default 1)"),
                    _query("limit", "integer", "at most 1000 (default 100)")])},
        "/v1/audit/verify": {"get": _op("check the audit log's hash chain", "admin")},
        "/v1/keys": {
            "post": _op("create a key: {name, scope}; the token is in the answer, once",
                        "admin", ok="201", body={"required": True, **_JSON}),
            "get": _op("list keys (never their tokens)", "admin")},
        "/v1/keys/{name}": {"delete": _op("revoke a key", "admin", params=[_path("name")])},
        "/metrics": {"get": _op("Prometheus metrics (with the prometheus plugin)", "admin")},
        "/v1/executions": {"post": _op(
            "execute: resource_id, entry, input (base64), args, fee_limit, timeout", "execute",
            params=[_query("wait", "boolean", "false: 202 with the execution id at once")],
            body={"required": True, **_JSON})},
        "/v1/executions/{execution_id}": {"get": _op(
            "status, or the result of an execution this server started", "execute",
            params=[*execution, _query("wait", "number", "long poll, seconds (<= 60)")])},
        "/v1/executions/{execution_id}/cancel": {"post": _op("cancel", "execute",
                                                             params=execution)},
    }
    paths.update(_dashboard())
    for base, params in (("/v2/models/{name}", model),
                         ("/v2/models/{name}/versions/{version}", mv)):
        paths[base] = {"get": _op("model metadata", "execute", params=params)}
        paths[base + "/ready"] = {"get": _op("model readiness", "execute", params=params)}
        paths[base + "/infer"] = {"post": _op(
            "infer: JSON tensors, or binary tensor data after the JSON "
            "(Inference-Header-Content-Length)", "execute", params=[*params, _BINARY_HEADER],
            body=infer)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "coordinator", "version": version},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "kind": {"type": "string"}}}},
        },
        "security": [{"bearer": []}],
    }
