"""Open Inference Protocol v2 over REST against the live server: metadata from the model's
signature, infer equal to onnxruntime run directly, versions, and errors with their status."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from coordinator_server.app import ServerState
from coordinator_server.serve import build_app

from .conftest import MAX_BODY, Live, cli

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 7


def direct(code: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(code, providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


def test_health_needs_no_key_and_reports_ready(live: Live) -> None:
    assert live.request("GET", "/v2/health/live").json() == {"live": True}
    assert live.request("GET", "/v2/health/ready").json() == {"ready": True}


def test_the_openapi_document_lists_every_route(live: Live) -> None:
    doc = live.request("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    app = build_app(ServerState(), lambda: None, lambda: None)
    served = {r.path.replace("{key:path}", "{key}") for r in app.routes} - {"/openapi.json"}
    assert served == set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_server_metadata(live: Live) -> None:
    meta = live.request("GET", "/v2", "alice").json()
    assert meta["name"] == "coordinator" and meta["version"]


def test_model_metadata_comes_from_the_signature(live: Live) -> None:
    meta = live.request("GET", "/v2/models/clf", "alice").json()
    assert meta["name"] == "clf" and meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    first = live.request("GET", "/v2/models/clf/versions/1", "alice").json()
    assert first["parameters"]["resource_id"] != meta["parameters"]["resource_id"]
    assert live.request("GET", "/v2/models/clf/ready", "alice").json() == {"ready": True}


def test_infer_equals_onnxruntime_newest_version_by_default(live: Live) -> None:
    reply = live.request("POST", "/v2/models/clf/infer", "alice", json=body(X, id="req-7"))
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["id"] == "req-7" and data["model_name"] == "clf"
    assert data["model_version"] == "2"
    [out] = data["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    np.testing.assert_array_equal(got, direct(live.models[1], X))
    old = live.request("POST", "/v2/models/clf/versions/1/infer", "alice", json=body(X)).json()
    np.testing.assert_array_equal(
        np.asarray(old["outputs"][0]["data"], dtype=np.float32).reshape(2, 3),
        direct(live.models[0], X))
    assert not np.array_equal(got, direct(live.models[0], X))


def test_each_infer_is_an_execution_with_the_key_as_caller(live: Live) -> None:
    reply = live.request("POST", "/v2/models/clf/infer", "alice", json=body(X)).json()
    execution_id = reply["parameters"]["execution_id"]
    assert reply["parameters"]["fee_used"] > 0
    # the resource use: input and output tensor bytes (x 2x4, y 2x3 float32), CPU time
    assert reply["parameters"]["memory_bytes"] == X.astype(np.float32).nbytes + 2 * 3 * 4
    assert 0 <= reply["parameters"]["cpu_seconds"] < 5
    status = json.loads(cli(live.data_dir, "status", execution_id, "--json").stdout)
    assert status["caller"] == "alice" and status["status"] == "succeeded"


@pytest.mark.parametrize(("payload", "status", "says"), [
    (body(X.astype(np.float64)) | {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "INT64",
                                               "data": list(range(8))}]}, 400, "int64"),
    ({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
     400, "axis 1"),
    ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]},
     400, "do not fill shape"),
    ({"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1] * 4}]},
     400, "non-negative"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP8", "data": [1] * 4}]},
     400, "unknown datatype"),
    ({"inputs": [{"name": "w", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]},
     400, "missing input 'x'"),
    (body(X, outputs=[{"name": "nope"}]), 400, "unknown output 'nope'"),
    ({"inputs": []}, 400, "non-empty"),
    (body(X, caller="mallory"), 403, "may not name another"),
    (body(X, parameters={"fee_limit": 1}), 402, "over the fee limit of 1"),
    (body(X, parameters={"timeout": "soon"}), 400, "parameters.timeout"),
    (body(X, parameters=[1]), 400, "'parameters' must be an object"),
])
def test_bad_infer_requests_get_a_typed_error(live: Live, payload: Any, status: int,
                                              says: str) -> None:
    reply = live.request("POST", "/v2/models/clf/infer", "alice", json=payload)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"]


def test_unknown_models_versions_and_bodies(live: Live) -> None:
    missing = live.request("POST", "/v2/models/nope/infer", "alice", json=body(X))
    assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["error"]
    assert live.request("GET", "/v2/models/clf/versions/3", "alice").status_code == 404
    big = live.request("POST", "/v2/models/clf/infer", "alice", content=b" " * (MAX_BODY + 1))
    assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]
    chunks = iter([b" " * (MAX_BODY // 2 + 1)] * 2)  # chunked: no length declared up front
    streamed = live.request("POST", "/v2/models/clf/infer", "alice", content=chunks)
    assert streamed.status_code == 413
    bad = live.request("POST", "/v2/models/clf/infer", "alice", content=b"{not json")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
