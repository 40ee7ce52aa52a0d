"""The Open Inference Protocol over gRPC against the live server, through the standard client
``tritonclient.grpc`` (unchanged but for the ``authorization`` metadata) and, where a test
needs typed contents or the trailing metadata, through the service stub that client ships.

Covered: health without a key, server and model metadata, infer equal to onnxruntime's own
run (raw and typed contents, versions, ``id`` echoed), keys (UNAUTHENTICATED and
PERMISSION_DENIED, each leaving a security audit record without the token), and malformed
requests ending in INVALID_ARGUMENT or NOT_FOUND with the server still serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as oip
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from .conftest import MAX_BODY, Live
from .test_oip import direct

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)


@pytest.fixture(scope="module")
def client(live: Live) -> Iterator[oip.InferenceServerClient]:
    made = oip.InferenceServerClient(live.grpc_target)
    yield made
    made.close()


@pytest.fixture(scope="module")
def stub(live: Live) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(live.grpc_target)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def auth(live: Live, key: str = "alice") -> dict[str, str]:
    return {"authorization": f"Bearer {live.tokens[key]}"}


def tensor(x: np.ndarray, datatype: str = "FP32") -> oip.InferInput:
    made = oip.InferInput("x", list(x.shape), datatype)
    made.set_data_from_numpy(x)
    return made


def security_records(live: Live) -> list[dict[str, Any]]:
    """Every security audit record the gRPC surface left, through the REST audit pages."""
    found, start = [], 1
    while start is not None:
        page = live.request("GET", "/v1/audit", "root",
                            params={"start": str(start), "limit": "500"}).json()
        found += [r for r in page["records"] if r["record_kind"] == "security"
                  and (r["detail"] or {}).get("surface") == "grpc"]
        start = page["next_start"]
    return found


def typed_request(x: np.ndarray, **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="clf", **fields)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape)).contents.fp32_contents[
        :] = x.ravel().tolist()
    return request


def rpc_error(call: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kw)
    return caught.value


def test_health_needs_no_key_and_metadata_comes_from_the_signature(
        live: Live, client: oip.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("clf", headers=auth(live))
    assert client.is_model_ready("clf", "1", headers=auth(live))
    server = client.get_server_metadata(headers=auth(live))
    assert server.name == "coordinator" and server.version
    meta = client.get_model_metadata("clf", headers=auth(live), as_json=True)
    assert meta["name"] == "clf" and meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    # as_json renders int64 as strings, as protobuf's JSON mapping does
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "3"]}]


def test_infer_equals_onnxruntime_for_each_version(
        live: Live, client: oip.InferenceServerClient) -> None:
    wanted = [oip.InferRequestedOutput("y")]
    newest = client.infer("clf", [tensor(X)], outputs=wanted, request_id="g-1",
                          headers=auth(live))
    np.testing.assert_array_equal(newest.as_numpy("y"), direct(live.models[1], X))
    response = newest.get_response()
    assert response.id == "g-1" and response.model_version == "2"
    assert response.parameters["execution_id"].string_param
    assert response.parameters["fee_used"].int64_param > 0
    assert response.parameters["memory_bytes"].int64_param == (
        X.astype(np.float32).nbytes + newest.as_numpy("y").nbytes)
    assert 0 <= response.parameters["cpu_seconds"].double_param < 5
    older = client.infer("clf", [tensor(X)], model_version="1", headers=auth(live))
    np.testing.assert_array_equal(older.as_numpy("y"), direct(live.models[0], X))
    assert older.get_response().model_version == "1"


def test_typed_contents_and_request_parameters(live: Live,
                                               stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = typed_request(X, id="typed", model_version="1")
    request.parameters["timeout"].double_param = 10.0
    request.parameters["fee_limit"].int64_param = 10**9
    request.outputs.add(name="y")
    response = stub.ModelInfer(request, metadata=tuple(auth(live).items()), timeout=30)
    assert response.id == "typed" and [o.name for o in response.outputs] == ["y"]
    [out] = response.outputs
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(out.shape))
    np.testing.assert_array_equal(got, direct(live.models[0], X))


def test_a_failed_execution_has_its_kind_in_the_trailing_metadata(
        live: Live, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = typed_request(X)
    request.parameters["fee_limit"].int64_param = 1
    error = rpc_error(stub.ModelInfer, request, metadata=tuple(auth(live).items()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the fee limit of 1" in error.details()
    trailing = dict(error.trailing_metadata())
    assert trailing["coordinator-error-kind"] == "fee_exhausted"
    assert trailing["coordinator-execution-id"]


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer crd_wrong"},
                                     {"authorization": "Basic dXNlcjpwYXNz"}])
def test_no_key_or_a_bad_key_is_unauthenticated_and_audited(
        live: Live, client: oip.InferenceServerClient, headers: dict[str, str]) -> None:
    before = len(security_records(live))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("clf", [tensor(X)], headers=headers)
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as meta:
        client.get_model_metadata("clf", headers=headers)
    assert meta.value.status() == "StatusCode.UNAUTHENTICATED"
    records = security_records(live)
    assert len(records) == before + 2
    for record in records[before:]:
        assert record["status"] == "rejected" and record["caller"] == "unauthenticated"
        assert record["detail"]["action"] == "authenticate"
        assert record["detail"]["method"].startswith("inference.GRPCInferenceService/")
        assert "crd_wrong" not in str(record)
    assert client.is_server_ready()  # health stays open


def test_naming_another_caller_is_permission_denied_and_audited(
        live: Live, client: oip.InferenceServerClient) -> None:
    before = len(security_records(live))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("clf", [tensor(X)], parameters={"caller": "root"}, headers=auth(live))
    assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "may not name another" in caught.value.message()
    [record] = security_records(live)[before:]
    assert record["caller"] == "alice" and record["detail"]["action"] == "authorize"
    assert record["error_kind"] == "security_rejected"
    own = client.infer("clf", [tensor(X)], parameters={"caller": "alice"}, headers=auth(live))
    np.testing.assert_array_equal(own.as_numpy("y"), direct(live.models[1], X))


def test_unknown_models_and_versions_are_not_found(
        live: Live, client: oip.InferenceServerClient) -> None:
    for name, version in (("nope", ""), ("clf", "3"), ("clf", "x")):
        with pytest.raises(InferenceServerException) as caught:
            client.infer(name, [tensor(X)], model_version=version, headers=auth(live))
        assert caught.value.status() == "StatusCode.NOT_FOUND", (name, version)
        with pytest.raises(InferenceServerException) as meta:
            client.get_model_metadata(name, version, headers=auth(live))
        assert meta.value.status() == "StatusCode.NOT_FOUND"


def _raw(x: np.ndarray, datatype: str, raw: bytes,
         shape: list[int] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="clf", raw_input_contents=[raw])
    request.inputs.add(name="x", datatype=datatype, shape=shape or list(x.shape))
    return request


MALFORMED = [
    (lambda: [tensor(np.zeros((3, 5), np.float32))], "has 5 at axis 1"),
    (lambda: [tensor(np.zeros((3, 4), np.int32), "INT32")], "array of int32"),
    (lambda: [tensor(np.zeros((2, 2, 2), np.float32))], "shape"),
]


@pytest.mark.parametrize("inputs, says", MALFORMED)
def test_malformed_tensors_are_invalid_argument_and_the_server_stays_up(
        live: Live, client: oip.InferenceServerClient, inputs: Any, says: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("clf", inputs(), headers=auth(live))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert says in caught.value.message()
    assert client.is_server_ready()
    good = client.infer("clf", [tensor(X)], headers=auth(live))
    np.testing.assert_array_equal(good.as_numpy("y"), direct(live.models[1], X))


def _typed_int(x: np.ndarray) -> pb.ModelInferRequest:
    request = typed_request(x)
    request.inputs[0].contents.int_contents[:] = [1]
    return request


def _two_raw(x: np.ndarray) -> pb.ModelInferRequest:
    request = _raw(x, "FP32", x.tobytes())
    request.raw_input_contents.append(b"")
    return request


def _mixed(x: np.ndarray) -> pb.ModelInferRequest:
    request = typed_request(x)
    request.raw_input_contents.append(x.tobytes())
    return request


BAD_REQUESTS = [
    (lambda: _raw(X, "FP32", X.tobytes()[:-1]), "do not fill shape"),
    (lambda: _raw(X, "FP99", X.tobytes()), "unknown datatype 'FP99'"),
    (lambda: _raw(X, "FP32", X.tobytes(), shape=[-1, 4]), "non-negative integers"),
    (lambda: _raw(X, "BYTES", b"\x05\x00\x00\x00ab"), "runs past the end"),
    (lambda: _typed_int(X), "is given in fp32_contents, not in int_contents"),
    (lambda: _two_raw(X), "raw_input_contents has 2 entries for 1 inputs"),
    (lambda: _mixed(X), "may not be set when the request uses raw_input_contents"),
    (lambda: pb.ModelInferRequest(model_name="clf"), "non-empty list of tensors"),
    (lambda: typed_request(X, outputs=[{"name": "z"}]), "unknown output 'z'"),
]


@pytest.mark.parametrize("make, says", BAD_REQUESTS)
def test_bad_requests_get_invalid_argument(live: Live, stub: pb_grpc.GRPCInferenceServiceStub,
                                           make: Any, says: str) -> None:
    error = rpc_error(stub.ModelInfer, make(), metadata=tuple(auth(live).items()), timeout=30)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert says in error.details()
    assert dict(error.trailing_metadata())["coordinator-error-kind"] == "invalid_request"


def test_a_request_over_the_size_limit_is_refused(
        live: Live, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    rows = MAX_BODY // 16 + 1
    big = np.zeros((rows, 4), np.float32)
    error = rpc_error(stub.ModelInfer, _raw(big, "FP32", big.tobytes()),
                      metadata=tuple(auth(live).items()), timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_body_bytes" in error.details()
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
