"""Malformed requests, one of each kind, against the live server: each gets a 4xx JSON body
``{"error": ..., "kind": ...}`` whose message names what is wrong, and nothing runs."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Live

RID = "0" * 64


def tensor(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": [1, 2, 3, 4], **changes}]}


INFER = "/v2/models/clf/infer"
CASES: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    # method, path, request keywords, status, kind, a fragment of the message
    ("POST", INFER, {"content": b"{bad"}, 400, "invalid_request", "not valid JSON"),
    ("POST", INFER, {"content": b"\xff\xfe\x00"}, 400, "invalid_request", "not valid JSON"),
    ("POST", INFER, {"content": b"[" * 100_000}, 400, "invalid_request", "not valid JSON"),
    ("POST", INFER, {"content": b'{"inputs": [{"data": [NaN]}]}'}, 400, "invalid_request",
     "NaN is not a JSON number"),
    ("POST", INFER, {"content": b'{"inputs": [{"data": [1e999]}]}'}, 400, "invalid_request",
     "too large for a 64-bit float"),
    ("POST", INFER, {"json": tensor(shape=[2, 4])}, 400, "invalid_request",
     "do not fill shape [2, 4]"),
    ("POST", INFER, {"json": tensor(shape=[1, 2, 2])}, 400, "invalid_request", "rank 3"),
    ("POST", INFER, {"json": tensor(shape=[-1, 4])}, 400, "invalid_request",
     "non-negative integers"),
    ("POST", INFER, {"json": tensor(shape=[2**62, 2**62])}, 400, "invalid_request",
     "do not fill shape"),
    ("POST", INFER, {"json": tensor(datatype="INT64")}, 400, "invalid_request",
     "expected x: float32"),
    ("POST", INFER, {"json": tensor(datatype="FP128")}, 400, "invalid_request",
     "unknown datatype"),
    ("POST", INFER, {"json": tensor(data=[10**400, 2, 3, 4])}, 400, "invalid_request",
     "cannot hold"),
    ("POST", INFER, {"json": tensor(data=[[1, 2], [3, 4]])}, 400, "invalid_request",
     "nested 'data' of shape [2, 2]"),
    ("POST", INFER, {"json": tensor(data=["a", "b", "c", "d"])}, 400, "invalid_request",
     "cannot hold string"),
    ("POST", INFER, {"json": tensor(parameters=[1])}, 400, "invalid_request",
     "'parameters' must be an object"),
    ("POST", INFER, {"json": tensor(dims=[1, 4])}, 400, "invalid_request",
     "unknown field 'dims'"),
    ("POST", INFER, {"json": {**tensor(), "priority": 1}}, 400, "invalid_request",
     "unknown field 'priority'"),
    ("POST", INFER, {"json": {**tensor(), "id": 7}}, 400, "invalid_request",
     "'id' must be a string"),
    ("POST", INFER, {"json": {**tensor(), "parameters": {"fee_limit": -1}}}, 400,
     "invalid_request", "parameters.fee_limit must be a positive integer"),
    ("POST", INFER, {"json": {**tensor(), "parameters": {"fee_limit": 10**30}}}, 400,
     "invalid_request", "out of bounds"),
    ("POST", INFER, {"json": {**tensor(), "parameters": {"timeout": 10**400}}}, 400,
     "invalid_request", "parameters.timeout must be a finite number"),
    ("POST", INFER, {"json": tensor(), "headers": {"content-type": "text/xml"}}, 415,
     "invalid_request", "reads a JSON body"),
    ("POST", INFER, {"files": {"f": b"{}"}}, 415, "invalid_request", "reads a JSON body"),
    ("GET", "/v2/models/..%2F..%2Fetc", {}, 404, "not_found", "no route GET /v2/models/../"),
    ("GET", "/v2/models/%2E%2E", {}, 404, "not_found", "no model named '..'"),
    ("GET", "/v2/models/clf/versions/-1", {}, 404, "not_found", "no version '-1'"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "fee_limit": -5}}, 400,
     "invalid_request", "fee_limit must be a positive integer"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "fee_limit": 1.5}}, 400,
     "invalid_request", "fee_limit must be a positive integer"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "timeout": -1}}, 400,
     "invalid_request", "timeout must be a finite number"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "timeout": True}}, 400,
     "invalid_request", "timeout must be a finite number"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "args": ["a"]}}, 400,
     "invalid_request", "'args' must be a list of numbers"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "entry": 5}}, 400,
     "invalid_request", "'entry' must be a string"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "input": "!!"}}, 400,
     "invalid_request", "not valid base64"),
    ("POST", "/v1/executions", {"json": {"resource_id": RID, "fee_limt": 5}}, 400,
     "invalid_request", "unknown field 'fee_limt'"),
    ("POST", "/v1/executions", {"json": {"resource_id": 5}}, 400, "invalid_request",
     "'resource_id' (a string) is required"),
    ("POST", "/v1/executions?wait=false", {"json": {"resource_id": RID}}, 404, "not_found",
     "no resource"),
    ("GET", "/v1/executions/x?wait=nan", {}, 400, "invalid_request", "wait must be between"),
    ("GET", f"/v1/resources/{RID}/events?limit=-1", {}, 404, "not_found", "no resource"),
    ("GET", "/v1/audit?start=0", {}, 400, "invalid_request", "start must be an integer"),
    ("POST", "/v1/resources?type=nope", {"content": b"x"}, 400, "invalid_request",
     "no engine can run resource type 'nope'"),
    ("POST", "/v1/resources?type=wasm&format=wat&name=../../x", {"content": b"(module)"}, 400,
     "invalid_request", "the name '../../x' must be"),
    ("POST", "/v1/resources?type=wasm&format=wat", {"content": b"\xff\xfe"}, 400,
     "invalid_request", "needs a UTF-8 body"),
    ("POST", "/v1/keys", {"json": {"name": "../x"}}, 400, "invalid_request", "key name"),
    ("POST", "/v1/keys", {"json": {"name": "k", "admin": True}}, 400, "invalid_request",
     "unknown field 'admin'"),
    ("PUT", "/v1/keys", {}, 405, "invalid_request", "does not take PUT"),
    ("GET", "/v1/nothing-here", {}, 404, "not_found", "no route GET /v1/nothing-here"),
]


@pytest.mark.parametrize(("method", "path", "kw", "status", "kind", "fragment"), CASES,
                         ids=[f"{c[0]} {c[1][:40]} {c[5][:30]}" for c in CASES])
def test_a_malformed_request_gets_a_typed_4xx(live: Live, method: str, path: str,
                                              kw: dict[str, Any], status: int, kind: str,
                                              fragment: str) -> None:
    kw = dict(kw)  # the table is shared between runs
    headers = {"Authorization": f"Bearer {live.tokens['root']}", **kw.pop("headers", {})}
    reply = live.client.request(method, path, headers=headers, **kw)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["kind"] == kind and fragment in body["error"], body
